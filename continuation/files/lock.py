"""One writer per output: OUT.lock, created atomically with the owner's pid (`OutputLock`, a
context manager), and the one-line error of a write that fails (`not_writable`)."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sys
from pathlib import Path

from continuation.errors import OutputLocked, OutputNotWritable, first_line
from continuation.files.schema import journal_file, lock_file, tmp_file


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
    return OutputNotWritable(f"{target}: {why} ({first_line(e)})")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def remove_stale_lock(path) -> bool:
    """Remove OUT.lock (and the writer's temporary files) when the pid it names is not running (a
    writer killed before it could release it); True when one was removed. A live owner's lock, or
    one that names no pid, is left alone."""
    path = Path(path)
    lock = OutputLock(path)
    pid = lock._owner()
    if pid is None or pid == os.getpid() or _pid_alive(pid):
        return False
    for leftover in (lock.file, tmp_file(path), tmp_file(journal_file(path))):
        with contextlib.suppress(OSError):
            leftover.unlink(missing_ok=True)
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
                if remove_stale_lock(self.path):
                    print(f"note: {self.file}: taking over the lock of pid {pid}, which is no longer running",
                          file=sys.stderr)
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
