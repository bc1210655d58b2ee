"""`continue_path`: one continuation run, from its start to its stop rule, written to a file as it goes.

    continue_path(problem, process, predictor, corrector, control, stop, start=(1.0, 1.0), output="p.nc")

moves (theta, mu) along the equilibrium surface grad_theta J(theta; mu) = 0 by the law of
`process`, one accepted point at a time (continuation/engine/stepper.py), and returns the path dataset
(continuation/files/path.py). This module holds the loop only: its options are
continuation/engine/options.py, where the run starts continuation/engine/start.py, the signals
continuation/engine/interrupts.py; what a step does is the stepper's and the strategies'.
"""

from __future__ import annotations

import hashlib
import json
import math
import signal
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import torch
from tqdm import tqdm

from solvers import MINRES

from continuation.engine import start as starts
from problems.base import StochasticProblem

from continuation.strategies.checks import check_roles, _leaves, check_inputs, check_combination
from continuation.singular.monitor import Monitor
from continuation.errors import ContinuationError, OutputExists, RunInterrupted
from continuation.files.lock import OutputLock
from continuation.files.writer import PathWriter
from continuation.files.schema import dataset_to_rows, journal_file, rows_to_dataset
from continuation.strategies.projections import NoProjection
from continuation.engine.interrupts import Interrupted, Interrupts
from continuation.engine.options import Output, Start, as_output, as_start
from continuation.engine.state import dump_slots, named
from continuation.engine.stepper import Stepper, Strategies
from continuation.strategies.base import settings_of

__all__ = ["ContinuationError", "Output", "RunInterrupted", "Start", "continue_path"]


def continue_path(problem, process, predictor, corrector, control, stop, *, start, output=None, projection=None,
                  solver=None, hvp_mode: str = "rev-rev", resample=None, monitor="auto"):
    """Run one continuation path; returns the path dataset (`xarray.Dataset` along `step`).

    Moves (theta, mu), mu = (lambda, gamma, t), along grad_theta J(theta; mu) = 0 by the law of
    `process`, from `start` until the stop rule ends the run.

    Strategies (objects; continuation/files/config.py maps names to them): `process` (the law of mu),
    `predictor`, `corrector`, `control` (step control: AdaptiveSteps or FixedSteps), `stop`
    (StopRule), `projection` (onto the process's held functional; default NoProjection).

    `start` (continuation/engine/options.py Start, or (lambda, gamma[, t]) for Start(mu=...)):
    `mu` with `theta0` (a parameter pytree; default the problem's `init_params(0)`), or
    `from_point` = (path, step) of an earlier run; the point is equilibrated by the corrector
    `settle` times unless `equilibrate=False` (a from_point too); `settings`: how theta0 was made
    (run_config passes its [start] table: seed, pre-training), recorded with the settings (a
    Python run records a SHA-256 of theta0's bytes instead).

    `output` (Output, or a path for Output(path=...); default None: in memory): `path` (netCDF;
    theta at points in PATH.ckpt/, every `checkpoint_every`-th point and the last two kept);
    `resume=True` continues the run in an existing `path` from its last point and refuses one
    written with other settings; `progress`: a bar from 0 to 1 toward the stop rule's target (or
    max_s, or max_steps); `on_point`: called as on_point(step, row) after every point is written
    (a sweep's progress); `config`: the TOML configuration given. The file's attributes hold
    `settings` (every strategy's options, the problem's, the start) and `config` (the TOML
    configuration, or the settings for a run built in Python).

    Linear algebra: `solver` the Krylov solver of the tangents (default MINRES()),
    `hvp_mode` "rev-rev" or "fwd-rev". `resample`: re-draw a stochastic problem's batch and
    noise between points (default: the problem's `resample_between_points`).
    `monitor`: stability monitoring and events (continuation.singular.monitor.Monitor; the path gets
    `eig` along `mode`, `morse_index`, `monitor_hvps` and the `event` dimension); "auto" (default):
    Monitor() for a deterministic problem, none for a stochastic one (the eigenvalues of a
    minibatch Hessian cost HVPs and are noisy: ask for them with a Monitor); None: off.

    Raises ContinuationError (one line: the step and the cause) when the start does not
    equilibrate, R, D, C or J are not finite; OutputExists when the output exists without resume;
    SetupMismatch when resuming one written with other settings; ValueError (one line naming the
    option) for a bad option, or for an argument that is not of its role (a string where a
    strategy object is needed, None for the problem: strategies/checks.py check_roles). The returned status is "finished" when the stop rule's end was
    reached, else "stopped" with the reason (steps exhausted, a budget spent before the target, no
    progress, running away from the target: StopRule.judge). Resuming a run that has ended returns
    its file as it is.

    Faults (continuation/errors.py): the output is locked for the run (PATH.lock with this pid;
    OutputLocked when another live run holds it); a write that fails (no space left, read-only)
    raises OutputNotWritable and leaves no PATH.tmp; SIGINT / SIGTERM (from the main thread)
    let the current write finish and raise RunInterrupted (exit_code 130 / 143): the file keeps
    every point written, with status "running", and resumes with resume=True.
    """
    check_roles(problem=problem, process=process, predictor=predictor, corrector=corrector, control=control,
                stop=stop, **({} if projection is None else {"projection": projection}),
                **({} if solver is None else {"solver": solver}))
    start, output = as_start(start), as_output(output)
    check_combination(problem, process, predictor, corrector, projection, monitor)
    start = replace(start, mu=check_inputs(problem, process, stop, start=start.mu, theta0=start.theta0,
                                           from_point=start.from_point, checkpoint_every=output.checkpoint_every))
    strategies = Strategies(process, predictor, corrector, control, stop,
                            projection if projection is not None else NoProjection())
    template = start.theta0 if start.theta0 is not None else problem.init_params(0)
    stepper = Stepper(problem, strategies, solver=solver or MINRES(), template=template, hvp_mode=hvp_mode,
                      resample=resample, monitor=_monitor(monitor, problem, template))
    attrs = _attrs(stepper, start, output, template, hvp_mode)
    out = Path(output.path) if output.path is not None else None
    if out is not None and out.is_dir():
        raise OutputExists(f"output {out} is a folder; give the path file's name in it, e.g. {out / 'path.nc'}")
    rows = []  # the path's rows so far (a resumed run's included)
    with OutputLock(out) if out is not None else nullcontext(), Interrupts(out, output.resume) as guard:
        try:
            state, writer, ended = _begin(stepper, start, output, out, attrs, template, guard, rows)
            if ended is not None:
                return ended
            state = _loop(stepper, state, writer, rows, output)
        except FloatingPointError as e:
            raise ContinuationError(f"step {len(rows)}: {e}") from e
        guard.finishing = True  # a signal from here on is too late to lose anything: the run ends normally
        status = state.status if state.status != "running" else "stopped"
        if writer is not None:
            return writer.finish(status, state.reason)
        return rows_to_dataset(rows, dict(attrs, status=status, stop_reason=state.reason))


def _monitor(monitor, problem, template) -> Monitor | None:
    """The run's monitor: "auto" is Monitor() for a deterministic problem, None for a stochastic one."""
    if isinstance(monitor, str) and monitor == "auto":
        size = sum(v.numel() for v in _leaves(template).values())
        return None if isinstance(problem, StochasticProblem) else Monitor(modes=min(Monitor.modes, size))
    if monitor is not None and not isinstance(monitor, Monitor):
        raise ValueError(f"monitor must be a continuation.singular.monitor.Monitor, None or 'auto', got {monitor!r}")
    return monitor


def _attrs(stepper: Stepper, start: Start, output: Output, template, hvp_mode: str) -> dict:
    """The file's attributes before the first point: the strategies' names, `settings` (every option:
    the strategies', the problem's, the start's; what a resume compares) and `config`."""
    s, monitor, mu = stepper.s, stepper.monitor, start.mu
    run = {"start": None if mu is None else [float(v) for v in mu] + [0.0] * (3 - len(mu)),
           "from": None if start.from_point is None else [str(start.from_point[0]), int(start.from_point[1])],
           "equilibrate": bool(start.equilibrate), "settle": int(start.settle), "hvp_mode": hvp_mode,
           "resample": stepper.resample, "checkpoint_every": output.checkpoint_every}
    settings = {"problem": stepper.problem.settings(), **s.settings(), "krylov": settings_of(stepper.solver),
                "run": run, "monitor": None if monitor is None else settings_of(monitor),
                "theta0": settings_of(start.settings) if start.settings is not None else _fingerprint(template)}
    settings_json = json.dumps(settings_of(settings), default=str, sort_keys=True)
    config = output.config
    return {"problem": stepper.problem.name, "process": s.process.name, "predictor": s.predictor.name,
            "corrector": s.corrector.name, "projection": s.projection.name, "step_control": s.control.name,
            "monitor": "none" if monitor is None else monitor.name, "corrector_counts": s.corrector.counts,
            "held": (s.process.holds or "none") + (f" and {s.process.also_holds}" if s.process.also_holds else ""),
            "config": json.dumps(config, default=str, sort_keys=True) if config is not None else settings_json,
            "settings": settings_json, "status": "running", "stop_reason": ""}


def _fingerprint(theta) -> dict:
    """SHA-256 of theta0's bytes (leaves in order): a resume with other initial parameters differs."""
    h = hashlib.sha256()
    for leaf in torch.utils._pytree.tree_leaves(theta):
        h.update(leaf.detach().cpu().contiguous().numpy().tobytes())
    return {"sha256": h.hexdigest()}


def _begin(stepper, start: Start, output: Output, out, attrs: dict, template, guard, rows: list):
    """(state, writer, None) at the run's first point, with `rows` filled and `attrs` completed: the
    last point of `out` when resuming it, else a fresh start (point 0 recorded); (None, None, the
    file) when the run in `out` has already ended. `writer` is None for a run kept in memory."""
    if out is not None and out.exists() and output.resume:
        starts.same_setup(out, attrs)
        old = starts.load_path(out)
        if old.attrs.get("status") != "running":
            return None, None, _ended(out, old, output, guard)
        state, on_file = starts.resume(stepper, out, template)
        rows[:], row = on_file, None  # no new row: the last point is on file
        attrs.update({k: old.attrs[k] for k in ("C0", "G0", "H0", "H_scale", "start_draw") if k in old.attrs})
    elif out is not None and out.exists():
        raise OutputExists(f"{out} exists; pass resume=True (--resume) to continue it, or another --out")
    else:
        state, row = _fresh(stepper, start, template, attrs)
    if out is not None:
        guard.writer = PathWriter(out, attrs, output.checkpoint_every, rows=rows, critical=guard.critical)
    if row is not None:
        _record(guard.writer, rows, row, state, output.on_point)
    return state, guard.writer, None


def _fresh(stepper, start: Start, template, attrs: dict):
    """The first state and row at `start` (equilibrated there unless start.equilibrate is False);
    the start values of the held functionals (and the stochastic problem's draw) go to `attrs`."""
    if start.from_point is not None:
        x, mu = starts.from_point(*start.from_point, template)
    else:
        mu = torch.tensor(list(start.mu) + [0.0] * (3 - len(start.mu)), **starts.placed(template))
        x = stepper.system.flatten(template)
    state, row = starts.fresh(stepper, x, mu, equilibrate=start.equilibrate, settle=start.settle)
    attrs.update(C0=state.C0, G0="none" if state.G0 is None else state.G0)
    if state.H0 is not None:  # the second held functional's start value (geodesic transfer), the scale of its drift
        attrs.update(H0=state.H0, H_scale=state.H_scale)
    if isinstance(stepper.problem, StochasticProblem):
        attrs["start_draw"] = int(stepper.problem.seed)  # the draw of point 0 (a resume there redraws it)
    return state, row


def _ended(out, old, output: Output, guard):
    """A file whose run has ended, as it is; one killed inside finish is finished from its journal
    (which has the status, the file not yet)."""
    if not journal_file(out).exists():
        return old
    done = PathWriter(out, dict(old.attrs), output.checkpoint_every, rows=dataset_to_rows(old), critical=guard.critical)
    return done.finish(old.attrs["status"], old.attrs.get("stop_reason", ""))


def _loop(stepper, state, writer, rows: list, output: Output):
    """Step until the stop rule says done (or a step returns no row), recording every point."""
    stop, origin = stepper.s.stop, {n: float(rows[0][n]) for n in ("lambda", "gamma", "t")}
    with tqdm(total=1.0, disable=not output.progress, unit="", leave=True,
              bar_format="{desc}{percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]") as bar:
        while not stepper.done(state):
            state, row = stepper.step(state)
            if row is None:
                break
            _record(writer, rows, row, state, output.on_point)
            _show(bar, stop, state, row, rows[0], origin)
            if output.stop_requested is not None and output.stop_requested():
                raise Interrupted(signal.SIGINT)  # as Ctrl-C here: Interrupts makes it RunInterrupted
    return state


def _record(writer, rows, row, state, on_point) -> None:
    if writer is not None:
        writer.append(row, state.current.x, state.current.mu, dump_slots(state.slots),  # also appends to writer.rows
                      tangent=state.current.tangent, reference=state.current.ctx.own_reference)
        rows[:] = writer.rows
    else:
        rows.append(dict(row, checkpoint=-1))
    if on_point is not None:
        on_point(len(rows) - 1, rows[-1])


def _show(bar, stop, state, row, first, origin) -> None:
    if bar.disable:
        return
    bar.n = stop.progress(state.step, state.current.s, named(state.current.mu), origin)
    held = row.get("constraint_drift", math.nan)
    if isinstance(held, float) and math.isfinite(held):  # the held functional's own drift (C, or C - q h(t), ...)
        drift = f"{held:.1e}"
    else:
        key = "train_C" if "train_C" in row else "C"
        drift = f"{(row[key] - first[key]) / abs(first[key]):.1e}" if first[key] != 0 else "n/a"
    bar.set_postfix(step=state.step, lam=f"{row['lambda']:.4g}", gam=f"{row['gamma']:.4g}", t=f"{row['t']:.3g}",
                    drift=drift, grad=f"{row['grad_norm']:.1e}")
