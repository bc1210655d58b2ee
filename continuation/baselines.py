"""Baselines for transfer (paper Fig. 5b and 6b), in the path dataset format so that one plot
overlays them on a transfer path: fine-tuning the source model on the target, and training on
the target from scratch. Both are Adam at a fixed mu = (lambda, gamma, t = 1), recorded every
`record_every` updates; s is the fraction of the updates done (0 -> 1, like t on a transfer
path), `updates` the count.

Each row: s, updates, lambda, gamma, t, train_R, train_D, train_C (the problem's fixed-noise
evaluation at mu), the validation metrics (val_loss, val_acc on the target, source_val_* for a
transfer problem), seconds.
"""

from __future__ import annotations

import json
import time

import torch
from tqdm import tqdm

from solvers import check_finite

from .equilibrate import learning_rate
from .path import rows_to_dataset
from .system import EquilibriumSystem

BASELINES = ("fine-tune", "from-scratch")


def train_and_record(problem, theta0: dict, mu, *, steps: int, lr: float = 1e-3, schedule: str = "cosine",
                     resample_every: int = 1, record_every: int = 0, seed: int = 0, label: str = "fine-tune",
                     progress: bool = False, out=None):
    """Adam on J(theta; mu) from theta0 for `steps` updates; returns (dataset, final theta).

    record_every: updates between rows (default steps / 10); the start (update 0) is the first
    row, so a fine-tuning curve starts at the source model's accuracy on the target."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    learning_rate(0, steps, lr, schedule)  # validates the schedule name
    record_every = record_every or max(1, steps // 10)
    system = EquilibriumSystem(problem, theta0)
    x = system.flatten(theta0).detach().clone()
    mu = torch.as_tensor(mu, dtype=x.dtype, device=x.device).reshape(3)
    can_resample = resample_every > 0 and hasattr(problem, "resample")
    own_seed = getattr(problem, "seed", 0)
    rows, start = [], time.perf_counter()

    def record(k):
        theta = system.unflatten(x.detach())
        row = {"s": k / steps, "updates": k, "lambda": float(mu[0]), "gamma": float(mu[1]), "t": float(mu[2])}
        evaluation = getattr(problem, "evaluation_metrics", None)
        if evaluation is not None:
            row.update(evaluation(theta, mu))
        validation = getattr(problem, "validation_metrics", None)
        if validation is not None:
            row.update(validation(theta))
        row["seconds"] = time.perf_counter() - start
        rows.append(row)

    record(0)
    x.requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    for k in tqdm(range(steps), disable=not progress, desc=label, unit="step", leave=False):
        if can_resample and k % resample_every == 0:
            problem.resample(7_919 * (seed + 1) + k)
        for group in opt.param_groups:
            group["lr"] = learning_rate(k, steps, lr, schedule)
        opt.zero_grad()
        J = check_finite(system.objective(x, mu), f"objective at {label} update {k}")
        J.backward()
        opt.step()
        if (k + 1) % record_every == 0 or k + 1 == steps:
            record(k + 1)
    if can_resample:
        problem.resample(own_seed)
    attrs = {"baseline": label, "problem": getattr(problem, "name", type(problem).__name__),
             "config": json.dumps({"steps": steps, "lr": lr, "schedule": schedule, "resample_every": resample_every,
                                   "mu": [float(v) for v in mu], "seed": seed}), "status": "finished"}
    ds = rows_to_dataset(rows, attrs)
    if out is not None:
        ds.to_netcdf(out)
    return ds, system.unflatten(x.detach())


def fine_tune(problem, theta_source: dict, lam: float, gam: float, **kw):
    """The source model trained on the target (t = 1) at (lambda, gamma)."""
    return train_and_record(problem, theta_source, (lam, gam, 1.0), label="fine-tune", **kw)


def from_scratch(problem, lam: float, gam: float, seed: int = 0, **kw):
    """A model trained on the target (t = 1) at (lambda, gamma) from the problem's initial parameters."""
    return train_and_record(problem, problem.init_params(seed), (lam, gam, 1.0), label="from-scratch", seed=seed,
                            **kw)
