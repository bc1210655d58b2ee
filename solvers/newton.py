"""Newton-CG equilibrator: find x with grad_x f(x, mu) = 0 at fixed mu (a local minimum of f).

Inexact (truncated) Newton with Levenberg damping: each step solves (Hess f + delta I) p = -g
by CG to the forcing tolerance eta_k = min(eta_max, ||g||) relative (superlinear, eventually
quadratic convergence), then an Armijo backtracking line search on f. Where f is not convex
CG meets negative curvature; delta is then raised past the curvature it found and the solve
retried, and lowered again after full steps, so near a minimum the method is plain Newton.
Cost per Newton step: one gradient, the CG iterations' HVPs (retries included), and one
objective evaluation per line-search trial.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from .derivatives import check_finite, gradient, hessian_operator
from .krylov import CG


@dataclass
class NewtonResult:
    x: torch.Tensor
    converged: bool
    status: str  # "converged", "max_iters", "line_search_failed", "damping_failed"
    iters: int  # Newton steps taken
    hvps: int  # Hessian-vector products spent in the inner solves
    grads: int  # gradient evaluations
    fevals: int  # objective evaluations (line search)
    grad_norm: float
    value: float
    seconds: float
    damping: float = 0.0  # the Levenberg damping at exit (0 near a nondegenerate minimum)
    negative_curvature: int = 0  # inner solves that met negative curvature
    history: list = field(default_factory=list)  # (value, grad_norm) per iterate
    work: list = field(default_factory=list)  # (gradients, HVPs, evaluations) spent up to each iterate (trust region)

    def message(self) -> str:
        return (f"Newton-CG {self.status} after {self.iters} steps ({self.hvps} HVPs), "
                f"|grad| = {self.grad_norm:.3e}")


@dataclass
class NewtonCG:
    """Damped Newton-CG with Armijo backtracking; stops when ||grad|| <= gtol."""

    gtol: float = 1e-10
    maxiter: int = 100
    eta_max: float = 0.5
    cg_maxiter: int | None = None
    hvp_mode: str = "rev-rev"
    armijo: float = 1e-4
    max_backtracks: int = 40
    max_damping_tries: int = 40

    def _direction(self, hvp, g, gnorm, damping):
        """Solve (A + damping I) p = -g, raising damping until CG sees no negative curvature."""
        hvps, met = 0, 0
        for _ in range(self.max_damping_tries):
            inner = CG(rtol=min(self.eta_max, gnorm), maxiter=self.cg_maxiter, damping=damping).solve(hvp, -g)
            hvps += inner.iters
            if inner.status != "negative_curvature":
                return inner.x, damping, hvps, met
            met += 1
            # A has an eigenvalue <= inner.curvature - damping; shift past it with margin
            damping = max(2.0 * damping, 1.5 * (damping - inner.curvature), 1e-8 * max(gnorm, 1.0))
        return None, damping, hvps, met

    def solve(self, f: Callable, x0: torch.Tensor, mu: torch.Tensor, deflation: Callable | None = None) -> NewtonResult:
        """Newton-CG from x0 at mu. deflation: x -> a `Deflation` (or None) of known zero modes of
        Hess f at x (a symmetry of f): each inner solve is then on (P A P) p = -P g, so the step
        has no component along them (solvers/deflation.py)."""
        start = time.perf_counter()
        x = x0.detach().clone()
        hvps = grads = fevals = met_total = 0
        damping = 0.0
        value = float(check_finite(f(x, mu), "objective at the starting point"))
        fevals += 1
        history = []
        status = "max_iters"
        it = 0
        gnorm = float("nan")
        for it in range(self.maxiter + 1):
            g = check_finite(gradient(f, x, mu), "gradient")
            grads += 1
            gnorm = float(torch.linalg.vector_norm(g))
            history.append((value, gnorm))
            if gnorm <= self.gtol:
                status = "converged"
                break
            if it == self.maxiter:
                break
            hvp = hessian_operator(f, x, mu, self.hvp_mode)
            d = deflation(x) if deflation is not None else None
            if d is None:
                p, damping, used, met = self._direction(hvp, g, gnorm, damping)
            else:
                p, damping, used, met = self._direction(d.operator(hvp), d.project(g), gnorm, damping)
            hvps += used
            met_total += met
            if p is None:
                status = "damping_failed"
                break
            slope = float(torch.dot(g, p))
            if not slope < 0:  # not a descent direction (rounding): fall back to steepest descent
                p, slope = -g, -gnorm**2
            # Near the root f changes by O(|g|^2), below its rounding error: allow that much slack.
            slack = 64 * torch.finfo(x.dtype).eps * max(abs(value), 1.0)
            step = 1.0
            for _ in range(self.max_backtracks):
                trial = f(x + step * p, mu)
                fevals += 1
                if torch.isfinite(trial) and float(trial) <= value + self.armijo * step * slope + slack:
                    break
                step *= 0.5
            else:
                status = "line_search_failed"
                break
            x = x + step * p
            value = float(trial)
            if step == 1.0 and met == 0:
                damping = 0.0 if damping < 1e-6 else damping / 4
        return NewtonResult(x, status == "converged", status, it, hvps, grads, fevals, gnorm, value,
                            time.perf_counter() - start, damping, met_total, history)
