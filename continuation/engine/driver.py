"""`continue_path`: one continuation run, from its start to its stop rule, written to a file as it goes.

    continue_path(problem, process, predictor, corrector, control, stop, start=(1.0, 1.0), out="p.nc")

moves (theta, mu) along the equilibrium surface grad_theta J(theta; mu) = 0 by the law of
`process`, one accepted point at a time (continuation/engine/stepper.py), and returns the path dataset
(continuation/files/path.py). This module holds the loop only: where the run starts is
continuation/engine/start.py, what a step does is the stepper's and the strategies'.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch
from tqdm import tqdm

from solvers import MINRES

from continuation.engine import start as starts
from problems.base import StochasticProblem

from continuation.strategies.checks import _leaves, check_inputs, check_strategies
from continuation.singular.monitor import Monitor
from continuation.errors import ContinuationError, OutputExists, RunInterrupted
from continuation.files.lock import OutputLock
from continuation.files.writer import PathWriter
from continuation.files.schema import dataset_to_rows, journal_file, rows_to_dataset
from continuation.strategies.projections import NoProjection
from continuation.engine.interrupts import Interrupts
from continuation.engine.state import dump_slots, named
from continuation.engine.stepper import Stepper, Strategies
from continuation.strategies.base import settings_of

__all__ = ["ContinuationError", "RunInterrupted", "continue_path"]


def continue_path(problem, process, predictor, corrector, control, stop, *, projection=None, start=None,
                  theta0=None, equilibrate=True, settle: int = 1, start_from=None, out=None, resume=False,
                  config=None, solver=None, hvp_mode: str = "rev-rev", resample=None, progress=True,
                  checkpoint_every: int = 1, start_settings: dict | None = None, monitor="auto", on_point=None):
    """Run one continuation path; returns the path dataset (`xarray.Dataset` along `step`).

    Strategies (objects; continuation/files/config.py maps names to them): `process` (the law of mu),
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
    Linear algebra: `solver` the Krylov solver of the tangents (default MINRES()),
    `hvp_mode` "rev-rev" or "fwd-rev". `resample`: re-draw a stochastic problem's batch and
    noise between points (default: the problem's `resample_between_points`).
    `progress`: a bar from 0 to 1 toward the stop rule's target (or max_s, or max_steps).
    `monitor`: stability monitoring and events (continuation/monitor.Monitor; the path gets `eig`
    along `mode`, `morse_index`, `monitor_hvps` and the `event` dimension); "auto" (default):
    Monitor() for a deterministic problem, none for a stochastic one (the eigenvalues of a
    minibatch Hessian cost HVPs and are noisy: ask for them with a Monitor); None: off.
    `on_point`: called as on_point(step, row) after every point is written (a sweep's progress).
    `start_settings`: how theta0 was made (run_config passes its [start] table: seed, pre-training),
    recorded with the settings; a Python run records a SHA-256 of theta0's bytes instead.

    Raises ContinuationError (one line: the step and the cause) when the start does not
    equilibrate, R, D, C or J are not finite, or `out` exists without resume; ValueError for a
    bad option. The returned status is "finished" when the stop rule's end was reached, else
    "stopped" with the reason (steps exhausted, a budget spent before the target, no progress,
    running away from the target: StopRule.judge).

    Faults (continuation/errors.py): `out` is locked for the run (OUT.lock with this pid;
    OutputLocked when another live run holds it); a write that fails (no space left, read-only)
    raises OutputNotWritable and leaves no OUT.tmp; SIGINT / SIGTERM (from the main thread)
    let the current write finish and raise RunInterrupted (exit_code 130 / 143): the file keeps
    every point written, with status "running", and resumes with resume=True.
    """
    start = check_inputs(problem, process, stop, start=start, theta0=theta0, start_from=start_from,
                         checkpoint_every=checkpoint_every)
    check_strategies(process, predictor, corrector)
    projection = projection if projection is not None else NoProjection()
    solver = solver or MINRES()
    strategies = Strategies(process, predictor, corrector, control, stop, projection)
    template = theta0 if theta0 is not None else problem.init_params(0)
    if isinstance(monitor, str) and monitor == "auto":
        size = sum(v.numel() for v in _leaves(template).values())
        monitor = None if isinstance(problem, StochasticProblem) else Monitor(modes=min(Monitor.modes, size))
    if monitor is not None and not isinstance(monitor, Monitor):
        raise ValueError(f"monitor must be a continuation.singular.monitor.Monitor, None or 'auto', got {monitor!r}")
    stepper = Stepper(problem, strategies, solver=solver, template=template, hvp_mode=hvp_mode, resample=resample,
                      monitor=monitor)
    run = {"start": None if start is None else [float(v) for v in start] + [0.0] * (3 - len(start)),
           "from": None if start_from is None else [str(start_from[0]), int(start_from[1])],
           "equilibrate": bool(equilibrate), "settle": int(settle), "hvp_mode": hvp_mode,
           "resample": stepper.resample, "checkpoint_every": checkpoint_every}
    settings = {"problem": problem.settings(), **strategies.settings(), "krylov": settings_of(solver), "run": run,
                "monitor": None if monitor is None else settings_of(monitor),
                "theta0": settings_of(start_settings) if start_settings is not None else _fingerprint(template)}
    settings_json = json.dumps(settings_of(settings), default=str, sort_keys=True)
    attrs = {"problem": problem.name, "process": process.name, "predictor": predictor.name,
             "corrector": corrector.name, "projection": projection.name, "step_control": control.name,
             "monitor": "none" if monitor is None else monitor.name,
             "corrector_counts": corrector.counts,
             "held": (process.holds or "none") + (f" and {process.also_holds}" if process.also_holds else ""),
             "config": json.dumps(config, default=str, sort_keys=True) if config is not None else settings_json,
             "settings": settings_json, "status": "running", "stop_reason": ""}
    out = Path(out) if out is not None else None
    writer, rows = None, []
    with OutputLock(out) if out is not None else contextlib.nullcontext(), Interrupts(out, resume) as guard:
        try:
            if out is not None and out.exists() and resume:
                starts.same_setup(out, attrs)
                old = starts.load_path(out)
                if old.attrs.get("status") != "running":
                    if journal_file(out).exists():  # killed inside finish: the journal has the status, OUT not yet
                        done = PathWriter(out, dict(old.attrs), checkpoint_every, rows=dataset_to_rows(old),
                                          critical=guard.critical)
                        return done.finish(old.attrs["status"], old.attrs.get("stop_reason", ""))
                    return old
                state, rows = starts.resume(stepper, out, template)
                attrs.update({k: old.attrs[k] for k in ("C0", "G0", "H0", "H_scale", "start_draw") if k in old.attrs})
                writer = guard.writer = PathWriter(out, attrs, checkpoint_every, rows=rows, critical=guard.critical)
            else:
                if out is not None and out.exists():
                    raise OutputExists(f"{out} exists; pass resume=True (--resume) to continue it, or another --out")
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
                if state.H0 is not None:
                    attrs["H0"] = state.H0  # the second held functional's start value (geodesic transfer)
                    attrs["H_scale"] = state.H_scale  # the scale of its relative drift
                if isinstance(problem, StochasticProblem):
                    attrs["start_draw"] = int(problem.seed)  # the draw of point 0 (a resume there redraws it)
                if out is not None:
                    writer = guard.writer = PathWriter(out, attrs, checkpoint_every, critical=guard.critical)
                _record(writer, rows, row, state)
                if on_point is not None:
                    on_point(0, rows[-1])
            origin = {n: float(rows[0][n]) for n in ("lambda", "gamma", "t")}
            bar = tqdm(total=1.0, disable=not progress, unit="", leave=True,
                       bar_format="{desc}{percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]")
            try:
                while not stepper.done(state):
                    state, row = stepper.step(state)
                    if row is None:
                        break
                    _record(writer, rows, row, state)
                    if on_point is not None:
                        on_point(len(rows) - 1, rows[-1])
                    _show(bar, stop, state, row, rows[0], origin)
            finally:
                bar.close()
        except FloatingPointError as e:
            raise ContinuationError(f"step {len(rows)}: {e}") from e
        guard.finishing = True  # a signal from here on is too late to lose anything: the run ends normally
        status = state.status if state.status != "running" else "stopped"
        if writer is not None:
            return writer.finish(status, state.reason)
        return rows_to_dataset(rows, dict(attrs, status=status, stop_reason=state.reason))


def _fingerprint(theta) -> dict:
    """SHA-256 of theta0's bytes (leaves in order): a resume with other initial parameters differs."""
    import hashlib

    h = hashlib.sha256()
    for leaf in torch.utils._pytree.tree_leaves(theta):
        h.update(leaf.detach().cpu().contiguous().numpy().tobytes())
    return {"sha256": h.hexdigest()}


def _record(writer, rows, row, state) -> None:
    if writer is not None:
        writer.append(row, state.current.x, state.current.mu, dump_slots(state.slots))  # also appends to writer.rows
        rows[:] = writer.rows
    else:
        rows.append(dict(row, checkpoint=-1))


def _show(bar, stop, state, row, first, origin) -> None:
    if bar.disable:
        return
    bar.n = stop.progress(state.step, state.current.s, named(state.current.mu), origin)
    key = "train_C" if "train_C" in row else "C"
    bar.set_postfix(step=state.step, lam=f"{row['lambda']:.4g}", gam=f"{row['gamma']:.4g}", t=f"{row['t']:.3g}",
                    drift=f"{(row[key] - first[key]) / abs(first[key]):.1e}" if first[key] != 0 else "n/a", grad=f"{row['grad_norm']:.1e}")
