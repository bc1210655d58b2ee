"""Step control and stopping: accept or reject a step, choose the next step size, know when to stop.

Accept/reject (as continuation software does): a step is rejected when the corrector did not
converge or needed more than its `max_iters`, when a Krylov solve in the predictor failed, when
the held functional's relative drift changed by more than `max_drift` in this step (a local
error control; the accumulated drift is recorded in the path, and a projecting process removes
it), or when the tangent turned by more than `max_angle_deg`
degrees since the last point. A rejected step is retried with ds * shrink, down to `min_step`;
below that the run stops with the reason recorded. An easy step (corrector iterations <=
`easy_iters`, tangent turned by less than half the limit) grows the next ds by `grow`, up to
`max_step`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class StepControl:
    initial: float = 0.05
    min_step: float = 1e-6
    max_step: float = 1.0
    grow: float = 1.5
    shrink: float = 0.5
    max_angle_deg: float = 30.0
    max_drift: float | None = 1e-7  # per step: |change of the held functional's relative drift|
    easy_iters: int | None = None  # default: the corrector's own
    max_iters: int | None = None  # default: the corrector's own
    krylov_must_converge: bool = True  # False: truncated solves are accepted (stochastic networks)

    def __post_init__(self):
        if not 0 < self.min_step <= self.initial <= self.max_step:
            raise ValueError(f"steps must satisfy 0 < min_step <= initial <= max_step, got "
                             f"{self.min_step}, {self.initial}, {self.max_step}")
        if not (0 < self.shrink < 1 and self.grow >= 1):
            raise ValueError(f"need 0 < shrink < 1 and grow >= 1, got shrink {self.shrink}, grow {self.grow}")

    def assess(self, corrector, result, prediction_ok: bool, drift: float | None, angle: float | None):
        """(accepted, easy, reason) for one attempted step; `drift` is this step's change of drift."""
        max_iters = self.max_iters if self.max_iters is not None else corrector.max_iters
        easy_iters = self.easy_iters if self.easy_iters is not None else corrector.easy_iters
        if not prediction_ok and self.krylov_must_converge:
            return False, False, "a Krylov solve in the predictor failed"
        if not result.converged:
            return False, False, f"corrector {result.status} (|grad| {result.grad_norm:.2e})"
        if max_iters is not None and result.iters > max_iters:  # None: a fixed budget, no limit
            return False, False, f"corrector needed {result.iters} > {max_iters} iterations"
        if self.max_drift is not None and drift is not None and abs(drift) > self.max_drift:
            return False, False, f"constraint drift changed by {drift:.2e} > {self.max_drift:.2e} in one step"
        if angle is not None and angle > self.max_angle_deg:
            return False, False, f"tangent turned {angle:.1f} > {self.max_angle_deg} degrees"
        few = easy_iters is None or result.iters <= easy_iters  # None: no limit, as the old 10**9
        easy = few and (angle is None or angle < self.max_angle_deg / 2)
        return True, easy, "accepted"


@dataclass
class StopRule:
    """When a run ends. `target` lands exactly on a parameter value and stops there; milestones
    are landed on exactly and passed; `bounds` stop a run whose functional leaves [lo, hi]."""

    max_steps: int = 100
    max_s: float = math.inf
    target: dict = field(default_factory=dict)  # e.g. {"lambda": 4.0}
    milestones: dict = field(default_factory=dict)  # e.g. {"lambda": [1, 2, 4]}
    bounds: dict = field(default_factory=dict)  # e.g. {"R": [0, 10], "gamma": [0.01, 100]}

    def landing_values(self, name: str) -> list:
        values = list(self.milestones.get(name, []))
        if name in self.target:
            values.append(self.target[name])
        return sorted(set(float(v) for v in values))

    def reached(self, step: int, s: float, mu_named: dict, functionals: dict) -> str | None:
        if step >= self.max_steps:
            return f"max_steps {self.max_steps} reached"
        if s >= self.max_s:
            return f"max_s {self.max_s} reached"
        for name, value in self.target.items():
            if mu_named[name] == float(value):
                return f"target {name} = {value} reached"
        values = {**functionals, **mu_named}
        for name, (lo, hi) in self.bounds.items():
            v = values[name]
            if not lo <= v <= hi:
                return f"{name} = {v:.6g} left its bounds [{lo}, {hi}]"
        return None
