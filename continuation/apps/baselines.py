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

from problems.base import StochasticProblem

from continuation.surface.equilibrate import equilibrate
from continuation.files.schema import rows_to_dataset
from continuation.surface.system import EquilibriumSystem

def train_and_record(problem, theta0: dict, mu, *, steps: int, lr: float = 1e-3, schedule: str = "cosine",
                     resample_every: int = 1, record_every: int = 0, seed: int = 0, label: str = "fine-tune",
                     progress: bool = False, out=None):
    """Adam on J(theta; mu) from theta0 for `steps` updates (`equilibrate`); returns (dataset, final theta).

    record_every: updates between rows (default steps / 10); the start (update 0) is the first
    row, so a fine-tuning curve starts at the source model's accuracy on the target."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    system = EquilibriumSystem(problem, theta0)
    x0 = system.flatten(theta0).detach()
    mu = torch.as_tensor(mu, dtype=x0.dtype, device=x0.device).reshape(3)
    rows, start = [], time.perf_counter()

    def record(k, x):
        theta = system.unflatten(x)
        row = {"s": k / steps, "updates": k, "lambda": float(mu[0]), "gamma": float(mu[1]), "t": float(mu[2])}
        row.update(problem.evaluation_metrics(theta, mu))
        row.update(problem.validation_metrics(theta))
        row["seconds"] = time.perf_counter() - start
        rows.append(row)

    stochastic = isinstance(problem, StochasticProblem)
    own_seed = problem.seed if stochastic else None
    record(0, x0)
    result = equilibrate(system, x0, mu, steps=steps, lr=lr, schedule=schedule, resample_every=resample_every,
                         seed=7_919 * (seed + 1), progress=progress, callback=record,
                         callback_every=record_every or max(1, steps // 10), desc=label)
    if stochastic:
        problem.resample(own_seed)  # the problem's own batch and noise, as before training
    attrs = {"baseline": label, "problem": problem.name,
             "config": json.dumps({"steps": steps, "lr": lr, "schedule": schedule, "resample_every": resample_every,
                                   "mu": [float(v) for v in mu], "seed": seed}), "status": "finished"}
    ds = rows_to_dataset(rows, attrs)
    if out is not None:
        ds.to_netcdf(out)
    return ds, system.unflatten(result.x)


def fine_tune(problem, theta_source: dict, lam: float, gam: float, **kw):
    """The source model trained on the target (t = 1) at (lambda, gamma)."""
    return train_and_record(problem, theta_source, (lam, gam, 1.0), label="fine-tune", **kw)


def from_scratch(problem, lam: float, gam: float, seed: int = 0, **kw):
    """A model trained on the target (t = 1) at (lambda, gamma) from the problem's initial parameters."""
    return train_and_record(problem, problem.init_params(seed), (lam, gam, 1.0), label="from-scratch", seed=seed,
                            **kw)
