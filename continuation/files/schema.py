"""Paths are data: an `xarray.Dataset` along dimension `step`, appended to a netCDF file after
every accepted point, with theta at path points in checkpoints beside it.

Schema (one value per accepted point):

| variable          | meaning                                                             |
|-------------------|---------------------------------------------------------------------|
| s                 | the process clock (mu' = d mu/ds as the process's law gives it)     |
| lambda, gamma, t  | continuation parameters                                             |
| R, D, C, F        | functionals and free energy J(theta; mu) after correction           |
| grad_norm         | ||grad_theta J|| after correction                                    |
| grad_norm_rel     | grad_norm over |grad R| + lambda |grad D| + gamma |grad C| + |grad  |
|                   | of J's other terms|: how well the forces cancel (1: not at all)     |
| krylov_iters      | Krylov matvecs (HVPs) of this step's tangent and projection solves  |
| hvps              | every HVP of the step: krylov_iters and the corrector's (Newton-CG) |
| gradients         | gradient evaluations of J of the step (corrector updates and checks) |
| mixed_partials    | columns of b_mu = -d/dmu grad_theta J of the step (tangents, laws)  |
| evaluations       | forward passes of J or R, D, C outside a derivative: values, line-  |
|                   | search trials, training-set and validation metrics, rates (one per  |
|                   | column); all work columns are counted where it is spent (Ledger,    |
|                   | continuation/surface/work.py), the monitor's apart (monitor_hvps)   |
| corrector_runs    | corrector calls (the step's, projection iterates, FD re-equilibrations) |
| newton_iters, ... | the corrector's iterations, under its own name (attribute           |
|                   | corrector_counts): newton_iters, adam_updates, sgd_updates, lbfgs_iters |
| seconds           | wall time of this step, rejected attempts included (work counters too) |
| step_size         | ds of the accepted step; next_step: the ds proposed for the next    |
| rejected          | attempts rejected before this one was accepted                      |
| C_drift           | (C - C0) / |C0|; constraint_drift: the same for the held functional |
|                   | (constraint2_drift: a second held one, H0 the attribute, geodesic)  |
| tangent_angle     | degrees the tangent turned since the previous point                 |
| krylov_residual   | largest relative residual of the tangent solves at this point       |
| checkpoint        | the step number of the checkpoint holding theta, or -1               |
| val_loss, val_acc | validation metrics, where the problem has validation data           |

With a monitor: `eig` along (step, mode), `morse_index`, `monitor_hvps`, and the events along
`event` as event_<field> variables (continuation/singular/events.py).

Units and names: every variable carries `units` and `long_name` attributes (VARIABLE_ATTRS; kl_z<k>
and the corrector's *_iters / *_updates by pattern; a variable not in the table gets its name as
long_name and no units). The functionals R, D, C, F (J), train_*, kl_z<k> and val_loss are in
"nats per sample" (natural-log information and losses averaged over samples); the multipliers,
t, the clock s and ds, relative drifts and residuals, fractions and counters are "1"; seconds
"s"; tangent_angle "degree"; grad_norm "nats per sample per parameter unit" and eig (eigenvalues
of Hess_theta J) "nats per sample per squared parameter unit". The text event variables
(event_type, event_method, event_detail) have a long_name and no units (a string has none).
"nats per sample" is not a UDUNITS unit: the files follow their own convention, not CF.

Attributes: problem, process, predictor, corrector, projection, step_control, corrector_counts,
held (the functional the process holds, or "none"), settings (JSON: every strategy's options, the
problem's, the start), config (JSON of the configuration given, or the settings), status
("running", "finished", "stopped"), stop_reason, C0, G0 (H0 and H_scale where a second functional is held), checkpoint_dir; and the conventions:
Conventions = "continuation-path-1" (this schema), continuation_version (the package's version
that wrote the file, "unknown" outside an installed package), history (one line per session
that wrote the file: "ISO-UTC-time: command line"; a resume adds a line).

On disk (continuation/files/writer.py): OUT is netCDF-4 with `step` and `event` unlimited; each point
is appended in place, after its line in the write-ahead journal OUT.journal (JSON lines: the
attributes first, then one line per point, committed by its trailing newline once the point is
in OUT). While a run writes OUT the journal is the record: `load_path` reads the journal when
there is one (a torn last line dropped), so a kill that leaves OUT half-appended or unreadable
loses nothing committed; a resume rebuilds OUT from it; `finish` rewrites OUT whole and deletes
the journal. Checkpoints are written first (a point on record always has its checkpoint) and one
is deleted (pruned) only after the record no longer names it; the last two are always kept (the
resumed point and the secant's previous one). One writer per output: `OutputLock` holds OUT.lock
(the owner's pid) for the run. The modules of continuation/files/: schema.py (this
table: variables, units, attributes, file names, rows <-> dataset), journal.py (the write-ahead
journal's lines), path.py (load_path, load_point), lock.py (OutputLock), writer.py (PathWriter
and the test hook), config.py (TOML configurations).
"""

from __future__ import annotations

import functools
import re
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import xarray as xr


INT_VARIABLES = ("krylov_iters", "hvps", "gradients", "mixed_partials", "evaluations", "corrector_runs", "rejected",
                 "checkpoint")
PATH_VARIABLES = ("s", "lambda", "gamma", "t")  # every path file has these along `step` (baselines too)
CONVENTIONS = "continuation-path-1"
DISTRIBUTION = "free-energy-continuation"

NATS = "nats per sample"
PER_PARAMETER = "nats per sample per parameter unit"
EIG_UNITS = "nats per sample per squared parameter unit"

# name -> (units or None, long_name); kl_z<k>, *_iters and *_updates by pattern (variable_attrs)
VARIABLE_ATTRS = {
    "step": ("1", "accepted point number (0: the start)"),
    "s": ("1", "process clock s (mu' = d mu/ds by the process's law)"),
    "lambda": ("1", "multiplier lambda of the distortion D in J = R + lambda D + gamma C"),
    "gamma": ("1", "multiplier gamma of the classification loss C in J = R + lambda D + gamma C"),
    "t": ("1", "task-path parameter t (0: the source task, 1: the target)"),
    "R": (NATS, "rate R after correction"),
    "D": (NATS, "distortion D after correction"),
    "C": (NATS, "classification loss C after correction"),
    "F": (NATS, "free energy J(theta; mu) = R + lambda D + gamma C after correction"),
    "train_R": (NATS, "rate R on the whole training set (one fixed noise draw)"),
    "train_D": (NATS, "distortion D on the whole training set (one fixed noise draw)"),
    "train_C": (NATS, "classification loss C on the whole training set (one fixed noise draw)"),
    "val_loss": (NATS, "validation cross-entropy of the classifier at the encoder mean"),
    "val_acc": ("1", "validation accuracy (fraction correct)"),
    "source_val_loss": (NATS, "source-task validation cross-entropy at the encoder mean"),
    "source_val_acc": ("1", "source-task validation accuracy (fraction correct)"),
    "grad_norm": (PER_PARAMETER, "norm of grad_theta J after correction"),
    "grad_norm_rel": ("1", "grad_norm over the sum of the norms of J's terms' gradients (|grad R| + lambda |grad D| + "
                           "gamma |grad C| + the rest's): how well the forces cancel"),
    "krylov_iters": ("1", "Krylov matvecs (HVPs) of the step's tangent and projection solves"),
    "hvps": ("1", "Hessian-vector products of the step (Krylov solves and corrector)"),
    "gradients": ("1", "gradient evaluations of J of the step (corrector updates and checks)"),
    "mixed_partials": ("1", "columns of the mixed partials -d/dmu grad_theta J of the step (tangents, laws)"),
    "evaluations": ("1", "forward passes of J or R, D, C of the step outside a derivative (values, line searches, "
                         "metrics, rates)"),
    "corrector_runs": ("1", "corrector calls of the step (its own, projection iterates, FD re-equilibrations)"),
    "updates": ("1", "optimiser updates done so far"),
    "seconds": ("s", "wall time of the step, rejected attempts included"),
    "step_size": ("1", "process-clock increment ds of the accepted step"),
    "next_step": ("1", "process-clock increment ds proposed for the next step"),
    "rejected": ("1", "attempts rejected before the step was accepted"),
    "C_drift": ("1", "relative drift of C on the step's batch from the start, (C - C0) / |C0| (the held "
                     "value, on its own measure: constraint_drift)"),
    "constraint_drift": ("1", "relative drift of the held functional from the start, (G - G0) / |G0|"),
    "constraint2_drift": ("1", "relative drift of the second held functional from the start, (H - H0) / H_scale "
                               "(the geodesic transfer's D - k R; H_scale = |D0 - D_floor| + |k| R0)"),
    "tangent_angle": ("degree", "angle the tangent turned since the previous point"),
    "krylov_residual": ("1", "largest relative residual of the point's tangent solves"),
    "secant_response": ("1", "the held functional's response to the secant's multiplier move over the tangents' "
                             "prediction, measured at this step (secant projection, reuse_response; NaN: none)"),
    "checkpoint": ("1", "step number K of the checkpoint OUT.ckpt/step_K.pt holding theta, -1 when not kept"),
    "morse_index": ("1", "Morse index: eigenvalues of Hess_theta J below -zero_tol, -1 when not monitored"),
    "monitor_hvps": ("1", "Hessian-vector products of the stability monitor at the point"),
    "eig": (EIG_UNITS, "lowest eigenvalues of Hess_theta J off the gauge orbit, ascending (NaN: not computed)"),
    "event_type": (None, "kind of event: bifurcation, fold, jump (the path left a branch that goes on), branch_switch, crossing or saddle"),
    "event_method": (None, "how the event was located: illinois, interpolate, bisection (a branch that ended at a fold), descent, null-vector (a switch onto the branch born at a bifurcation) or none"),
    "event_detail": (None, "the event in one line"),
    "event_step": ("1", "first accepted point after the event"),
    "event_mode": ("1", "which of the sorted eigenvalues crossed (0: the lowest)"),
    "event_multiplicity": ("1", "number of eigenvalues crossing together"),
    "event_index_before": ("1", "Morse index before the event"),
    "event_index_after": ("1", "Morse index after the event"),
    "event_iterations": ("1", "iterations of the event's location"),
    "event_hvps": ("1", "Hessian-vector products of the event's location"),
    "event_located": ("1", "1 when the location converged, 0 when not"),
    "event_checkpoint": ("1", "number K of the event's checkpoint OUT.ckpt/event_K.pt (x, null vector), -1 if none"),
    "event_s": ("1", "process clock s at the event"),
    "event_lambda": ("1", "multiplier lambda at the event"),
    "event_gamma": ("1", "multiplier gamma at the event"),
    "event_t": ("1", "task-path parameter t at the event"),
    "event_R": (NATS, "rate R at the event"),
    "event_D": (NATS, "distortion D at the event"),
    "event_C": (NATS, "classification loss C at the event"),
    "event_F": (NATS, "free energy J at the event"),
    "event_eig": (EIG_UNITS, "the crossing eigenvalue of Hess_theta J at the located point (~0)"),
}
_KL = re.compile(r"kl_z(\d+)$")
_CORRECTOR_NAMES = {"newton": "Newton", "adam": "Adam", "sgd": "SGD", "lbfgs": "L-BFGS"}


def variable_attrs(name: str) -> dict:
    """`units` and `long_name` of path variable `name` (VARIABLE_ATTRS, then the patterns kl_z<k>,
    <corrector>_iters / <corrector>_updates); an unknown name: long_name = name, no units."""
    if name in VARIABLE_ATTRS:
        units, long_name = VARIABLE_ATTRS[name]
    elif m := _KL.match(name):
        units, long_name = NATS, f"KL of latent unit {m[1]}'s posterior to the prior (its rate), training set"
    elif name.endswith("_iters") or name.endswith("_updates"):
        kind, what = name.rsplit("_", 1)
        what = "iterations" if what == "iters" else what
        units, long_name = "1", f"{_CORRECTOR_NAMES.get(kind, kind)} {what} of the step's corrector runs"
    else:
        units, long_name = None, name
    return {"long_name": long_name} if units is None else {"units": units, "long_name": long_name}


@functools.lru_cache(maxsize=1)
def package_version() -> str:
    """The installed version of this package (distribution free-energy-continuation), or "unknown"."""
    from importlib import metadata

    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


COMMAND: str | None = None  # the command a history line names, where it is not this process's (a sweep member)


def command_line() -> str:
    """This process's command line as it was typed (`python -m continuation run ...`: sys.orig_argv,
    not sys.argv, whose first item is the module's file), quoted for a shell."""
    import shlex

    argv = list(getattr(sys, "orig_argv", None) or sys.argv)
    if argv and Path(argv[0]).name.startswith("python"):
        argv[0] = "python"
    return shlex.join(argv)


def history_line(when: datetime | None = None) -> str:
    """One line of the `history` attribute: "ISO-UTC-time: the command" (COMMAND where set, else
    this process's command line)."""
    when = when or datetime.now(timezone.utc)
    return f"{when.strftime('%Y-%m-%dT%H:%M:%SZ')}: {COMMAND or command_line()}"


def _is_int(name: str) -> bool:
    return name in INT_VARIABLES or name.endswith("_iters") or name.endswith("_updates")


def checkpoint_dir(path) -> Path:
    return Path(str(path) + ".ckpt")


def checkpoint_file(path, step: int) -> Path:
    return checkpoint_dir(path) / f"step_{step:06d}.pt"


def lock_file(path) -> Path:
    return Path(str(path) + ".lock")


def journal_file(path) -> Path:
    return Path(str(path) + ".journal")


def tmp_file(path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".tmp")


EVENT_TEXT = ("type", "method", "detail")
EVENT_INT = ("step", "mode", "multiplicity", "index_before", "index_after", "iterations", "hvps", "located", "checkpoint")
EVENT_FLOAT = ("s", "lambda", "gamma", "t", "R", "D", "C", "F", "eig")
EVENT_FIELDS = EVENT_TEXT + EVENT_INT + EVENT_FLOAT


def rows_to_dataset(rows: list[dict], attrs: dict) -> xr.Dataset:
    """Rows of scalars along `step`; a row's `eig` (a tuple) along (step, mode); the rows' `events`
    (lists of dicts) along `event`, as event_<field> variables (continuation/singular/events.py).

    The variables of rows[0] (a later row's extra keys are ignored, its missing ones NaN), each
    with its units and long_name (variable_attrs); int64 for counters (_is_int, morse_index,
    monitor_hvps), float64 otherwise. `attrs` with Conventions, continuation_version and history
    (one line for this process) added where absent."""
    names = [n for n in (rows[0].keys() if rows else []) if n != "events"]
    data = {}
    for name in names:
        values = [r.get(name, np.nan) for r in rows]
        if name == "eig":
            data[name] = (("step", "mode"), np.asarray(values, dtype=np.float64).reshape(len(rows), -1),
                          variable_attrs(name))
            continue
        dtype = np.int64 if _is_int(name) or name == "morse_index" or name == "monitor_hvps" else np.float64
        data[name] = ("step", np.asarray(values, dtype=dtype), variable_attrs(name))
    events = [e for r in rows for e in r.get("events", ())]
    if rows and "events" in rows[0]:
        for k in EVENT_TEXT:
            data[f"event_{k}"] = ("event", np.asarray([str(e.get(k, "")) for e in events], dtype=object),
                                  variable_attrs(f"event_{k}"))
        for k in EVENT_INT:
            data[f"event_{k}"] = ("event", np.asarray([int(e.get(k, -1)) for e in events], dtype=np.int64),
                                  variable_attrs(f"event_{k}"))
        for k in EVENT_FLOAT:
            data[f"event_{k}"] = ("event", np.asarray([float(e.get(k, np.nan)) for e in events], dtype=np.float64),
                                  variable_attrs(f"event_{k}"))
    attrs = dict(attrs)
    attrs.setdefault("Conventions", CONVENTIONS)
    attrs.setdefault("continuation_version", package_version())
    attrs.setdefault("history", history_line())
    step = xr.Variable("step", np.arange(len(rows)), variable_attrs("step"))
    return xr.Dataset(data, coords={"step": step}, attrs=attrs)


def _scalar(v):
    return v.item() if hasattr(v, "item") else v  # numpy scalars to Python; strings of object arrays as they are


def dataset_to_rows(ds: xr.Dataset) -> list[dict]:
    """The rows a path dataset was written from (the inverse of rows_to_dataset). Cost: O(points x
    variables), each variable's values taken once."""
    n = ds.sizes["step"]
    flat = {k: ds[k].values for k in ds.data_vars if ds[k].dims == ("step",)}
    rows = [{k: values[i].item() for k, values in flat.items()} for i in range(n)]
    if "eig" in ds.data_vars:
        eig = ds["eig"].values
        for i in range(n):
            rows[i]["eig"] = tuple(float(v) for v in eig[i])
    if "event_type" in ds.data_vars:
        for r in rows:
            r["events"] = []
        fields = {k: ds[f"event_{k}"].values for k in EVENT_TEXT + EVENT_INT + EVENT_FLOAT
                  if f"event_{k}" in ds.data_vars}
        for j in range(ds.sizes.get("event", 0)):
            e = {k: _scalar(values[j]) for k, values in fields.items()}
            if 0 <= e["step"] < n:
                rows[e["step"]]["events"].append(e)
    return rows


def event_file(path, k: int) -> Path:
    return checkpoint_dir(path) / f"event_{k:04d}.pt"
