"""Predictors: from an accepted point (theta, mu) at s, a guess at s + ds.

- `ODEPredictor`: integrates d(theta, mu)/ds = (theta_mu . mu', mu') with torchdiffeq.odeint;
  methods "euler" (1 RHS evaluation), "rk4" (4), or adaptive "dopri5" (rtol/atol). Each RHS
  evaluation is one point context: the process law and one Krylov solve per tangent it needs.
- `SecantPredictor`: extrapolates through the last two accepted points (no solves); the first
  step, with one point only, is an Euler tangent step.
- `NoPredictor`: the paper's own procedure: mu moves by ds mu' (the law at the current point),
  theta stays; the corrector does all the work.

A predictor declares `uses_theta_tangent`: whether the tangent it follows includes theta'
(then the step control's turning angle is measured on (theta', mu'), else on mu' alone).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass
from typing import ClassVar, final

import torch
from torchdiffeq import odeint

from continuation.surface.context import PointContext
from continuation.strategies.base import Strategy

ODE_METHODS = ("euler", "rk4", "dopri5")
RTOL_FLOOR, ATOL_FLOOR = 1e-13, 1e-14  # dopri5's tolerances (see ODEPredictor.__post_init__)


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass
class Prediction:
    x: torch.Tensor
    mu: torch.Tensor
    rhs_evals: int
    solves_ok: bool
    report: str
    # a scalar condition the corrector must solve with grad J = 0, moving one multiplier
    # (pseudo-arclength: continuation/strategies/arclength.py); None: correct at the predicted mu
    arclength: object = None

    def correct(self, corrector, system, mu, landing, stop, mu_from, own: dict) -> "Correction":
        """The corrector's run from this prediction: grad_theta J(theta; mu) = 0 at the given mu
        (the predicted one, or with a parameter landed on a milestone). `landing`, `stop`,
        `mu_from`: what a prediction that lets the corrector move mu needs to land
        (ArclengthPrediction); `own`: the corrector's slot for a stateful corrector."""
        return Correction(corrector.correct(system, self.x, mu, **own), mu, landing, None)


@dataclass(frozen=True)
class Correction:
    """A corrector's run from a prediction: its result, the mu it ended at, the landing (name,
    value) it made, if any, and the step's length where the correction defines it (pseudo-
    arclength: the corrected point's projected distance; None: the predictor's ds)."""

    result: object
    mu: torch.Tensor
    landing: tuple | None
    ds: float | None


@dataclass(frozen=True)
class Previous:
    """The accepted point before the current one: (x, mu) at s_prev; the current one is at s_now."""

    x: torch.Tensor
    mu: torch.Tensor
    s_prev: float
    s_now: float


class Predictor(Strategy):
    uses_theta_tangent: ClassVar[bool] = True
    arclength: ClassVar[bool] = False  # its predictions carry an arclength condition (continuation/strategies/checks.py)

    @abstractmethod
    def predict(self, make_context, start: PointContext, ds: float, previous: Previous | None,
                process) -> Prediction:
        """The guess (x, mu) at s + ds from the point `start` (its context caches the law there)."""


def _velocity(process, ctx):
    mu_dot = ctx.velocity(process)
    return ctx.theta_dot(mu_dot), mu_dot


@final
@dataclass
class ODEPredictor(Predictor):
    """Integrate d(theta, mu)/ds = (theta_mu . mu', mu') over ds with torchdiffeq (euler, rk4, dopri5).

    Cost: per RHS evaluation the law's Krylov solves (two for iso-C, one for quasi-static)."""

    method: str = "rk4"
    rtol: float = 1e-8  # dopri5 only
    atol: float = 1e-10  # dopri5 only
    name: ClassVar[str] = "ode"

    def __post_init__(self):
        if self.method not in ODE_METHODS:
            raise ValueError(f"unknown ODE method {self.method!r}; valid: {', '.join(ODE_METHODS)}")
        # dopri5's step-size control compares an error estimate that carries the rounding of
        # float64 (eps 2.2e-16 times the solution and the Krylov residuals of each stage) with
        # atol + rtol |y|: below ~1e-13 relative the estimate never passes, the step shrinks to
        # nothing and one prediction takes minutes (rtol 1e-20: 197 s) or fails with a
        # misleading reason downstream. Zero or negative tolerances are meaningless.
        if not (_finite(self.rtol) and RTOL_FLOOR <= self.rtol < 1):
            raise ValueError(f"rtol must be in [{RTOL_FLOOR:g}, 1) (float64 cannot meet less), got {self.rtol!r}")
        if not (_finite(self.atol) and self.atol >= ATOL_FLOOR):
            raise ValueError(f"atol must be >= {ATOL_FLOOR:g} and finite (float64 cannot meet less), got {self.atol!r}")

    def predict(self, make_context, start, ds, previous, process):
        n = start.x.numel()
        y0 = torch.cat([start.x, start.mu])
        contexts = []

        def rhs(s, y):
            ctx = start if torch.equal(y, y0) else make_context(y[:n], y[n:])
            contexts.append(ctx)
            dx, dmu = _velocity(process, ctx)
            return torch.cat([dx, dmu])

        span = torch.tensor([0.0, ds], dtype=y0.dtype, device=y0.device)
        if self.method == "dopri5":
            y = odeint(rhs, y0, span, method="dopri5", rtol=self.rtol, atol=self.atol)[-1]
        else:
            y = odeint(rhs, y0, span, method=self.method, options={"step_size": abs(ds)})[-1]  # ds < 0: backwards (event location)
        unique = {id(c): c for c in contexts}.values()
        ok = all(c.solves_converged for c in unique)
        report = next((c.solve_report() for c in unique if not c.solves_converged), "")
        return Prediction(y[:n], y[n:], len(contexts), ok, report)


@final
@dataclass
class SecantPredictor(Predictor):
    """Extrapolate through the last two points (no solves); the first step is an Euler tangent step.

    The chord moves mu at the previous chord's rate, not at the law's rate at the new point, so
    with this predictor s is the chord's parameter rather than the process clock (on the iso-C
    competition problem lambda = 4 is reached at s = 11.0 against 23.6 with rk4; the points lie
    on the same curve). Milestones and targets the chord passes are landed on all the same."""

    name: ClassVar[str] = "secant"

    def predict(self, make_context, start, ds, previous, process):
        if previous is None:
            dx, dmu = _velocity(process, start)
            return Prediction(start.x + ds * dx, start.mu + ds * dmu, 1, start.solves_converged, start.solve_report())
        scale = ds / (previous.s_now - previous.s_prev)
        return Prediction(start.x + scale * (start.x - previous.x), start.mu + scale * (start.mu - previous.mu), 0,
                          True, "")


def clipped_multipliers(mu, step, factor: float):
    """`step` (a change of mu) with its (lambda, gamma) part scaled down by one common s <= 1 so
    that neither multiplier changes by more than `factor` (up or down); t's part unchanged."""
    scale = 1.0
    for i in (0, 1):
        a, d = float(mu[i]), float(step[i])
        if d > 0 and a + d > a * factor:
            scale = min(scale, (a * factor - a) / d)
        elif d < 0 and a + d < a / factor:
            scale = min(scale, (a / factor - a) / d)
    if scale < 1.0:
        step = step.clone()
        step[:2] *= scale
    return step


@final
@dataclass
class NoPredictor(Predictor):
    """The paper's procedure: mu += ds mu' (clipped by factor; t alone with move = "clock"), theta unchanged.

    The corrector does the rest.

    factor: None (default), the law's step as it is; or a number > 1: the step of (lambda, gamma)
    is scaled down so that neither changes by more than that factor, its direction kept (a trust
    region on the prediction, for laws whose rates are far off: on a neural problem the
    tangents' C_gamma at a stochastic equilibrium, or the infinite slope of the soft-label floor
    at t = 0, can send gamma below 0 in one step of 0.1 in t; a projection then finds the
    multipliers). Clipping keeps a direction whose length may not vanish with ds: where the
    law's rate is huge (a near-singular 2 x 2 law, the geodesic's on a stochastic network) even
    a tiny step moves a multiplier by the full factor.

    move: "all" (default), mu by the law; "clock", only t by the law (t' = 1 on a task path),
    lambda and gamma kept for a projection to find (a transfer whose law's multiplier rates
    cannot be trusted). No solves beyond the law at the start point."""

    factor: float | None = None
    move: str = "all"
    name: ClassVar[str] = "none"
    uses_theta_tangent: ClassVar[bool] = False

    def __post_init__(self):
        if self.factor is not None and not (_finite(self.factor) and self.factor > 1):
            raise ValueError(f"factor must be a number > 1 (or unset), got {self.factor!r}")
        if self.move not in ("all", "clock"):
            raise ValueError(f"move must be 'all' or 'clock', got {self.move!r}")

    def _omit_settings(self) -> tuple:
        """factor and move are settings only when set, so that a path written before they existed resumes."""
        return (() if self.factor is not None else ("factor",)) + (("move",) if self.move == "all" else ())

    def predict(self, make_context, start, ds, previous, process):
        step = ds * start.velocity(process)
        if self.move == "clock":
            step = step.clone()
            step[:2] = 0.0
            if not bool(step.any()):
                raise ValueError(f"predictor 'none' with move = 'clock' needs a process that moves t; "
                                 f"{process.name!r} moves only lambda and gamma")
        if self.factor is not None:
            step = clipped_multipliers(start.mu, step, self.factor)
        return Prediction(start.x.clone(), start.mu + step, 1, start.solves_converged, start.solve_report())

