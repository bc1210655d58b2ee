"""The state of a run, passed into each step and returned by it (diffrax's State, optax's init /
update): the current point, the one before, and one slot per strategy for its own state.

| slot       | whose                        | holds (continuation/strategies, singular/monitor.py)    |
|------------|------------------------------|---------------------------------------------------------|
| process    | the process                  | the held values at the start: C0, G0 (H0, H_scale)      |
| predictor  | the predictor                | None (a stateful predictor: its own)                    |
| corrector  | the corrector                | None (likewise)                                         |
| projection | the projection               | the secant's measured response (reuse_response), or None |
| control    | the step control             | the step size proposed for the next step                |
| stop       | the stop rule                | the last accepted points: (step size, mu named)         |
| monitor    | the stability monitor        | (s, lowest eigenvalues) of the monitored points before  |

Each strategy makes its slot (`init_state(start)`) and updates it after an accepted point
(`update_state(own, accepted)`); the engine never looks inside a slot but to hand it back. The
slots travel with every point's checkpoint as one JSON text (`dump_slots`), and `--resume` is
`load_slots` on the last point's checkpoint: the state the uninterrupted run had there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import torch

from problems.base import MU_NAMES

from continuation.errors import PathFileError
from continuation.strategies.predictors import Previous
from continuation.surface.context import PointContext

ROLES = ("process", "predictor", "corrector", "projection", "control", "stop", "monitor")


def named(mu) -> dict:
    """{"lambda": ..., "gamma": ..., "t": ...} of a flat mu."""
    return {n: float(mu[i]) for i, n in enumerate(MU_NAMES)}


@dataclass
class Point:
    """An accepted point: (theta flat x, mu) at clock s, its cached context and tangent."""

    x: torch.Tensor
    mu: torch.Tensor
    s: float
    ctx: PointContext
    tangent: torch.Tensor | None = None
    drift: float = 0.0  # relative drift of the held functional (0 where none is held)
    spectrum: object = None  # the monitor's lowest eigenpairs here (continuation/singular/stability.Spectrum), if computed


@dataclass(frozen=True)
class Attempt:
    """One predict-correct-project try at a step of size ds: the candidate point and what
    step control judges it by."""

    prediction_ok: bool  # the predictor's Krylov solves converged
    result: object  # the corrector's (or the projection's) CorrectorResult
    x: torch.Tensor
    mu: torch.Tensor
    ctx: PointContext
    tangent: torch.Tensor | None
    drift: float | None  # relative drift of the held functional, None where none is held or not converged
    miss: float | None  # the largest relative miss of the held functionals (step control's tolerance)
    ds: float  # the step actually taken (landing on a milestone or a pseudo-arclength distance)
    grad_norm: float
    landing: tuple | None  # (name, value) of the milestone or target landed on
    response: float | None  # the projection's measured response (SecantProjection), or None


@dataclass(frozen=True)
class Accepted:
    """What the strategies' `update_state` see after an accepted point."""

    step: int  # the new point's index
    ds: float  # the accepted step size
    next_ds: float  # step control's proposal for the next step
    point: Point  # the new point
    before: Point  # the point the step started from
    mu_named: dict  # the new point's (lambda, gamma, t)
    response: float | None  # the projection's measured response at this step
    monitored: bool  # the monitor computed the new point's spectrum
    monitored_before: Point | None  # the last point the monitor had computed before
    events: tuple = ()  # the events found between them


@dataclass
class State:
    current: Point
    previous: Previous | None
    step: int  # the index of the current point along the path
    slots: dict = field(default_factory=dict)  # role -> that strategy's own state (ROLES)
    reason: str | None = None  # why the run ends, once it does
    status: str = "running"  # then "finished" (the stop rule's end reached) or "stopped" (StopRule.judge)
    monitored: Point | None = None  # the last point whose spectrum the monitor computed

    # the process's held values and the step control's proposal, by name
    @property
    def held(self) -> dict:
        return self.slots["process"]

    @property
    def C0(self) -> float:
        return self.held["C0"]

    @property
    def G0(self) -> float | None:
        return self.held["G0"]

    @property
    def H0(self) -> float | None:
        return self.held["H0"]

    @property
    def H_scale(self) -> float | None:
        return self.held["H_scale"]

    @property
    def ds_next(self) -> float:
        return self.slots["control"]


def init_slots(strategies: dict, start: Point) -> dict:
    """Each strategy's own state at the first point (`strategies`: role -> strategy or None)."""
    return {role: (None if s is None else s.init_state(start)) for role, s in strategies.items()}


def update_slots(strategies: dict, slots: dict, accepted: Accepted) -> dict:
    return {role: (slots[role] if s is None else s.update_state(slots[role], accepted))
            for role, s in strategies.items()}


def dump_slots(slots: dict) -> str:
    """The slots as one JSON text (written with each point's checkpoint). Floats round-trip exactly
    (Python writes the shortest repr that reads back to the same double; NaN and inf as such)."""
    try:
        return json.dumps(slots, allow_nan=True, sort_keys=True)
    except TypeError as e:
        raise TypeError(f"a strategy's state must be JSON (numbers, strings, None, lists, dicts): {e}") from None


def load_slots(text: str, strategies: dict, where) -> dict:
    """The slots written by dump_slots, each through its strategy's `load_state`; PathFileError (one
    line naming `where`) when the text is not the slots of these roles."""
    try:
        raw = json.loads(text)
        if not isinstance(raw, dict) or set(raw) != set(strategies):
            raise ValueError(f"roles {sorted(raw) if isinstance(raw, dict) else raw!r}, expected {sorted(strategies)}")
        return {role: (raw[role] if s is None else s.load_state(raw[role])) for role, s in strategies.items()}
    except (ValueError, TypeError, KeyError) as e:
        raise PathFileError(f"{where}: the strategies' state saved with the point cannot be read ({e})") from None


def relative(value, ref) -> float:
    return (value - ref) / max(abs(ref), 1e-300)
