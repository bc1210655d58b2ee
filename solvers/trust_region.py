"""Trust-region Newton-CG (Steihaug-Toint): find x with grad_x f(x, mu) = 0 at fixed mu, a local
minimum of f, on a nonconvex f (a network's J) where the damped line-search Newton stalls.

Each outer iteration minimises the quadratic model m(p) = g.p + p.A p / 2 (A = Hess f, by HVPs)
inside the ball |p| <= Delta by conjugate gradients from p = 0 (Steihaug 1983, Toint 1981;
Nocedal & Wright, Numerical Optimization, 2nd ed., Algorithm 7.2): CG stops at the forcing
tolerance |r| <= eta |g|, eta = min(eta_max, |g|) (quadratic convergence near a nondegenerate
minimum, N&W Theorem 7.2), on the boundary when an iterate leaves the ball, or along a direction of
negative curvature to the boundary (which is how the method leaves saddles: the line-search
Newton shifts the Hessian past it instead). The step is accepted when the actual decrease is
at least `accept` times the model's (ratio rho), and Delta follows rho (Algorithm 4.1: a
quarter of the step when rho < 1/4; doubled when rho > 3/4 on the boundary).

Near the minimum the decrease f(x) - f(x + p) = O(|g|^2) falls below f's rounding error; there
the ratio is meaningless and the step is judged by the gradient instead (accepted when |g|
falls). Cost per outer iteration: one gradient, the CG iterations' HVPs plus one for the model
value, one objective evaluation.

Why our own and not a library's: scipy.optimize's trust-ncg / trust-krylov take numpy arrays
(host copies at every HVP, no GPU) and torchmin's trust-ncg builds its own Hessian products by
double backward of a closure; here the products are the caller's (a deflated, counted
operator: solvers/deflation.py, the engine's work ledger) on the problem's device and dtype.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch

from .derivatives import check_finite, gradient, hessian_operator
from .newton import NewtonResult


def _to_boundary(z: torch.Tensor, d: torch.Tensor, radius: float, zz: float | None = None,
                 zd: float | None = None, dd: float | None = None) -> torch.Tensor:
    """z + tau d with tau >= 0 and |z + tau d| = radius (|z| < radius); the norm's inner products
    zz = z.Mz, zd = z.Md, dd = d.Md where given (the M-norm of preconditioned CG), else Euclidean."""
    dd = float(d @ d) if dd is None else dd
    zd = float(z @ d) if zd is None else zd
    zz = float(z @ z) if zz is None else zz
    tau = (-zd + math.sqrt(max(zd * zd + dd * (radius * radius - zz), 0.0))) / dd
    return z + tau * d


def steihaug_cg(hvp: Callable, g: torch.Tensor, radius: float, rtol: float, maxiter: int, precondition=None):
    """Approximate minimiser of g.p + p.A p / 2 over |p|_M <= radius (Nocedal & Wright Alg. 7.2;
    with a preconditioner M^-1 = `precondition` (r -> M^-1 r, symmetric positive definite), the
    preconditioned form of their section 7.2 / Gould, Lucidi, Roma & Toint 1999: the ball is in
    the M-norm, whose inner products z.Mz, z.Md, d.Md follow by recurrences without products with
    M). Without one, M = I.

    Returns (p, how, iters, |p|_M): how is "converged" (|A p + g| <= rtol |g|, Euclidean), "boundary"
    (left the ball), "negative_curvature" (followed d with d.A d <= 0 to the boundary) or
    "max_iters"; iters = HVPs spent."""
    z = torch.zeros_like(g)
    r = g.clone()
    y = r if precondition is None else precondition(r)
    d = -y
    gnorm = float(torch.linalg.vector_norm(g))
    ry = float(r @ y)
    zz, zd, dd = 0.0, 0.0, ry  # z.Mz, z.Md, d.Md (d = -M^-1 r: d.Md = r.M^-1 r)
    for j in range(maxiter):
        Ad = hvp(d)
        dAd = float(d @ Ad)
        if not dAd > 0:
            return _to_boundary(z, d, radius, zz, zd, dd), "negative_curvature", j + 1, radius
        alpha = ry / dAd
        zz_next = zz + 2 * alpha * zd + alpha * alpha * dd
        if zz_next >= radius * radius:
            return _to_boundary(z, d, radius, zz, zd, dd), "boundary", j + 1, radius
        z = z + alpha * d
        r = r + alpha * Ad
        if float(torch.linalg.vector_norm(r)) <= rtol * gnorm:
            return z, "converged", j + 1, math.sqrt(zz_next)
        y = r if precondition is None else precondition(r)
        ry_next = float(r @ y)
        beta = ry_next / ry
        zd = beta * (zd + alpha * dd)
        dd = ry_next + beta * beta * dd
        zz = zz_next
        d = -y + beta * d
        ry = ry_next
    return z, "max_iters", maxiter, math.sqrt(zz)


def exact_subproblem(A: torch.Tensor, g: torch.Tensor, radius: float):
    """The minimiser of g.p + p.A p / 2 over |p| <= radius, exactly, from A's eigendecomposition
    (Moré & Sorensen 1983; Nocedal & Wright section 4.3): p = -(A + sigma I)^-1 g with sigma = 0
    when A is positive definite and the Newton step lies inside, else the sigma >= max(0, -l_min)
    with |p| = radius (bisection), and in the "hard case" (g orthogonal to the lowest
    eigenvector) that step plus the lowest eigenvector to the boundary. Eigenvalues at round-off
    (|l| <= 1e-14 max|l|: deflated gauge modes) are left out. Returns (p, how) as steihaug_cg."""
    l, V = torch.linalg.eigh(0.5 * (A + A.T))
    keep = l.abs() > 1e-14 * float(l.abs().max())
    l, V = l[keep], V[:, keep]
    c = V.T @ g
    lmin = float(l[0])
    norm = lambda sigma: float(torch.linalg.vector_norm(c / (l + sigma)))  # noqa: E731
    if lmin > 0 and norm(0.0) <= radius:
        return -(V @ (c / l)), "converged"
    how = "negative_curvature" if lmin <= 0 else "boundary"
    lo = max(0.0, -lmin)
    floor = lo + 1e-12 * max(float(l.abs().max()), 1.0)
    if norm(floor) < radius:  # the hard case: |p(sigma)| stays inside as sigma -> -l_min
        low = l <= l[0] + 1e-12 * max(float(l.abs().max()), 1.0)
        rest = torch.where(low, torch.zeros_like(c), c / (l + lo))
        p = -(V @ rest)
        return _to_boundary(p, V[:, 0], radius), how
    hi = lo + float(torch.linalg.vector_norm(c)) / radius + 1.0
    while norm(hi) > radius:
        hi *= 2.0
    lo = floor
    for _ in range(200):  # |p(sigma)| decreases in sigma: bisect to |p| = radius
        mid = 0.5 * (lo + hi)
        if norm(mid) > radius:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-15 * hi:
            break
    return -(V @ (c / (l + hi))), how


@dataclass
class TrustRegionNewton:
    """Trust-region Newton-CG (module docstring); stops when |grad| <= gtol.

    radius: the first trust radius (0: |g| at the start); max_radius: its cap; cg_maxiter: CG
    iterations per model solve (None: the dimension); accept: the least rho that takes a step.
    Returns a NewtonResult (status "converged", "max_iters" or "radius_collapsed": Delta fell
    below min_radius, the model no longer predicts f)."""

    gtol: float = 1e-10
    maxiter: int = 200
    radius: float = 0.0
    max_radius: float = 1e3
    min_radius: float = 1e-12
    eta_max: float = 0.5
    cg_maxiter: int | None = None
    accept: float = 0.1
    hvp_mode: str = "rev-rev"
    subproblem: str = "cg"  # "cg": Steihaug-Toint; "dense": exact, A assembled from N HVPs (small N)
    preconditioner: object | None = None  # solvers/preconditioners.py; the ball is then in its M-norm

    def solve(self, f: Callable, x0: torch.Tensor, mu: torch.Tensor, deflation: Callable | None = None) -> NewtonResult:
        """From x0 at mu. deflation: x -> a Deflation of known zero modes of Hess f (or None):
        the model is then solved on (P A P) p = -P g, steps have no component along them."""
        start = time.perf_counter()
        x = x0.detach().clone()
        hvps = grads = fevals = 0
        value = float(check_finite(f(x, mu), "objective at the starting point"))
        fevals += 1
        g = check_finite(gradient(f, x, mu), "gradient")
        grads += 1
        gnorm = float(torch.linalg.vector_norm(g))
        radius = self.radius if self.radius > 0 else max(gnorm, 1e-3)
        eps = torch.finfo(x.dtype).eps
        history, work = [(value, gnorm)], [(grads, hvps, fevals)]
        status, it, negative = "max_iters", 0, 0
        cg_maxiter = self.cg_maxiter or x.numel()
        for it in range(1, self.maxiter + 1):
            if gnorm <= self.gtol:
                status, it = "converged", it - 1
                break
            hvp = hessian_operator(f, x, mu, self.hvp_mode)
            d = deflation(x) if deflation is not None else None
            op, rhs = (hvp, g) if d is None else (d.operator(hvp), d.project(g))
            if self.subproblem == "dense":
                eye = torch.eye(x.numel(), dtype=x.dtype, device=x.device)
                A = torch.cat([torch.func.vmap(op)(eye[i: i + 128]) for i in range(0, x.numel(), 128)])
                p, how = exact_subproblem(A, rhs, radius)
                hvps += x.numel()
                predicted = -(float(g @ p) + 0.5 * float(p @ (A @ p)))
            else:
                eta = min(self.eta_max, gnorm)
                M = None
                if self.preconditioner is not None:
                    before = self.preconditioner.build_products
                    M = self.preconditioner.ready_for(op, rhs)
                    hvps += M.build_products - before
                p, how, used, pnorm = steihaug_cg(op, rhs, radius, eta, cg_maxiter, None if M is None else M.apply)
                hvps += used + 1
                predicted = -(float(g @ p) + 0.5 * float(p @ op(p)))
            negative += how == "negative_curvature"
            trial_x = x + p
            trial = f(trial_x, mu)
            fevals += 1
            plen = float(torch.linalg.vector_norm(p)) if self.subproblem == "dense" else pnorm
            if not torch.isfinite(trial):
                radius = 0.25 * plen
            else:
                actual = value - float(trial)
                noise = 100 * eps * max(abs(value), 1.0)
                if predicted <= noise:  # below f's rounding error: judge by the gradient
                    g_trial = gradient(f, trial_x, mu)
                    grads += 1
                    rho = 1.0 if float(torch.linalg.vector_norm(g_trial)) < gnorm else 0.0
                else:
                    rho, g_trial = actual / predicted, None
                if rho < 0.25:
                    radius = 0.25 * plen
                elif rho > 0.75 and how in ("boundary", "negative_curvature"):
                    radius = min(2.0 * radius, self.max_radius)
                if rho > self.accept:
                    x, value = trial_x, float(trial)
                    g = g_trial if g_trial is not None else check_finite(gradient(f, x, mu), "gradient")
                    grads += g_trial is None
                    gnorm = float(torch.linalg.vector_norm(g))
            history.append((value, gnorm))
            work.append((grads, hvps, fevals))
            if radius < self.min_radius:
                status = "radius_collapsed"
                break
        else:
            if gnorm <= self.gtol:
                status = "converged"
        return NewtonResult(x, status == "converged", status, it, hvps, grads, fevals, gnorm, value,
                            time.perf_counter() - start, 0.0, negative, history, work)
