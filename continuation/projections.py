"""Projections: after the corrector, restore the process's held functional G = G0 by moving the
multipliers in `process.project_along` (less one that just landed on a milestone).

- `NoProjection` ("none"): the law alone; G drifts at the order of the predictor.
- `NewtonProjection` ("newton"): scalar Newton in mu along the tangents' dG/dmu, each iterate
  re-equilibrated from the last (deterministic problems: converges quadratically). Cost per
  iterate: one corrector run and the two tangent solves at the new point.
- `SecantProjection` ("secant"): a secant on tau, mu(tau) = mu_pred + tau d, d the Newton
  direction of the tangents at the last point, every iterate the corrector run from the same
  prediction x_pred (stochastic problems: a finite Adam run with the same random numbers at
  each iterate makes G(tau) one smooth function, although the run is far from equilibrium and
  responds to mu less than the equilibrium tangents say). Cost per iterate: one corrector run.

A projection of a process that holds nothing returns the corrected point unchanged.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar, final

import torch

from problems.base import mu_index

from .checks import integer, number
from .processes import FREE
from .strategy import Strategy
from .work import Work


@dataclass
class Projected:
    x: torch.Tensor
    mu: torch.Tensor
    ctx: object  # PointContext at (x, mu), or None (the stepper makes it)
    grad_norm: float
    work: Work = field(default_factory=Work)  # corrector runs and intermediate contexts, not ctx's own
    response: float | None = None  # measured dG/dtau over the tangents' prediction (SecantProjection)


@dataclass
class ProjectionTask:
    """What a projection gets: the system, the process and corrector, a context factory, the
    point the step started from (`current`, its context has the tangents), the prediction's
    x_pred, the corrector's result at mu_new, the held value G0, and the milestone just landed on
    (name, value) or None."""

    system: object
    process: object
    corrector: object
    make_context: object
    current: object
    x_pred: torch.Tensor
    mu_new: torch.Tensor
    result: object
    G0: float | None
    landing: tuple | None


class Projection(Strategy):
    @abstractmethod
    def project(self, task: ProjectionTask) -> Projected:
        """The projected point; called only when the corrector converged."""


def _unprojected(task) -> Projected:
    return Projected(task.result.x, task.mu_new, None, task.result.grad_norm)


@final
@dataclass
class NoProjection(Projection):
    """The law alone: no projection."""

    name: ClassVar[str] = "none"

    def project(self, task):
        return _unprojected(task)


def newton_shift(r: float, grad: dict, along, landing, mu) -> torch.Tensor:
    """The least-norm shift of the multipliers in `along` (less one that just landed on a
    milestone) that changes G by -r to first order: -r grad / |grad|^2 over those."""
    free = [n for n in along if landing is None or n != landing[0]]
    shift = torch.zeros_like(mu)
    denom = sum(grad[m] ** 2 for m in free)
    if denom > 0.0:
        for m in free:
            shift[mu_index(m)] = -r * grad[m] / denom
    return shift


@final
@dataclass
class NewtonProjection(Projection):
    """Restore G = G0 by scalar Newton steps in mu along the tangents' dG/dmu.

    To |G - G0| <= process.tol * max(|G0|, 1); stops when |G - G0| stops halving or after
    max_iter iterates."""

    max_iter: int = 8
    name: ClassVar[str] = "newton"

    def __post_init__(self):
        integer("max_iter", self.max_iter, minimum=1)

    def project(self, task):
        process = task.process
        if process.holds is None or task.G0 is None:
            return _unprojected(task)
        free = [n for n in process.project_along if task.landing is None or n != task.landing[0]]
        x, mu, grad_norm = task.result.x, task.mu_new, task.result.grad_norm
        work = Work()
        last = math.inf
        ctx = task.make_context(x, mu)
        for _ in range(self.max_iter):
            G, grad = process.constraint(ctx)
            r = G - task.G0
            if abs(r) <= process.tol * max(abs(task.G0), 1.0) or abs(r) > 0.5 * last:
                break
            last = abs(r)
            dmu = newton_shift(r, grad, free, None, mu)
            if not bool(dmu.any()):
                break
            x_guess = x + ctx.theta_dot(dmu)
            res = task.corrector.correct(task.system, x_guess, mu + dmu)
            work.add_corrector(res)
            if not res.converged:
                break
            work.add(ctx.work)
            x, mu, grad_norm = res.x, mu + dmu, res.grad_norm
            ctx = task.make_context(x, mu)
        return Projected(x, mu, ctx, grad_norm, work)


def bounded(tau, tau_from, d, mu_pred, factor=2.0):
    """tau clipped so that, from the iterate at tau_from, no multiplier changes by more than
    `factor` (up or down) in one secant iterate. A first guess from tangents that are far off
    (C_gamma near zero) or a secant through two noisy values can otherwise throw gamma by
    orders of magnitude: on 120 digits the unclipped secant sent gamma from 4 to 3e6."""
    lo, hi = -math.inf, math.inf
    for name in FREE:
        i = mu_index(name)
        di = float(d[i])
        if di == 0.0:
            continue
        base = float(mu_pred[i]) + tau_from * di
        a, b = (base / factor - base) / di, (base * factor - base) / di
        lo, hi = max(lo, min(a, b)), min(hi, max(a, b))
    return tau_from + min(max(tau - tau_from, lo), hi)


@final
@dataclass
class SecantProjection(Projection):
    """Restore G = G0 by a secant on the corrector's response, re-run from one prediction.

    tau moves mu along the Newton direction d of the last point's tangents, in units where the
    tangents predict G - G0 to change by tau; the first iterate is tau = -(G - G0) / k, then
    secant iterates to |G - G0| <= process.tol * |G0|; no iterate moves a multiplier by more
    than `factor`. Returns the iterate with the smallest |G - G0|.

    k = 1 trusts the tangents. With `reuse_response` k is the response the previous step
    measured, k = (G(tau*) - G(0)) / tau* at its accepted tau* (clipped to [0.02, 50]): on a
    neural problem a finite corrector run moves training C by a steady fraction of what the
    equilibrium tangents predict (0.2-0.45 on the digits MLP, benchmarks/tangent_response.py),
    so the first iterate then lands within the tolerance more often and a step costs one
    corrector run fewer. The measured k is written to the path (`secant_response`) and read back
    on resume. Cost: one corrector run per iterate."""

    max_iter: int = 6
    factor: float = 2.0
    reuse_response: bool = False
    name: ClassVar[str] = "secant"

    def __post_init__(self):
        integer("max_iter", self.max_iter, minimum=1)
        if not (number("factor", self.factor) > 1):
            raise ValueError(f"factor must be > 1, got {self.factor}")
        if not isinstance(self.reuse_response, bool):
            raise ValueError(f"reuse_response must be true or false, got {self.reuse_response!r}")

    def _omit_settings(self) -> tuple:
        """reuse_response is a setting only when on, so that a path written before the option
        existed (the same run) still resumes."""
        return () if self.reuse_response else ("reuse_response",)

    def project(self, task):
        process, G0, res, mu_pred = task.process, task.G0, task.result, task.mu_new
        if process.holds is None or G0 is None:
            return _unprojected(task)
        _, grad = process.constraint(task.current.ctx)
        d = newton_shift(-1.0, grad, process.project_along, task.landing, mu_pred)
        ctx = task.make_context(res.x, mu_pred)
        r0 = process.value(ctx) - G0
        best = (abs(r0), res.x, mu_pred, ctx, res.grad_norm, 0.0, r0)
        tol = process.tol * max(abs(G0), 1e-300)
        work = Work()
        previous = getattr(task.current, "response", None)
        k = previous if self.reuse_response and previous is not None else 1.0
        if best[0] <= tol or not bool(d.any()):
            return Projected(best[1], best[2], best[3], best[4], work, previous if self.reuse_response else None)
        taus, rs = [0.0], [r0]
        tau = bounded(-rs[0] / k, 0.0, d, mu_pred, self.factor)
        for _ in range(self.max_iter):
            mu = mu_pred + tau * d
            if not (float(mu[0]) > 0 and float(mu[1]) > 0):
                break
            r = task.corrector.correct(task.system, task.x_pred, mu)
            work.add_corrector(r)
            if not r.converged:
                break
            ctx = task.make_context(r.x, mu)
            g = process.value(ctx) - G0
            if abs(g) < best[0]:
                best = (abs(g), r.x, mu, ctx, r.grad_norm, tau, g)
            if abs(g) <= tol or g == rs[-1]:
                break
            taus.append(tau)
            rs.append(g)
            tau = bounded(taus[-1] - rs[-1] * (taus[-1] - taus[-2]) / (rs[-1] - rs[-2]), taus[-1], d, mu_pred,
                          self.factor)
        response = None
        if self.reuse_response:
            response = previous
            if best[5] != 0.0:
                measured = (best[6] - r0) / best[5]
                if math.isfinite(measured) and measured > 0:
                    response = min(max(measured, 0.02), 50.0)
        return Projected(best[1], best[2], best[3], best[4], work, response)

