"""Everything known at one point (theta, mu) of the surface, each quantity computed once.

A predictor's right-hand side, a process's law and the step control all ask for tangents and
rates at the same point; `PointContext` computes them on first request and caches them. Its work
goes into the system's ledger where it is spent (continuation/surface/work.py); `solves` keeps
its Krylov results (their iterations and residuals) for failure reports.
"""

from __future__ import annotations

import math

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
        # a reference that is not the previous point's tangent (a switched branch's start: stepper.py
        # _switch_branch); saved with the point's checkpoint so that a resume orients its tangent alike
        self.own_reference = None

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
            t = solve_tangents(self.system, self.x, self.mu, wrt=want, solver=self.solver)
            cols, solves = t.theta_mu.clone(), list(t.solves)
            for j, sol in enumerate(solves):
                better = self._dense_retry(sol, t.b_mu[:, j])
                if better is not None:
                    cols[:, j], solves[j] = better.x, better
            self._tangents = Tangents(t.names, cols, t.b_mu, solves)
            self._rates = None
            self.solves += solves
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
        result = self._dense_retry(result, b) or result
        self.solves.append(result)
        return result.x

    DENSE_RETRY_BELOW = 512

    def _dense_retry(self, result, b):
        """Where a Krylov tangent solve is not acceptable, the problem is small (N <= 512) and the solver
        ran with its default budget (a `maxiter` the user set, say one MINRES iteration for crude
        tangents, is respected), the same solve by `Dense` (A from N HVPs, its eigendecomposition,
        the minimum-norm least-squares solution past the numerically zero eigenvalues), returned where that one is acceptable; None
        otherwise. At a critical multiplier A is singular to rounding (an eigenvalue 1e-17 of 1):
        MINRES's iterates lose orthogonality there (true residual 1e13 times |b| on the linear-Gaussian
        trivial branch), while the minimum-norm solution is the branch's tangent (issue 27 (c))."""
        from solvers import Dense

        if (self.acceptable(result) or self.x.numel() > self.DENSE_RETRY_BELOW or isinstance(self.solver, Dense)
                or getattr(self.solver, "maxiter", None) is not None):  # a budget the user set is respected
            return None
        dense = self.system.solve_hessian(Dense(rtol=getattr(self.solver, "rtol", 1e-12)), self.x, self.mu, b)
        return dense if self.acceptable(dense) else None

    @property
    def solves_converged(self) -> bool:
        return all(self.acceptable(s) for s in self.solves)

    def acceptable(self, solve) -> bool:
        """A Krylov solve the predictor may use: converged to its rtol, or with a true residual
        ||A y - b|| at most the corrector's gtol (forces per unit multiplier), finite. A prediction
        that moves the multipliers by ds then carries a force error of ds ||A y - b|| from the solve,
        below what the corrector removes anyway. This is what a tangent near a critical multiplier
        needs: on a symmetric branch at rounding distance from its exact solution (theta ~ 1e-20,
        b ~ 1e-21) A is singular there and b's component along its null vector (0.15 |b|, 1.4e-21) has
        no solution; the minimum-norm least-squares y is the branch's tangent, and the step used to be
        rejected until it fell below min_step (issue 27 (c))."""
        if solve.converged:
            return True
        gtol = getattr(self.corrector, "gtol", None)
        return (isinstance(gtol, float) and 0 < gtol < math.inf and math.isfinite(solve.residual)
                and solve.residual <= gtol and bool(torch.isfinite(solve.x).all()))

    def solve_report(self) -> str:
        bad = [s for s in self.solves if not self.acceptable(s)]
        return bad[0].message() if bad else "all Krylov solves converged"
