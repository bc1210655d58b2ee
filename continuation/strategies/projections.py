"""Projections: after the corrector, restore the process's held functional G = G0 by moving the
multipliers in `process.project_along` (less one that just landed on a milestone).

- `NoProjection` ("none"): the law alone; G drifts at the order of the predictor.
- `NewtonProjection` ("newton"): scalar Newton in mu along the tangents' dG/dmu, each iterate
  re-equilibrated from the last (deterministic problems only: converges quadratically). Cost per
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
from dataclasses import dataclass
from typing import ClassVar, final

import torch

from problems.base import mu_index

from continuation.strategies.options import integer, number
from continuation.strategies.processes import FREE
from continuation.strategies.base import Strategy


@dataclass
class Projected:
    x: torch.Tensor
    mu: torch.Tensor
    ctx: object  # PointContext at (x, mu), or None (the stepper makes it)
    grad_norm: float
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
    H0: float | None = None  # the second held functional's start value (process.also_holds)
    H_scale: float | None = None  # the scale of H's relative tolerance (process.also_scale at the start; default |H0|)
    own: object = None  # the projection's own state (its slot of the run's State), for a stateful one


class Projection(Strategy):
    # True: the projection uses the equilibrium tangents (Newton in mu), so it needs a deterministic
    # problem (strategies/checks.py check_combination)
    needs_equilibria: ClassVar[bool] = False
    # True: the projection restores the held functional to the process's tol, so a point it
    # leaves farther away is a miss the run reports (engine/stepper.py); "none" holds nothing
    holds_to_tol: ClassVar[bool] = True

    def bound(self, tol: float, G0: float) -> float:
        """The relative distance |G - G0| / |G0| this projection accepts: tol (the secant's
        |G - G0| <= tol |G0|)."""
        return tol

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
    holds_to_tol: ClassVar[bool] = False

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


def _two_held(task) -> bool:
    """Whether the projection holds G and the process's second functional H in (lambda, gamma):
    the process holds two, both multipliers may move, and none just landed on a milestone
    (then only G is held, along the other)."""
    p = task.process
    return (p.also_holds is not None and task.H0 is not None and set(FREE) <= set(p.project_along)
            and (task.landing is None or task.landing[0] not in FREE))


def _jacobian(process, ctx):
    """(G, H), the 2 x 2 Jacobian d(G, H)/d(lambda, gamma) of the tangents (float64, CPU)."""
    G, g = process.constraint(ctx)
    H, h = process.also_constraint(ctx)
    return (torch.tensor([G, H], dtype=torch.float64),
            torch.tensor([[g["lambda"], g["gamma"]], [h["lambda"], h["gamma"]]], dtype=torch.float64))


def _residual(process, ctx, G0, H0) -> torch.Tensor:
    return torch.tensor([process.value(ctx) - G0, process.also_value(ctx) - H0], dtype=torch.float64)


def _tolerances(task) -> torch.Tensor:
    """The absolute tolerances on (G - G0, H - H0): process.tol times |G0| and H's scale (|H0| by default)."""
    scale = task.H_scale if task.H_scale is not None else abs(task.H0)
    return task.process.tol * torch.clamp(torch.tensor([abs(task.G0), scale], dtype=torch.float64), min=1e-300)


def _free_shift(mu, dmu2) -> torch.Tensor:
    """A shift of mu (all three entries) from a (lambda, gamma) shift."""
    shift = torch.zeros_like(mu)
    for name, v in zip(FREE, dmu2.tolist()):
        shift[mu_index(name)] = v
    return shift


def _solve2(J, r) -> torch.Tensor | None:
    """-J^{-1} r, or None where J is singular or the step not finite."""
    try:
        d = -torch.linalg.solve(J, r)
    except RuntimeError:  # torch.linalg.LinAlgError: a singular J
        return None
    return d if bool(torch.isfinite(d).all()) else None


@final
@dataclass
class NewtonProjection(Projection):
    """Restore G = G0 by scalar Newton steps in mu along the tangents' dG/dmu.

    To |G - G0| <= process.tol * max(|G0|, 1); stops when |G - G0| stops halving or after
    max_iter iterates."""

    max_iter: int = 8
    name: ClassVar[str] = "newton"
    needs_equilibria: ClassVar[bool] = True

    def __post_init__(self):
        integer("max_iter", self.max_iter, minimum=1)

    def bound(self, tol: float, G0: float) -> float:
        """|G - G0| <= tol max(|G0|, 1), relative to |G0|: tol max(1, 1 / |G0|)."""
        return tol * max(1.0, 1.0 / abs(G0)) if G0 else tol

    def project(self, task):
        process = task.process
        if process.holds is None or task.G0 is None:
            return _unprojected(task)
        if _two_held(task):
            return self._project2(task)
        free = [n for n in process.project_along if task.landing is None or n != task.landing[0]]
        x, mu, grad_norm = task.result.x, task.mu_new, task.result.grad_norm
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
            if not res.converged:
                break
            x, mu, grad_norm = res.x, mu + dmu, res.grad_norm
            ctx = task.make_context(x, mu)
        return Projected(x, mu, ctx, grad_norm)

    def _project2(self, task):
        """Damped Newton on (G - G0, H - H0) = 0 in (lambda, gamma) with the tangents' 2 x 2
        Jacobian, each iterate re-equilibrated from the last, to both within process.tol
        (relative): the Newton step is halved (at most 5 times) until max(|r_i| / tol_i) falls, so a
        poor prediction far from the curve does not throw the iterates about. Cost per trial: one
        corrector run, and the two tangent solves at each accepted iterate."""
        process = task.process
        x, mu, grad_norm = task.result.x, task.mu_new, task.result.grad_norm
        target = torch.tensor([task.G0, task.H0], dtype=torch.float64)
        tol = _tolerances(task)
        ctx = task.make_context(x, mu)
        for _ in range(self.max_iter):
            values, J = _jacobian(process, ctx)
            size = float(((values - target).abs() / tol).max())
            if size <= 1.0:
                break
            d = _solve2(J, values - target)
            if d is None:
                break
            step, accepted = 1.0, None
            for _ in range(6):
                dmu = _free_shift(mu, step * d)
                trial = mu + dmu
                if float(trial[0]) > 0 and float(trial[1]) > 0:
                    res = task.corrector.correct(task.system, x + ctx.theta_dot(dmu), trial)
                    if res.converged:
                        c = task.make_context(res.x, trial)
                        if float(((_residual(process, c, task.G0, task.H0)).abs() / tol).max()) < size:
                            accepted = (res, trial, c)
                            break
                step /= 2
            if accepted is None:
                break
            res, mu, ctx = accepted
            x, grad_norm = res.x, res.grad_norm
        return Projected(x, mu, ctx, grad_norm)


def _rerun(task, mu):
    """The corrector from the prediction x_pred at mu (same random numbers at every call):
    (result, context), or None outside lambda, gamma > 0 or when it failed."""
    if not (float(mu[0]) > 0 and float(mu[1]) > 0):
        return None
    r = task.corrector.correct(task.system, task.x_pred, mu)
    if not r.converged:
        return None
    return r, task.make_context(r.x, mu)


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
    """Restore G = G0 (and H = H0: Broyden in lambda, gamma) by a secant on the corrector's response from one prediction.

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
    jacobian: str = "tangents"
    probe: float = 0.1
    name: ClassVar[str] = "secant"

    def __post_init__(self):
        integer("max_iter", self.max_iter, minimum=1)
        if not (number("factor", self.factor) > 1):
            raise ValueError(f"factor must be > 1, got {self.factor}")
        if not isinstance(self.reuse_response, bool):
            raise ValueError(f"reuse_response must be true or false, got {self.reuse_response!r}")
        if self.jacobian not in ("tangents", "probe"):
            raise ValueError(f"jacobian must be 'tangents' or 'probe', got {self.jacobian!r}")
        if not (number("probe", self.probe) > 0 and self.probe < 1):
            raise ValueError(f"probe must be in (0, 1), got {self.probe}")

    @property
    def stateful(self) -> bool:
        return self.reuse_response

    # its state: the response the last accepted step measured (reuse_response), else None
    def update_state(self, own, accepted):
        return accepted.response if self.reuse_response else None

    def _omit_settings(self) -> tuple:
        """reuse_response, jacobian and probe are settings only when changed, so that a path
        written before the options existed (the same run) still resumes."""
        return ((() if self.reuse_response else ("reuse_response",))
                + (("jacobian", "probe") if self.jacobian == "tangents" else ()))

    def project(self, task):
        process, G0, res, mu_pred = task.process, task.G0, task.result, task.mu_new
        if process.holds is None or G0 is None:
            return _unprojected(task)
        if _two_held(task):
            return self._project2(task)
        _, grad = process.constraint(task.current.ctx)
        d = newton_shift(-1.0, grad, process.project_along, task.landing, mu_pred)
        ctx = task.make_context(res.x, mu_pred)
        r0 = process.value(ctx) - G0
        best = (abs(r0), res.x, mu_pred, ctx, res.grad_norm, 0.0, r0)
        tol = process.tol * max(abs(G0), 1e-300)
        previous = task.own
        k = previous if self.reuse_response and previous is not None else 1.0
        if best[0] <= tol or not bool(d.any()):
            return Projected(best[1], best[2], best[3], best[4], previous if self.reuse_response else None)
        taus, rs = [0.0], [r0]
        tau = bounded(-rs[0] / k, 0.0, d, mu_pred, self.factor)
        for _ in range(self.max_iter):
            mu = mu_pred + tau * d
            run = _rerun(task, mu)
            if run is None:
                break
            r, ctx = run
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
        return Projected(best[1], best[2], best[3], best[4], response)

    def _project2(self, task):
        """Broyden's secant method (the multi-dimensional secant; Broyden 1965, Dennis & Schnabel
        section 8.1) on r(mu) = (G - G0, H - H0) in (lambda, gamma), every iterate the corrector
        run from the same prediction x_pred, so that r is one smooth function of mu on a
        stochastic problem. Coordinates u_i = mu_i / mu_pred_i - 1 (lambda and gamma on one
        scale); the first Jacobian is the tangents' at the last point (divided by the response
        the previous step measured, with reuse_response), then rank-one updates
        J += ((dr - J du) du^T) / |du|^2. No iterate moves a multiplier by more than `factor`.
        Returns the iterate with the smallest max(|r_i| / tol_i). Cost: one corrector run per
        iterate (the Jacobian's two tangent solves were made at the last point already).

        jacobian = "probe": the first Jacobian is measured instead, by forward differences of
        the corrector's own response, (r(u + probe e_i) - r(u)) / probe for i = lambda, gamma
        (two more corrector runs, which also count as iterates for the best). On a stochastic
        network the tangents' Jacobian of the 2-D law can be near singular and its first step
        throws the multipliers by the full factor (docs/transfer.md)."""
        process, res, mu_pred = task.process, task.result, task.mu_new
        tol = _tolerances(task)
        scale = torch.tensor([float(mu_pred[mu_index(n)]) for n in FREE], dtype=torch.float64)
        previous = task.own
        if self.jacobian == "tangents":
            _, J = _jacobian(process, task.current.ctx)
            J = J * scale[None, :]  # d r / d u
            if self.reuse_response and previous is not None:
                J = J * previous
        ctx = task.make_context(res.x, mu_pred)
        u, r = torch.zeros(2, dtype=torch.float64), _residual(process, ctx, task.G0, task.H0)
        best = (float((r.abs() / tol).max()), res.x, mu_pred, ctx, res.grad_norm)
        if self.jacobian == "probe" and best[0] > 1.0:
            J = torch.zeros(2, 2, dtype=torch.float64)
            for i in range(2):
                du = torch.zeros(2, dtype=torch.float64)
                du[i] = self.probe
                mu = mu_pred + _free_shift(mu_pred, scale * du)
                run = _rerun(task, mu)
                if run is None:
                    return Projected(best[1], best[2], best[3], best[4], previous if self.reuse_response else None)
                out, c = run
                r_i = _residual(process, c, task.G0, task.H0)
                J[:, i] = (r_i - r) / self.probe
                size = float((r_i.abs() / tol).max())
                if size < best[0]:
                    best = (size, out.x, mu, c, out.grad_norm)
        for _ in range(self.max_iter):
            if best[0] <= 1.0:
                break
            du = _solve2(J, r)
            if du is None:
                break
            # at most a factor `factor` per multiplier from the current iterate
            now, new = 1.0 + u, 1.0 + u + du
            limit = 1.0
            for a, b in zip(now.tolist(), new.tolist()):
                if b > a * self.factor:
                    limit = min(limit, (a * self.factor - a) / (b - a))
                elif b < a / self.factor:
                    limit = min(limit, (a / self.factor - a) / (b - a))
            du = du * limit
            mu = mu_pred + _free_shift(mu_pred, scale * (u + du))
            run = _rerun(task, mu)
            if run is None:
                break
            out, ctx = run
            r_new = _residual(process, ctx, task.G0, task.H0)
            size = float((r_new.abs() / tol).max())
            if size < best[0]:
                best = (size, out.x, mu, ctx, out.grad_norm)
            dr = r_new - r
            J = J + torch.outer(dr - J @ du, du) / float(du @ du)
            u, r = u + du, r_new
        return Projected(best[1], best[2], best[3], best[4], previous if self.reuse_response else None)
