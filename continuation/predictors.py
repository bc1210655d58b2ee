"""Predictors: from an accepted point (theta, mu) at s, a guess at s + ds.

- `ODEPredictor`: integrates d(theta, mu)/ds = (theta_mu . mu', mu') with torchdiffeq.odeint;
  methods "euler" (1 RHS evaluation), "rk4" (4), or adaptive "dopri5" (rtol/atol). Each RHS
  evaluation is one point context: the process law and one Krylov solve per tangent it needs.
- `SecantPredictor`: extrapolates through the last two accepted points (no solves); the first
  step, with one point only, is an Euler tangent step.
- `NoPredictor`: the paper's own procedure: mu moves by ds mu' (the law at the current point),
  theta stays; the corrector does all the work.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchdiffeq import odeint

from .context import PointContext


@dataclass
class Prediction:
    x: torch.Tensor
    mu: torch.Tensor
    rhs_evals: int
    krylov_iters: int
    solves_ok: bool
    report: str
    corrector_iters: int = 0  # re-equilibrations the law asked for at the stages (finite-difference law)


class Predictor:
    name = "predictor"

    def predict(self, make_context, start: PointContext, ds: float, previous=None) -> Prediction:
        raise NotImplementedError


def _velocity(process, ctx):
    mu_dot = ctx.velocity(process)
    return ctx.theta_dot(mu_dot), mu_dot


@dataclass
class ODEPredictor(Predictor):
    """Integrate d(theta, mu)/ds = (theta_mu . mu', mu') over ds with torchdiffeq (euler, rk4, dopri5)."""

    method: str = "rk4"
    rtol: float = 1e-8  # dopri5 only
    atol: float = 1e-10  # dopri5 only
    name = "ode"

    def __post_init__(self):
        if self.method not in ("euler", "rk4", "dopri5"):
            raise ValueError(f"unknown ODE method {self.method!r}; valid: euler, rk4, dopri5")

    def predict(self, make_context, start, ds, previous=None, process=None):
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
            y = odeint(rhs, y0, span, method=self.method, options={"step_size": ds})[-1]
        unique = {id(c): c for c in contexts}.values()
        krylov = sum(c.krylov_iters for c in unique if c is not start)
        corrector_iters = sum(c.corrector_iters for c in unique if c is not start)
        ok = all(c.solves_converged for c in unique)
        report = next((c.solve_report() for c in unique if not c.solves_converged), "")
        return Prediction(y[:n], y[n:], len(contexts), krylov, ok, report, corrector_iters)


@dataclass
class SecantPredictor(Predictor):
    """Extrapolate through the last two points (no solves); the first step is an Euler tangent step."""

    name = "secant"

    def predict(self, make_context, start, ds, previous=None, process=None):
        if previous is None:
            dx, dmu = _velocity(process, start)
            return Prediction(start.x + ds * dx, start.mu + ds * dmu, 1, 0, start.solves_converged, start.solve_report())
        x_prev, mu_prev, s_prev, s_now = previous
        scale = ds / (s_now - s_prev)
        return Prediction(start.x + scale * (start.x - x_prev), start.mu + scale * (start.mu - mu_prev), 0, 0, True, "")


@dataclass
class NoPredictor(Predictor):
    """The paper's procedure: mu += ds mu', theta unchanged; the corrector does the rest."""

    name = "none"

    def predict(self, make_context, start, ds, previous=None, process=None):
        mu_dot = start.velocity(process)
        return Prediction(start.x.clone(), start.mu + ds * mu_dot, 1, 0, start.solves_converged, start.solve_report())


PREDICTORS = {"ode": ODEPredictor, "secant": SecantPredictor, "none": NoPredictor}
