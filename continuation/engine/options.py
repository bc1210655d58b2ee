"""`continue_path`'s options, grouped: where a run starts (`Start`) and what it writes (`Output`).

    continue_path(..., start=Start(mu=(1.0, 1.0), settle=3), output=Output("p.nc", resume=True))

As shorthands, `start` may be the multipliers themselves, (lambda, gamma) or (lambda, gamma, t),
and `output` a path (`as_start`, `as_output`). Each checks its own options when made (one
ValueError line naming `start.settle`, `output.path`, ...); the multipliers and the point of an
earlier run are checked by continuation/strategies/checks.py `check_inputs` when the run begins.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

from continuation.strategies.options import described


@dataclass(frozen=True)
class Start:
    """Where a run starts: `mu` = (lambda, gamma) or (lambda, gamma, t) with `theta0` (a parameter
    pytree; None: the problem's `init_params(0)`), or `from_point` = (path, step), a point of an
    earlier run (then theta0 only gives the parameters' shapes, dtype and device). One of the two.

    `equilibrate`: run the corrector `settle` times at the start point before the first step
    (a point of another run too: another problem's point is not on this one's surface); False
    takes the point as it is. `settings`: how theta0 was made (run_config passes its [start] table:
    seed, pre-training), recorded with the run's settings; None records a SHA-256 of theta0."""

    mu: Any = None
    theta0: Any = None
    equilibrate: bool = True
    settle: int = 1
    from_point: tuple | None = None
    settings: dict | None = None

    def __post_init__(self):
        if (self.mu is None) == (self.from_point is None):
            raise ValueError("start needs mu=(lambda, gamma[, t]) or from_point=(path, step), "
                             + ("not both" if self.mu is not None else "got neither"))
        _flag("start.equilibrate", self.equilibrate)
        if isinstance(self.settle, bool) or not isinstance(self.settle, int) or self.settle < 1:
            raise ValueError(f"start.settle must be an integer >= 1, got {described(self.settle)}")
        if self.settings is not None and not isinstance(self.settings, dict):
            raise ValueError(f"start.settings must be a dict or None, got {described(self.settings)}")


@dataclass(frozen=True)
class Output:
    """What a run writes: `path` (netCDF; None: the path is kept in memory only), with theta at
    points in PATH.ckpt/, every `checkpoint_every`-th point and the last two kept; `resume`:
    continue the run in an existing `path` from its last point (refused for one written with
    other settings). `progress`: a bar toward the stop rule's target; `on_point(step, row)`:
    called after every point is written; `stop_requested()`: asked after every point is
    written, True stops the run as SIGINT would (RunInterrupted, the file resumable; a sweep's
    Ctrl-C reaches its members this way); `config`: the TOML configuration recorded in the
    file's attributes (None: the run's settings)."""

    path: str | os.PathLike | None = None
    resume: bool = False
    checkpoint_every: int = 1
    progress: bool = True
    on_point: Callable | None = None
    stop_requested: Callable | None = None
    config: dict | None = None

    def __post_init__(self):
        if self.path is not None and not isinstance(self.path, (str, os.PathLike)):
            raise ValueError(f"output.path must be a path (str or Path) or None, got {described(self.path)}")
        _flag("output.resume", self.resume)
        _flag("output.progress", self.progress)
        if self.resume and self.path is None:
            raise ValueError("output.resume = True needs output.path: the file of the run to continue")
        if self.on_point is not None and not callable(self.on_point):
            raise ValueError(f"output.on_point must be callable as on_point(step, row), got {described(self.on_point)}")
        if self.stop_requested is not None and not callable(self.stop_requested):
            raise ValueError(f"output.stop_requested must be callable as stop_requested() -> bool, got "
                             f"{described(self.stop_requested)}")
        if self.config is not None and not isinstance(self.config, dict):
            raise ValueError(f"output.config must be a dict or None, got {described(self.config)}")


def as_start(value) -> Start:
    """A Start, or the multipliers (lambda, gamma[, t]) as a tuple, list, array or tensor."""
    if isinstance(value, Start):
        return value
    if isinstance(value, (tuple, list)) or hasattr(value, "shape"):
        return Start(mu=value)
    raise ValueError(f"start must be a Start or (lambda, gamma[, t]), got {described(value)}")


def as_output(value) -> Output:
    """An Output, a path (str or os.PathLike), or None (in memory)."""
    if value is None:
        return Output()
    if isinstance(value, Output):
        return value
    if isinstance(value, (str, os.PathLike)):
        return Output(path=value)
    raise ValueError(f"output must be an Output, a path (str or Path) or None, got {described(value)}")


def _flag(name: str, value) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {described(value)}")
