"""Newton-CG equilibrator: find x with grad_x f(x, mu) = 0 at fixed mu (a local minimum of f).

Inexact (truncated) Newton: each step solves Hess f p = -g by CG to the forcing tolerance
eta_k = min(eta_max, ||g||) relative (superlinear, eventually quadratic convergence), then an
Armijo backtracking line search on f. If CG meets negative curvature (f is not convex here) the
step is the CG iterate so far, or -g if CG had not moved (Steihaug's rule), so the method still
descends. Cost per Newton step: one gradient, the CG iterations' HVPs, and one objective
evaluation per line-search trial.
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
    status: str  # "converged", "max_iters", "line_search_failed"
    iters: int  # Newton steps taken
    hvps: int  # Hessian-vector products spent in the inner solves
    grads: int  # gradient evaluations
    fevals: int  # objective evaluations (line search)
    grad_norm: float
    value: float
    seconds: float
    history: list = field(default_factory=list)  # (value, grad_norm) per iterate

    def message(self) -> str:
        return (f"Newton-CG {self.status} after {self.iters} steps ({self.hvps} HVPs), "
                f"|grad| = {self.grad_norm:.3e}")


@dataclass
class NewtonCG:
    """Newton-CG with Armijo backtracking; stops when ||grad|| <= gtol."""

    gtol: float = 1e-10
    maxiter: int = 100
    eta_max: float = 0.5
    cg_maxiter: int | None = None
    hvp_mode: str = "fwd-rev"
    armijo: float = 1e-4
    max_backtracks: int = 40

    def solve(self, f: Callable, x0: torch.Tensor, mu: torch.Tensor) -> NewtonResult:
        start = time.perf_counter()
        x = x0.detach().clone()
        hvps = grads = fevals = 0
        value = float(check_finite(f(x, mu), "objective at the starting point"))
        fevals += 1
        history = []
        status = "max_iters"
        it = 0
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
            eta = min(self.eta_max, gnorm)
            inner = CG(rtol=eta, maxiter=self.cg_maxiter).solve(hessian_operator(f, x, mu, self.hvp_mode), -g)
            hvps += inner.iters
            p = inner.x
            slope = float(torch.dot(g, p))
            if inner.status == "negative_curvature" and not slope < 0:
                p, slope = -g, -gnorm**2
            elif not slope < 0:  # CG output not a descent direction (should not happen): fall back
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
        return NewtonResult(x, status == "converged", status, it, hvps, grads, fevals, gnorm, value,
                            time.perf_counter() - start, history)
