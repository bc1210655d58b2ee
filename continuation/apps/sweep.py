"""Sweeps: a family of paths from one configuration, run in parallel on Dask, one dataset along `run`.

    python -m continuation sweep CONFIG.toml --out DIR [--workers N | --scheduler ADDRESS]

A sweep is a TOML configuration with a `[sweep]` table naming the axes: any configuration key,
dotted, with a list of values, and `mode = "product"` (every combination, the default) or
`"zip"` (the i-th value of every axis together; the lists have one length):

    [sweep]
    mode = "product"
    start.gamma = [4, 6, 8, 10, 15]
    problem.seed = [0, 1]

An axis may also be a whole section with a list of tables (`process = [{name = "iso-classification",
tol = 0.005}, {name = "iso-classification-fd", h = 0.02}]`): each value replaces the section.

Every member is an ordinary run (continuation/apps/run.py) of the configuration with its values set,
written to its own resumable path file DIR/run_NNN.nc (checkpoints in DIR/run_NNN.nc.ckpt/), and
run as one Dask task: a `distributed.LocalCluster` of `workers` processes (default: the cores)
with one thread each, or the cluster behind `scheduler` (the workers must see DIR at the same
path: a shared file system). Each member seeds itself from its configuration ([start] seed, the
problem's seed), so the data do not depend on the number of workers or on which worker ran it.

A member that raises is recorded as failed with its one-line reason, and the others go on; a
worker that dies (killed, out of memory) is replaced by Dask and its member is rescheduled and
resumes from its file (OUT.lock names the dead pid and is taken over). Re-running the same command
runs only the members that are not done (status "finished" or "stopped" in their file); a DIR
that holds a sweep of another configuration is refused. DIR/sweep.json records the plan.

The family: DIR/sweep.nc, every member's path along `run` (coordinate: the member's index, and
one coordinate along `run` per axis, named by its key, e.g. `start.gamma`). Paths are ragged:
variables along `step` are padded to the longest member (NaN for floats, -1 for integers, "" for
text) and `length` (run) says how many points each has; events likewise along `event` with
`n_events` (the padding -1 of an integer variable is told from a real -1, e.g. `morse_index` or
`checkpoint`, by `length` alone). Per member: `status` ("finished", "stopped", "running",
"failed"), `stop_reason` (the failure's reason for a failed member), `file`, `config` (JSON), and
`member_attrs` (JSON: the path attributes that differ between members, e.g. settings, C0,
history). Attributes shared by every member are the dataset's; `sweep_axes` (JSON), `sweep_mode`, `sweep_config` (JSON of the base
configuration) describe the sweep. `load_sweep(DIR)` reads it back.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import itertools
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

from continuation.errors import first_line
from continuation.files.config import SECTIONS, ConfigError, build_run
from continuation.files.lock import remove_stale_lock

SWEEP_FILE = "sweep.nc"
PLAN_FILE = "sweep.json"
TOPIC = "continuation-sweep"  # Dask event topic of the members' progress
CONNECT_TIMEOUT = "10s"  # how long a Client tries to reach --scheduler
DONE = ("finished", "stopped")  # a member whose file says so is not run again
STOP_FILE = "sweep.stop"  # made on Ctrl-C / SIGTERM: each running member stops after its current point
GRACE_S = 60.0  # how long an interrupted sweep waits for its running members to stop at a point
MODES = ("product", "zip")


@dataclass(frozen=True)
class Member:
    """One path of a sweep: its index, its axis values (key -> value) and its whole configuration."""

    index: int
    values: dict
    config: dict = field(repr=False)

    @property
    def file(self) -> str:
        return f"run_{self.index:03d}.nc"

    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.values.items())


def _flatten(table: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in table.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _set(config: dict, key: str, value) -> None:
    parts = key.split(".")
    table = config
    for p in parts[:-1]:
        nxt = table.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"[sweep] {key}: {'.'.join(parts[:parts.index(p) + 1])} is a value in the "
                              "configuration, not a table")
        table = nxt
    table[parts[-1]] = value


def sweep_axes(config: dict) -> tuple[dict, str]:
    """The [sweep] table's axes (key -> list of values, in the file's order) and mode.

    Raises ConfigError (one line naming the key) for a missing or empty table, an axis that is not
    a non-empty list, a key outside the configuration's sections, an unknown mode, or zipped axes
    of different lengths."""
    table = config.get("sweep")
    if not isinstance(table, dict):
        raise ConfigError("a sweep needs a [sweep] table naming its axes, e.g. [sweep] start.gamma = [4, 6, 8]")
    table = dict(table)
    mode = table.pop("mode", "product")
    if mode not in MODES:
        raise ConfigError(f"[sweep] mode must be one of {', '.join(MODES)}, got {mode!r}")
    axes = _flatten(table)
    if not axes:
        raise ConfigError("[sweep] names no axes; give at least one, e.g. start.gamma = [4, 6, 8]")
    for key, values in axes.items():
        section = key.split(".")[0]
        whole = key in SECTIONS and isinstance(values, list) and bool(values) and \
            all(isinstance(v, dict) for v in values)  # a section: one whole table per value
        if section not in SECTIONS or ("." not in key and not whole):
            raise ConfigError(f"[sweep] {key}: an axis is a configuration key section.key (or a section with a "
                              f"list of whole tables), with section one of {', '.join(SECTIONS)}")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"[sweep] {key} must be a non-empty list of values, got {values!r}")
        if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
            raise ConfigError(f"[sweep] {key} repeats a value: {values}")
    if mode == "zip" and len({len(v) for v in axes.values()}) > 1:
        sizes = ", ".join(f"{k}: {len(v)}" for k, v in axes.items())
        raise ConfigError(f"[sweep] mode = \"zip\" needs axes of one length; got {sizes}")
    return axes, mode


def expand(config: dict, *, check: bool = True) -> list[Member]:
    """The members of a sweep configuration, in order (the last axis varies fastest for a product).

    With `check`, every member's configuration is built (continuation/config.build_run), so a bad
    value anywhere in the sweep is one ConfigError naming the member before any work. Cost: one
    problem construction per member (data sets are loaded)."""
    axes, mode = sweep_axes(config)
    base = {k: copy.deepcopy(v) for k, v in config.items() if k != "sweep"}
    keys = list(axes)
    combos = zip(*axes.values()) if mode == "zip" else itertools.product(*axes.values())
    members = []
    for i, combo in enumerate(combos):
        cfg = copy.deepcopy(base)
        values = dict(zip(keys, combo))
        for k, v in values.items():
            _set(cfg, k, v)
        members.append(Member(i, values, cfg))
    if check:
        for m in members:
            try:
                build_run(m.config)
            except ConfigError as e:
                raise ConfigError(f"sweep member {m.index} ({m.label()}): {e}") from None
    return members


IGNORED = (("output", "progress"),)  # keys that change no number: a resume ignores them too


def _without_ignored(config: dict) -> dict:
    config = copy.deepcopy(config)
    for section, key in IGNORED:
        if isinstance(config.get(section), dict):
            config[section].pop(key, None)
            if not config[section]:
                del config[section]
    return config


def _plan(config: dict, members: list[Member]) -> dict:
    axes, mode = sweep_axes(config)
    return {"config": _without_ignored(config), "axes": list(axes), "mode": mode,
            "members": [{"index": m.index, "values": m.values, "file": m.file} for m in members]}


def _first_difference(old, new, where: str = "") -> str | None:
    """The first dotted key at which two JSON values differ, with both values."""
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new), key=str):
            d = _first_difference(old.get(k, "(absent)"), new.get(k, "(absent)"), f"{where}.{k}" if where else str(k))
            if d:
                return d
        return None
    if old != new:
        return f"{where or 'the sweep'}: {json.dumps(old)} in the folder, {json.dumps(new)} now"
    return None


def _check_plan(out: Path, plan: dict) -> None:
    """DIR holds this sweep or none: a folder of another sweep's member files is refused, one line
    naming the first difference. A plan whose members never wrote a file (a sweep that failed to
    start) is replaced."""
    file = out / PLAN_FILE
    written = sorted(p.name for p in out.glob("run_*.nc"))
    if not file.exists():
        if written:
            raise ConfigError(f"{out} holds path files ({', '.join(written[:3])}) but no {PLAN_FILE}: not a sweep "
                              "folder; use another --out")
        return
    if not written:
        return
    try:
        old = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{file} is not readable JSON ({e}); remove it, or use another --out") from None
    mine = json.loads(json.dumps(plan, sort_keys=True, default=str))
    if isinstance(old.get("config"), dict):
        old["config"] = _without_ignored(old["config"])
    if old != mine:
        what = _first_difference(old.get("config"), mine.get("config")) or _first_difference(old, mine)
        raise ConfigError(f"{out} holds a sweep of another configuration ({what}); re-run that configuration "
                          "to resume it, or use another --out")


def _member_status(path: Path) -> str | None:
    """The status written in a member's file, or None when there is none (or it is unreadable)."""
    if not path.exists():
        return None
    from continuation.files.path import load_path

    try:
        return str(load_path(path).attrs.get("status", "running"))
    except Exception:  # noqa: BLE001 - a damaged file: the member is resumed, which says what is wrong
        return None


def run_member(config: dict, path: str, index: int = 0, command: str | None = None,
               stop_file: str | None = None) -> dict:
    """Run (or resume) one member into `path`; the Dask task. Returns {"status", "stop_reason",
    "points", "lambda"}; a member that raises returns status "failed" with the one-line reason
    (the exception does not cross to the client, so the others go on). `command`: the sweep's
    command line, for the path's `history` (a worker's own command line says nothing).
    `stop_file`: once it exists (an interrupted sweep, STOP_FILE) the member stops after its
    current point, its file resumable, and returns status "interrupted"; a member not yet
    started returns at once.

    One torch thread (the worker's core); progress goes to the Dask event topic TOPIC when run on
    a worker."""
    import torch

    torch.set_num_threads(1)
    _seed_everything(config)
    from continuation.errors import ContinuationError, FileProblem, RunInterrupted
    from continuation.apps.run import run_config

    from continuation.files import schema as paths

    report = _reporter(index)
    path = Path(path)
    before = paths.COMMAND
    paths.COMMAND = f"{command} (member {index})" if command else None  # the path's history names the sweep
    stop = (lambda: Path(stop_file).exists()) if stop_file is not None else None  # noqa: E731
    if stop is not None and stop():
        return {"index": index, "status": "interrupted", "stop_reason": "the sweep was interrupted before it started",
                "points": _points(path)}
    if report is not None:
        report(-1, None)  # started (pre-training, if any, reports no point for a while)
    try:
        with _local_writes():
            ds = run_config(config, path, resume=path.exists(), progress=False, on_point=report, stop_requested=stop)
    except RunInterrupted as e:  # the sweep's Ctrl-C (stop_file), or a signal to this process
        return {"index": index, "status": "interrupted", "stop_reason": first_line(e, typed=False),
                "points": _points(path)}
    except (ContinuationError, FileProblem, ConfigError, FileNotFoundError, OSError, ValueError) as e:
        return {"index": index, "status": "failed", "stop_reason": first_line(e, typed=False), "points": _points(path)}
    except Exception as e:  # noqa: BLE001 - a bug: still recorded, with its type
        return {"index": index, "status": "failed", "points": _points(path),
                "stop_reason": f"unexpected {type(e).__name__}: {first_line(e, typed=False)} (a bug)"}
    finally:
        paths.COMMAND = before  # run in-process (no Dask), later paths name their own command
    n = ds.sizes["step"]
    return {"index": index, "status": str(ds.attrs["status"]), "stop_reason": str(ds.attrs["stop_reason"]),
            "points": n, "lambda": float(ds["lambda"][-1]) if n else float("nan")}


def _seed_everything(config: dict) -> None:
    """The global generators (torch, numpy, random) from the member's [start] seed: the problems
    draw from their own seeded generators, and anything that reaches for a global one draws the
    same numbers on every worker."""
    import random

    import torch

    seed = config.get("start", {}).get("seed", 0)
    seed = seed if isinstance(seed, int) and not isinstance(seed, bool) else 0
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _local_writes():
    """xarray takes a distributed.Lock (a round trip to the scheduler) for every netCDF write when
    it runs on a Dask worker; one process writes each file here, so a local lock is enough."""
    import dask

    return dask.config.set(scheduler="synchronous")


def _points(path: Path) -> int:
    from continuation.files.path import load_path

    try:
        return int(load_path(path).sizes["step"])
    except Exception:  # noqa: BLE001
        return 0


def _reporter(index: int):
    """A callback for each accepted point: an event on TOPIC when on a Dask worker, else nothing."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None

    def report(step: int, row: dict | None) -> None:
        try:
            msg = {"index": index, "step": int(step)}
            if row is not None:
                msg.update({k: float(row[k]) for k in ("lambda", "gamma", "t")})
            worker.log_event(TOPIC, msg)
        except Exception:  # noqa: BLE001 - progress is best effort; the run is not
            pass

    return report


def _client(scheduler: str | None, workers: int | None):
    """A Dask client: of the cluster at `scheduler`, or of a new LocalCluster of `workers` processes
    (default: the cores) with one thread each. Raises ConfigError (one line) when the scheduler
    cannot be reached or the worker count is bad."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ConfigError("sweeps run on Dask: pip install 'dask[distributed]'") from None
    if scheduler is not None:
        if workers is not None:
            raise ConfigError("--workers and --scheduler exclude each other (the cluster has its own workers)")
        try:
            return Client(scheduler, timeout=CONNECT_TIMEOUT), None
        except (OSError, TimeoutError, ValueError) as e:
            raise ConfigError(f"--scheduler {scheduler}: could not connect to a Dask scheduler there "
                              f"({first_line(e, typed=False)})") from None
    n = workers if workers is not None else (os.cpu_count() or 1)
    if not isinstance(n, int) or n < 1:
        raise ConfigError(f"--workers must be an integer >= 1, got {workers!r}")
    # ":0": the scheduler's HTTP server (health, and the dashboard where bokeh is installed) on a free
    # port, so that two sweeps at once do not compete for 8787
    with _signals_ignored():  # the workers inherit it: a Ctrl-C (to the terminal's process group) or a batch
        # system's SIGTERM to the job's processes reaches this process alone, which stops the members at a point
        # (_run_members), not the workers mid-write
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                               silence_logs=40)
    return Client(cluster), cluster


@contextlib.contextmanager
def _signals_ignored():
    """SIGINT and SIGTERM ignored while the block runs (processes started inside inherit SIG_IGN
    across exec; the cluster still stops its workers on close, by its own means)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def run_sweep(config: dict, out, *, workers: int | None = None, scheduler: str | None = None,
              progress: bool = True, client=None) -> xr.Dataset:
    """Run every member of a sweep configuration that is not done, then write DIR/sweep.nc.

    `config`: a parsed TOML dict with a [sweep] table. `out`: the sweep folder. `client`: an
    existing distributed.Client (else one of `scheduler`, or a LocalCluster of `workers`).
    Returns the combined dataset (module docstring). Raises ConfigError (one line) for a bad
    sweep, a folder of another sweep, an unreachable scheduler. Cost: the members' own, plus
    one Dask worker start (a Python process importing torch, ~2-5 s) per worker."""
    out = Path(out).resolve()
    members = expand(config)
    plan = _plan(config, members)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot create the sweep folder ({e.strerror or e})") from None
    from continuation.files.lock import OutputLock

    with OutputLock(out / SWEEP_FILE):  # one sweep per folder (DIR/sweep.nc.lock, the pid)
        return _run_locked(config, out, members, plan, workers, scheduler, progress, client)


def _run_locked(config, out: Path, members, plan, workers, scheduler, progress, client) -> xr.Dataset:
    _check_plan(out, plan)
    (out / PLAN_FILE).write_text(json.dumps(plan, indent=1, sort_keys=True, default=str) + "\n")
    results = {}
    todo = []
    for m in members:
        status = _member_status(out / m.file)
        if status in DONE:
            results[m.index] = {"index": m.index, "status": status, "stop_reason": "", "points": None}
        else:
            todo.append(m)
    if progress and len(todo) < len(members):
        print(f"sweep {out}: {len(members) - len(todo)} of {len(members)} members already done; running "
              f"{len(todo)}", file=sys.stderr)
    if todo:
        results.update(_run_members(todo, out, len(members), workers, scheduler, progress, client))
    failures = {i: r for i, r in results.items() if r["status"] == "failed"}
    ds = combine(out, members, failures, config=config)
    return ds


def _run_members(todo, out: Path, total: int, workers, scheduler, progress, client) -> dict:
    from tqdm import tqdm

    own = client is None
    cluster = None
    if own:
        client, cluster = _client(scheduler, workers)
    where: dict[int, dict] = {}

    def on_event(event):
        _, msg = event if isinstance(event, tuple) else (None, event)
        if isinstance(msg, dict) and "index" in msg:
            where[int(msg["index"])] = msg

    results: dict[int, dict] = {}
    # the bar redraws in place on a terminal only; in a log (a batch job) there is a line per member
    bar = tqdm(total=len(todo), disable=not (progress and sys.stderr.isatty()), unit="member", leave=True,
               file=sys.stderr)
    try:
        try:
            client.subscribe_topic(TOPIC, on_event)
        except Exception:  # noqa: BLE001 - progress only
            pass
        from continuation.files.schema import command_line

        command = command_line()
        stop_file = out / STOP_FILE
        stop_file.unlink(missing_ok=True)  # an earlier interrupted sweep's
        futures = {client.submit(run_member, m.config, str(out / m.file), m.index, command, str(stop_file),
                                 key=f"sweep-{out.name}-{m.file}-{time.time_ns()}", pure=False, retries=0): m
                   for m in todo}
        pending = dict(futures)
        try:
            _collect(pending, results, where, out, bar, progress)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the members stop at a point, then the cluster closes
            stop_file.touch()
            if not bar.disable:  # on a terminal; a log gets the one line of the command line
                print(f"stopping: {len(_running(pending, where))} running member(s) end at their next point "
                      f"(at most {GRACE_S:.0f} s; interrupt again to stop at once)", file=sys.stderr)
            deadline = time.monotonic() + GRACE_S
            while any(not f.done() for f in pending) and time.monotonic() < deadline:
                time.sleep(0.1)
            raise
    finally:
        bar.close()
        if own:
            client.close()
            if cluster is not None:
                cluster.close()
        (out / STOP_FILE).unlink(missing_ok=True)
        for m in todo:  # a member stopped by force (a second interrupt, past GRACE_S) leaves its dead pid's lock
            remove_stale_lock(out / m.file)
    return results


def _collect(pending: dict, results: dict, where: dict, out: Path, bar, progress: bool) -> None:
    """Wait for the members' futures, recording each result as it comes and showing progress."""
    from tqdm import tqdm

    shown = 0.0
    while pending:
        for fut in [f for f in pending if f.done()]:
            m = pending.pop(fut)
            try:
                r = fut.result()
            except Exception as e:  # noqa: BLE001 - KilledWorker (the worker died too often), a lost task
                r = {"index": m.index, "status": "failed", "points": _points(out / m.file),
                     "stop_reason": f"{type(e).__name__}: {first_line(e, typed=False)}"}
            results[m.index] = r
            where.pop(m.index, None)
            bar.update(1)
            shown = 0.0  # the counts now
            if progress:
                why = f": {r['stop_reason']}" if r.get("stop_reason") else ""
                tqdm.write(f"{m.file} ({m.label()}): {r['status']}, {r.get('points')} points{why}",
                          file=sys.stderr)
        if not bar.disable and time.monotonic() - shown > 1.0:
            shown = time.monotonic()
            failed = sum(r["status"] == "failed" for r in results.values())
            running = _running(pending, where)
            now = ", ".join(f"{i}: lambda {where[i]['lambda']:.4g}" for i in running if "lambda" in where[i])
            bar.set_postfix_str(f"done {len(results) - failed}, running {len(running)}, queued "
                                f"{len(pending) - len(running)}, failed {failed}" + (f" [{now}]" if now else ""))
        if pending:
            time.sleep(0.25)
    if not bar.disable:
        failed = sum(r["status"] == "failed" for r in results.values())
        bar.set_postfix_str(f"done {len(results) - failed}, failed {failed}")


def _running(pending: dict, where: dict) -> list[int]:
    """Indices of the pending members that have started on a worker (their first report: the
    scheduler's `processing` also counts tasks queued on a worker behind another)."""
    return sorted(i for i in where if any(m.index == i for m in pending.values()))


def combine(out, members: list[Member], failures: dict | None = None, *, config: dict | None = None) -> xr.Dataset:
    """The sweep's members as one dataset along `run` (module docstring), written to DIR/sweep.nc
    (atomically: a temporary file, then a rename). `failures`: index -> {"stop_reason": ...} of the
    members that failed in this invocation."""
    from continuation.files.schema import command_line
    from continuation.files.path import load_path

    out = Path(out)
    failures = failures or {}
    loaded = []
    for m in members:
        try:
            ds = load_path(out / m.file)
        except Exception:  # noqa: BLE001 - no file (failed at its start) or unreadable: an empty member
            ds = None
        loaded.append(ds)
    ds = _stack(members, loaded, failures)
    axes = list(members[0].values) if members else []
    ds.attrs.update(sweep_axes=json.dumps(axes), sweep_mode=(sweep_axes(config)[1] if config else "product"),
                    sweep_config=json.dumps(config or {}, sort_keys=True, default=str))
    ds.attrs["history"] = (ds.attrs.get("history", "") + "\n" if ds.attrs.get("history") else "") + \
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%dT%H:%M:%SZ}: {command_line()} (combined " \
        f"{len(members)} member files)"
    tmp = out / (SWEEP_FILE + ".tmp")
    with _local_writes():
        ds.to_netcdf(tmp, engine="netcdf4")
    os.replace(tmp, out / SWEEP_FILE)
    return ds


_OWN_VARIABLE = ("status", "stop_reason", "config")  # per-member attributes with a variable of their own


def _fill(dtype):
    if np.issubdtype(dtype, np.floating):
        return np.nan
    if np.issubdtype(dtype, np.integer):
        return -1
    return ""


def _stack(members, loaded, failures) -> xr.Dataset:
    """Pad every member along step / mode / event and stack along run."""
    present = [d for d in loaded if d is not None]
    sizes = {dim: max([d.sizes.get(dim, 0) for d in present] + [0]) for dim in ("step", "mode", "event")}
    names: dict[str, tuple] = {}
    for d in present:
        for k, v in d.data_vars.items():
            names.setdefault(k, (v.dims, v.dtype, dict(v.attrs)))
    data = {}
    for k, (dims, dtype, attrs) in names.items():
        shape = (len(members),) + tuple(sizes[dim] for dim in dims)
        kind = object if dtype == object or dtype.kind in "OUS" else dtype
        arr = np.full(shape, _fill(np.dtype(kind)) if kind is not object else "", dtype=kind)
        for i, d in enumerate(loaded):
            if d is None or k not in d:
                continue
            v = d[k].values
            arr[(i,) + tuple(slice(0, n) for n in v.shape)] = v
        data[k] = xr.Variable(("run",) + tuple(dims), arr, attrs=attrs)
    length = [0 if d is None else d.sizes["step"] for d in loaded]
    data["length"] = xr.Variable("run", np.asarray(length, dtype=np.int64),
                                 attrs={"long_name": "points of the member's path (its valid part of step)",
                                        "units": "1"})
    data["n_events"] = xr.Variable("run", np.asarray([0 if d is None else d.sizes.get("event", 0) for d in loaded],
                                                     dtype=np.int64),
                                   attrs={"long_name": "events of the member's path (its valid part of event)",
                                          "units": "1"})
    status, reason = [], []
    for m, d in zip(members, loaded):
        if m.index in failures and not (d is not None and d.attrs.get("status") in DONE):
            status.append("failed")
            reason.append(str(failures[m.index].get("stop_reason", "")))
        elif d is None:
            status.append("failed")
            reason.append("no path file")
        else:
            status.append(str(d.attrs.get("status", "running")))
            reason.append(str(d.attrs.get("stop_reason", "")))
    text = lambda values, long: xr.Variable("run", np.asarray(values, dtype=object), attrs={"long_name": long})  # noqa: E731
    data["status"] = text(status, "the member's status: finished, stopped, running (interrupted) or failed")
    data["stop_reason"] = text(reason, "why the member stopped, or why it failed")
    data["file"] = text([m.file for m in members], "the member's path file, in the sweep folder")
    data["config"] = text([json.dumps(m.config, sort_keys=True, default=str) for m in members],
                          "the member's configuration (JSON)")
    coords = {"run": ("run", np.arange(len(members)), {"long_name": "sweep member"})}
    for key in (members[0].values if members else {}):
        vals = [m.values[key] for m in members]
        arr = np.asarray(vals) if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals) \
            else np.asarray([json.dumps(v) if not isinstance(v, str) else v for v in vals], dtype=object)
        coords[key] = ("run", arr, {"long_name": f"swept configuration key {key}"})
    for dim in ("step", "event"):
        if sizes[dim] or any(dim in dims for dims, _, _ in names.values()):
            coords[dim] = (dim, np.arange(sizes[dim]))
    attrs = {}
    if present:
        for k, v in present[0].attrs.items():
            if k not in _OWN_VARIABLE and all(k in d.attrs and _same(d.attrs[k], v) for d in present):
                attrs[k] = v
    own = [{k: _plain(v) for k, v in d.attrs.items() if k not in attrs and k not in _OWN_VARIABLE}
           if d is not None else {} for d in loaded]
    data["member_attrs"] = text([json.dumps(a, sort_keys=True) for a in own],
                                "the member's path attributes that differ between members (JSON: settings, "
                                "C0, history, ...)")
    return xr.Dataset(data, coords=coords, attrs=attrs)


def _same(a, b) -> bool:
    return bool(np.all(np.asarray(a) == np.asarray(b))) if np.shape(a) == np.shape(b) else False


def _plain(v):
    """An attribute value as JSON takes it (numpy scalars and arrays to Python)."""
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v.item() if hasattr(v, "item") else v


def load_sweep(path) -> xr.Dataset:
    """A sweep's combined dataset (DIR/sweep.nc, or the file itself), read fully into memory.

    FileNotFoundError (one line) when there is none; PathFileError when it is not a sweep."""
    from continuation.errors import PathFileError

    path = Path(path)
    file = path / SWEEP_FILE if path.is_dir() else path
    if not file.exists():
        raise FileNotFoundError(f"no sweep dataset {file} (run `python -m continuation sweep CONFIG --out "
                                f"{path}` first)")
    try:
        with xr.open_dataset(file, engine="netcdf4") as ds:
            ds = ds.load()
    except (OSError, RuntimeError, ValueError) as e:
        raise PathFileError(f"{file} is not a readable netCDF file ({first_line(e, typed=False)})") from None
    if "run" not in ds.dims or "length" not in ds:
        raise PathFileError(f"{file} is not a sweep dataset (no 'run' dimension with 'length')")
    return ds


MEMBER_VARIABLES = ("length", "n_events", "status", "stop_reason", "file", "config", "member_attrs")


def member_path(ds: xr.Dataset, run: int) -> xr.Dataset:
    """Member `run` of a combined sweep dataset as the path dataset it was: padding removed, the
    per-member variables (status, stop_reason, config, member_attrs) back as attributes, the swept
    values as attributes `sweep_<key>`."""
    one = ds.isel(run=run)
    n = int(one["length"])
    one = one.isel(step=slice(0, n))
    if "event" in one.dims:
        one = one.isel(event=slice(0, int(one["n_events"])))
    attrs = {k: v for k, v in ds.attrs.items() if not k.startswith("sweep_")}
    attrs.update({k: str(one[k].values) for k in ("status", "stop_reason", "config")})
    if "member_attrs" in one:
        attrs.update(json.loads(str(one["member_attrs"].values)))
    swept = [k for k in one.coords if k not in one.dims and k != "run"]
    attrs.update({f"sweep_{k}": one[k].values.item() for k in swept})
    one = one.drop_vars([*MEMBER_VARIABLES, *swept, "run"], errors="ignore")
    one.attrs = attrs
    return one
