"""The few lowest eigenvalues of A = Hess_theta J off the gauge orbit, matrix-free (stability).

A point of the equilibrium surface grad_theta J = 0 is a minimum when every non-gauge eigenvalue
of A is positive; its Morse index is the number of negative ones (a saddle of index 1 past a
latent switch-on or on the far side of a fold). This module computes the k lowest eigenpairs of

    A restricted to range(P),   P = I - Q Q^T  (Q: orthonormal basis of the gauge-orbit tangent),

by LOBPCG (scipy.sparse.linalg.lobpcg on a LinearOperator whose matvec is one HVP), with the
gauge basis passed as LOBPCG's constraints Y (so the exact zero modes of the orbit never count)
and the previous point's eigenvectors as the starting block (warm start: along a path they
change little, and LOBPCG then converges in a few iterations), preconditioned by the run's
`[krylov] preconditioner` where that one approximates A's inverse over the whole spectrum
(`amg`; not `spectral`, which only tames the top of it, while LOBPCG here seeks the bottom).
Small problems (N <= dense_below) (or N - g < 5k, where scipy's LOBPCG would go dense anyway)
use the dense Hessian built column by column from N HVPs and numpy's `eigh` on P A P restricted
to range(P): exact to rounding, and cheaper than LOBPCG's iterations there. A run with a sparse
direct solver (`[krylov] name = "sparse-lu"`, solvers/sparse.py) and no gauge takes the k lowest
by block LOBPCG preconditioned by the factors of A - sigma I, sigma below Gershgorin's bound
(method "shift-invert": the assembly's colour HVPs where the point is new, one factorisation, k
HVPs for the residual check).

Cost: dense: N HVPs. LOBPCG: about (block size) x (iterations + 1) HVPs; reported in `hvps`.
Source: Knyazev (2001), "Toward the optimal preconditioned eigensolver: LOBPCG" (SIAM J. Sci.
Comput. 23); scipy's `lobpcg`. Written here only to connect HVPs, the gauge basis and the warm
start to scipy; the eigensolvers are scipy's and numpy's.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, lobpcg

from continuation.surface.system import EquilibriumSystem


@dataclass(frozen=True)
class Spectrum:
    """The k lowest non-gauge eigenpairs of A at a point.

    values: (k,) ascending (units: nats per sample per unit parameter^2); vectors: (N, k),
    orthonormal, orthogonal to the gauge orbit; residual: max_i ||A v_i - l_i v_i|| / max(1, |l_i|);
    hvps: the HVPs spent; method: "dense", "lobpcg" or "shift-invert"; converged: LOBPCG met its tolerance."""

    values: torch.Tensor
    vectors: torch.Tensor
    residual: float
    hvps: int
    method: str
    converged: bool = True

    def index(self, zero_tol: float) -> int:
        """The Morse index seen among the k computed values: how many are < -zero_tol (a lower
        bound on the true index when all k are negative)."""
        return int((self.values < -zero_tol).sum())


def _operator(system: EquilibriumSystem, x, mu, counter: list):
    A = system.hessian(x, mu)

    batched = [True]

    def matmat(V):
        V = np.asarray(V)
        cols = V.reshape(V.shape[0], -1)
        counter[0] += cols.shape[1]
        if batched[0] and cols.shape[1] > 1:
            # one vmapped HVP for the block (the digits MLP, 10 columns: 22 ms against 290 ms one
            # by one on a loaded 2-core machine); a problem whose ops have no batching rule falls back
            try:
                T = torch.as_tensor(np.ascontiguousarray(cols.T), dtype=x.dtype, device=x.device)
                return A.block(T).detach().cpu().numpy().T.reshape(V.shape).astype(V.dtype)
            except Exception:  # noqa: BLE001 -- any failure of vmap: the column loop below
                batched[0] = False
        out = np.empty_like(cols)
        for j in range(cols.shape[1]):
            out[:, j] = A(torch.as_tensor(cols[:, j], dtype=x.dtype, device=x.device)).detach().cpu().numpy()
        return out.reshape(V.shape)

    return A, matmat


def _preconditioner(system: EquilibriumSystem, A, x, counter: list):
    """The run's preconditioner (`[krylov] preconditioner`, symmetric positive definite) as LOBPCG's M,
    built from A's products (counted), or None: where there is none, or it does not approximate A's
    inverse over the bottom of the spectrum (`eigensolver` False: spectral)."""
    pre = getattr(system, "preconditioner", None)
    if pre is None or not getattr(pre, "eigensolver", False):
        return None
    before = pre.build_products
    M = pre.ready_for(A, x)
    counter[0] += pre.build_products - before

    def apply(V):
        V = np.asarray(V)
        cols = V.reshape(V.shape[0], -1)
        out = np.stack([M.apply(torch.as_tensor(cols[:, j], dtype=x.dtype, device=x.device)).cpu().numpy()
                        for j in range(cols.shape[1])], axis=1)
        return out.reshape(V.shape)

    n = x.numel()
    return LinearOperator((n, n), matmat=apply, matvec=apply, dtype=np.float64)


def _gauge(system: EquilibriumSystem, x) -> np.ndarray | None:
    d = system.deflation(x)
    return None if d is None else d.Q.detach().cpu().numpy()


def lowest_eigenpairs(system: EquilibriumSystem, x: torch.Tensor, mu: torch.Tensor, k: int = 3, *,
                      previous: Spectrum | None = None, tol: float = 1e-9, maxiter: int = 200,
                      dense_below: int = 256, seed: int = 0) -> Spectrum:
    """The k lowest eigenpairs of Hess_theta J(x; mu) off the gauge orbit.

    x: (N,) flat parameters, mu: (3,). previous: the last point's Spectrum (its vectors start
    LOBPCG). tol: LOBPCG's residual tolerance (relative to the largest |eigenvalue| estimate).
    Raises ValueError when k < 1 or k exceeds the non-gauge dimension.
    Cost: N HVPs (dense, N <= dense_below) or LOBPCG's (block x iterations)."""
    N = x.numel()
    Q = _gauge(system, x)
    g = 0 if Q is None else Q.shape[1]
    if not (isinstance(k, int) and 1 <= k <= N - g):
        raise ValueError(f"monitor modes must be an integer in [1, {N - g}] (the non-gauge dimension), got {k!r}")
    counter = [0]
    A, matmat = _operator(system, x, mu, counter)
    direct = getattr(system, "direct", None)
    if direct is not None and N > dense_below and Q is None:
        # block LOBPCG preconditioned by the direct solver's shifted factors (solvers/sparse.py): its
        # assembly HVPs, then k HVPs to check the residuals with the true operator
        start = None if previous is None or previous.vectors.shape[0] != N else previous.vectors.cpu().numpy()
        vals, V, spent, converged = direct.lowest_eigenpairs(A, x, k, tol=tol, start=start)  # A.block counted
        counter[0] += spent
        AV = matmat(V)
        res = np.linalg.norm(AV - V * vals[None, :], axis=0) / np.maximum(1.0, np.abs(vals))
        return Spectrum(torch.as_tensor(vals.copy(), dtype=x.dtype), torch.as_tensor(V.copy(), dtype=x.dtype),
                        float(res.max()), counter[0], "shift-invert", converged)
    if N <= dense_below or N - g < 5 * k:  # scipy's LOBPCG needs N - g >= 5k (and goes dense itself below)
        H = matmat(np.eye(N))
        H = 0.5 * (H + H.T)
        if Q is not None:
            U, s, _ = np.linalg.svd(np.eye(N) - Q @ Q.T)
            B = U[:, s > 0.5]  # orthonormal basis of the complement of the orbit
            vals, W = np.linalg.eigh(B.T @ H @ B)
            V = B @ W
        else:
            vals, V = np.linalg.eigh(H)
        vals, V = vals[:k], V[:, :k]
        method, converged = "dense", True
    else:
        rng = np.random.default_rng(seed)
        X = rng.standard_normal((N, k))
        if previous is not None and previous.vectors.shape == (N, k):
            X = previous.vectors.detach().cpu().numpy() + 1e-3 * X / np.sqrt(N)
        op = LinearOperator((N, N), matmat=matmat, matvec=matmat, dtype=np.float64)
        M = _preconditioner(system, A, x, counter)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            vals, V = lobpcg(op, X, Y=Q, M=M, tol=tol, maxiter=maxiter, largest=False)
        converged = not any("not reach" in str(w.message) or "failed" in str(w.message) for w in caught)
        order = np.argsort(vals)
        vals, V = vals[order], V[:, order]
        method = "lobpcg"
    AV = H @ V if method == "dense" else matmat(V)  # LOBPCG's residual check: k HVPs, counted
    res = np.linalg.norm(AV - V * vals[None, :], axis=0) / np.maximum(1.0, np.abs(vals))
    return Spectrum(torch.as_tensor(vals.copy(), dtype=x.dtype), torch.as_tensor(V.copy(), dtype=x.dtype),
                    float(res.max()), counter[0], method, converged)
