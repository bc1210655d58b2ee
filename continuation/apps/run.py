"""A run from a configuration: the same as a script calling `continue_path`, in one call."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from continuation.files.config import build_run
from continuation.engine.driver import continue_path
from continuation.engine.options import Output, Start
from continuation.surface.equilibrate import equilibrate
from continuation.errors import ContinuationError, OutputExists
from continuation.files.lock import OutputLock
from continuation.surface.system import EquilibriumSystem


def run_config(config: dict, out=None, *, resume: bool = False, start_from=None, progress=None, on_point=None,
               stop_requested=None):
    """Build every object from `config` (a parsed TOML dict) and run the path; returns the dataset.

    `out` is locked (OUT.lock) before any work: a second run on it, or a folder it cannot write
    to, is refused before pre-training. With `start_from` (path, step) the point is
    re-equilibrated by the corrector unless `[start] equilibrate = false` (a point of another
    problem's path is not on this problem's surface). `on_point(step, row)`: called after every
    point is written, `stop_requested()` after it (continue_path's Output)."""
    r = build_run(config, check_start=start_from is None)
    with OutputLock(out) if out is not None else contextlib.nullcontext():
        return _run(r, config, out, resume, start_from, progress, on_point, stop_requested)


def _run(r, config, out, resume, start_from, progress, on_point, stop_requested):
    problem, start = r["problem"], r["start"]
    show = r["output"]["progress"] if progress is None else progress
    if out is not None and Path(out).exists() and not resume:  # before any work (pre-training takes minutes)
        raise OutputExists(f"{out} exists; use --resume to continue it, or another --out")
    theta0 = problem.init_params(start["seed"])
    fresh = start_from is None and not (resume and out is not None and Path(out).exists())
    if start["train_steps"] > 0 and fresh:
        system = EquilibriumSystem(problem, theta0)
        mu = torch.tensor([start["lambda"], start["gamma"], start["t"]], dtype=system.view.dtype,
                          device=system.flatten(theta0).device)
        try:
            trained = equilibrate(system, system.flatten(theta0), mu, steps=start["train_steps"],
                                  lr=start["train_lr"], schedule=start["train_schedule"],
                                  resample_every=start["train_resample_every"], seed=start["seed"], progress=show)
        except FloatingPointError as e:
            raise ContinuationError(f"pre-training diverged: {str(e).splitlines()[0]} ([start] train_lr = "
                                    f"{start['train_lr']:g}, train_steps = {start['train_steps']}; lower train_lr)") from e
        theta0 = system.unflatten(trained.x)
    mu = (start["lambda"], start["gamma"], start["t"]) if start_from is None else None  # or a point of a path
    return continue_path(
        problem, r["process"], r["predictor"], r["corrector"], r["steps"], r["stop"], projection=r["projection"],
        start=Start(mu=mu, theta0=theta0, equilibrate=start["equilibrate"], settle=start["settle"],
                    from_point=start_from, settings=start),
        output=Output(out, resume=resume, checkpoint_every=r["output"]["checkpoint_every"], progress=show,
                      on_point=on_point, stop_requested=stop_requested, config=config),
        solver=r["krylov"], hvp_mode=r["hvp_mode"], monitor=r["monitor"])
