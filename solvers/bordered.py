"""Bordered linear systems and Newton on an equilibrium extended by one scalar condition.

Pseudo-arclength continuation (Keller 1977; Allgower & Georg 1990, ch. 2; BifurcationKit's
`src/continuation/Palc.jl`, `Tangents.jl`) solves, for x in R^N and one scalar parameter p
entering mu along a direction e (mu = mu0 + (p - p0) e):

    [ A     -b ] [dx]   [f]        A = Hess_x f(x, mu)          (N x N, by HVPs only)
    [ c^T    d ] [dp] = [g]        b = -d/dp grad_x f(x, mu)    (one JVP)

a bordered matrix that stays nonsingular at a fold, where A alone is singular (its null vector
is not orthogonal to c, and b is not in range(A)). It is not symmetric: the solve is GMRES
(solvers/krylov.py) on the (N+1)-vector [dx; dp].

Gauge: where f has a continuous symmetry (a `Deflation` with orthonormal Q of the orbit
tangent), A has exact zero modes along Q that the bordering does not remove; the operator is
then P A P + Q Q^T (P = I - Q Q^T), b and c are projected, so the solution has no component
along the orbit and the system is nonsingular on the complement.

Cost of one bordered solve: the GMRES iterations, one HVP each (plus 2 N + 2 g flops), one
matvec a restart and one for the final residual.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from .deflation import Deflation
from .derivatives import check_finite, gradient, hessian_operator, mixed_partial_column
from .krylov import GMRES, MINRES, KrylovResult


def bordered_operator(matvec: Callable, b: torch.Tensor, c: torch.Tensor, d: float,
                      deflation: Deflation | None = None) -> Callable:
    """z = [y; q] (N+1,) -> [A y - b q; c . y + d q], with A -> P A P + Q Q^T under a deflation."""
    n = b.numel()
    if deflation is not None:
        A = deflation.operator(matvec)
        Q = deflation.Q
        op = lambda y: A(y) + Q @ (Q.T @ y)  # noqa: E731
        b, c = deflation.project(b), deflation.project(c)
    else:
        op = matvec

    def apply(z):
        y, q = z[:n], z[n]
        return torch.cat([op(y) - b * q, (torch.dot(c, y) + d * q).reshape(1)])

    return apply


class BorderedPreconditioner:
    """The bordered system's preconditioner from A's M^-1 ~ A^-1: [y; q] -> [M^-1 y; q]. Built (or
    refreshed) from A's products, as the inner one is, whenever the bordered solve prepares it."""

    def __init__(self, inner, matvec: Callable):
        self.inner, self.matvec = inner, matvec

    def ready_for(self, op, like: torch.Tensor) -> "BorderedPreconditioner":
        self.M = self.inner.ready_for(self.matvec, like[:-1])
        return self

    def apply(self, z: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.M.apply(z[:-1]), z[-1:]])


def bordered_solve(solver, matvec: Callable, b, c, d: float, f, g: float,
                   deflation: Deflation | None = None) -> tuple[torch.Tensor, torch.Tensor, KrylovResult]:
    """[[A, -b], [c^T, d]] [y; q] = [f; g] by `solver` (GMRES): (y (N,), q (), KrylovResult).
    A direct solver (one with `solve_bordered`, solvers/sparse.py) solves it on A's factors."""
    if callable(getattr(solver, "solve_bordered", None)):
        return solver.solve_bordered(matvec, b, c, d, f, g, deflation)
    if getattr(solver, "preconditioner", None) is not None:  # A's preconditioner, on the bordered system
        solver = replace(solver, preconditioner=BorderedPreconditioner(solver.preconditioner, matvec))
    n = b.numel()
    if deflation is not None:
        f = deflation.project(f)
    rhs = torch.cat([f, torch.as_tensor([g], dtype=f.dtype, device=f.device)])
    res = solver.solve(bordered_operator(matvec, b, c, d, deflation), rhs)
    y, q = res.x[:n], res.x[n]
    if deflation is not None:
        y = deflation.project(y)
    return y, q, res


@dataclass
class Border:
    """The scalar condition c . (x - x0) + d (p - p0) = 0 on (x, p); `direction` (len(mu),) is how
    p enters mu: mu(p) = mu0 + (p - p0) direction."""

    c: torch.Tensor
    d: float
    x0: torch.Tensor
    mu0: torch.Tensor
    direction: torch.Tensor

    def p(self, mu) -> float:
        i = int(torch.argmax(self.direction.abs()))
        return float(mu[i] - self.mu0[i]) / float(self.direction[i])

    def residual(self, x, mu) -> float:
        return float(torch.dot(self.c, x - self.x0)) + self.d * self.p(mu)


@dataclass
class BorderedNewtonResult:
    x: torch.Tensor
    mu: torch.Tensor
    converged: bool
    status: str  # "converged", "max_iters", "residual_not_decreasing", "linear_solve_failed: ..."
    iters: int
    hvps: int
    grads: int
    grad_norm: float
    border_residual: float
    seconds: float
    history: list = field(default_factory=list)  # ||F|| per iterate
    mixed_partials: int = 0  # columns of -d/dmu grad f (one per bordered iteration)


@dataclass
class BorderedNewton:
    """Newton on F(x, p) = [grad_x f(x, mu(p)); c.(x - x0) + d (p - p0)] = 0, or on grad_x f = 0
    at fixed mu when no border is given.

    No descent is enforced: the iterates converge to any nondegenerate zero of grad f, a
    minimum or a saddle (the upper branch past a fold). Globalisation is on the residual:
    a step is halved until ||F|| decreases by the Armijo factor (1 - 1e-4 t). Linear solves:
    GMRES on the bordered matrix (module docstring), MINRES on A at fixed mu, each to the
    forcing tolerance min(eta_max, ||F||) relative (superlinear, then quadratic convergence).
    Converged when ||grad f|| <= gtol and |border residual| <= gtol. stall_iters = k stops a solve
    whose ||F|| has not halved over the last k iterations (status "stalled"; None: never), for
    probes that may have no root nearby (Newton converging, even linearly at a fold, halves ||F||
    in fewer).
    Cost per iteration: one gradient, one JVP (b, bordered only), the Krylov matvecs (HVPs),
    one gradient per backtracking trial.
    """

    gtol: float = 1e-10
    maxiter: int = 20
    eta_max: float = 1e-2
    rtol_floor: float = 1e-13
    hvp_mode: str = "rev-rev"
    max_backtracks: int = 30
    krylov_maxiter: int | None = None
    stall_iters: int | None = None  # stop ("stalled") when ||F|| has not halved over this many iterations
    linear: object | None = None  # a direct solver (solvers/sparse.py SparseLU) in place of MINRES / GMRES
    preconditioner: object | None = None  # M^-1 ~ A^-1 for MINRES and (on A's block) the bordered GMRES

    def solve(self, f: Callable, x0: torch.Tensor, mu0: torch.Tensor, border: Border | None = None,
              deflation: Callable | None = None) -> BorderedNewtonResult:
        start = time.perf_counter()
        x, mu = x0.detach().clone(), mu0.detach().clone()
        hvps = grads = mixed = 0
        history = []

        def residual(x, mu):
            g = check_finite(gradient(f, x, mu), "gradient")
            r = 0.0 if border is None else border.residual(x, mu)
            return g, r, (float(torch.linalg.vector_norm(g)) ** 2 + r * r) ** 0.5

        g, r, norm = residual(x, mu)
        grads += 1
        status, it = "max_iters", 0
        for it in range(self.maxiter + 1):
            history.append(norm)
            if float(torch.linalg.vector_norm(g)) <= self.gtol and abs(r) <= self.gtol:
                status = "converged"
                break
            if it == self.maxiter:
                break
            k = self.stall_iters
            if k is not None and it >= k and norm > 0.5 * history[-1 - k]:
                status = "stalled"  # past a fold ||F|| has a positive minimum: Newton creeps toward it
                break
            hvp = hessian_operator(f, x, mu, self.hvp_mode)
            defl = deflation(x) if deflation is not None else None
            rtol = max(min(self.eta_max, norm), self.rtol_floor)
            if border is None:
                A = hvp if defl is None else defl.operator(hvp)
                rhs = -g if defl is None else -defl.project(g)
                solver = self.linear or MINRES(rtol=rtol, maxiter=self.krylov_maxiter,
                                               preconditioner=self.preconditioner)
                res = solver.solve(A, rhs)
                dx, dp = res.x, 0.0
            else:
                b = mixed_partial_column(f, x, mu, border.direction)
                mixed += 1
                solver = self.linear or GMRES(rtol=rtol, maxiter=self.krylov_maxiter,
                                              preconditioner=self.preconditioner)
                dx, dp, res = bordered_solve(solver, hvp, b, border.c, border.d, -g, -r, defl)
                dp = float(dp)
            hvps += res.iters
            if not res.converged and res.rel_residual > 0.5:
                status = f"linear_solve_failed: {res.message()}"
                break
            t = 1.0
            for _ in range(self.max_backtracks):
                xt = x + t * dx
                mut = mu if border is None else mu + t * dp * border.direction
                try:
                    gt, rt, nt = residual(xt, mut)
                except FloatingPointError:
                    nt = float("inf")
                grads += 1
                if nt <= (1 - 1e-4 * t) * norm or nt <= self.gtol:
                    break
                t *= 0.5
            else:
                status = "residual_not_decreasing"
                break
            x, mu, g, r, norm = xt, mut, gt, rt, nt
        return BorderedNewtonResult(x, mu, status == "converged", status, it, hvps, grads,
                                    float(torch.linalg.vector_norm(g)), abs(r), time.perf_counter() - start,
                                    history, mixed)
