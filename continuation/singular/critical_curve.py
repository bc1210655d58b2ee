"""Critical points followed in two multipliers (codimension-two continuation): the phase diagram.

A critical point of the equilibrium surface is a point with grad_x J(x; mu) = 0 where A = Hess_x J
has a zero eigenvalue off the gauge orbit: a fold of a path, or a bifurcation (a latent direction
switching on, a unit collapsing). Along a path in one multiplier p (the `free` one) these points
are isolated (`continuation/singular/events.py` locates them). As a second multiplier a (`along`)
moves they trace a curve p_c(a): a boundary between phases in the (lambda, gamma) plane.

At each value of a, (x, p) is found by Newton's method on the minimally extended system
(Seydel 2010, ch. 5; Govaerts 2000, ch. 3), with the critical eigenvalue itself as the test
function:

    grad_x J(x; p, a) + V0 eps + Q eta = 0              (N equations)
    ell(x; p, a) = (1/m) sum_{i in cluster} l_i(A) = 0  (1: the critical eigenvalue)
    V0^T (x - x_pred) = 0                               (m: bifurcations only, see below)
    Q^T dx = 0                                          (g: a slice through the gauge orbit)

in the unknowns x (N), p, eps (m, bifurcations only) and eta (g). l_i are the eigenvalues of A
off the gauge orbit in ascending order, the cluster is l_mode ... l_{mode + m - 1} (m the
multiplicity: equivalent latent units switch on together), Q an orthonormal basis of the gauge
orbit's tangent (its eta multiplies grad J's exact orthogonality to it and comes out 0).

- **Fold** (the null vector v has v^T b_p != 0, b_p = d grad_x J / dp): eps and the pins are
  absent; the system is square and regular at a quadratic fold (v^T b_p != 0 and
  v^T D^3J(v, v) != 0).
- **Bifurcation on a branch of symmetric points** (v^T b_p = 0: a pitchfork with a reflection
  symmetry, or a trivial branch that persists): {grad J = 0, ell = 0} is singular there, because
  b_p lies in the range of A. The unfolding eps along V0 (the cluster's eigenvectors at the
  prediction) restores the missing column, and the pins V0^T (x - x_pred) = 0 keep x on the
  symmetric branch (its antisymmetric component is zero there and the branch's tangent is
  orthogonal to V0). At a solution eps = -V0^T grad J = 0 up to rounding; a point where |eps| is
  not negligible is not a critical point of J and ends the curve with that reason (Moore 1980;
  Werner & Spence 1984, for the pinned form of the symmetric extended system).

Derivatives: A's products are HVPs; b_p and b_a are forward-mode mixed partials; the gradient of
ell in x and mu is, with the cluster's eigenvectors v_i held fixed (Hellmann-Feynman; for a
cluster that symmetry keeps together the mean is smooth), the gradient of
q(x, mu) = (1/m) sum_i v_i^T Hess_x J(x; mu) v_i: third derivatives D^3 J(v_i, v_i, .) by autodiff
(reverse over forward over reverse, torch.func). Newton's linear system is solved densely below
`dense_below` unknowns (A built from N HVPs in one vmapped block) and by GMRES on a
LinearOperator above it (matrix-free: one HVP per iteration). Each Newton iteration also
computes the lowest mode + m + 1 eigenpairs (`continuation/singular/stability.py`).

Along a: natural continuation with the tangent predictor (the extended Jacobian at the last
point solved against d/da of the residuals), steps halved on failure and grown by 1.5 after a
quick convergence, between min_step and max_step; the last step lands on the end of the range.
A curve ends early, with its reason, where Newton fails at min_step, where another eigenvalue
reaches zero (a codimension-two point: two critical curves meet), or where the free multiplier
leaves (0, inf).

Cost per Newton iteration: N HVPs (dense) or the GMRES iterations' HVPs, the eigenpairs' HVPs,
one gradient, 2 forward-mode mixed partials and m third-derivative gradients. Typical: 2-4
iterations a point.

References: H. B. Keller (1977); G. Moore (1980), "The numerical treatment of non-trivial
bifurcation points", Numer. Funct. Anal. Optim. 2; B. Werner & A. Spence (1984), SIAM J. Numer.
Anal. 21; W. Govaerts (2000), Numerical Methods for Bifurcations of Dynamical Equilibria, SIAM;
R. Seydel (2010), Practical Bifurcation and Stability Analysis, Springer; BifurcationKit.jl's
`continuation(::FoldProblemMinimallyAugmented)` follows folds the same way with a bordered test
function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, gmres

from problems.base import MU_NAMES, mu_index

from continuation.errors import ContinuationError
from continuation.singular.stability import lowest_eigenpairs

KINDS = ("auto", "fold", "bifurcation")


@dataclass
class CriticalPoint:
    """One point of a critical curve.

    x: (N,) parameters; mu: (3,) multipliers (lambda, gamma, t); values: the lowest eigenvalues of
    A there (ascending, off the gauge orbit); vectors: (N, m) the cluster's eigenvectors;
    ell: the cluster's mean eigenvalue (~0); grad_norm: |grad_x J|; eps_norm: |eps| (0 for a
    fold); iterations: Newton's; hvps: the products spent (Hessian and eigenpairs)."""

    x: torch.Tensor
    mu: torch.Tensor
    values: torch.Tensor
    vectors: torch.Tensor
    ell: float
    grad_norm: float
    eps_norm: float
    iterations: int
    hvps: int
    functionals: dict = field(default_factory=dict)
    spectrum: object = None  # the Spectrum at x (its vectors start the next point's eigensolver)


@dataclass
class CriticalCurve:
    """A traced curve: its points in increasing `along`, what it is, and why it ended."""

    points: list
    kind: str
    multiplicity: int
    mode: int
    free: str
    along: str
    ended: dict  # {"low": reason, "high": reason}: "range end" or why it stopped there

    def column(self, name: str) -> np.ndarray:
        """One quantity at every point, in increasing `along`: a multiplier ("lambda", "gamma", "t"),
        a functional ("R", "D", "C", "F", nats per sample), "eig" (the critical eigenvalue, ~0; the
        points' `ell`), "grad_norm", "eps_norm", "iterations" or "hvps"."""
        if name == "eig":
            name = "ell"
        if name in MU_NAMES:
            return np.array([float(p.mu[mu_index(name)]) for p in self.points])
        if name in ("R", "D", "C", "F"):
            return np.array([p.functionals[name] for p in self.points])
        return np.array([float(getattr(p, name)) for p in self.points])


class CriticalCurveTracer:
    """Follows a critical point (fold or bifurcation) of grad_x J = 0 in two multipliers.

    system: an EquilibriumSystem (continuation/surface/system.py) of a deterministic problem.
    free: the multiplier solved for ("lambda", "gamma" or "t"); along: the one stepped.
    mode: the index of the lowest critical eigenvalue among those off the gauge orbit (0: the
    lowest); multiplicity: how many cross together (None: counted at the start, eigenvalues within
    `cluster_tol` of the mode's); kind: "fold", "bifurcation" or "auto" (decided at the start: `_kind`).
    gtol: Newton stops when |grad J| <= gtol and |ell| <= eig_tol (absolute, nats per sample and
    its curvature units). Raises ValueError for a bad option, ContinuationError where Newton fails
    at the start."""

    def __init__(self, system, *, free: str = "lambda", along: str = "gamma", mode: int = 0,
                 multiplicity: int | None = None, kind: str = "auto", gtol: float = 1e-11,
                 eig_tol: float = 1e-10, maxiter: int = 25, dense_below: int = 512, cluster_tol: float = 1e-6):
        for what, name in (("free", free), ("along", along)):
            if name not in MU_NAMES:
                raise ValueError(f"critical curve: {what} must be one of {', '.join(MU_NAMES)}, got {name!r}")
        if free == along:
            raise ValueError(f"critical curve: free and along must be two different multipliers, both are {free!r}")
        if kind not in KINDS:
            raise ValueError(f"critical curve: kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if not (isinstance(mode, int) and mode >= 0):
            raise ValueError(f"critical curve: mode must be an integer >= 0, got {mode!r}")
        if multiplicity is not None and not (isinstance(multiplicity, int) and multiplicity >= 1):
            raise ValueError(f"critical curve: multiplicity must be an integer >= 1, got {multiplicity!r}")
        for name, v in (("gtol", gtol), ("eig_tol", eig_tol), ("cluster_tol", cluster_tol)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"critical curve: {name} must be a positive number, got {v!r}")
        if not (isinstance(maxiter, int) and maxiter >= 1):
            raise ValueError(f"critical curve: maxiter must be an integer >= 1, got {maxiter!r}")
        self.system, self.free, self.along = system, free, along
        self.i_free, self.i_along = mu_index(free), mu_index(along)
        self.mode, self.multiplicity, self.kind = mode, multiplicity, kind
        self.gtol, self.eig_tol, self.maxiter = float(gtol), float(eig_tol), maxiter
        self.dense_below, self.cluster_tol = dense_below, float(cluster_tol)
        self.hvps = 0

    # -- pieces of the extended system ------------------------------------------------------------
    def _mu(self, mu, p=None, a=None):
        mu = mu.detach().clone()
        if p is not None:
            mu[self.i_free] = p
        if a is not None:
            mu[self.i_along] = a
        return mu

    def _spectrum(self, x, mu, previous=None):
        k = self.mode + (self.multiplicity or 1) + 1
        N = x.numel()
        d = self.system.deflation(x)
        g = 0 if d is None else d.size
        k = min(k, N - g)
        spec = lowest_eigenpairs(self.system, x, mu, k, previous=previous, dense_below=self.dense_below)
        self.hvps += spec.hvps
        return spec, d

    def _b(self, x, mu, index):
        """d grad_x J / d mu_index (N,): one forward-mode mixed partial."""
        e = torch.zeros_like(mu)
        e[index] = 1.0
        f = self.system.objective
        return torch.func.jvp(lambda m: torch.func.grad(f, argnums=0)(x, m), (mu,), (e,))[1].detach()

    def _ell_gradients(self, x, mu, V):
        """grad_x and grad_mu of q(x, mu) = (1/m) sum_i v_i^T A(x; mu) v_i, the v_i fixed: third
        derivatives by autodiff (m of them)."""
        f = self.system.objective
        m = V.shape[1]

        def q(y, nu):
            g = lambda z: torch.func.grad(f, argnums=0)(z, nu)  # noqa: E731
            total = 0.0
            for i in range(m):
                v = V[:, i]
                total = total + v @ torch.func.jvp(g, (y,), (v,))[1]
            return total / m

        gx, gmu = torch.func.grad(q, argnums=(0, 1))(x, mu)
        return gx.detach(), gmu.detach()

    def _cluster(self, spec):
        m = self.multiplicity
        if m is None:
            vals = spec.values
            l0 = float(vals[self.mode])
            scale = max(1.0, float(vals.abs().max()))
            m = 1 + sum(1 for v in vals[self.mode + 1:] if abs(float(v) - l0) <= self.cluster_tol * scale)
        return list(range(self.mode, self.mode + m))

    def _jacobian(self, x, mu, V0, Q, gx, gp, bp, pinned):
        """The extended Jacobian as (matvec, size, dense-or-None)."""
        N = x.numel()
        m = V0.shape[1] if pinned else 0
        g = 0 if Q is None else Q.shape[1]
        n = N + 1 + m + g
        A = self.system.hessian(x, mu)

        def split(z):
            return z[:N], z[N], z[N + 1:N + 1 + m], z[N + 1 + m:]

        def matvec(z):
            z = torch.as_tensor(np.asarray(z).reshape(-1), dtype=x.dtype)
            dx, dp, de, dq = split(z)
            top = A(dx) + bp * dp
            if m:
                top = top + V0 @ de
            if g:
                top = top + Q @ dq
            self.hvps += 1
            rows = [top, (gx @ dx + gp * dp).reshape(1)]
            if m:
                rows.append(V0.T @ dx)
            if g:
                rows.append(Q.T @ dx)
            return torch.cat(rows).numpy()

        if n > self.dense_below:
            return matvec, n, None
        H = A.block(torch.eye(N, dtype=x.dtype)).T
        self.hvps += N
        M = np.zeros((n, n))
        M[:N, :N] = (0.5 * (H + H.T)).numpy()
        M[:N, N] = bp.numpy()
        M[N, :N] = gx.numpy()
        M[N, N] = float(gp)
        if m:
            M[:N, N + 1:N + 1 + m] = V0.numpy()
            M[N + 1:N + 1 + m, :N] = V0.T.numpy()
        if g:
            M[:N, N + 1 + m:] = Q.numpy()
            M[N + 1 + m:, :N] = Q.T.numpy()
        return matvec, n, M

    @staticmethod
    def _solve(matvec, n, M, rhs):
        if M is not None:
            return np.linalg.solve(M, rhs)
        op = LinearOperator((n, n), matvec=matvec, dtype=np.float64)
        y, info = gmres(op, rhs, rtol=1e-13, atol=0.0, restart=min(n, 200), maxiter=20)
        if info != 0:
            res = np.linalg.norm(matvec(y) - rhs) / max(np.linalg.norm(rhs), 1e-300)
            if res > 1e-8:
                raise ContinuationError(f"critical curve: GMRES on the extended system did not converge (relative "
                                        f"residual {res:.1e})")
        return y

    # -- Newton at fixed `along` ----------------------------------------------------------------------
    def _kind(self, x, mu, V) -> str:
        """'bifurcation' where b_p = d grad_x J / dp has no component along the null vectors V:
        |V^T b_p| <= 1e-6 |b_p| (b_p in the range of A: a branch of symmetric points), or |b_p| <= 1e-10
        (a trivial branch, grad_x J = 0 for every p; nats per sample per unit parameter); 'fold' otherwise."""
        bp = self._b(x, mu, self.i_free)
        nb = float(bp.norm())
        return "bifurcation" if nb <= 1e-10 or float((V.T @ bp).norm()) <= 1e-6 * nb else "fold"

    def refine(self, x, mu, previous=None, kind=None, _tangent=False):
        """Newton on the extended system at mu's `along` value, from (x, mu's free value).
        Returns (CriticalPoint, status), status "converged" or why not; with _tangent also the
        tangent (dx/da, dp/da) at the converged point."""
        kind = kind or self.kind
        x, mu = x.detach().clone(), mu.detach().clone()
        spec, d = self._spectrum(x, mu, previous)
        cluster = self._cluster(spec)
        if len(cluster) + self.mode > len(spec.values):
            return None, f"the cluster {cluster} exceeds the {len(spec.values)} eigenvalues computed"
        if self.multiplicity is None:
            self.multiplicity = len(cluster)
        if kind == "auto":
            kind = self.kind = self._kind(x, mu, spec.vectors[:, cluster])
        pinned = kind == "bifurcation"
        V0, x_pred = spec.vectors[:, cluster].clone(), x.clone()
        m = len(cluster)
        eps = torch.zeros(m if pinned else 0, dtype=x.dtype)
        status, it = "maxiter", 0
        start_hvps, last_dp = self.hvps, math.inf
        for it in range(self.maxiter + 1):
            grad = self.system.gradient(x, mu).detach()
            ell = float(spec.values[cluster].mean())
            gn = float(grad.norm())
            if not (math.isfinite(gn) and math.isfinite(ell)):
                status = "non-finite residual"
                break
            small_step = last_dp <= max(1e-9 * abs(float(mu[self.i_free])), 1e-15)
            if gn <= self.gtol and abs(ell) <= self.eig_tol and small_step:
                status = "converged"  # the residuals within tolerance and the last step small: quadratic
                break                 # convergence puts the point at rounding
            if it == self.maxiter:
                break
            Q = None if d is None else d.Q
            V = spec.vectors[:, cluster]
            gx, gmu = self._ell_gradients(x, mu, V)
            bp = self._b(x, mu, self.i_free)
            matvec, n, M = self._jacobian(x, mu, V0, Q, gx, float(gmu[self.i_free]), bp, pinned)
            r = grad + (V0 @ eps if pinned else 0.0)
            rows = [r, torch.tensor([ell], dtype=x.dtype)]
            if pinned:
                rows.append(V0.T @ (x - x_pred))
            if Q is not None:
                rows.append(torch.zeros(Q.shape[1], dtype=x.dtype))
            rhs = -torch.cat(rows).numpy()
            try:
                step = torch.as_tensor(self._solve(matvec, n, M, rhs), dtype=x.dtype)
            except np.linalg.LinAlgError:
                status = "singular extended Jacobian"
                break
            N = x.numel()
            x = x + step[:N]
            p = float(mu[self.i_free]) + float(step[N])
            last_dp = abs(float(step[N]))
            if not p > 0 and self.free != "t":
                status = f"{self.free} left (0, inf): {p:.3g}"
                break
            mu = self._mu(mu, p=p)
            if pinned:
                eps = eps + step[N + 1:N + 1 + m]
            spec, d = self._spectrum(x, mu, spec)
        if status != "converged":
            return None, f"Newton on the extended system: {status} after {it} iterations"
        eps_norm = float(eps.norm()) if pinned else 0.0
        if pinned and eps_norm > 1e3 * self.gtol:
            return None, (f"the unfolding eps = {eps_norm:.1e} did not vanish: the point is a critical point of a "
                          f"perturbed J, not of J (is the bifurcation on a branch of symmetric points? kind = "
                          f"'fold' treats it as a fold)")
        f = self.system.functionals(x, mu)
        point = CriticalPoint(x, mu, spec.values.clone(), spec.vectors[:, cluster].clone(), ell, gn, eps_norm, it,
                              self.hvps - start_hvps,
                              {"R": float(f[0]), "D": float(f[1]), "C": float(f[2]),
                               "F": float(self.system.objective(x, mu))}, spec)
        if not _tangent:
            return point, "converged"
        return point, "converged", self._tangent(point, d, pinned, V0)

    def _tangent(self, point, d, pinned, V0):
        """(dx/da, dp/da) at a converged point: the extended Jacobian against -d/da of the residuals."""
        x, mu = point.x, point.mu
        Q = None if d is None else d.Q
        gx, gmu = self._ell_gradients(x, mu, point.vectors)
        bp, ba = self._b(x, mu, self.i_free), self._b(x, mu, self.i_along)
        V = V0 if pinned else point.vectors
        matvec, n, M = self._jacobian(x, mu, V, Q, gx, float(gmu[self.i_free]), bp, pinned)
        N, m = x.numel(), V.shape[1] if pinned else 0
        rows = [ba, gmu[self.i_along].reshape(1)]
        if m:
            rows.append(torch.zeros(m, dtype=x.dtype))
        if Q is not None:
            rows.append(torch.zeros(Q.shape[1], dtype=x.dtype))
        t = torch.as_tensor(self._solve(matvec, n, M, -torch.cat(rows).numpy()), dtype=x.dtype)
        return t[:N], float(t[N])

    # -- the curve ------------------------------------------------------------------------------------
    def start(self, x, mu):
        """The critical point nearest (x, mu) at mu's `along` value (Newton on the extended system).
        Raises ContinuationError where Newton does not converge."""
        out = self.refine(x, mu, _tangent=True)
        if out[0] is None:
            raise ContinuationError(f"critical curve: no critical point found near {self.free} = "
                                    f"{float(mu[self.i_free]):.10g}, {self.along} = {float(mu[self.i_along]):.10g}: "
                                    f"{out[1]}")
        return out

    def trace(self, x, mu, end: float, *, step: float, max_step: float | None = None,
              min_step: float | None = None, progress=None) -> tuple[list, str]:
        """From the critical point near (x, mu) to along = end. Returns (points in the direction of
        travel, the first one the start; the reason it ended: "range end" or why not)."""
        a0 = float(mu[self.i_along])
        if not (isinstance(step, (int, float)) and step > 0 and math.isfinite(step)):
            raise ValueError(f"critical curve: step must be a positive number, got {step!r}")
        max_step = float(max_step or step)
        min_step = float(min_step or step * 1e-4)
        point, _, tangent = self.start(x, mu)
        points, sign = [point], (1.0 if end >= a0 else -1.0)
        h, a = float(step), a0
        previous_index = self._index(point)
        while sign * (end - a) > 1e-14 * max(1.0, abs(end)):
            h = min(h, abs(end - a))
            dx, dp = tangent
            p_now = float(point.mu[self.i_free])
            if self.free != "t" and sign * dp < 0 and h * abs(dp) > 0.5 * p_now:
                # the curve heads for free = 0: approach the axis geometrically (each step at most half the way)
                h = 0.5 * p_now / abs(dp)
                if h < min_step:
                    return points, (f"{self.free} approaches 0 ({self.free} = {p_now:.3g} at {self.along} = {a:.10g}, "
                                    f"{self.along} = {a + sign * p_now / abs(dp):.6g} by the tangent): the curve "
                                    f"leaves the quadrant {self.free} > 0")
            a_new = a + sign * h
            xp = point.x + sign * h * dx
            pp = float(point.mu[self.i_free]) + sign * h * dp
            mu_p = self._mu(point.mu, p=pp, a=a_new)
            out = self.refine(xp, mu_p, previous=point.spectrum, kind=self.kind, _tangent=True) \
                if (pp > 0 or self.free == "t") else (None, f"the prediction left {self.free} > 0")
            ok = out[0] is not None
            if ok:
                new, _, t_new = out
                index = self._index(new)
                if index != previous_index:
                    return points, (f"another eigenvalue reached zero between {self.along} = {a:.10g} and "
                                    f"{a_new:.10g} (a codimension-two point: two critical curves meet)")
            if not ok:
                h /= 2
                if h < min_step:
                    why = (f"step in {self.along} below min_step {min_step:.1e} at {self.along} = {a:.10g} "
                           f"({out[1]})")
                    top = max(float(q.mu[self.i_free]) for q in points)
                    if self.free != "t" and p_now < 0.01 * top and sign * dp < 0:
                        why += (f"; {self.free} = {p_now:.3g} here, falling: the curve likely meets {self.free} = 0 "
                                f"near {self.along} = {a + sign * p_now / abs(dp):.6g} (by the tangent)")
                    return points, why
                continue
            point, tangent, a = new, t_new, a_new
            points.append(point)
            if progress is not None:
                progress(point)
            if new.iterations <= 3:
                h = min(1.5 * h, max_step)
        return points, "range end"

    def _index(self, point) -> int:
        """The eigenvalues below -eig_tol beside the cluster (the cluster is ~0): the count changes
        where another eigenvalue reaches zero."""
        vals = point.values
        tol = max(1e-7, 1e-6 * float(vals.abs().max()))
        outside = [float(v) for i, v in enumerate(vals) if i < self.mode or i >= self.mode + (self.multiplicity or 1)]
        return sum(1 for v in outside if v < -tol) * 1000 + sum(1 for v in outside if abs(v) <= tol)


def follow(system, x, mu, *, free: str = "lambda", along: str = "gamma", low: float, high: float, step: float,
           max_step: float | None = None, min_step: float | None = None, **options) -> CriticalCurve:
    """The critical curve through the critical point near (x, mu), over along in [low, high]
    (mu's along value inside it), traced both ways from there. Options: CriticalCurveTracer's."""
    if not (isinstance(mu, torch.Tensor) and mu.shape == (3,)):
        raise TypeError(f"critical curve: mu must be a tensor of shape (3,) = (lambda, gamma, t), e.g. "
                        f"problems.make_mu(1.0, 1.0); got {type(mu).__name__}")
    if not low < high:
        raise ValueError(f"critical curve: the range of {along} must have low < high, got [{low:g}, {high:g}]")
    a0 = float(mu[mu_index(along)])
    if not (low <= a0 <= high):
        raise ValueError(f"critical curve: the start's {along} = {a0:g} is outside the range [{low:g}, {high:g}]")
    tracer = CriticalCurveTracer(system, free=free, along=along, **options)
    up, why_up = tracer.trace(x, mu, high, step=step, max_step=max_step, min_step=min_step)
    down, why_down = tracer.trace(up[0].x, up[0].mu, low, step=step, max_step=max_step, min_step=min_step)
    points = list(reversed(down[1:])) + up
    return CriticalCurve(points, tracer.kind, tracer.multiplicity, tracer.mode, free, along,
                         {"low": why_down, "high": why_up})


def branch_index(system, x0, mu0, mu1, *, substeps: int = 10, modes: int = 16, gtol: float = 1e-10,
                 dense_below: int = 512):
    """The Morse index at mu1 of the branch through the equilibrium (x0, mu0): natural continuation
    along the segment mu0 -> mu1 in `substeps` fixed-mu Newton solves without a descent requirement
    (solvers/bordered.py BorderedNewton: it stays on saddles), then the lowest `modes` eigenvalues
    (off the gauge orbit) counted below -1e-9 of the largest in magnitude. Returns (x1, index,
    at_least): index None where the branch is not found (Newton fails on the way: a fold between);
    at_least True where every computed eigenvalue is negative and more exist (the index is >= index).
    Cost: the Newton solves' HVPs and one eigensolve."""
    from solvers.bordered import BorderedNewton

    x = x0.detach().clone()
    newton = BorderedNewton(gtol=gtol, maxiter=30, stall_iters=3)
    for k in range(1, substeps + 1):
        mu = mu0 + (mu1 - mu0) * (k / substeps)
        r = newton.solve(system.objective, x, mu, None, system.deflation)
        if not r.converged or float((r.x - x).norm()) > 0.5 * (1.0 + float(x.norm())):
            return None, None, False
        x = r.x
    d = system.deflation(x)
    k = min(modes, x.numel() - (0 if d is None else d.size))
    spec = lowest_eigenpairs(system, x, mu1, k, dense_below=dense_below)
    tol = 1e-9 * max(1.0, float(spec.values.abs().max()))
    index = int((spec.values < -tol).sum())
    return x, index, index == k < x.numel() - (0 if d is None else d.size)
