"""SIGINT and SIGTERM during a run (`Interrupts`, a context manager): raised at once between
writes, after the write inside one, and turned into RunInterrupted (one line: what the file keeps)."""

from __future__ import annotations

import contextlib
import signal
import threading

from continuation.errors import RunInterrupted
from continuation.files.path import load_path


class Interrupted(BaseException):
    """SIGINT / SIGTERM seen by the driver (a BaseException: no `except Exception` on the way swallows it)."""

    def __init__(self, signum: int):
        self.signum, self.name = signum, signal.Signals(signum).name
        super().__init__(self.name)


class Interrupts:
    """SIGINT and SIGTERM inside `with Interrupts(out, resume) as guard:` (from the main thread; in
    another the caller's handling stands): a signal between writes stops the run at once, one
    inside `guard.critical()` (a write) when the write is done, and none after `guard.finishing`
    is set (the run ends normally). On the way out the signal becomes RunInterrupted(name,
    128 + signum, file, points): `guard.writer`'s file and points once there is one, else the
    file being resumed (`out` with `resume`) and the points it holds, else nothing written."""

    def __init__(self, out=None, resume: bool = False):
        self.out, self.resume, self.writer = out, resume, None
        self.depth, self.pending, self.finishing = 0, None, False
        self._old = {}

    def _handle(self, signum, frame):
        if self.depth > 0 or self.finishing:
            self.pending = self.pending or signum
            return
        raise Interrupted(signum)

    def __enter__(self) -> "Interrupts":
        if threading.current_thread() is threading.main_thread():  # handlers can only be set from there
            self._old = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, kind, e, tb):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old = {}
        if isinstance(e, Interrupted):
            raise RunInterrupted(e.name, 128 + e.signum, *self._kept()) from None
        return False

    def _kept(self) -> tuple:
        """(file, points) that the interrupted run leaves."""
        if self.writer is not None:
            return self.out, len(self.writer.rows)
        if self.out is not None and self.resume and self.out.exists():
            points = 0
            with contextlib.suppress(Exception):
                points = load_path(self.out).sizes["step"]
            return self.out, points
        return None, 0

    @contextlib.contextmanager
    def critical(self):
        """A write: a signal that arrives inside is acted on when the write is done."""
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
        if self.depth == 0 and self.pending is not None and not self.finishing:
            signum, self.pending = self.pending, None
            raise Interrupted(signum)
