"""Everything known at one point (theta, mu) of the surface, each quantity computed once.

A predictor's right-hand side, a process's law and the step control all ask for tangents and
rates at the same point; `PointContext` computes them on first request and caches them. Its work
goes into the system's ledger where it is spent (continuation/surface/work.py); `solves` keeps
its Krylov results (their iterations and residuals) for failure reports.
"""

from __future__ import annotations

import torch

from problems.base import FUNCTIONAL_NAMES, MU_NAMES, mu_index

from continuation.surface.system import EquilibriumSystem
from continuation.surface.tangents import Tangents, solve_tangents, total_derivatives


class PointContext:
    def __init__(self, system: EquilibriumSystem, x: torch.Tensor, mu: torch.Tensor, solver, corrector=None):
        self.system, self.x, self.mu, self.solver, self.corrector = system, x, mu, solver, corrector
        self.solves = []  # every KrylovResult spent here, for failure reports
        self._functionals = None
        self._tangents: Tangents | None = None
        self._rates = None
        self._objective = None
        self._velocity = {}
        self._evaluation = None
        # a process that solves for theta' and mu' together (pseudo-arclength, where A is
        # singular at a fold) leaves (theta', mu') here; theta_dot(mu') then returns its theta'
        self.extended = None
        # the tangent (theta', mu') of the accepted point before this one, set by the stepper:
        # orients a tangent that is defined up to sign (pseudo-arclength)
        self.reference = None

    def evaluation_metrics(self) -> dict:
        """The problem's fixed-noise training metrics here (train_R, train_D, train_C; {} for a
        deterministic problem), computed once: one pass over the training set."""
        if self._evaluation is None:
            self._evaluation = self.system.evaluation_metrics(self.x, self.mu)
        return self._evaluation

    def carry_draw_free(self, other: "PointContext") -> "PointContext":
        """This context with what `other` (the same point on another draw of a stochastic problem)
        computed that does not depend on the draw: the fixed-noise evaluation metrics. Nothing is
        computed twice at one point after a resample."""
        if torch.equal(other.x, self.x) and torch.equal(other.mu, self.mu) and self._evaluation is None:
            self._evaluation = other._evaluation
        return self

    def velocity(self, process) -> torch.Tensor:
        """mu' of `process` at this point (cached: a law may cost Krylov solves or re-equilibrations)."""
        key = id(process)
        if key not in self._velocity:
            self._velocity[key] = process.velocity(self)
        return self._velocity[key]

    # -- values ------------------------------------------------------------------------------
    def functionals(self) -> dict:
        """{"R", "D", "C"} as floats."""
        if self._functionals is None:
            v = self.system.values(self.x, self.mu)
            self._functionals = {n: float(v[i]) for i, n in enumerate(FUNCTIONAL_NAMES)}
        return self._functionals

    def objective(self) -> float:
        if self._objective is None:
            self._objective = float(self.system.objective_value(self.x, self.mu))
        return self._objective

    # -- first-order quantities --------------------------------------------------------------
    def tangents(self, names=("lambda", "gamma")) -> Tangents:
        """theta_mu for the named parameters (one Krylov solve each, cached)."""
        names = tuple(names)
        if self._tangents is None or not set(names) <= set(self._tangents.names):
            want = tuple(n for n in MU_NAMES if n in set(names) | set(self._tangents.names if self._tangents else ()))
            self._tangents = solve_tangents(self.system, self.x, self.mu, wrt=want, solver=self.solver)
            self._rates = None
            self.solves += self._tangents.solves
        return self._tangents

    def rates(self, names=("lambda", "gamma")) -> dict:
        """Total derivatives along the surface: {"R": {"lambda": R_lambda, ...}, "D": ..., "C": ...}."""
        t = self.tangents(names)
        if self._rates is None:
            self.system.ledger.count(evaluations=len(t.names))  # one forward-mode pass of R, D, C per column
            d = total_derivatives(self.system.functionals, self.x, self.mu, t).detach()
            self._rates = {f: {n: float(d[i, j]) for j, n in enumerate(t.names)} for i, f in enumerate(FUNCTIONAL_NAMES)}
        return self._rates

    def theta_dot(self, mu_dot: torch.Tensor) -> torch.Tensor:
        """theta' = sum_j theta_{mu_j} mu_j' (from the cached tangents, or one Krylov solve)."""
        if self.extended is not None and torch.equal(mu_dot, self.extended[1]):
            return self.extended[0]
        moving = [n for n in MU_NAMES if float(mu_dot[mu_index(n)]) != 0.0]
        if not moving:
            return torch.zeros_like(self.x)
        if self._tangents is not None and set(moving) <= set(self._tangents.names):
            coeffs = torch.stack([mu_dot[mu_index(n)] for n in self._tangents.names])
            return self._tangents.theta_mu @ coeffs
        b = self.system.mixed_partials(self.x, self.mu, mu_dot[None, :])[:, 0]
        result = self.system.solve_hessian(self.solver, self.x, self.mu, b)
        self.solves.append(result)
        return result.x

    @property
    def solves_converged(self) -> bool:
        return all(s.converged for s in self.solves)

    def solve_report(self) -> str:
        bad = [s for s in self.solves if not s.converged]
        return bad[0].message() if bad else "all Krylov solves converged"
