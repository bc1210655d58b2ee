"""Step control and stopping: accept or reject a step, choose the next step size, know when to stop.

`AdaptiveSteps` ("adaptive", as continuation software does): a step is rejected when the
corrector did not converge or needed more than its `max_iters`, when a Krylov solve in the
predictor failed (`krylov_must_converge`), when the held functional's relative drift changed by
more than `max_drift` in this step (a local error control; the accumulated drift is recorded in
the path, and a projection removes it), or when the tangent turned by more than `max_angle_deg`
degrees since the last point. A rejected step is retried with ds * shrink, down to `min_step`;
below that the run stops with the reason recorded. An easy step (corrector iterations <=
`easy_iters`, tangent turned by less than half the limit) grows the next ds by `grow`, up to
`max_step`.

`FixedSteps` ("fixed"): every step is `size` (shortened only to land on a milestone or target),
accepted whenever the corrector converged (a stochastic corrector on a fixed budget, whose
iteration count and drift say nothing of the step). A step whose corrector did not converge or
whose prediction left the domain is retried at ds * shrink down to `min_step` (unset: no
retries); below that the run stops with the reason. The step after a retried one is `size` again.

`HeldSteps` ("held"): for a process that holds functionals with a projection on a stochastic
corrector (transfer): a step is accepted when the corrector converged and the projection left
every held functional within `max_miss` (relative) of its start value, and (with `max_factor`)
moved neither lambda nor gamma by more than that factor; otherwise it is retried at ds * shrink
down to `min_step`, below which the run stops with the reason. After an accepted
step the next ds is ds * grow, up to `max_step`. Where the surface moves fast (the first steps
of a transfer, where the new task's data first enter) a finite corrector run cannot keep the
held value from a long step, but can from a short one: the steps shrink there and grow back
where the projection holds easily. The factor bound keeps the multipliers from running ahead of
the corrector: where it cannot keep up, the projection makes up by raising gamma far beyond the
equilibrium's (measured on the digits OT path, docs/transfer.md).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar, final

import torch

from problems.base import MU_NAMES, mu_index

from continuation.strategies.base import Strategy, settings_of
from continuation.strategies.options import integer, number, positive, stop_tables


class StepsExhausted(Exception):
    """No step size is left to try; the message says why (the run stops with it)."""


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    easy: bool
    reason: str


class StepControl(Strategy):
    """Base: the first ds, the verdict on an attempted step, and the ds after a rejection or acceptance."""

    @property
    @abstractmethod
    def initial_step(self) -> float: ...

    @property
    @abstractmethod
    def largest_step(self) -> float: ...

    # its state: the step size proposed for the next step
    def init_state(self, start) -> float:
        return self.initial_step

    def update_state(self, own, accepted) -> float:
        return accepted.next_ds

    @abstractmethod
    def assess(self, corrector, result, prediction_ok: bool, drift: float | None, angle: float | None,
               miss: float | None = None, factor: float | None = None, ds: float | None = None) -> Verdict:
        """Accept or reject one attempt; `drift` is this step's change of the held functional's
        relative drift, `miss` the largest relative distance of a held functional from its start
        value at the attempt (after the projection; None where nothing is held), `factor` the
        largest factor by which lambda or gamma changed in the step (max(new/old, old/new)), `ds`
        the step's length."""

    @abstractmethod
    def after_rejection(self, ds: float) -> float:
        """The ds to retry with; raises `StepsExhausted` (its message: why) to give up."""

    @abstractmethod
    def after_acceptance(self, ds: float, easy: bool) -> float:
        """The ds to propose for the next step."""


class ShrinkingSteps(StepControl):
    """Steps between min_step and max_step that start at `initial`, shrink by `shrink` on a
    rejection (below min_step the run stops) and grow by `grow` (the subclass's fields)."""

    def _check_sizes(self):
        if not 0 < self.min_step <= self.initial <= self.max_step:
            raise ValueError(f"steps must satisfy 0 < min_step <= initial <= max_step, got "
                             f"{self.min_step}, {self.initial}, {self.max_step}")
        if not (0 < self.shrink < 1 and self.grow >= 1):
            raise ValueError(f"need 0 < shrink < 1 and grow >= 1, got shrink {self.shrink}, grow {self.grow}")

    @property
    def initial_step(self):
        return self.initial

    @property
    def largest_step(self):
        return self.max_step

    def after_rejection(self, ds):
        ds = ds * self.shrink
        if ds < self.min_step:
            raise StepsExhausted(f"step size {ds:.3g} below min_step {self.min_step}")
        return ds


@final
@dataclass
class AdaptiveSteps(ShrinkingSteps):
    """Accept or reject by corrector work, drift and turning angle; shrink on rejection, grow when easy."""

    initial: float = 0.05
    min_step: float = 1e-6
    max_step: float = 1.0
    grow: float = 1.5
    shrink: float = 0.5
    max_angle_deg: float = 30.0
    max_drift: float | None = 1e-7  # per step: |change of the held functional's relative drift|; None: no limit
    easy_iters: int | None = None  # default: the corrector's own
    max_iters: int | None = None  # default: the corrector's own
    krylov_must_converge: bool = True  # False: truncated solves are accepted (stochastic networks)
    name: ClassVar[str] = "adaptive"

    def __post_init__(self):
        self._check_sizes()
        # the angle between two tangents lies in [0, 180]: 180 turns the test off, beyond means nothing
        if not 0 < number("max_angle_deg", self.max_angle_deg) <= 180:
            raise ValueError(f"max_angle_deg must be in (0, 180] degrees (the turning angle between two tangents "
                             f"lies in [0, 180]; 180: no limit), got {self.max_angle_deg!r}")

    def assess(self, corrector, result, prediction_ok, drift, angle, miss=None, factor=None, ds=None):
        max_iters = self.max_iters if self.max_iters is not None else corrector.max_iters
        easy_iters = self.easy_iters if self.easy_iters is not None else corrector.easy_iters
        if not prediction_ok and self.krylov_must_converge:
            return Verdict(False, False, "a Krylov solve in the predictor failed")
        if not result.converged:
            return Verdict(False, False, f"corrector {result.status} (|grad| {result.grad_norm:.2e})")
        if max_iters is not None and result.iters > max_iters:
            return Verdict(False, False, f"corrector needed {result.iters} > {max_iters} iterations")
        if self.max_drift is not None and drift is not None and abs(drift) > self.max_drift:
            return Verdict(False, False, f"constraint drift changed by {drift:.2e} > {self.max_drift:.2e} in one step")
        if angle is not None and angle > self.max_angle_deg:
            return Verdict(False, False, f"tangent turned {angle:.1f} > {self.max_angle_deg} degrees")
        easy = (easy_iters is None or result.iters <= easy_iters) and (angle is None or angle < self.max_angle_deg / 2)
        return Verdict(True, easy, "accepted")

    def after_acceptance(self, ds, easy):
        return min(ds * self.grow, self.max_step) if easy else ds


@final
@dataclass
class FixedSteps(StepControl):
    """Every step `size`, accepted when the corrector converged (stochastic runs on a fixed budget)."""

    size: float = 0.05
    min_step: float | None = None  # retries of a failed step at ds * shrink down to this; None: none
    shrink: float = 0.5
    name: ClassVar[str] = "fixed"

    def __post_init__(self):
        if not self.size > 0:
            raise ValueError(f"size must be > 0, got {self.size}")
        if self.min_step is not None and not 0 < self.min_step <= self.size:
            raise ValueError(f"min_step must be in (0, size = {self.size}], got {self.min_step}")
        if not 0 < self.shrink < 1:
            raise ValueError(f"shrink must be in (0, 1), got {self.shrink}")

    @property
    def initial_step(self):
        return self.size

    @property
    def largest_step(self):
        return self.size

    def assess(self, corrector, result, prediction_ok, drift, angle, miss=None, factor=None, ds=None):
        if not result.converged:
            return Verdict(False, False, f"corrector {result.status} (|grad| {result.grad_norm:.2e})")
        return Verdict(True, False, "accepted")

    def after_rejection(self, ds):
        smaller = ds * self.shrink
        if self.min_step is None or smaller < self.min_step:
            floor = "no retries (min_step unset)" if self.min_step is None else f"min_step {self.min_step}"
            raise StepsExhausted(f"a step of {ds:.3g} was rejected and the fixed-step control allows {floor}")
        return smaller

    def after_acceptance(self, ds, easy):
        return self.size


@final
@dataclass
class HeldSteps(ShrinkingSteps):
    """Accept a step when the projection held the held functionals within max_miss; shrink on rejection, grow after.

    max_miss is relative to |G0| for the held functional, to the process's scale for a second
    one (H_scale); with `max_factor`, the step (law and projection together) must also move
    neither lambda nor gamma by more than that factor (module docstring). The factor
    bound only shortens steps: a step at the shortest length (ds * shrink < min_step) that holds
    the functionals is accepted however far the multipliers moved (the secant projection alone
    may move gamma by its own factor per iterate). A failed Krylov solve in the predictor does
    not reject (truncated solves are the rule on stochastic networks). Cost: a rejected step
    costs its corrector and projection runs again at the shorter step."""

    initial: float = 0.1
    max_miss: float = 5e-3
    min_step: float = 1e-3
    max_step: float = 0.1
    grow: float = 2.0
    shrink: float = 0.5
    max_factor: float | None = None  # reject a step that moved lambda or gamma by more than this factor
    name: ClassVar[str] = "held"

    def __post_init__(self):
        for key in ("initial", "max_miss", "min_step", "max_step", "grow", "shrink"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{key} must be a finite number, got {v!r}")
        self._check_sizes()
        if not self.max_miss > 0:
            raise ValueError(f"max_miss must be > 0, got {self.max_miss}")
        if self.max_factor is not None and (isinstance(self.max_factor, bool) or not isinstance(
                self.max_factor, (int, float)) or not self.max_factor > 1):
            raise ValueError(f"max_factor must be a number > 1 (or unset), got {self.max_factor!r}")

    def assess(self, corrector, result, prediction_ok, drift, angle, miss=None, factor=None, ds=None):
        if not result.converged:
            return Verdict(False, False, f"corrector {result.status} (|grad| {result.grad_norm:.2e})")
        shorter = ds is None or ds * self.shrink >= self.min_step  # a shorter step is still allowed
        if self.max_factor is not None and factor is not None and not factor <= self.max_factor and shorter:
            return Verdict(False, False, f"a multiplier changed by a factor {factor:.3g} in one step "
                                         f"(max_factor {self.max_factor:g})")
        if miss is not None and not miss <= self.max_miss:  # NaN misses too
            return Verdict(False, False, f"the projection left a held functional {100 * miss:.3g}% from its "
                                         f"start (max_miss {100 * self.max_miss:.3g}%)")
        return Verdict(True, True, "accepted")

    def after_acceptance(self, ds, easy):
        return min(ds * self.grow, self.max_step)



@final
@dataclass
class StopRule:
    """When a run ends, and whether it ended well ("finished") or not ("stopped").

    `target` lands exactly on a parameter value and stops there; milestones are landed on
    exactly and passed; `bounds` stop a run whose functional (or parameter) leaves [lo, hi].
    Finished: a target reached, a bound left, max_s reached, or max_steps reached by a run that
    has no target. Stopped (a budget spent, or a run that goes nowhere):
    - max_steps or max_s reached before a target: the reason names the target and where the run is;
    - no progress: over the last `stall_points` accepted points every step was shorter than
      `stall_fraction` x the initial step, or the multipliers (lambda, gamma, t) moved in all by
      less than `stall_fraction` x the initial step. A step control that keeps shrinking ds (CG
      stopped by negative curvature at a gauge direction settled near 4e-6 from 0.25, 1.6e-5 of
      it) or a law whose rate vanishes makes points without moving; 10 points at 1/1000 of the
      initial step is far below any step an adaptive control grows back from (it grows by 1.5 per
      easy step: 17 easy steps take 1/1000 back to 1), and far above the noise of a landing step
      (one short step to land on a milestone). A process whose rates are all below
      stall_fraction (in mu per unit s) on purpose needs a smaller stall_fraction, or
      stall_points = 0 (no check);
    - running away: the distance of a targeted parameter from its target grew at each of the
      last `away_points` accepted points (a law whose sign points away from the target). 10 and
      not fewer: a projected (stochastic) multiplier may step back a few times by noise; 10 in a
      row is 1 in 1024 for a fair coin. 0: no check.
    """

    max_steps: int = 100
    max_s: float = math.inf
    target: dict = field(default_factory=dict)  # e.g. {"lambda": 4.0}
    milestones: dict = field(default_factory=dict)  # e.g. {"lambda": [1, 2, 4]}
    bounds: dict = field(default_factory=dict)  # e.g. {"R": [0, 10], "gamma": [0.01, 100]}
    stall_points: int = 10
    stall_fraction: float = 1e-3
    away_points: int = 10
    name: ClassVar[str] = "stop"

    def __post_init__(self):
        integer("max_steps", self.max_steps, minimum=0)
        positive("max_s", self.max_s, allow_inf=True)
        stop_tables(self.target, self.milestones, self.bounds)

    def settings(self) -> dict:
        return settings_of(self)

    @property
    def history_length(self) -> int:
        """How many of the last accepted points `judge` needs (each as (step size, mu named))."""
        return max(self.stall_points, self.away_points, 0) + 1

    # its state: the last accepted points, oldest first, each (step size, mu named), for `judge`
    def init_state(self, start) -> tuple:
        return ((0.0, {n: float(start.mu[i]) for i, n in enumerate(MU_NAMES)}),)

    def update_state(self, own, accepted) -> tuple:
        return (tuple(own) + ((accepted.ds, accepted.mu_named),))[-self.history_length:]

    def load_state(self, raw) -> tuple:
        return tuple((float(ds), {k: float(v) for k, v in mu.items()}) for ds, mu in raw)

    def landing_values(self, name: str) -> list:
        values = list(self.milestones.get(name, []))
        if name == "t":
            values.append(1.0)  # the task path ends at t = 1: a run lands there and stops
        if name in self.target:
            values.append(self.target[name])
        return sorted(set(float(v) for v in values))

    def judge(self, step: int, s: float, mu_named: dict, functionals: dict, recent=(),
              initial_step: float | None = None, dtype=torch.float64) -> tuple[str, str] | None:
        """(status, reason) when the run ends at this point, else None. `recent`: the last accepted
        points, oldest first, each (step size, mu named); `initial_step`: the step control's first ds;
        `dtype`: mu's, where a target is landed on (a float32 lambda lands on 0.9f, not 0.9)."""
        for name, value in self.target.items():
            if mu_named[name] in (float(value), float(torch.tensor(float(value), dtype=dtype))):
                return "finished", f"target {name} = {value} reached"
        if step > 0 and "t" not in self.target and mu_named["t"] == 1.0 and recent and len(recent) >= 2 \
                and recent[-2][1]["t"] < 1.0:
            return "finished", "t = 1 reached (the end of the task path)"
        values = {**functionals, **mu_named}
        for name, (lo, hi) in self.bounds.items():
            v = values[name]
            if not lo <= v <= hi:
                if step == 0:  # never inside: no progress was possible
                    return "stopped", f"{name} = {v:.6g} is outside its bounds [{lo}, {hi}] at the start"
                return "finished", f"{name} = {v:.6g} left its bounds [{lo}, {hi}]"
        budget = None
        if step >= self.max_steps:
            budget = f"max_steps {self.max_steps} reached"
        elif s >= self.max_s:
            budget = f"max_s {self.max_s} reached"
        if budget is not None:
            if not self.target:
                return "finished", budget
            where = ", ".join(f"{n} = {mu_named[n]:.6g}" for n in self.target)
            aims = ", ".join(f"{n} = {v}" for n, v in self.target.items())
            return "stopped", f"{budget} before the target {aims} ({where})"
        return self._stalled(list(recent), initial_step) or self._away(list(recent))

    def _stalled(self, recent: list, initial_step: float | None) -> tuple[str, str] | None:
        k = self.stall_points
        if k <= 0 or initial_step is None or len(recent) < k + 1:
            return None
        window = recent[-(k + 1):]
        floor = self.stall_fraction * initial_step
        steps = [ds for ds, _ in window[1:]]
        if max(steps) < floor:
            return "stopped", (f"no progress: the last {k} steps were all shorter than {self.stall_fraction:g} of the "
                               f"initial step {initial_step:g} (largest {max(steps):.3g}) at {_where(window[-1][1])}")
        moved = max(abs(window[-1][1][n] - window[0][1][n]) for n in MU_NAMES)
        if moved < floor:
            return "stopped", (f"no progress: the multipliers moved by {moved:.3g} over the last {k} points, less than "
                               f"{self.stall_fraction:g} of the initial step {initial_step:g}, at {_where(window[-1][1])}")
        return None

    def _away(self, recent: list) -> tuple[str, str] | None:
        k = self.away_points
        if k <= 0 or len(recent) < k + 1:
            return None
        window = [mu for _, mu in recent[-(k + 1):]]
        for name, value in self.target.items():
            dist = [abs(mu[name] - float(value)) for mu in window]
            if all(b > a for a, b in zip(dist, dist[1:])):
                return "stopped", (f"running away from the target {name} = {value}: {name} moved away from it at each "
                                   f"of the last {k} points ({window[0][name]:.6g} -> {window[-1][name]:.6g})")
        return None

    def landing(self, mu: torch.Tensor, mu_dot: torch.Tensor, ds: float):
        """(ds, None), or ds shortened so that a parameter lands exactly on its next milestone or
        target, with (name, value) of that landing."""
        best = (ds, None)
        # rounding of mu in its own dtype: a float32 path that adds 0.075 ten times to 0.25 is at
        # 0.99999988, which must land on 1.0 now, not after one more step of 1e-7
        eps = 64 * torch.finfo(mu.dtype).eps
        for name in MU_NAMES:
            rate = float(mu_dot[mu_index(name)])
            if rate == 0.0:
                continue
            value = float(mu[mu_index(name)])
            ahead = [v for v in self.landing_values(name) if (v - value) * rate > eps * max(1.0, abs(v))]
            if not ahead:
                continue
            nxt = min(ahead, key=lambda v: abs(v - value))
            need = (nxt - value) / rate
            # land if the step would end within the "already there" band short of the value: a
            # float32 t at 0.975 + 0.025 = 0.99999917 would otherwise be counted as past 1.0 by
            # `ahead` but never equal to it, and the run went on past its target (to t = 1.55)
            short = (need - best[0]) * abs(rate)
            if need <= best[0] * (1 + eps) or short <= eps * max(1.0, abs(nxt)):
                best = (need, (name, nxt))
        return best

    def land(self, predict, mu_from: torch.Tensor, ds: float, landing, prediction):
        """(prediction, ds, landing, mu): the step's prediction made to land on a milestone or target.

        `landing`: (name, value) from `landing` (ds was shortened by the law's rate at the start),
        or None; then the first milestone or target that `prediction` crossed (a secant, which does
        not move mu at the law's rate, can carry a parameter past one the law did not reach within
        ds), if any. A higher-order predictor bends away from the rate's line: ds is adjusted by the
        chord through the start, ds <- ds (value - start) / (predicted - start), re-predicting with
        `predict(ds)` (at most 6 times; none for euler or none, whose parameter is linear in ds),
        until the parameter is within 64 ulp of the value (linear convergence, by about the
        curvature's relative share of the step each time); mu is the prediction's with the
        parameter set to the value exactly."""
        if landing is None:
            landing = self.crossed(mu_from, prediction.mu)
        mu = prediction.mu.clone()
        if landing is None:
            return prediction, ds, None, mu
        i, target = mu_index(landing[0]), landing[1]
        start_value = float(mu_from[i])
        for _ in range(6):
            got = float(prediction.mu[i])
            if abs(got - target) <= 64 * torch.finfo(prediction.mu.dtype).eps * max(1.0, abs(target)) \
                    or got == start_value:
                break
            ds = ds * (target - start_value) / (got - start_value)
            prediction = predict(ds)
        mu = prediction.mu.clone()
        mu[i] = target
        return prediction, ds, landing, mu

    def crossed(self, mu_from: torch.Tensor, mu_to: torch.Tensor):
        """(name, value) of the milestone or target that the move mu_from -> mu_to passes first
        (the smallest fraction of the move), or None. A value within rounding of mu_from is not
        ahead (as in `landing`)."""
        eps = 64 * torch.finfo(mu_from.dtype).eps
        best = None
        for name in MU_NAMES:
            a, b = float(mu_from[mu_index(name)]), float(mu_to[mu_index(name)])
            if a == b:
                continue
            for v in self.landing_values(name):
                if (v - a) * (b - a) > eps * max(1.0, abs(v)) and abs(b - a) >= abs(v - a) - eps * max(1.0, abs(v)):
                    fraction = (v - a) / (b - a)
                    if best is None or fraction < best[0]:
                        best = (fraction, (name, v))
        return None if best is None else best[1]

    def progress(self, step: int, s: float, mu_named: dict, start: dict) -> float:
        """Fraction in [0, 1] of the way to the end: toward the target (the farthest-along one),
        else toward max_s, else steps over max_steps."""
        fractions = []
        for name, value in self.target.items():
            span = float(value) - start[name]
            if span != 0.0:
                fractions.append((mu_named[name] - start[name]) / span)
        if not fractions and math.isfinite(self.max_s) and self.max_s > 0:
            fractions.append(s / self.max_s)
        if not fractions:
            fractions.append(step / self.max_steps if self.max_steps > 0 else 1.0)
        return min(1.0, max(0.0, max(fractions)))


def _where(mu_named: dict) -> str:
    return ", ".join(f"{n} = {v:.6g}" for n, v in mu_named.items())
