"""Equilibration from scratch: Adam on J(theta; mu) at fixed mu, to reach the surface before a
path starts (paper section 5.1: Adam, learning rate 1e-3, step decay; appendix A: cosine).

For stochastic problems (`problem.resample`), the batch and the reparameterisation noise are
re-drawn every `resample_every` updates: training on one fixed noise draw overfits that draw
(on the digits with one sample per image, validation accuracy fell to 52% against 98% with
re-drawn noise), so fixed noise is for the short, local work of a path step, not for training.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from solvers import check_finite


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
    """`steps` Adam updates on J(theta; mu); returns the parameters and a log of J and |grad J|.

    callback(k, x): called after every `callback_every`-th update and after the last, with the
    number of updates done and the parameters (detached), e.g. to record validation metrics."""
    learning_rate(0, steps, lr, schedule)  # validates the schedule name
    problem = system.problem
    can_resample = resample_every and hasattr(problem, "resample")
    x = x0.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    history = []
    start = time.perf_counter()
    for k in tqdm(range(steps), disable=not progress, desc=desc, unit="step", leave=False):
        if can_resample and k % resample_every == 0:
            problem.resample(seed + k)
        for group in opt.param_groups:
            group["lr"] = learning_rate(k, steps, lr, schedule)
        opt.zero_grad()
        J = check_finite(system.objective(x, mu), f"objective at {desc} update {k}")
        J.backward()
        if k % log_every == 0 or k == steps - 1:
            history.append((k, float(J.detach()), float(x.grad.norm())))
        opt.step()
        if callback is not None and ((callback_every and (k + 1) % callback_every == 0) or k + 1 == steps):
            callback(k + 1, x.detach())
    if can_resample:
        problem.resample(seed)
    x = x.detach()
    return EquilibrationResult(x, steps, time.perf_counter() - start, float(system.gradient(x, mu).norm()), history)
