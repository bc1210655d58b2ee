"""Stability monitoring along a path: the lowest non-gauge eigenvalues of A at accepted points,
the Morse index, and the options of event detection, location and branch switching.

`Monitor` is the `[monitor]` section of a configuration (a strategy like the others; one per
run). At every `every`-th accepted point it computes the `modes` lowest eigenpairs of
A = Hess_theta J off the gauge orbit (continuation/singular/stability.py: dense for small N, LOBPCG
warm-started from the previous point otherwise) and the Morse index (eigenvalues below
-zero_tol). Between two monitored points the event finder (continuation/singular/events.py) looks for:

- an eigenvalue crossing zero (the Morse index changes): a latent direction switching on or off,
  posterior collapse, any bifurcation of the minimiser; located to `locate_tol` (relative, in the
  multipliers) by the Illinois method on that eigenvalue along the branch, each trial point a
  prediction from the bracket's start and a Newton solve on grad J = 0 that does not enforce
  descent (it converges to saddles), or, on a stochastic problem (its J changes with the draw), by
  linear interpolation between the two points (`locate = "interpolate"`);
- an eigenvalue that was heading for zero and turned back without a sign change at the points:
  the path exchanged branches (it left a branch at its end, or slid to another one); the branch
  it left or joined is probed at the other end, and the crossing located on it;
- a quantity of the path crossing a value (`crossings = {C = [0.1]}`; R, D, C, F, or any of the
  problem's evaluation metrics, e.g. train_C or a latent unit's KL kl_z3 on a neural problem): a
  user event, located the same way. modes = 0 computes no eigenvalues (crossings only: cheap).

branch = "minimising" (default): a process that follows minima, on reaching a point of index > 0
past a located crossing, switches to the minimising branch: a step along the eigenvector of the
negative eigenvalue, as long as J decreases, then the run's corrector; both events are written.
branch = "follow": stay on the branch (the saddle is written with its index and the event).
branch = "switch" (pseudo-arclength only): at each located simple bifurcation, continue on the
branch born there (continuation/singular/branch_switch.py: the reduced equation along the null
vector, on the side the path was travelling, the null vector's sign as computed), oriented away
from the bifurcation point; a `branch_switch` event says where. A multiple bifurcation is not
switched at (an event says so).

Cost per monitored point: N HVPs (dense) or LOBPCG's, in the path variable `monitor_hvps`; per
located event: the trial points' Newton and eigenvalue HVPs, in the event's `hvps`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, final

import torch

from problems.base import FUNCTIONAL_NAMES

from continuation.strategies.options import integer, positive
from continuation.errors import Misconfigured
from continuation.singular.stability import Spectrum, lowest_eigenpairs
from continuation.strategies.base import Strategy

BRANCHES = ("minimising", "follow", "switch")
LOCATES = ("auto", "newton", "interpolate")
CROSSABLE = FUNCTIONAL_NAMES + ("F",)  # always there; a problem's evaluation metrics too (checked at the start)


@final
@dataclass
class Monitor(Strategy):
    """Stability monitoring and events (module docstring).

    every: monitor every k-th accepted point (and the start); modes: how many of the lowest
    eigenvalues to compute (0: none, only crossings); zero_tol: an eigenvalue below -zero_tol counts in the Morse index
    (units of A: nats per sample per unit parameter^2); locate_tol: relative tolerance of an
    event's multipliers; max_locate: trial points per event at most; tol, maxiter: LOBPCG's tolerance and
    iterations;
    dense_below: at most this many parameters, the dense eigensolver (N HVPs)."""

    every: int = 1
    modes: int = 3
    zero_tol: float = 1e-9
    locate_tol: float = 1e-8
    locate: str = "auto"
    branch: str = "minimising"
    crossings: dict = field(default_factory=dict)
    max_locate: int = 60
    tol: float = 1e-9
    maxiter: int = 200
    dense_below: int = 256
    name: ClassVar[str] = "stability"

    def __post_init__(self):
        integer("every", self.every, minimum=1)
        integer("modes", self.modes, minimum=0)
        integer("max_locate", self.max_locate, minimum=1)
        integer("maxiter", self.maxiter, minimum=1)
        integer("dense_below", self.dense_below, minimum=0)
        for option in ("zero_tol", "locate_tol", "tol"):
            positive(option, getattr(self, option))
        if self.branch not in BRANCHES:
            raise ValueError(f"monitor branch must be one of {BRANCHES}, got {self.branch!r}")
        if self.locate not in LOCATES:
            raise ValueError(f"monitor locate must be one of {LOCATES}, got {self.locate!r}")
        if not isinstance(self.crossings, dict):
            raise ValueError(f"monitor crossings must be a table {{functional = [values]}}, e.g. {{C = [0.1]}}, "
                             f"got {self.crossings!r}")
        clean = {}
        for name, values in self.crossings.items():
            if not (isinstance(name, str) and name.isidentifier()):
                raise ValueError(f"monitor crossings: {name!r} is not a quantity's name (R, D, C, F, or an evaluation "
                                 f"metric such as train_C, kl_z0)")
            values = values if isinstance(values, (list, tuple)) else [values]
            for v in values:
                if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or abs(v) == float("inf"):
                    raise ValueError(f"monitor crossings: {name} values must be finite numbers, got {v!r}")
            clean[name] = [float(v) for v in values]
        self.crossings = clean

    def due(self, step: int) -> bool:
        return step % self.every == 0

    # its state: (s, lowest eigenvalues) of the monitored points before the last one, at most two,
    # oldest first (the linear extrapolation of the lowest non-negative eigenvalue to a branch end);
    # emptied when the path changed branch (an event other than a crossing)
    def init_state(self, start) -> tuple:
        return ()

    def update_state(self, own, accepted) -> tuple:
        if not accepted.monitored:
            return own
        if any(e["type"] != "crossing" for e in accepted.events):
            return ()  # the path changed branch: the eigenvalues before say nothing of this one's
        before = accepted.monitored_before
        if before is None or before.spectrum is None:
            return own
        return (tuple(own) + ((before.s, [float(v) for v in before.spectrum.values]),))[-2:]

    def load_state(self, raw) -> tuple:
        return tuple((float(s), [float(v) for v in values]) for s, values in raw)

    def check_crossings(self, available) -> None:
        """Misconfigured (one line) for a crossing of a quantity the path does not have."""
        missing = [n for n in self.crossings if n not in available]
        if missing:
            raise Misconfigured(f"monitor crossings: {', '.join(map(repr, missing))} not among this problem's quantities "
                             f"({', '.join(available)})")

    def spectrum(self, system, x: torch.Tensor, mu: torch.Tensor, previous: Spectrum | None = None) -> Spectrum | None:
        """The lowest eigenpairs at (x, mu), or None when modes = 0."""
        if self.modes == 0:
            return None
        d = system.deflation(x)
        k = min(self.modes, x.numel() - (0 if d is None else d.size))
        return lowest_eigenpairs(system, x, mu, k, previous=previous, tol=self.tol, maxiter=self.maxiter,
                                 dense_below=self.dense_below)
