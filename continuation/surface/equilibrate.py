"""One optimisation loop at a fixed mu, and equilibration from scratch built on it.

`optimize` is the only first-order loop here: `steps` updates of a torch optimizer on
J(theta; mu) with a learning-rate schedule k -> eta(k). `equilibrate` (Adam from scratch before a
path starts; paper section 5.1: Adam, learning rate 1e-3, step decay; appendix A: cosine) and
the Adam and SGD correctors (continuation/strategies/correctors.py) differ only in the optimizer, the
schedule and the seeds of their draws.

For stochastic problems the batch and the reparameterisation noise are re-drawn every
`resample_every` updates: training on one fixed noise draw overfits that draw (on the digits
with one sample per image, validation accuracy fell to 52% against 98% with re-drawn noise),
so fixed noise is for the short, local work of a path step, not for training.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from tqdm import tqdm

from problems.base import StochasticProblem
from solvers import check_finite

from continuation.surface.work import count


@dataclass
class OptimizeResult:
    x: torch.Tensor
    updates: int
    grads: int  # gradient evaluations: one per update and the final |grad| check
    grad_norm: float  # at the end, on the problem's draw restored after the loop
    history: list = field(default_factory=list)  # (k, J, |grad|) before update k, every `log_every`
    seconds: float = 0.0


def optimize(system, x0: torch.Tensor, mu: torch.Tensor, *, steps: int,
             optimizer: Callable[[list], torch.optim.Optimizer], schedule: Callable[[int], float],
             resample_every: int | None = None, seed_of_update: Callable[[int], int] | None = None,
             restore_seed: int | None = None, callback: Callable | None = None, callback_every: int = 0,
             log_every: int = 0, progress: bool = False, desc: str = "optimize") -> OptimizeResult:
    """`steps` updates x <- optimizer step on grad_x J(x; mu) with learning rate schedule(k),
    k = 0, ..., steps - 1 (updates done before this one), from x0; returns the final x and
    |grad J| there.

    optimizer: params -> torch.optim.Optimizer (its lr is overwritten by schedule(k) before
    every update), e.g. `lambda p: torch.optim.Adam(p)` or SGD with momentum (paper Remark 4).
    resample_every (stochastic problems only): before update k with k % resample_every == 0 the
    problem draws `seed_of_update(k)`; after the loop it draws `restore_seed` (default: the
    seed it had on entry), so the gradient check and the caller see that draw.
    callback(k, x): after every `callback_every`-th update and after the last (x detached).
    log_every: record (k, J, |grad J|) before update k every that many updates and at the last.
    Cost: steps + 1 gradients (the last one checks |grad J|), no HVPs; counted in the system's ledger.
    """
    problem = system.problem
    redraw = bool(resample_every) and isinstance(problem, StochasticProblem)
    if redraw:
        if seed_of_update is None:
            raise ValueError("resample_every needs seed_of_update (the seed of each draw)")
        restore_seed = problem.seed if restore_seed is None else restore_seed
    x = x0.detach().clone().requires_grad_(True)
    opt = optimizer([x])
    history = []
    start = time.perf_counter()
    for k in tqdm(range(steps), disable=not progress, desc=desc, unit="step", leave=False):
        if redraw and k % resample_every == 0:
            problem.resample(seed_of_update(k))
        for group in opt.param_groups:
            group["lr"] = schedule(k)
        opt.zero_grad()
        J = check_finite(system.objective(x, mu), f"objective at {desc} update {k}")
        J.backward()
        count(system, gradients=1)  # into the system's ledger (continuation/surface/work.py)
        if log_every and (k % log_every == 0 or k == steps - 1):
            history.append((k, float(J.detach()), float(x.grad.norm())))
        opt.step()
        if callback is not None and ((callback_every and (k + 1) % callback_every == 0) or k + 1 == steps):
            callback(k + 1, x.detach())
    if redraw:
        problem.resample(restore_seed)
    x = x.detach()
    gnorm = float(system.gradient(x, mu).norm())
    return OptimizeResult(x, steps, steps + 1, gnorm, history, time.perf_counter() - start)


@dataclass
class EquilibrationResult:
    x: torch.Tensor
    steps: int
    seconds: float
    grad_norm: float  # at the end, on the problem's current batch and noise
    history: list = field(default_factory=list)  # (step, J, |grad|) every `log_every` updates


def learning_rate(k: int, steps: int, lr: float, schedule: str) -> float:
    """cosine: lr (1 + cos(pi k / steps)) / 2; step: lr / 10 every 40% of the run; constant."""
    if schedule == "cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * k / steps))
    if schedule == "step":
        return lr * 0.1 ** int(k / (0.4 * steps))
    if schedule == "constant":
        return lr
    raise ValueError(f"unknown schedule {schedule!r}; valid: cosine, step, constant")


def equilibrate(system, x0: torch.Tensor, mu: torch.Tensor, *, steps: int = 2000, lr: float = 3e-3,
                schedule: str = "cosine", resample_every: int | None = 50, seed: int = 0, log_every: int = 100,
                progress: bool = False, callback=None, callback_every: int = 0,
                desc: str = "equilibrate") -> EquilibrationResult:
    """`steps` Adam updates on J(theta; mu) (`optimize`); returns the parameters and a log of J
    and |grad J|. Draw k of a stochastic problem has seed `seed + k`; the problem ends on draw
    `seed`. Cost: steps + 1 gradients.

    callback(k, x): called after every `callback_every`-th update and after the last, with the
    number of updates done and the parameters (detached), e.g. to record validation metrics."""
    learning_rate(0, steps, lr, schedule)  # validates the schedule name
    start = time.perf_counter()
    res = optimize(system, x0, mu, steps=steps, optimizer=lambda params: torch.optim.Adam(params, lr=lr),
                   schedule=lambda k: learning_rate(k, steps, lr, schedule), resample_every=resample_every,
                   seed_of_update=lambda k: seed + k, restore_seed=seed, callback=callback,
                   callback_every=callback_every, log_every=log_every, progress=progress, desc=desc)
    return EquilibrationResult(res.x, steps, time.perf_counter() - start, res.grad_norm, res.history)
