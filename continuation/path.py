"""Paths are data: an `xarray.Dataset` along dimension `step`, written to netCDF after every
accepted point, with theta at path points in checkpoints beside it.

Schema (one value per accepted point):

| variable          | meaning                                                             |
|-------------------|---------------------------------------------------------------------|
| s                 | the process clock (mu' = d mu/ds as the process's law gives it)     |
| lambda, gamma, t  | continuation parameters                                             |
| R, D, C, F        | functionals and free energy J(theta; mu) after correction           |
| grad_norm         | ||grad_theta J|| after correction                                    |
| krylov_iters      | Krylov matvecs (HVPs) of this step's tangent and projection solves  |
| hvps              | every HVP of the step: krylov_iters and the corrector's (Newton-CG) |
| gradients         | gradient evaluations of J by the step's corrector runs              |
| corrector_runs    | corrector calls (the step's, projection iterates, FD re-equilibrations) |
| newton_iters, ... | the corrector's iterations, under its own name (attribute           |
|                   | corrector_counts): newton_iters, adam_updates, sgd_updates, lbfgs_iters |
| seconds           | wall time of this step, rejected attempts included (work counters too) |
| step_size         | ds of the accepted step; next_step: the ds proposed for the next    |
| rejected          | attempts rejected before this one was accepted                      |
| C_drift           | (C - C0) / |C0|; constraint_drift: the same for the held functional |
| tangent_angle     | degrees the tangent turned since the previous point                 |
| krylov_residual   | largest relative residual of the tangent solves at this point       |
| checkpoint        | the step number of the checkpoint holding theta, or -1               |
| val_loss, val_acc | validation metrics, where the problem has validation data           |

Attributes: problem, process, predictor, corrector, projection, step_control, corrector_counts,
held (the functional the process holds, or "none"), settings (JSON: every strategy's options, the
problem's, the start), config (JSON of the configuration given, or the settings), status
("running", "finished", "stopped"), stop_reason, C0, G0, checkpoint_dir.
Writes are atomic (temporary file, then rename), checkpoints first: a killed run leaves a
readable file whose every point has its checkpoint. A checkpoint is deleted (pruned) only after
a file that no longer names it has replaced the old one; the last two are always kept (the
resumed point and the secant's previous one). One writer per output: `OutputLock` holds
OUT.lock (the owner's pid) for the run. Test hook: the environment variable
CONTINUATION_TEST_KILL_AT = "STAGE:STEP" SIGKILLs the writing process at STEP's STAGE:
"checkpoint" (its theta saved, the file not yet written), "write" (OUT.tmp written, not yet
renamed) or "prune" (renamed, the old checkpoint not yet deleted); tests/test_faults.py.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import sys
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from .errors import CheckpointMissing, OutputLocked, OutputNotWritable, PathFileError

INT_VARIABLES = ("krylov_iters", "hvps", "gradients", "corrector_runs", "rejected", "checkpoint")
PATH_VARIABLES = ("s", "lambda", "gamma", "t")  # every path file has these along `step` (baselines too)


def _is_int(name: str) -> bool:
    return name in INT_VARIABLES or name.endswith("_iters") or name.endswith("_updates")


def checkpoint_dir(path) -> Path:
    return Path(str(path) + ".ckpt")


def checkpoint_file(path, step: int) -> Path:
    return checkpoint_dir(path) / f"step_{step:06d}.pt"


def lock_file(path) -> Path:
    return Path(str(path) + ".lock")


def tmp_file(path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".tmp")


EVENT_TEXT = ("type", "method", "detail")
EVENT_INT = ("step", "mode", "multiplicity", "index_before", "index_after", "iterations", "hvps", "located", "checkpoint")
EVENT_FLOAT = ("s", "lambda", "gamma", "t", "R", "D", "C", "F", "eig")


def rows_to_dataset(rows: list[dict], attrs: dict) -> xr.Dataset:
    """Rows of scalars along `step`; a row's `eig` (a tuple) along (step, mode); the rows' `events`
    (lists of dicts) along `event`, as event_<field> variables (continuation/events.py)."""
    names = [n for n in (rows[0].keys() if rows else []) if n != "events"]
    data = {}
    for name in names:
        values = [r.get(name, np.nan) for r in rows]
        if name == "eig":
            data[name] = (("step", "mode"), np.asarray(values, dtype=np.float64).reshape(len(rows), -1))
            continue
        dtype = np.int64 if _is_int(name) or name == "morse_index" or name == "monitor_hvps" else np.float64
        data[name] = ("step", np.asarray(values, dtype=dtype))
    events = [e for r in rows for e in r.get("events", ())]
    if rows and "events" in rows[0]:
        for k in EVENT_TEXT:
            data[f"event_{k}"] = ("event", np.asarray([str(e.get(k, "")) for e in events], dtype=object))
        for k in EVENT_INT:
            data[f"event_{k}"] = ("event", np.asarray([int(e.get(k, -1)) for e in events], dtype=np.int64))
        for k in EVENT_FLOAT:
            data[f"event_{k}"] = ("event", np.asarray([float(e.get(k, np.nan)) for e in events], dtype=np.float64))
    return xr.Dataset(data, coords={"step": np.arange(len(rows))}, attrs=attrs)


def _scalar(v):
    return v.item() if hasattr(v, "item") else v  # numpy scalars to Python; strings of object arrays as they are


def dataset_to_rows(ds: xr.Dataset) -> list[dict]:
    """The rows a path dataset was written from (the inverse of rows_to_dataset)."""
    n = ds.sizes["step"]
    flat = [k for k in ds.data_vars if ds[k].dims == ("step",)]
    rows = [{k: ds[k].values[i].item() for k in flat} for i in range(n)]
    if "eig" in ds.data_vars:
        for i in range(n):
            rows[i]["eig"] = tuple(float(v) for v in ds["eig"].values[i])
    if "event_type" in ds.data_vars:
        for r in rows:
            r["events"] = []
        fields = EVENT_TEXT + EVENT_INT + EVENT_FLOAT
        for j in range(ds.sizes.get("event", 0)):
            e = {k: _scalar(ds[f"event_{k}"].values[j]) for k in fields if f"event_{k}" in ds.data_vars}
            if 0 <= e["step"] < n:
                rows[e["step"]]["events"].append(e)
    return rows


def event_file(path, k: int) -> Path:
    return checkpoint_dir(path) / f"event_{k:04d}.pt"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def not_writable(target, e: BaseException) -> OutputNotWritable:
    """The one-line error for a failed write of `target`: no space left, not writable, or the cause."""
    code = getattr(e, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT):
        why = "no space left on the device"
    elif code in (errno.EROFS, errno.EACCES, errno.EPERM):
        why = "not writable (read-only or forbidden folder)"
    else:
        try:
            free = shutil.disk_usage(Path(target).parent).free
        except OSError:
            free = None
        why = "no space left on the device" if free is not None and free < 1 << 20 else "could not be written"
    return OutputNotWritable(f"{target}: {why} ({_first_line(e)})")


def _test_kill(stage: str, step: int) -> None:
    """The test hook (module docstring): SIGKILL this process at `stage` of point `step`."""
    if os.environ.get("CONTINUATION_TEST_KILL_AT") == f"{stage}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


class OutputLock:
    """OUT.lock, created atomically (O_EXCL) with the owner's pid: one writer per output.

    A lock whose pid is not alive (a killed run) is taken over, with a note on stderr. Re-entrant
    within a process (run_config holds it around pre-training and continue_path)."""

    _held: dict = {}  # lock file -> depth, in this process

    def __init__(self, path):
        self.path = Path(path)
        self.file = lock_file(self.path)

    def acquire(self) -> "OutputLock":
        key = str(self.file.resolve())
        if key in OutputLock._held:
            OutputLock._held[key] += 1
            return self
        for _ in range(3):
            try:
                fd = os.open(self.file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pid = self._owner()
                if pid is not None and pid != os.getpid() and not _pid_alive(pid):
                    print(f"note: {self.file}: taking over the lock of pid {pid}, which is no longer running",
                          file=sys.stderr)
                    with contextlib.suppress(FileNotFoundError):
                        self.file.unlink()
                    continue
                if pid is None:
                    raise OutputLocked(f"{self.path} is locked by {self.file}, which names no pid; remove it if no "
                                       "run writes this output") from None
                raise OutputLocked(f"{self.path} is being written by another run (pid {pid}, lock {self.file}); "
                                   "wait for it, or use another --out") from None
            except FileNotFoundError as e:
                raise OutputNotWritable(f"{self.path}: its folder {self.path.parent} does not exist") from e
            except OSError as e:
                raise not_writable(self.path, e) from e
            try:
                os.write(fd, f"{os.getpid()}\n".encode())
            except OSError as e:
                os.close(fd)
                self.file.unlink(missing_ok=True)
                raise not_writable(self.file, e) from e
            os.close(fd)
            OutputLock._held[key] = 1
            with contextlib.suppress(OSError):
                tmp_file(self.path).unlink(missing_ok=True)  # a killed writer's leftover: ours now
            return self
        raise OutputLocked(f"{self.path}: could not take {self.file} (other runs are taking it)")

    def _owner(self) -> int | None:
        try:
            text = self.file.read_text().strip()
        except FileNotFoundError:
            return None
        except OSError:
            return None
        try:
            return int(text)
        except ValueError:
            return None

    def release(self) -> None:
        key = str(self.file.resolve())
        depth = OutputLock._held.get(key, 0)
        if depth > 1:
            OutputLock._held[key] = depth - 1
            return
        OutputLock._held.pop(key, None)
        if depth == 1 and self._owner() == os.getpid():
            with contextlib.suppress(OSError):
                self.file.unlink()

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


class PathWriter:
    """Appends points to a netCDF path and their theta to checkpoints, every point durable.

    `critical`: a context manager factory that each write runs inside (the driver's: SIGINT and
    SIGTERM wait until the write is done)."""

    def __init__(self, path, attrs: dict, checkpoint_every: int = 1, rows=None, critical=None):
        self.path = Path(path)
        self.attrs = dict(attrs)
        self.attrs["checkpoint_dir"] = checkpoint_dir(self.path).name
        self.checkpoint_every = max(1, int(checkpoint_every))
        self.rows = list(rows or [])
        self.critical = critical or contextlib.nullcontext
        folder = checkpoint_dir(self.path)
        try:
            if folder.exists() and not folder.is_dir():
                raise PathFileError(f"{folder} (the checkpoint folder of {self.path}) is not a folder")
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise not_writable(folder, e) from e
        self._forget_unnamed()

    def _forget_unnamed(self) -> None:
        """Delete checkpoints the file does not name (a run killed between its write and its pruning,
        or before its write): nothing on disk refers to them."""
        named = {int(r["checkpoint"]) for r in self.rows if int(r.get("checkpoint", -1)) >= 0}
        for f in checkpoint_dir(self.path).glob("step_*.pt"):
            try:
                k = int(f.stem[len("step_"):])
            except ValueError:
                continue
            if k not in named:
                with contextlib.suppress(OSError):
                    f.unlink()

    def append(self, row: dict, x: torch.Tensor, mu: torch.Tensor) -> None:
        step = len(self.rows)
        if "events" in row:
            base = sum(len(r.get("events", ())) for r in self.rows)
            row = dict(row, events=[self._save_event(e, base + i) for i, e in enumerate(row["events"])])
        with self.critical():
            file = checkpoint_file(self.path, step)
            try:
                torch.save({"x": x.detach().cpu(), "mu": mu.detach().cpu(), "s": row["s"], "step": step}, file)
            except (OSError, RuntimeError) as e:
                with contextlib.suppress(OSError):
                    file.unlink(missing_ok=True)
                raise not_writable(file, e) from e
            _test_kill("checkpoint", step)
            self.rows.append(dict(row, checkpoint=step))
            pruned = self._prunable(step)
            if pruned is not None:
                self.rows[pruned]["checkpoint"] = -1
            try:
                self._write()
            except BaseException:
                # the file on disk is the previous one: it names neither this point nor drops the pruned one
                self.rows.pop()
                if pruned is not None:
                    self.rows[pruned]["checkpoint"] = pruned
                raise
            _test_kill("prune", step)
            if pruned is not None:  # the file on disk no longer names it
                checkpoint_file(self.path, pruned).unlink(missing_ok=True)

    def _save_event(self, event: dict, k: int) -> dict:
        """The event without its tensors, which go to OUT.ckpt/event_K.pt (never pruned)."""
        x, v = event.get("x"), event.get("null_vector")
        event = {k: val for k, val in event.items() if k not in ("x", "null_vector")}
        if x is None:
            return event
        file = event_file(self.path, k)
        try:
            torch.save({"x": x.detach().cpu(), "null_vector": None if v is None else v.detach().cpu(),
                        "event": event}, file)
        except (OSError, RuntimeError) as e:
            raise not_writable(file, e) from e
        return dict(event, checkpoint=k)

    def _prunable(self, step: int) -> int | None:
        """Keep every checkpoint_every-th checkpoint and always the last two (resume, secant)."""
        old = step - 2
        if old >= 0 and old % self.checkpoint_every != 0 and self.rows[old]["checkpoint"] >= 0:
            return old
        return None

    def finish(self, status: str, reason: str) -> xr.Dataset:
        self.attrs.update(status=status, stop_reason=reason)
        with self.critical():
            return self._write()

    def write(self) -> xr.Dataset:
        with self.critical():
            return self._write()

    def _write(self) -> xr.Dataset:
        ds = rows_to_dataset(self.rows, self.attrs)
        tmp = tmp_file(self.path)
        try:
            ds.to_netcdf(tmp, engine="netcdf4")
            _test_kill("write", len(self.rows) - 1)
            os.replace(tmp, self.path)
        except (OSError, RuntimeError) as e:  # netCDF4 reports a full disk as RuntimeError "NetCDF: HDF error"
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise not_writable(self.path, e) from e
        return ds


def load_path(path) -> xr.Dataset:
    """Read a path dataset fully into memory (the file is closed on return).

    FileNotFoundError when there is no such file; PathFileError (one line naming the file) when
    it is a folder, not a netCDF file, damaged or truncated, or not a continuation path."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"path file not found: {path}")
    if path.is_dir():
        raise PathFileError(f"{path} is a folder, not a path file")
    try:
        with xr.open_dataset(path, engine="netcdf4") as ds:
            ds = ds.load()
    except (OSError, RuntimeError, ValueError, KeyError, IndexError, TypeError) as e:
        raise PathFileError(f"{path} is not a readable netCDF path file (damaged, truncated or another format: "
                            f"{_first_line(e)})") from e
    if "step" not in ds.dims:
        raise PathFileError(f"{path} is not a continuation path: it has no 'step' dimension")
    missing = [v for v in PATH_VARIABLES if v not in ds.data_vars or ds[v].dims != ("step",)]
    if missing:
        raise PathFileError(f"{path} is not a continuation path: it lacks {', '.join(missing)} along 'step'")
    return ds


def load_point(path, step: int = -1, size: int | None = None) -> dict:
    """theta (flat), mu and s of a saved point; step -1 means the last point. `size`: the number
    of parameters the caller's problem has (a checkpoint of another size is refused).

    PathFileError (one line naming the file) for a damaged, foreign or wrong-size checkpoint;
    CheckpointMissing when the point's checkpoint is not kept or not there."""
    ds = load_path(path)
    n = ds.sizes["step"]
    if n == 0:
        raise PathFileError(f"{path} holds no points")
    if "checkpoint" not in ds.data_vars:
        raise CheckpointMissing(f"{path} names no checkpoints (a path written without theta, e.g. a baseline)")
    k = step if step >= 0 else n + step
    if not 0 <= k < n:
        raise PathFileError(f"{path} has steps 0..{n - 1}; step {step} does not exist")
    folder, file = checkpoint_dir(path), checkpoint_file(path, k)
    kept = [int(c) for c in ds["checkpoint"].values if c >= 0]
    if int(ds["checkpoint"][k]) < 0:
        raise CheckpointMissing(f"no checkpoint for step {k} of {path} (checkpoints kept: {kept})")
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "is missing"
        raise CheckpointMissing(f"no checkpoint for step {k} of {path}: its checkpoint folder {folder} {what} "
                                f"(the file names checkpoints {kept})")
    if not file.is_file():
        there = sorted(int(f.stem[5:]) for f in folder.glob("step_*.pt") if f.stem[5:].isdigit())
        raise CheckpointMissing(f"no checkpoint for step {k} of {path}: {file} is missing (the file names "
                                f"checkpoints {kept}, the folder holds {there})")
    try:
        point = torch.load(file, weights_only=True, map_location="cpu")
    except Exception as e:  # truncated zip, garbage bytes, a foreign pickle: all one kind here
        # torch's own message advises weights_only=False, which is wrong (and unsafe) for a damaged file
        why = type(e).__name__ if "weights_only" in str(e) else _first_line(e)
        raise PathFileError(f"checkpoint {file} is damaged or not a checkpoint ({why})") from e
    # the point's scalars only: `eig` is (step, mode) and event_* run along `event`
    row = {name: ds[name].values[k].item() for name in ds.data_vars if ds[name].dims == ("step",)}
    _check_point(point, file, k, row, size)
    point["row"] = row
    return point


def _check_point(point, file, k: int, row: dict, size: int | None) -> None:
    if not isinstance(point, dict) or not {"x", "mu", "s"} <= set(point):
        raise PathFileError(f"checkpoint {file} is not a checkpoint (no x, mu, s)")
    x, mu = point["x"], point["mu"]
    if not (isinstance(x, torch.Tensor) and x.dim() == 1 and isinstance(mu, torch.Tensor) and mu.shape == (3,)):
        raise PathFileError(f"checkpoint {file} is damaged: x must be a vector and mu hold 3 values, got shapes "
                            f"{tuple(getattr(x, 'shape', ()))} and {tuple(getattr(mu, 'shape', ()))}")
    if point.get("step", k) != k or [float(v) for v in mu] != [row["lambda"], row["gamma"], row["t"]]:
        raise PathFileError(f"checkpoint {file} does not belong to step {k} of its path file (its mu "
                            f"{[float(v) for v in mu]}, the file's {[row['lambda'], row['gamma'], row['t']]})")
    if size is not None and x.numel() != size:
        raise PathFileError(f"checkpoint {file} holds {x.numel()} parameters; this run's problem has {size} "
                            "(a path written by a problem of another size)")
