"""A branch end ahead of the path: where a latent direction switches off, the branch's tangent blows up.

At a monitored point the lowest non-negative eigenvalue e of the Hessian A = d^2 J / d theta^2,
extrapolated linearly in s through the last two monitored points (the monitor's history),
reaches zero at

    s* = s - e / (de/ds),    de/ds = (e(s) - e(s_old)) / (s - s_old),

when e > 0 is falling. A step that tries to cross s* is rejected (the tangent there is
unbounded, the corrector fails or turns too far). `BranchEnd.rescue` then jumps across once: a
step of 2 (s* - s) with mu by the law and theta kept (the `none` predictor), the run's corrector,
and the turning angle not judged (the path changes branch by construction; the monitor then
locates the crossing on the branch it joined: continuation/singular/events.py).

Cost: nothing to find s* (the two spectra are the monitor's); one corrector run for the jump.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from continuation.strategies.predictors import NoPredictor
from continuation.strategies.step_control import Verdict


@dataclass
class BranchEnd:
    """The clock `s_star` where the branch is predicted to end, seen from the point at `s`."""

    s: float
    s_star: float
    tried: bool = False

    @classmethod
    def ahead(cls, monitor, monitored, current, history) -> BranchEnd | None:
        """The branch end predicted from the last two monitored points, or None: no monitor, the
        current point not monitored, no history, or the lowest non-negative eigenvalue not
        falling toward zero. `monitored`: the last monitored point (with `spectrum`, `s`);
        `current`: the path's current point; `history`: the monitor's slot, [(s, eigenvalues)]."""
        if monitor is None or monitored is None or monitored is not current or not history:
            return None
        s_old, old = history[-1]
        values = monitored.spectrum.values
        i = monitored.spectrum.index(monitor.zero_tol)
        if i >= len(old) or i >= len(values) or monitored.s == s_old:
            return None
        e = float(values[i])
        slope = (e - old[i]) / (monitored.s - s_old)
        if not (e > 0 and slope * (monitored.s - s_old) < 0):
            return None
        return cls(monitored.s, monitored.s - e / slope)

    def rescue(self, ds: float, attempt):
        """After a rejected step of length `ds` that tried to cross the branch end: (attempt,
        verdict) of the jump across it, `attempt(ds, predictor)` being the stepper's predict-
        correct-project; None where the step did not reach the end, the jump was already tried
        this step, or it did not converge."""
        if self.tried or not ds > self.s_star - self.s:
            return None
        self.tried = True
        try:
            jump = attempt(2.0 * (self.s_star - self.s), NoPredictor())
        except (FloatingPointError, torch.linalg.LinAlgError):
            return None
        if not jump.result.converged:
            return None
        return jump, Verdict(True, False, "jumped across a branch end")
