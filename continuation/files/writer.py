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
this module's `_test_kill`, which the tests replace.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import netCDF4
import numpy as np
import torch
import xarray as xr

from continuation.errors import PathFileError
from continuation.files.journal import _journal_row, _line
from continuation.files.lock import OutputLock, not_writable  # noqa: F401  (importable from here)
from continuation.files.path import load_path
from continuation.files.schema import (CONVENTIONS, EVENT_FLOAT, EVENT_INT, EVENT_TEXT, checkpoint_dir,
                                       checkpoint_file, event_file, history_line, journal_file, package_version,
                                       rows_to_dataset, tmp_file)

# points (events) per chunk along `step` (`event`). Measured on the Gaussian row (45 variables): the
# append costs the same at 64, 128, 512 and 1024 (11 ms), load_path at 10,000 points 30-50 ms for
# all; a 20-point file is 111, 126, 215 and 334 kB (the whole file before: 44 kB)
CHUNK = 128
UNLIMITED = ("step", "event")


def _test_kill(stage: str, step: int) -> None:
    """The test hook (module docstring): SIGKILL this process at `stage` of point `step`."""
    if os.environ.get("CONTINUATION_TEST_KILL_AT") == f"{stage}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)


def _kill(stage: str, step: int) -> None:
    _test_kill(stage, step)  # looked up at the call: tests replace continuation.files.writer._test_kill


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
        self.attrs.update(Conventions=self.attrs.get("Conventions", CONVENTIONS),
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

    def append(self, row: dict, x: torch.Tensor, mu: torch.Tensor, state: str | None = None,
               tangent: torch.Tensor | None = None, reference: torch.Tensor | None = None) -> None:
        """Point `row` with theta `x` and `mu` in its checkpoint, and there too, when given, `state`
        (the strategies' slots as JSON text, continuation/engine/state.py dump_slots) and `tangent`
        (the point's tangent: a resume orients the next point's tangent by it, as the run did)."""
        step = len(self.rows)
        if "events" in row:
            row = dict(row, events=[self._save_event(e, self._events + i) for i, e in enumerate(row["events"])])
        with self.critical():
            file = checkpoint_file(self.path, step)
            try:
                point = {"x": x.detach().cpu(), "mu": mu.detach().cpu(), "s": row["s"], "step": step}
                if state is not None:
                    point["state"] = state
                if tangent is not None:
                    point["tangent"] = tangent.detach().cpu()
                if reference is not None:  # what oriented (and bordered) the tangent where not the previous
                    point["reference"] = reference.detach().cpu()  # point's: a switched branch's start
                torch.save(point, file)
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
