"""Task paths: how the data distribution p(x, t) moves from a source task (t = 0) to a target
task (t = 1) (paper section 4.1 and appendix F).

- mixture (eq. 23): p(x, t) = (1 - t) p_s + t p_t, labels kept. Any expectation is
  (1 - t) E_s + t E_t, so J(theta; t) = (1 - t) J_s + t J_t and b_t = -(grad J_t - grad J_s).
- optimal transport (eq. 36-37): a coupling Gamma of the empirical source and target (POT:
  `ot.emd` exact, `ot.sinkhorn` entropic with regulariser `reg`; scipy's
  `linear_sum_assignment` exact for equal numbers of points with uniform weights, where the
  optimal plan is a permutation, kept sparse: the method for 10,000+ points), interpolated points
  x_ij(t) = (1 - t) x_i^s + t x_j^t with weights Gamma_ij, and the soft label of Remark 11,
  y_ij(t) = (1 - t) delta_{y_i^s} + t delta_{y_j^t}: its cross-entropy is
  (1 - t) CE(y_i^s) + t CE(y_j^t). Minibatches are pairs (i, j) drawn from Gamma.

Everything is a smooth function of t, so b_t = -d/dt grad_theta J is one forward-mode JVP like
b_lambda and b_gamma.

For the linear-Gaussian problem J depends on the data only through the second moment of
u = (x, y) and, with soft labels, a theta-independent term (`TaskMoments`):
- mixture: S(t) = (1 - t) S_s + t S_t;
- a coupling of (u_s, u_t) with joint second moment Sigma_w of w = (x_s, y_s, x_t, y_t) (an
  empirical OT coupling, or the Gaussian W2 map): u(t) = P_t w, S(t) = P_t Sigma_w P_t^T, and the
  soft label adds kappa(t) = t (1 - t) E|y_s - y_t|^2 / (2 sigma_c^2) to C (docs/transfer.md).
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
import torch

PATHS = ("mixture", "ot")
OT_METHODS = ("emd", "sinkhorn", "assignment")


# -- optimal transport between empirical distributions ---------------------------------------
class OTNotConverged(RuntimeError, ValueError):
    """An optimal-transport solver spent its iteration budget (`ot_max_iter`) before its plan was
    optimal (emd) or converged (sinkhorn): an error, never a silently sub-optimal coupling. A
    ValueError too: the fix is an option (ot_max_iter, ot_reg, limit), so configuration files
    report it as one."""


def squared_distances(x_s, x_t) -> np.ndarray:
    """kappa_ij = |x_i^s - x_j^t|^2 (the paper's cost), rows of (flattened) x_s against x_t."""
    import ot

    a = np.asarray(x_s, dtype=np.float64).reshape(len(x_s), -1)
    b = np.asarray(x_t, dtype=np.float64).reshape(len(x_t), -1)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"source and target points have different dimensions: {a.shape[1]} and {b.shape[1]}")
    return ot.dist(a, b, metric="sqeuclidean")


def coupling(x_s, x_t, method: str = "emd", reg: float = 0.05, a=None, b=None, num_itermax: int = 100_000):
    """The optimal coupling Gamma (n_s x n_t, sums to 1) of the empirical source and target
    (eq. 36), weights a, b (default uniform). method "emd": exact (POT's network simplex; a dense
    plan, its budget `num_itermax`); "sinkhorn": entropic, with regulariser reg relative to the
    mean cost (POT's reg is reg * mean(kappa), so that reg does not depend on the scale of the
    data), a dense plan biased towards the independent coupling by the entropy term;
    "assignment": exact for n_s = n_t with uniform weights, where an optimal plan is a
    permutation matrix / n (Birkhoff-von Neumann), by scipy.optimize.linear_sum_assignment (the
    Jonker-Volgenant shortest augmenting path), returned as a scipy.sparse COO array of n
    entries: memory is the n x n float64 cost matrix (0.8 GB at n = 10,000), the plan O(n).
    Errors: ValueError for an unknown method, weights that do not fit, or "assignment" on
    unequal sizes or weights; OTNotConverged when emd or sinkhorn spends `num_itermax`.

    Measured on Fashion-MNIST 0-4 against 5-9 (benchmarks/ot_scale.py, one CPU thread): at
    n = 10,000 per task emd takes 65 s and 4.9 GB peak (run with num_itermax = 1e8), assignment 373 s and 2.6 GB, the same optimal cost; at 5,000, 10 s and
    51 s. The last few plans are kept in memory (keyed by the points' bytes and the options), so
    the several problems one script builds on the same data compute the plan once; a returned
    plan is shared: do not modify it."""
    if method not in OT_METHODS:
        raise ValueError(f"unknown OT method {method!r}; valid: {', '.join(OT_METHODS)}")
    key = _plan_key(x_s, x_t, method, reg, a, b, num_itermax)
    if key not in _PLANS:
        _PLANS[key] = _coupling(x_s, x_t, method, reg, a, b, num_itermax)
        while len(_PLANS) > 4:
            _PLANS.pop(next(iter(_PLANS)))
    return _PLANS[key]


_PLANS: dict = {}


def _plan_key(x_s, x_t, method, reg, a, b, num_itermax) -> str:
    import hashlib

    h = hashlib.sha1()
    for arr in (x_s, x_t, a, b):
        if arr is None:
            h.update(b"none")
        else:
            arr = np.ascontiguousarray(np.asarray(arr))
            h.update(str((arr.shape, arr.dtype.str)).encode())
            h.update(arr.tobytes())
    h.update(repr((method, float(reg), int(num_itermax) if isinstance(num_itermax, int) else num_itermax)).encode())
    return h.hexdigest()


def _coupling(x_s, x_t, method, reg, a, b, num_itermax):
    import ot

    if method == "assignment":
        return _assignment(x_s, x_t, a, b)
    cost = squared_distances(x_s, x_t)
    n_s, n_t = cost.shape
    a = np.full(n_s, 1.0 / n_s) if a is None else np.asarray(a, dtype=np.float64)
    b = np.full(n_t, 1.0 / n_t) if b is None else np.asarray(b, dtype=np.float64)
    if a.shape != (n_s,) or b.shape != (n_t,):
        raise ValueError(f"weights of shapes {a.shape}, {b.shape} do not fit {n_s} source and {n_t} target points")
    if not (isinstance(num_itermax, int) and num_itermax >= 1):
        raise ValueError(f"ot_max_iter must be an integer >= 1, got {num_itermax!r}")
    if method == "emd":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # POT warns on an exhausted budget; its log says so, checked here
            gamma, log = ot.emd(a, b, cost, numItermax=num_itermax, log=True)
        if log.get("result_code") != 1:  # 1: optimal; 3: the budget ran out (a feasible plan, not optimal)
            why = log.get("warning") or f"result code {log.get('result_code')}"
            raise OTNotConverged(f"emd did not reach the optimal plan in {num_itermax} iterations ({why}); "
                                 f"raise ot_max_iter (now {num_itermax}) or use fewer points (limit)")
    else:
        if not reg > 0:
            raise ValueError(f"sinkhorn needs reg > 0, got {reg}")
        scale = float(cost.mean()) or 1.0
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gamma = ot.sinkhorn(a, b, cost / scale, reg, method="sinkhorn_log", numItermax=num_itermax,
                                stopThr=1e-9)
        if any("did not converge" in str(w.message) for w in caught):
            raise OTNotConverged(f"sinkhorn did not converge in {num_itermax} iterations at reg = {reg} "
                                 f"(raise ot_reg or ot_max_iter, now {num_itermax})")
    if not np.all(np.isfinite(gamma)):
        raise FloatingPointError(f"the {method} coupling is not finite (for sinkhorn, increase reg, now {reg})")
    return gamma


def _assignment(x_s, x_t, a=None, b=None):
    """The exact OT plan between two uniform empirical measures of n points each (coupling's
    "assignment"): the optimal permutation, a sparse array with entries 1 / n."""
    import scipy.sparse
    from scipy.optimize import linear_sum_assignment

    n_s, n_t = len(x_s), len(x_t)
    if n_s != n_t:
        raise ValueError(f"ot_method 'assignment' needs as many source as target points (a permutation plan); "
                         f"got {n_s} and {n_t}: use 'emd', or the same limit for both tasks")
    for name, w in (("a", a), ("b", b)):
        if w is not None and not np.allclose(np.asarray(w, dtype=np.float64), 1.0 / n_s, rtol=1e-12, atol=0):
            raise ValueError(f"ot_method 'assignment' needs uniform weights; {name} is not: use 'emd'")
    rows, cols = linear_sum_assignment(squared_distances(x_s, x_t))
    return scipy.sparse.coo_array((np.full(n_s, 1.0 / n_s), (rows, cols)), shape=(n_s, n_t))


class CouplingSampler:
    """Pairs (i, j) drawn with probability Gamma_ij (minibatches of the OT task path)."""

    def __init__(self, gamma):
        import scipy.sparse

        if scipy.sparse.issparse(gamma):  # a sparse plan (assignment): its entries, never densified
            coo = scipy.sparse.coo_array(gamma)
            flat_index = coo.row.astype(np.int64) * coo.shape[1] + coo.col
            order = np.argsort(flat_index)
            flat_index, values = flat_index[order], np.asarray(coo.data, dtype=np.float64)[order]
        else:
            dense = np.asarray(gamma, dtype=np.float64)
            if dense.ndim != 2:
                raise ValueError("a coupling must be a non-negative matrix with a positive sum")
            flat_index, values = np.arange(dense.size), dense.ravel()
        if len(gamma.shape) != 2 or np.any(values < 0) or not values.sum() > 0:
            raise ValueError("a coupling must be a non-negative matrix with a positive sum")
        self.shape = tuple(gamma.shape)
        keep = values > 1e-12 * values.max()
        self.support, w = flat_index[keep], values[keep]
        self.weights = torch.tensor(w / w.sum(), dtype=torch.float64)

    def sample(self, count: int, generator: torch.Generator):
        """(i, j) index tensors of `count` pairs drawn from Gamma (with replacement)."""
        k = torch.multinomial(self.weights, count, replacement=True, generator=generator).numpy()
        flat = self.support[k]
        i, j = np.divmod(flat, self.shape[1])
        return torch.as_tensor(i), torch.as_tensor(j)

    def all_pairs(self):
        """Every pair of the support with its weight (an exact expectation over Gamma)."""
        i, j = np.divmod(self.support, self.shape[1])
        return torch.as_tensor(i), torch.as_tensor(j), self.weights.clone()


def interpolate(x_s: torch.Tensor, x_t: torch.Tensor, t) -> torch.Tensor:
    """x(t) = (1 - t) x_s + t x_t (eq. 37), differentiable in t."""
    return (1 - t) * x_s + t * x_t


# -- second moments of a task path (linear-Gaussian problems) ----------------------------------
class TaskMoments:
    """S(t) = E_t[u u^T] of u = (x, y) and the theta-independent label term kappa(t) (in units
    of 1 / (2 sigma_c^2): C gets kappa(t) / (2 sigma_c^2)), both differentiable in t."""

    n: int
    m: int

    def second_moment(self, t) -> torch.Tensor:
        raise NotImplementedError

    def label_spread(self, t):
        """E_t of (1 - t) |y_s|^2 + t |y_t|^2 - |y(t)|^2 for soft labels; 0 for a mixture."""
        return 0.0 * t


class MixtureMoments(TaskMoments):
    """eq. 23: S(t) = (1 - t) S_s + t S_t."""

    def __init__(self, source, target, n: int, m: int, dtype=torch.float64):
        self.S_s = torch.as_tensor(np.asarray(source), dtype=dtype)
        self.S_t = torch.as_tensor(np.asarray(target), dtype=dtype)
        self.n, self.m = n, m
        for name, S in (("source", self.S_s), ("target", self.S_t)):
            if S.shape != (n + m, n + m):
                raise ValueError(f"{name} second moment has shape {tuple(S.shape)}, expected ({n + m}, {n + m})")

    def second_moment(self, t):
        return (1 - t) * self.S_s + t * self.S_t


class CoupledMoments(TaskMoments):
    """A coupling of source and target, given by the joint second moment Sigma_w of
    w = (x_s, y_s, x_t, y_t): u(t) = ((1-t) x_s + t x_t, (1-t) y_s + t y_t) (eq. 37, Remark 11)."""

    def __init__(self, joint, n: int, m: int, dtype=torch.float64):
        self.joint = torch.as_tensor(np.asarray(joint), dtype=dtype)
        self.n, self.m = n, m
        d = 2 * (n + m)
        if self.joint.shape != (d, d):
            raise ValueError(f"joint second moment has shape {tuple(self.joint.shape)}, expected ({d}, {d})")
        eye = torch.eye(n + m, dtype=dtype)
        self._source = torch.cat([eye, torch.zeros_like(eye)], dim=1)  # u_s = [I 0] w
        self._target = torch.cat([torch.zeros_like(eye), eye], dim=1)  # u_t = [0 I] w
        self._label_gap = torch.zeros(m, d, dtype=dtype)  # y_s - y_t
        self._label_gap[:, n: n + m] = torch.eye(m, dtype=dtype)
        self._label_gap[:, 2 * n + m:] = -torch.eye(m, dtype=dtype)

    def second_moment(self, t):
        P = (1 - t) * self._source + t * self._target
        return P @ self.joint @ P.T

    def label_spread(self, t):
        Q = self._label_gap
        return t * (1 - t) * torch.trace(Q @ self.joint @ Q.T)


def coupled_sample_joint(x_s, y_s, x_t, y_t, gamma) -> np.ndarray:
    """Sigma_w = sum_ij Gamma_ij w_ij w_ij^T of w_ij = (x_i^s, y_i^s, x_j^t, y_j^t), Gamma normalised."""
    x_s, y_s, x_t, y_t = (np.atleast_2d(np.asarray(a, dtype=np.float64)) for a in (x_s, y_s, x_t, y_t))
    y_s, y_t = (y.reshape(len(y), -1) for y in (y_s, y_t))
    gamma = np.asarray(gamma, dtype=np.float64)
    gamma = gamma / gamma.sum()
    u_s, u_t = np.hstack([x_s, y_s]), np.hstack([x_t, y_t])
    # sum_ij G_ij [u_i; v_j][u_i; v_j]^T, block by block
    a, b = gamma.sum(1), gamma.sum(0)
    ss = (u_s * a[:, None]).T @ u_s
    tt = (u_t * b[:, None]).T @ u_t
    st = u_s.T @ gamma @ u_t
    return np.block([[ss, st], [st.T, tt]])


def gaussian_ot_map(sigma_s, sigma_t) -> np.ndarray:
    """The W2-optimal map x -> T x from N(0, Sigma_s) to N(0, Sigma_t):
    T = Sigma_s^{-1/2} (Sigma_s^{1/2} Sigma_t Sigma_s^{1/2})^{1/2} Sigma_s^{-1/2} (symmetric, T Sigma_s T = Sigma_t)."""
    root = np.real(scipy.linalg.sqrtm(np.asarray(sigma_s, dtype=np.float64)))
    inv_root = np.linalg.inv(root)
    middle = np.real(scipy.linalg.sqrtm(root @ sigma_t @ root))
    T = inv_root @ middle @ inv_root
    return 0.5 * (T + T.T)


def gaussian_ot_joint(source, target) -> np.ndarray:
    """Sigma_w of the W2-optimal coupling of the x-marginals of two LinearGaussianData:
    x_t = T x_s, y_s = B_s x_s + e_s, y_t = B_t T x_s + e_t, the label noises independent (the
    coupling moves inputs only, appendix F)."""
    if (source.n, source.m) != (target.n, target.m):
        raise ValueError(f"source (n={source.n}, m={source.m}) and target (n={target.n}, m={target.m}) differ in shape")
    n, m = source.n, source.m
    T = gaussian_ot_map(source.Sigma, target.Sigma)
    L = np.vstack([np.eye(n), source.B, T, target.B @ T])  # w = L x_s + noise
    joint = L @ source.Sigma @ L.T
    joint[n: n + m, n: n + m] += source.noise
    joint[2 * n + m:, 2 * n + m:] += target.noise
    return joint
