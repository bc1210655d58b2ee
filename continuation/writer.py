"""The path writer: each accepted point appended in place to OUT (netCDF-4, `step` and `event`
unlimited) behind a write-ahead journal, its checkpoint first; the output lock; the test hook.

One point k (PathWriter.append), in this order:

  1. theta -> OUT.ckpt/step_k.pt                                    hook "checkpoint"
  2. the point's line -> OUT.journal, without its newline (not on record yet)
  3. OUT opened "a"; every variable's value written at index k (the events at [e0:e1] of the
     event_* variables, the pruned point's checkpoint set to -1); closed
                                                                    hook "write": half the variables written
                                                                    hook "append": OUT done, the line not committed
  4. the newline -> OUT.journal: the point is on record
  5. the checkpoint of point k - 2 deleted, when pruned             hook "prune"

At the end (finish): the status line -> OUT.journal (hook "finish": on record, OUT still says
"running"; a resume then writes OUT whole and deletes the journal), OUT written whole, the
journal deleted.

A kill before 4 loses point k only (a torn last journal line is dropped on read, and the next
writer forgets its checkpoint); after 4 the point is kept whatever state OUT is in: HDF5 can
leave a file unreadable when killed during its metadata flush, but `load_path` reads the journal
while there is one, and a resume rebuilds OUT from it. An error in 2-4 (no space left) truncates
the line and leaves the point off the record (OutputNotWritable, one line).

Whole writes: rows_to_dataset -> OUT.tmp (xarray, chunks of CHUNK points along the unlimited
dimensions) -> rename (hook "write" before the rename). They are made for the first point of a
new file (then its journal is written whole: OUT.journal.tmp, rename), a row OUT cannot take in
place (a variable of the file missing from the row, another eig width), OUT held open by a
reader (HDF5 refuses to open a file for writing that another process reads), a resume (OUT and
the journal rebuilt from the rows, with the session's line added to the history) and `finish`
(the status and stop reason, then the journal deleted: a finished file is OUT alone).

Cost per appended point (benchmarks/path_append.py, the ~45 variables of a monitored Gaussian
path): opening and closing OUT (HDF5 reads every variable's header: 5-8 ms, the larger part),
one single-value write per variable (~0.1 ms each) and a JSON line (~0.1 ms, ~640 bytes): 10 ms
at point 1,000 as at point 1, 11-12 ms at 10,000 and 13 ms at 50,000 (a slow growth, likely
HDF5's chunk index); the whole-file rewrite it replaces cost 30 ms at the start, 35 ms
at 1,000 points and 76 ms at 10,000 (O(points)). A whole write is O(points): once per resume
and at the finish (~40-80 ms at 1,000 points). Durability: flushed to the operating system, no
fsync (as with the renamed whole file before): a power cut may lose the last points, a killed
process does not.

Test hook: the environment variable CONTINUATION_TEST_KILL_AT = "STAGE:STEP" SIGKILLs the
writing process at STEP's STAGE (above; in a whole write "write" is OUT.tmp written, not yet
renamed); tests/test_faults.py, tests/test_path_append.py. The hook is called through
continuation.path (`_kill`), where the tests replace it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import netCDF4
import numpy as np
import torch
import xarray as xr

from . import path as _path
from .errors import OutputLocked, OutputNotWritable, PathFileError
from .path import (EVENT_FLOAT, EVENT_INT, EVENT_TEXT, _first_line, checkpoint_dir, checkpoint_file, event_file,
                   history_line, journal_file, load_path, lock_file, package_version, rows_to_dataset, tmp_file)

# points (events) per chunk along `step` (`event`). Measured on the Gaussian row (45 variables): the
# append costs the same at 64, 128, 512 and 1024 (11 ms), load_path at 10,000 points 30-50 ms for
# all; a 20-point file is 111, 126, 215 and 334 kB (the whole file before: 44 kB)
CHUNK = 128
UNLIMITED = ("step", "event")
EVENT_FIELDS = EVENT_TEXT + EVENT_INT + EVENT_FLOAT


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


def _kill(stage: str, step: int) -> None:
    _path._test_kill(stage, step)  # looked up in continuation.path, where tests replace it


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

    A lock whose pid is not alive (a killed run) is taken over, with a note on stderr, and the
    killed writer's temporary files (OUT.tmp, OUT.journal.tmp) removed. Re-entrant within a
    process (run_config holds it around pre-training and continue_path)."""

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
            for leftover in (tmp_file(self.path), tmp_file(journal_file(self.path))):  # a killed writer's: ours now
                with contextlib.suppress(OSError):
                    leftover.unlink(missing_ok=True)
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


# -- the journal ---------------------------------------------------------------------------------
# OUT.journal, JSON lines: {"attrs": {...}} first (every attribute), then per point
# {"row": {...}, "prune": K or null} (the row as rows_to_dataset takes it: scalars, eig as a list,
# events without their tensors; prune: the earlier point whose checkpoint this one deletes), and
# {"attrs": {...}} for attribute updates (merged). A line is on record once its newline is written.


def _plain(value):
    """json's fallback: numpy and torch numbers (and arrays) as Python numbers (lists)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"a path value must be a number, a string or a list of them, got {type(value).__name__}")


def _line(entry: dict) -> bytes:
    return json.dumps(entry, separators=(",", ":"), allow_nan=True, default=_plain).encode()


def _journal_row(row: dict) -> dict:
    """The row as the file holds it: its events reduced to the event_* fields."""
    if "events" not in row:
        return row
    return dict(row, events=[{k: e[k] for k in EVENT_FIELDS if k in e} for e in row["events"]])


def _entry(entry, rows: list) -> tuple[str, dict | None, int | None]:
    """("attrs", attrs, None) or ("row", row, prune) of one parsed journal line; ValueError if it is neither."""
    if not isinstance(entry, dict):
        raise ValueError("not a JSON object")
    if "attrs" in entry:
        if not isinstance(entry["attrs"], dict):
            raise ValueError("attrs is not an object")
        return "attrs", entry["attrs"], None
    row, prune = entry.get("row"), entry.get("prune")
    if not isinstance(row, dict) or not all(isinstance(k, str) for k in row):
        raise ValueError("neither attrs nor a row")
    if prune is not None and not (isinstance(prune, int) and 0 <= prune < len(rows)):
        raise ValueError(f"prune {prune!r} names no earlier point")
    if "eig" in row:
        row["eig"] = tuple(float(v) for v in row["eig"])
    if not isinstance(row.get("events", []), list) or not all(isinstance(e, dict) for e in row.get("events", [])):
        raise ValueError("events is not a list of objects")
    return "row", row, prune


def read_journal(path) -> tuple[dict, list[dict]] | None:
    """(attrs, rows) on record in OUT.journal, or None when there is no journal (or none of it is
    on record). The part after the last newline, and a last line that is not valid, are a torn
    write: dropped. Cost: O(points) (one json.loads a point).

    PathFileError (one line naming the journal) when it cannot be read or a line before the last
    is not a journal line (damage, not a torn write)."""
    file = journal_file(path)
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        return None  # none, or deleted by a finishing writer since: the file is then whole
    except OSError as e:
        raise PathFileError(f"{file} (the journal of {path}) cannot be read ({_first_line(e)})") from e
    lines = data.split(b"\n")[:-1]  # after the last newline: a line not on record
    attrs, rows = None, []
    for i, line in enumerate(lines):
        try:
            kind, value, prune = _entry(json.loads(line), rows)
            if attrs is None and kind != "attrs":
                raise ValueError("the first line holds no attrs")
        except (ValueError, TypeError) as e:
            if i == len(lines) - 1:
                break  # a torn last line
            raise PathFileError(f"{file} (the journal of {path}) is damaged at line {i + 1} of {len(lines)} "
                                f"({_first_line(e)}); remove it to read {path} without it") from None
        if kind == "attrs":
            attrs = {**(attrs or {}), **value}
            continue
        rows.append(value)
        if prune is not None:
            rows[prune]["checkpoint"] = -1
    return None if attrs is None else (attrs, rows)


# -- the writer ----------------------------------------------------------------------------------


def _encoding(ds: xr.Dataset) -> dict:
    """Chunks of CHUNK along the unlimited dimensions; the event texts as variable-length strings."""
    enc = {}
    for name, var in ds.variables.items():
        if var.dims and var.dims[0] in UNLIMITED:
            enc[name] = {"chunksizes": (CHUNK,) + tuple(var.shape[1:])}
        if name in (f"event_{k}" for k in EVENT_TEXT):
            enc[name]["dtype"] = str
    return enc


def _for_netcdf(ds: xr.Dataset) -> xr.Dataset:
    """The event texts as numpy strings: netCDF4 refuses an empty object array for a string variable."""
    texts = {f"event_{k}" for k in EVENT_TEXT} & set(ds.data_vars)
    return ds.assign({name: ds[name].astype(str) for name in texts}) if texts else ds


def _open_append(path) -> netCDF4.Dataset:
    return netCDF4.Dataset(path, "a")


class _Layout:
    """What OUT holds, for appending in place: the variables along `step` (but the coordinate),
    eig's width (None without eig) and whether the events are written."""

    def __init__(self, ds: xr.Dataset):
        self.names = [k for k in ds.data_vars if ds[k].dims == ("step",)]
        self.modes = ds.sizes["mode"] if "eig" in ds.data_vars else None
        self.events = "event_type" in ds.data_vars

    def fits(self, row: dict) -> bool:
        """Whether rows_to_dataset would give the file plus this row (a row's extra keys are ignored there too)."""
        if any(name not in row for name in self.names):
            return False
        if self.modes is not None and ("eig" not in row or len(row["eig"]) != self.modes):
            return False
        return True


class PathWriter:
    """Appends points to a netCDF path and their theta to checkpoints, every point durable.

    `rows`: the points already written (a resume): OUT and its journal are rebuilt from them
    (O(points) once: a half-appended or unreadable OUT replaced), with a line added to the
    history. Without rows a new file is started (a leftover journal removed).
    `critical`: a context manager factory that each write runs inside (the driver's: SIGINT and
    SIGTERM wait until the write is done). Cost per point: module docstring.

    OutputNotWritable (one line naming the file) when the checkpoint folder, OUT or its journal
    cannot be written."""

    def __init__(self, path, attrs: dict, checkpoint_every: int = 1, rows=None, critical=None):
        self.path = Path(path)
        self.journal = journal_file(self.path)
        self.attrs = dict(attrs)
        self.attrs["checkpoint_dir"] = checkpoint_dir(self.path).name
        self.checkpoint_every = max(1, int(checkpoint_every))
        self.rows = list(rows or [])
        self.critical = critical or contextlib.nullcontext
        self._layout: _Layout | None = None  # OUT as last written by this writer; None: write it whole next
        self._journal_size: int | None = None  # bytes of the journal on record; None: no journal yet
        self._pending = 0  # bytes of the line written after them, not yet committed
        self._events = sum(len(r.get("events", ())) for r in self.rows)
        folder = checkpoint_dir(self.path)
        try:
            if folder.exists() and not folder.is_dir():
                raise PathFileError(f"{folder} (the checkpoint folder of {self.path}) is not a folder")
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise not_writable(folder, e) from e
        before = self.attrs.get("history") or (self._history_on_disk() if self.rows else "")
        self.attrs.update(Conventions=self.attrs.get("Conventions", _path.CONVENTIONS),
                          continuation_version=package_version(),
                          history=f"{before}\n{history_line()}" if before else history_line())
        with self.critical():
            if self.rows:
                self._write_whole(hook=False)  # the test hook is for points, not the rebuild
                self._write_journal()
            else:
                for stale in (self.journal, tmp_file(self.journal)):  # a run killed before its first point
                    with contextlib.suppress(OSError):
                        stale.unlink(missing_ok=True)
        self._forget_unnamed()

    def _history_on_disk(self) -> str:
        with contextlib.suppress(FileNotFoundError, PathFileError):
            return str(load_path(self.path).attrs.get("history", ""))
        return ""

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
            row = dict(row, events=[self._save_event(e, self._events + i) for i, e in enumerate(row["events"])])
        with self.critical():
            file = checkpoint_file(self.path, step)
            try:
                torch.save({"x": x.detach().cpu(), "mu": mu.detach().cpu(), "s": row["s"], "step": step}, file)
            except (OSError, RuntimeError) as e:
                with contextlib.suppress(OSError):
                    file.unlink(missing_ok=True)
                raise not_writable(file, e) from e
            _kill("checkpoint", step)
            self.rows.append(dict(row, checkpoint=step))
            pruned = self._prunable(step)
            if pruned is not None:
                self.rows[pruned]["checkpoint"] = -1
            try:
                self._write_point(step, pruned)
            except BaseException:
                # not on record: the journal names neither this point nor drops the pruned one
                self.rows.pop()
                if pruned is not None:
                    self.rows[pruned]["checkpoint"] = pruned
                raise
            self._events += len(row.get("events", ()))
            _kill("prune", step)
            if pruned is not None:  # the record no longer names it
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
        """The status and stop reason on record, OUT written whole, then the journal deleted."""
        before = {k: self.attrs.get(k) for k in ("status", "stop_reason")}
        self.attrs.update(status=status, stop_reason=reason)
        with self.critical():
            size = self._journal_size
            try:
                if size is not None:
                    self._journal_put({"attrs": {"status": status, "stop_reason": reason}}, commit=True)
                    _kill("finish", len(self.rows) - 1)
                ds = self._write_whole()
            except BaseException:  # OUT is the running file still: the record says so too
                self.attrs.update(before)
                if size is not None:
                    self._journal_size = size
                    self._journal_truncate()
                raise
            try:
                self.journal.unlink(missing_ok=True)
            except OSError as e:
                raise not_writable(self.journal, e) from e
            self._journal_size = None
            return ds

    def write(self) -> xr.Dataset:
        """OUT written whole from the rows and attributes (these on record in the journal first)."""
        with self.critical():
            if self._journal_size is not None:
                self._journal_put({"attrs": self.attrs}, commit=True)
            return self._write_whole()

    # -- OUT ------------------------------------------------------------------------------------
    def _write_point(self, step: int, pruned: int | None) -> None:
        """Point `step` (the last row) into OUT and on record (module docstring: steps 2-4)."""
        if self._journal_size is None:  # a new file: OUT whole, then its journal whole
            self._write_whole()
            self._write_journal()
            return
        row = self.rows[step]
        self._journal_put({"row": _journal_row(row), "prune": pruned}, commit=False)
        try:
            layout = self._layout
            if not (layout is not None and layout.fits(row) and self._append_in_place(layout, step, pruned)):
                self._write_whole()
            _kill("append", step)
            self._journal_commit()
        except BaseException:
            self._layout = None  # OUT may be half-appended: the next point writes it whole
            self._journal_truncate()  # the line off the record (a reader drops it anyway: no newline)
            raise

    def _append_in_place(self, layout: _Layout, step: int, pruned: int | None) -> bool:
        """Write point `step` into OUT at index `step`; False (nothing written) when OUT cannot be
        opened for appending (a reader holds it: HDF5 locks it), or is not the file last written."""
        try:
            nc = _open_append(self.path)
        except OSError:
            return False
        try:
            with nc:
                v = nc.variables
                if len(nc.dimensions["step"]) != step or (layout.events and
                                                          len(nc.dimensions["event"]) != self._events):
                    return False  # not the file this writer last wrote
                row = self.rows[step]
                v["step"][step] = step
                for i, name in enumerate(layout.names):
                    if i == len(layout.names) // 2:
                        _kill("write", step)
                    v[name][step] = row[name]
                if layout.modes is not None:
                    v["eig"][step, :] = np.asarray(row["eig"], dtype=np.float64)
                if pruned is not None:
                    v["checkpoint"][pruned] = -1
                events = row.get("events", []) if layout.events else []
                if events:
                    e0, e1 = self._events, self._events + len(events)
                    for k in EVENT_TEXT:
                        v[f"event_{k}"][e0:e1] = np.asarray([str(e.get(k, "")) for e in events], dtype=object)
                    for k in EVENT_INT:
                        v[f"event_{k}"][e0:e1] = np.asarray([int(e.get(k, -1)) for e in events], dtype=np.int64)
                    for k in EVENT_FLOAT:
                        v[f"event_{k}"][e0:e1] = np.asarray([float(e.get(k, np.nan)) for e in events],
                                                            dtype=np.float64)
        except (OSError, RuntimeError) as e:  # netCDF4 reports a full disk as RuntimeError "NetCDF: HDF error"
            raise not_writable(self.path, e) from e
        return True

    def _write_whole(self, hook: bool = True) -> xr.Dataset:
        """OUT from the rows: OUT.tmp, then renamed over OUT (atomic)."""
        ds = rows_to_dataset(self.rows, self.attrs)
        tmp = tmp_file(self.path)
        try:
            _for_netcdf(ds).to_netcdf(tmp, engine="netcdf4", unlimited_dims=[d for d in UNLIMITED if d in ds.dims],
                                     encoding=_encoding(ds))
            if hook:
                _kill("write", len(self.rows) - 1)
            os.replace(tmp, self.path)
        except (OSError, RuntimeError) as e:  # netCDF4 reports a full disk as RuntimeError "NetCDF: HDF error"
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise not_writable(self.path, e) from e
        self._layout = _Layout(ds)
        return ds

    # -- the journal ----------------------------------------------------------------------------
    def _write_journal(self) -> None:
        """The journal whole (the attributes, then every row): OUT.journal.tmp, renamed over it."""
        tmp = tmp_file(self.journal)
        data = b"".join(_line(e) + b"\n" for e in
                        [{"attrs": self.attrs}] + [{"row": _journal_row(r), "prune": None} for r in self.rows])
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, self.journal)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise not_writable(self.journal, e) from e
        self._journal_size = len(data)

    def _journal_put(self, entry: dict, commit: bool) -> None:
        """One line after the part on record (a line left uncommitted before is overwritten);
        on record only with commit=True (else _journal_commit)."""
        data = _line(entry)
        self._pending = len(data)
        try:
            with open(self.journal, "r+b") as f:
                f.seek(self._journal_size)
                f.truncate()
                f.write(data + b"\n" if commit else data)
        except OSError as e:
            self._journal_truncate()
            raise not_writable(self.journal, e) from e
        if commit:
            self._journal_size += len(data) + 1

    def _journal_commit(self) -> None:
        try:
            with open(self.journal, "r+b") as f:
                f.seek(self._journal_size + self._pending)
                f.write(b"\n")
        except OSError as e:
            self._journal_truncate()
            raise not_writable(self.journal, e) from e
        self._journal_size += self._pending + 1

    def _journal_truncate(self) -> None:
        with contextlib.suppress(OSError):
            os.truncate(self.journal, self._journal_size)
