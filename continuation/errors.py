"""The library's errors: each message is one line naming the file, option or step and the cause.

- `ContinuationError`: a run that cannot go on (the command line: `error: ...`, exit 1).
- `FileProblem`: a ContinuationError about a file (the command line: exit 2): the subclasses below
  but RunInterrupted, and `OutputExists` (a run's output is there and --resume was not given),
  `SetupMismatch` (--resume under other settings than the file's).
- `PathFileError` (also a ValueError): a path file or checkpoint that is damaged, truncated,
  foreign (not a continuation path) or of another problem's size; `CheckpointMissing` (also a
  FileNotFoundError): a point whose checkpoint is not kept or not there.
- `OutputLocked`: another live run writes the same output (its pid in OUT.lock).
- `OutputNotWritable`: the output (or its folder) cannot be written: no space left, read-only.
- `RunInterrupted`: SIGINT or SIGTERM; the file keeps every point written so far (status
  "running") and resumes with --resume. `exit_code` is 130 (SIGINT) or 143 (SIGTERM).
"""

from __future__ import annotations

import shlex


class ContinuationError(RuntimeError):
    """A run that cannot go on; the message is one line naming the step and the cause."""


class Misconfigured(ContinuationError, ValueError):
    """A configuration mistake found when the run could first check it (a quantity the problem
    does not have, more eigenvalues than parameters off the gauge orbit, strategies that cannot
    work together): exit 2, as a bad configuration file. `section`: the configuration table the
    mistake is in ("predictor", "projection", ...), or None."""

    def __init__(self, message: str, section: str | None = None):
        super().__init__(message)
        self.section = section


class FileProblem(ContinuationError):
    """A ContinuationError about a file or an output (the command line exits 2)."""


class OutputExists(FileProblem):
    """The output exists and the run was not asked to resume it."""


class SetupMismatch(FileProblem):
    """A resume under other settings than the file was written with; the message names the first."""


class PathFileError(FileProblem, ValueError):
    """A path file or checkpoint that cannot be used; the message names the file and what is wrong."""


class CheckpointMissing(PathFileError, FileNotFoundError):
    """A point of a path whose checkpoint is not kept (or was removed)."""


class OutputLocked(FileProblem):
    """Another live run (pid in OUT.lock) writes the same output."""


class OutputNotWritable(FileProblem):
    """The output cannot be written: no space left, or a read-only or forbidden folder."""


class RunInterrupted(ContinuationError):
    """SIGINT / SIGTERM during a run: the file is kept (status "running") and resumes with --resume.

    `file`: the path file (None when nothing was written yet), `points`: how many it holds,
    `signal_name`, `exit_code` (128 + the signal number: 130, 143)."""

    def __init__(self, signal_name: str, exit_code: int, file=None, points: int = 0):
        self.signal_name, self.exit_code, self.file, self.points = signal_name, exit_code, file, points
        if file is None:
            msg = f"interrupted by {signal_name} before the first point was written; nothing to resume"
        else:
            msg = (f"interrupted by {signal_name}: {file} keeps {points} points (status running) and "
                   f"continues with --resume")
        super().__init__(msg)

    def line(self, argv=None) -> str:
        """The one line for a command line run from `argv` (its arguments after the program name):
        this message and the exact command that resumes it."""
        if self.file is None or argv is None:
            return str(self)
        args = [str(a) for a in argv]
        if "--resume" not in args:
            args.append("--resume")
        return f"{self}: {shlex.join(['python', '-m', 'continuation', *args])}"


def first_line(e: BaseException, *, typed: bool = True) -> str:
    """The first line of an exception's message, "Type: line" (typed, how a cause is quoted inside
    a one-line error or a status) or the line alone (typed=False, an error shown to the user as
    it is); the type's name alone for an empty message."""
    text = str(e).strip().splitlines()
    name = type(e).__name__.lstrip("_")  # torch.linalg.LinAlgError's class is torch._C._LinAlgError
    if not text:
        return name
    return f"{name}: {text[0]}" if typed else text[0]
