"""Correctors: bring theta back onto grad_theta J(theta; mu) = 0 at a fixed mu.

- `NewtonCorrector`: damped Newton-CG (solvers.NewtonCG). Quadratic convergence; cost per
  iteration one gradient and the CG iterations' HVPs. The default for deterministic problems.
- `AdamCorrector`: T full-batch Adam updates with the paper's equilibration schedule
  eta(k) = eta_max c (k/T)^2 (1 - k/T)^5, c normalising the peak to eta_max (section 5.1).
  Cost: T gradients. Converged means the final ||grad|| <= gtol.
- `LBFGSCorrector`: torch.optim.LBFGS with a strong-Wolfe line search. Cost: about one
  gradient per iteration, no HVPs.
Each returns a `CorrectorResult` with its work and the final gradient norm.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from solvers import NewtonCG, check_finite


@dataclass
class CorrectorResult:
    x: torch.Tensor
    converged: bool
    status: str
    iters: int
    grad_norm: float
    hvps: int = 0
    grads: int = 0
    seconds: float = 0.0


class Corrector:
    name = "corrector"
    easy_iters = 3  # at most this many iterations: an easy step (the step may grow)
    max_iters = 10  # more than this many: reject the step and shrink

    def correct(self, system, x, mu) -> CorrectorResult:
        raise NotImplementedError


@dataclass
class NewtonCorrector(Corrector):
    """Damped Newton-CG to ||grad J|| <= gtol: one gradient and the CG HVPs per iteration."""

    gtol: float = 1e-10
    maxiter: int = 20
    hvp_mode: str = "rev-rev"
    name = "newton"
    counts = "newton_iters"

    def correct(self, system, x, mu):
        res = NewtonCG(gtol=self.gtol, maxiter=self.maxiter, hvp_mode=self.hvp_mode).solve(system.objective, x, mu)
        return CorrectorResult(res.x, res.converged, res.status, res.iters, res.grad_norm, res.hvps, res.grads,
                               res.seconds)


def paper_schedule(k: int, T: int, eta_max: float) -> float:
    """eta(k) = eta_max c (k/T)^2 (1 - k/T)^5 with c = 1 / max_u u^2 (1-u)^5 (peak at u = 2/7)."""
    peak = (2 / 7) ** 2 * (5 / 7) ** 5
    u = k / T
    return eta_max * u * u * (1 - u) ** 5 / peak


@dataclass
class AdamCorrector(Corrector):
    """`steps` Adam updates on the paper's schedule eta_max c (k/T)^2 (1-k/T)^5.

    resample_every > 0 (stochastic problems): a new batch and noise every that many updates, as
    SGD equilibration does; the step's own draw is restored at the end. With one fixed draw,
    hundreds of updates fit that draw: on the digits, C on fresh noise rose from 0.13 to 1.1
    in one step while C on the step's draw fell to 0.035."""

    steps: int = 500
    eta_max: float = 1.5e-3
    gtol: float = 1e-4
    resample_every: int = 0
    monitor: object = None  # monitor(k, y, mu) every `monitor_every` updates (k = 0: the start), e.g. to log F
    monitor_every: int = 0
    name = "adam"
    counts = "adam_updates"
    easy_iters = 10**9  # a fixed budget: never a reason to shrink or grow
    max_iters = 10**9

    def correct(self, system, x, mu):
        start = time.perf_counter()
        y = x.detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([y], lr=0.0)
        problem = system.problem
        redraw = self.resample_every > 0 and hasattr(problem, "resample")
        own_seed = getattr(problem, "seed", 0)
        if self.monitor is not None and not callable(self.monitor):
            raise ValueError(f"the adam corrector's monitor must be a function (k, x, mu), got {self.monitor!r}")
        watch = self.monitor is not None and self.monitor_every > 0
        if watch:
            self.monitor(0, y.detach(), mu)
        for k in range(1, self.steps + 1):
            if redraw and (k - 1) % self.resample_every == 0:
                problem.resample(1_000_003 * (own_seed + 1) + k)
            for group in opt.param_groups:
                group["lr"] = paper_schedule(k, self.steps + 1, self.eta_max)
            opt.zero_grad()
            J = system.objective(y, mu)
            check_finite(J, "objective during Adam equilibration")
            J.backward()
            opt.step()
            if watch and (k % self.monitor_every == 0 or k == self.steps):
                self.monitor(k, y.detach(), mu)
        if redraw:
            problem.resample(own_seed)
        y = y.detach()
        gnorm = float(system.gradient(y, mu).norm())
        ok = gnorm <= self.gtol
        return CorrectorResult(y, ok, "converged" if ok else "gradient_above_gtol", self.steps, gnorm, 0,
                               self.steps + 1, time.perf_counter() - start)


@dataclass
class LBFGSCorrector(Corrector):
    """torch.optim.LBFGS with a strong-Wolfe line search to ||grad J|| <= gtol; no HVPs."""

    gtol: float = 1e-8
    maxiter: int = 200
    history: int = 20
    name = "lbfgs"
    counts = "lbfgs_iters"
    easy_iters = 15
    max_iters = 150

    def correct(self, system, x, mu):
        start = time.perf_counter()
        y = x.detach().clone().requires_grad_(True)
        # torch stops on the max-norm of the gradient; gtol/sqrt(N) there bounds the 2-norm by gtol
        opt = torch.optim.LBFGS([y], lr=1.0, max_iter=self.maxiter, history_size=self.history,
                                tolerance_grad=self.gtol / y.numel() ** 0.5, tolerance_change=0.0,
                                line_search_fn="strong_wolfe")
        evals = 0

        def closure():
            nonlocal evals
            evals += 1
            opt.zero_grad()
            J = system.objective(y, mu)
            check_finite(J, "objective during L-BFGS")
            J.backward()
            return J

        opt.step(closure)
        y = y.detach()
        gnorm = float(system.gradient(y, mu).norm())
        iters = opt.state[opt._params[0]].get("n_iter", 0)
        ok = gnorm <= self.gtol
        return CorrectorResult(y, ok, "converged" if ok else "max_iters", iters, gnorm, 0, evals,
                               time.perf_counter() - start)


CORRECTORS = {"newton": NewtonCorrector, "adam": AdamCorrector, "lbfgs": LBFGSCorrector}
