"""Pseudo-arclength continuation (Keller 1977) in one multiplier p (lambda by default).

The path is the solution curve of the extended system in (x, p), x the flat theta,

    grad_x J(x; mu(p)) = 0,            N equations, N + 1 unknowns,

parameterised by its arclength s in the weighted norm ||(dx, dp)||_w^2 = (w / N) |dx|^2 +
(1 - w) dp^2 (BifurcationKit's theta = w; Allgower & Georg 1990, ch. 2). Three roles:

- process `pseudo-arclength` (`PseudoArclength`): mu' = tau_p e_p, with the extended tangent
  tau = (tau_x, tau_p) from the bordered solve (solvers/bordered.py)

      [ A          -b       ] [tau_x]   [0]      A = Hess_x J, b = -d/dp grad_x J
      [ w/N t_x^T  (1-w) t_p] [tau_p] = [1],     t = the previous accepted tangent

  normalised to ||tau||_w = 1. The border makes <tau, t>_w > 0: the tangent keeps its
  orientation through a fold, where tau_p changes sign and A is singular. With no previous
  tangent (the start) the border row is (0, direction): tau_p > 0 for direction = +1 (A must be
  nonsingular there); a resumed run orients along the secant from the saved point before
  (continuation/engine/start.py). s is arclength: the stop rule's targets in p
  are landed on the first time p reaches them along the path (past a fold, p goes back).
  Cost: one JVP (b) and one GMRES solve on N + 1 unknowns (one HVP an iteration).
- predictor `pseudo-arclength`: the Euler step (x, p) + ds tau along the tangent, carrying the
  arclength condition N(x, p) = (w/N) tau_x . (x - x_pred) + (1 - w) tau_p (p - p_pred) = 0.
  No solves beyond the tangent at the start point.
- corrector `bordered-newton`: Newton on [grad_x J = 0; N = 0] (solvers.BorderedNewton), with
  no descent enforced, so it converges to saddles (the upper branch past a fold has Morse
  index 1); at fixed mu (the start, a landing on a target) Newton-MINRES on grad_x J = 0.
  Newton without descent converges to the nearest nondegenerate zero of grad J, which from a
  start far from the surface may be a saddle or a degenerate point (linear-Gaussian with a 2-d
  latent from its init_params: |grad| halves per step, max_iters); `descent = true` makes the
  fixed-mu corrections damped Newton-CG (minima only), for such a start.
  Cost per iteration: one gradient, one JVP, the GMRES/MINRES HVPs, a gradient a backtrack.

Gauge: the problem's gauge zero modes are deflated in every solve (EquilibriumSystem.deflation:
P A P + Q Q^T on the complement of the orbit). Refs: H. B. Keller, "Numerical solution of
bifurcation and nonlinear eigenvalue problems" (1977); E. Allgower & K. Georg, "Numerical
continuation methods" (1990); BifurcationKit.jl `src/continuation/Palc.jl` (PALC, `dot_theta`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import ClassVar, final

import torch

from problems.base import MU_NAMES, mu_index
from solvers import GMRES, NewtonCG
from solvers.bordered import Border, BorderedNewton, bordered_solve

from continuation.strategies.options import hvp_mode, in_range, integer, positive
from continuation.strategies.correctors import Corrector, CorrectorResult
from continuation.strategies.predictors import Correction, Prediction, Predictor
from continuation.strategies.processes import Process
from continuation.surface.work import count


@dataclass
class ArclengthCondition(Border):
    """N(x, p) = c.(x - x0) + d (p - p0) = 0 with x0, p0 the prediction at ds along the unit
    tangent of the start point: the projected distance from the start is ds + N(x, p)."""

    ds: float = 0.0

    def distance(self, x, mu) -> float:
        return self.ds + self.residual(x, mu)


def extended_tangent(system, x, mu, index: int, weights: tuple, reference=None, direction: int = 1,
                     solver=None):
    """(tau_x (N,), tau_p (), KrylovResult): the unit tangent of grad_x J(x; mu(p)) = 0 in the
    weighted norm, oriented along `reference` = (t_x, t_p) or, without it, with sign(tau_p) =
    direction. The bordered matrix of the module docstring; GMRES to `solver.rtol`."""
    solver = solver or GMRES(rtol=1e-12)
    w_x, w_p = weights
    e = torch.zeros_like(mu)
    e[index] = 1.0
    b = system.mixed_partials(x, mu, e[None, :])[:, 0]
    if reference is None:
        c, d = torch.zeros_like(x), float(direction)
    else:
        c, d = w_x * reference[0], w_p * float(reference[1])
    y, q, res = bordered_solve(solver, system.hessian(x, mu), b, c, d, torch.zeros_like(x), 1.0, system.deflation(x))
    count(system, krylov_iters=res.iters)  # its HVPs were counted by the system's operator
    norm = (w_x * float(y @ y) + w_p * float(q) ** 2) ** 0.5
    return y / norm, q / norm, res


@final
@dataclass
class PseudoArclength(Process):
    """mu' = tau_p e_p along the arclength of the extended tangent (Keller; module docstring).

    parameter: the multiplier p that moves ("lambda", "gamma" or "t"); weight: w in the norm
    (w/N)|dx|^2 + (1-w) dp^2, in (0, 1); direction: the sign of p' at a start without a previous
    tangent; rtol, maxiter: the bordered GMRES solve. Cost: one GMRES solve (HVPs) per point.
    """

    parameter: str = "lambda"
    weight: float = 0.5
    direction: int = 1
    rtol: float = 1e-12
    maxiter: int | None = None
    name: ClassVar[str] = "pseudo-arclength"
    arclength: ClassVar[bool] = True
    minimising: ClassVar[bool] = False  # follows the branch through folds, saddles included

    def __post_init__(self):
        mu_index(self.parameter)
        in_range("weight", self.weight, 0.0, 1.0, closed=False)
        if self.direction not in (1, -1) or isinstance(self.direction, bool):
            raise ValueError(f"direction must be 1 or -1, got {self.direction!r}")
        in_range("rtol", self.rtol, 0.0, 1.0, closed=False)
        if self.maxiter is not None:
            integer("maxiter", self.maxiter, minimum=1)

    def weights(self, n: int) -> tuple:
        return self.weight / n, 1.0 - self.weight

    def tangent(self, ctx):
        """(tau_x, tau_mu) at the point (cached in ctx.extended), oriented by ctx.reference."""
        if ctx.extended is None:
            i, n = mu_index(self.parameter), ctx.x.numel()
            ref = None if ctx.reference is None else (ctx.reference[:n], ctx.reference[n + i])
            solver = ctx.system.direct or GMRES(rtol=self.rtol, maxiter=self.maxiter,
                                                preconditioner=ctx.system.preconditioner)
            tau_x, tau_p, res = extended_tangent(ctx.system, ctx.x, ctx.mu, i, self.weights(n), ref, self.direction,
                                                 solver)
            ctx.solves.append(res)
            tau_mu = torch.zeros_like(ctx.mu)
            tau_mu[i] = tau_p
            ctx.extended = (tau_x, tau_mu)
        return ctx.extended

    def velocity(self, ctx):
        return self.tangent(ctx)[1]


@final
@dataclass
class PseudoArclengthPredictor(Predictor):
    """(x, mu) + ds (tau_x, tau_mu) with the arclength condition for the corrector; no solves
    beyond the tangent at the start point (process `pseudo-arclength`)."""

    name: ClassVar[str] = "pseudo-arclength"
    arclength: ClassVar[bool] = True

    def predict(self, make_context, start, ds, previous, process):
        tau_x, tau_mu = process.tangent(start)
        x, mu = start.x + ds * tau_x, start.mu + ds * tau_mu
        i = mu_index(process.parameter)
        w_x, w_p = process.weights(x.numel())
        e = torch.zeros_like(mu)
        e[i] = 1.0
        cond = ArclengthCondition(w_x * tau_x, w_p * float(tau_mu[i]), x, mu, e, ds)
        return ArclengthPrediction(x, mu, 1, start.solves_converged, start.solve_report(), arclength=cond)


@dataclass
class ArclengthPrediction(Prediction):
    """A prediction whose corrector moves one multiplier too: grad_theta J = 0 with the arclength
    condition (BorderedNewtonCorrector.correct_arclength), so s is arclength."""

    def correct(self, corrector, system, mu, landing, stop, mu_from, own: dict) -> Correction:
        """The bordered corrector's run; where the prediction itself lands on a milestone, the
        plain corrector at that mu. Where the corrector (not the prediction) carries a multiplier
        past a milestone or target, it lands there: the parameter set to the value, then the plain
        corrector at that mu from the corrected point. The step's length is the corrected point's
        projected distance along the tangent (ArclengthCondition.distance), where it is > 0.
        Raises FloatingPointError when the correction leaves lambda, gamma > 0."""
        if landing is not None:
            res = corrector.correct(system, self.x, mu, **own)
        else:
            res = corrector.correct_arclength(system, self.x, mu, self.arclength, **own)
            late = stop.crossed(mu_from, res.mu) if res.converged else None
            if late is not None:
                landing, mu = late, res.mu.clone()
                mu[mu_index(late[0])] = late[1]
                res = corrector.correct(system, res.x, mu, **own)
            elif res.converged:
                mu = res.mu
            if not (float(mu[0]) > 0 and float(mu[1]) > 0):
                named = {n: float(mu[i]) for i, n in enumerate(MU_NAMES)}
                raise FloatingPointError(f"correction left the domain lambda, gamma > 0: {named}")
        distance = self.arclength.distance(res.x, mu) if res.converged else 0.0
        return Correction(res, mu, landing, distance if distance > 0 else None)


@final
@dataclass
class BorderedNewtonCorrector(Corrector):
    """Newton on [grad J = 0; arclength condition] (GMRES on the bordered matrix), or on
    grad J = 0 at fixed mu (MINRES); no descent enforced: converges to saddles too.

    Cost per iteration: one gradient, one JVP (bordered), the Krylov HVPs; backtracking on the
    residual norm costs a gradient a trial.

    A step's correction (this corrector's `for_steps()`: the steps, fold location, projections,
    re-equilibrations and branch-end jumps) gives up early, as a predictor-corrector's should
    (Allgower & Georg 1990, section 6.1: a corrector that does not contract means the step was too
    long; BifurcationKit's Newton corrector has no line search at all): when ||F|| has not halved over `stall_iters` = 2
    iterations, or a line search needs more than `step_backtracks` = 10 halvings, the step is
    rejected and the step control shortens it. Before this, a prediction outside Newton's basin
    spent 100-400 gradients of backtracking on a residual that did not move (2-D Bratu, 30 x 30).
    The start's fixed-mu equilibration keeps the full line search."""

    gtol: float = 1e-10
    maxiter: int = 20
    hvp_mode: str = "rev-rev"
    descent: bool = False  # True: fixed-mu corrections by damped Newton-CG (minima only; module docstring)
    name: ClassVar[str] = "bordered-newton"
    counts: ClassVar[str] = "newton_iters"
    easy_iters: ClassVar[int] = 3
    max_iters: ClassVar[int] = 10
    solves_arclength: ClassVar[bool] = True
    stall_iters: ClassVar[int] = 2
    step_backtracks: ClassVar[int] = 10
    _in_steps: bool = field(default=False, repr=False)  # state, not an option: the steps' copy (for_steps)

    def __post_init__(self):
        positive("gtol", self.gtol)
        integer("maxiter", self.maxiter, minimum=1)
        hvp_mode(self.hvp_mode)

    def for_steps(self):
        return replace(self, _in_steps=True)

    def _newton(self, system):
        """The Newton solver; the steps' copy gives up early (docstring)."""
        early = {"stall_iters": self.stall_iters, "max_backtracks": self.step_backtracks} if self._in_steps else {}
        return BorderedNewton(gtol=self.gtol, maxiter=self.maxiter, hvp_mode=self.hvp_mode,
                              linear=getattr(system, "direct", None),
                              preconditioner=getattr(system, "preconditioner", None), **early)

    def _result(self, system, r) -> CorrectorResult:
        """The result, its passes (tallied by the solver below the system) counted in the system's ledger."""
        count(system, gradients=r.grads, hvps=r.hvps, mixed_partials=r.mixed_partials)
        return self.counted(system, CorrectorResult(r.x, r.converged, r.status, r.iters, r.grad_norm, r.hvps, r.grads,
                                                    r.seconds, r.mu))

    def correct(self, system, x, mu):
        if self.descent:
            r = NewtonCG(gtol=self.gtol, maxiter=self.maxiter, hvp_mode=self.hvp_mode).solve(
                system.objective, x, mu, deflation=system.deflation)
            count(system, gradients=r.grads, hvps=r.hvps, evaluations=r.fevals)
            return self.counted(system, CorrectorResult(r.x, r.converged, r.status, r.iters, r.grad_norm, r.hvps,
                                                        r.grads, r.seconds))
        return self._result(system, self._newton(system).solve(system.objective, x, mu, None, system.deflation))

    def correct_arclength(self, system, x, mu, condition: ArclengthCondition) -> CorrectorResult:
        """Solve grad J(x; mu) = 0 and condition(x, mu) = 0 for x and the condition's multiplier."""
        return self._result(system, self._newton(system).solve(system.objective, x, mu, condition,
                                                                          system.deflation))
