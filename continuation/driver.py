"""`continue_path`: one continuation run, from its start to its stop rule, written to a file as it goes.

    continue_path(problem, process, predictor, corrector, control, stop, start=(1.0, 1.0), out="p.nc")

moves (theta, mu) along the equilibrium surface grad_theta J(theta; mu) = 0 by the law of
`process`, one accepted point at a time (continuation/stepper.py), and returns the path dataset
(continuation/path.py). This module holds the loop only: where the run starts is
continuation/start.py, what a step does is the stepper's and the strategies'.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from tqdm import tqdm

from solvers import MINRES

from . import start as starts
from .path import PathWriter, rows_to_dataset
from .projections import NoProjection
from .stepper import ContinuationError, Stepper, Strategies, named
from .strategy import settings_of

__all__ = ["ContinuationError", "continue_path"]


def continue_path(problem, process, predictor, corrector, control, stop, *, projection=None, start=None,
                  theta0=None, equilibrate=True, settle: int = 1, start_from=None, out=None, resume=False,
                  config=None, solver=None, hvp_mode: str = "rev-rev", resample=None, progress=True,
                  checkpoint_every: int = 1):
    """Run one continuation path; returns the path dataset (`xarray.Dataset` along `step`).

    Strategies (objects; continuation/config.py maps names to them): `process` (the law of mu),
    `predictor`, `corrector`, `control` (step control: AdaptiveSteps or FixedSteps), `stop`
    (StopRule), `projection` (onto the process's held functional; default NoProjection).

    Start: `start` = (lambda, gamma) or (lambda, gamma, t) with `theta0` (a parameter pytree;
    default the problem's `init_params(0)`), equilibrated there by the corrector `settle` times
    unless equilibrate=False; or `start_from` = (path, step) of an earlier run (not equilibrated
    again unless equilibrate=True).
    Output: `out` (netCDF; theta at points in OUT.ckpt/, every `checkpoint_every`-th point and the
    last two kept); `resume=True` continues the run in an existing `out` from its last point and
    refuses one written with other settings. The file's attributes hold `settings` (every
    strategy's options, the problem's, the start) and `config` (the TOML configuration given, or
    the settings for a run built in Python).
    Linear algebra: `solver` the Krylov solver of the tangents (default MINRES(rtol=1e-12)),
    `hvp_mode` "rev-rev" or "fwd-rev". `resample`: re-draw a stochastic problem's batch and
    noise between points (default: the problem's `resample_between_points`).
    `progress`: a bar from 0 to 1 toward the stop rule's target (or max_s, or max_steps).

    Raises ContinuationError (one line: the step and the cause) when the start does not
    equilibrate, R, D, C or J are not finite, or `out` exists without resume; ValueError for a
    bad option. A run whose steps are exhausted returns with status "stopped" and the reason.
    """
    projection = projection if projection is not None else NoProjection()
    solver = solver or MINRES(rtol=1e-12)
    strategies = Strategies(process, predictor, corrector, control, stop, projection)
    template = theta0 if theta0 is not None else problem.init_params(0)
    stepper = Stepper(problem, strategies, solver=solver, template=template, hvp_mode=hvp_mode, resample=resample)
    start_settings = {"start": None if start is None else [float(v) for v in start],
                      "from": None if start_from is None else [str(start_from[0]), int(start_from[1])],
                      "equilibrate": bool(equilibrate), "settle": int(settle)}
    settings = {"problem": problem.settings(), **strategies.settings(), "krylov": settings_of(solver),
                "run": {"hvp_mode": hvp_mode, "resample": stepper.resample, "checkpoint_every": checkpoint_every,
                        **start_settings}}
    settings_json = json.dumps(settings, default=str, sort_keys=True)
    attrs = {"problem": problem.name, "process": process.name, "predictor": predictor.name,
             "corrector": corrector.name, "projection": projection.name, "step_control": control.name,
             "corrector_counts": corrector.counts, "held": process.holds or "none",
             "config": json.dumps(config, default=str, sort_keys=True) if config is not None else settings_json,
             "settings": settings_json, "status": "running", "stop_reason": ""}
    out = Path(out) if out is not None else None
    writer, rows = None, []
    try:
        if out is not None and out.exists() and resume:
            starts.same_setup(out, attrs)
            old = starts.load_path(out)
            if old.attrs.get("status") != "running":
                return old
            state, rows = starts.resume(stepper, out, template)
            attrs.update(C0=state.C0, G0="none" if state.G0 is None else state.G0)
            writer = PathWriter(out, attrs, checkpoint_every, rows=rows)
        else:
            if out is not None and out.exists():
                raise ContinuationError(f"{out} exists; pass resume=True (--resume) to continue it, or another --out")
            if start_from is not None:
                x, mu = starts.from_point(*start_from, template)
            elif start is not None:
                vals = list(start) + [0.0] * (3 - len(start))
                mu = torch.tensor(vals, **starts.placed(template))
                x = stepper.system.flatten(template)
            else:
                raise ValueError("continue_path needs start=(lambda, gamma[, t]) or start_from=(path, step)")
            state, row = starts.fresh(stepper, x, mu, equilibrate=equilibrate, settle=settle)
            attrs.update(C0=state.C0, G0="none" if state.G0 is None else state.G0)
            if out is not None:
                writer = PathWriter(out, attrs, checkpoint_every)
            _record(writer, rows, row, state.current)
        origin = {n: float(rows[0][n]) for n in ("lambda", "gamma", "t")}
        bar = tqdm(total=1.0, disable=not progress, unit="", leave=True,
                   bar_format="{desc}{percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]")
        try:
            while not stepper.done(state):
                state, row = stepper.step(state)
                if row is None:
                    break
                _record(writer, rows, row, state.current)
                _show(bar, stop, state, row, rows[0], origin)
        finally:
            bar.close()
    except FloatingPointError as e:
        raise ContinuationError(f"step {len(rows)}: {e}") from e
    status = "finished" if state.status == "running" else state.status
    if writer is not None:
        return writer.finish(status, state.reason)
    return rows_to_dataset(rows, dict(attrs, status=status, stop_reason=state.reason))


def _record(writer, rows, row, point) -> None:
    if writer is not None:
        writer.append(row, point.x, point.mu)  # also appends to writer.rows
        rows[:] = writer.rows
    else:
        rows.append(dict(row, checkpoint=-1))


def _show(bar, stop, state, row, first, origin) -> None:
    if bar.disable:
        return
    bar.n = stop.progress(state.step, state.current.s, named(state.current.mu), origin)
    key = "train_C" if "train_C" in row else "C"
    bar.set_postfix(step=state.step, lam=f"{row['lambda']:.4g}", gam=f"{row['gamma']:.4g}", t=f"{row['t']:.3g}",
                    drift=f"{(row[key] - first[key]) / abs(first[key]):.1e}", grad=f"{row['grad_norm']:.1e}")
