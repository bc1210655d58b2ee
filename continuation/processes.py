"""Processes: the law that moves mu = (lambda, gamma, t) along the path parameter s.

Each process returns mu' at a point (its `velocity`), and, when it holds a functional constant,
that functional's value and its total mu-gradient (its `constraint`), which the driver uses to
project back onto the constraint after each step.

| process                     | law                                                         | paper       |
|-----------------------------|-------------------------------------------------------------|-------------|
| quasi-static                | mu' prescribed                                              | eq. 16-17   |
| iso-classification          | lambda' = -alpha C_gamma, gamma' = alpha C_lambda (tangents)  | eq. 20, 22  |
| iso-classification-fd       | the same law with C_lambda, C_gamma by finite differences of  | eq. 22, 31  |
|                             | re-equilibrated models (the paper's procedure; the baseline)|             |
| iso-functional              | keep G(R, D, C) constant: (lambda', gamma') = alpha (-G_gamma, G_lambda) | Remark 8 |
| iso-classification-transfer | t' = 1, C_lambda lambda' + C_gamma gamma' + C_t = 0, and     | eq. 26, 35, |
|                             | lambda' = k (eq. 38) or the geodesic D' = k R' (eq. 30)     | 30, 38      |
| quasi-static-transfer       | t' = 1 at fixed (lambda, gamma)                             | eq. 24-25   |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from problems.base import StochasticProblem, mu_index

from .context import PointContext

FREE = ("lambda", "gamma")


class Process:
    """Base: `velocity(ctx)` gives mu' at a point; `constraint(ctx)` gives (G, dG/dmu) or None."""

    name = "process"
    holds: str | None = None  # the name of the conserved functional, if any
    project: bool = False

    def velocity(self, ctx: PointContext) -> torch.Tensor:
        raise NotImplementedError

    def constraint(self, ctx: PointContext):
        return None


CLOCKS = ("alpha", "lambda")


def _checked_clock(clock: str) -> str:
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {CLOCKS}, got {clock!r}")
    return clock


def _iso_law(ctx, g_lambda: float, g_gamma: float, alpha: float, clock: str) -> torch.Tensor:
    """(lambda', gamma') = alpha (-G_gamma, G_lambda); with clock = "lambda" rescaled so that
    lambda' = 1 (s is then lambda - lambda0, whatever the size of the rates; the ratio
    gamma'/lambda' = -G_lambda / G_gamma, which is what holds G, is the same)."""
    lam, gam = -alpha * g_gamma, alpha * g_lambda
    if _checked_clock(clock) == "lambda":
        if lam == 0.0:
            raise FloatingPointError("clock = 'lambda' needs lambda' != 0, but G_gamma = 0 at this point")
        lam, gam = 1.0, gam / lam  # lambda increases with s, whichever way the law points
    return _mu_vector(ctx, {"lambda": lam, "gamma": gam})


def _mu_vector(ctx, values: dict) -> torch.Tensor:
    v = torch.zeros_like(ctx.mu)
    for name, value in values.items():
        v[mu_index(name)] = value
    return v


@dataclass
class QuasiStatic(Process):
    """Prescribed constant mu' = (lambda_rate, gamma_rate, t_rate) (eq. 16-17); one Krylov solve per RHS."""

    lambda_rate: float = 1.0
    gamma_rate: float = 0.0
    t_rate: float = 0.0
    name = "quasi-static"

    def velocity(self, ctx):
        return _mu_vector(ctx, {"lambda": self.lambda_rate, "gamma": self.gamma_rate, "t": self.t_rate})


@dataclass
class IsoFunctional(Process):
    """Hold G(R, D, C) constant: (lambda', gamma') = alpha (-G_gamma, G_lambda), which makes
    G' = G_lambda lambda' + G_gamma gamma' = 0 exactly, with G_mu = sum_F dG/dF F_mu the total
    derivatives along the surface (two Krylov solves per point). With `project`, the driver
    restores G = G0 after each step by a scalar Newton iteration in mu.
    """

    functional: Callable = None  # G(R, D, C) on torch scalars
    label: str = "G"
    alpha: float = 1.0
    project: bool = True
    tol: float = 1e-12  # relative, for the projection
    measure: str = "batch"  # or "evaluation": G held on the problem's fixed-noise training metrics
    clock: str = "alpha"  # or "lambda": mu' scaled so that lambda' = 1
    name = "iso-functional"

    @property
    def project_along(self) -> tuple:
        """The multipliers a projection may move: gamma alone when s is lambda's clock."""
        return ("gamma",) if self.clock == "lambda" else FREE

    def value(self, ctx) -> float:
        """G at the point, on the process's measure (no tangents needed)."""
        f = self._values(ctx)
        return float(self.functional(*(torch.tensor(f[n], dtype=torch.float64) for n in "RDC")))

    def _values(self, ctx):
        """R, D, C where G is measured: the step's batch, or (stochastic problems) one fixed noise
        draw over the whole training set, which does not change between points."""
        if self.measure == "batch":
            return ctx.functionals()
        if self.measure != "evaluation":
            raise ValueError(f"measure must be 'batch' or 'evaluation', got {self.measure!r}")
        metrics = ctx.system.problem.evaluation_metrics
        if not isinstance(ctx.system.problem, StochasticProblem):
            raise ValueError("measure = 'evaluation' needs a problem with evaluation_metrics (a stochastic one)")
        if ctx.evaluation is None:  # one full-training-set pass per point, however often asked
            ctx.evaluation = metrics(ctx.system.unflatten(ctx.x), ctx.mu)
        return {n: ctx.evaluation[f"train_{n}"] for n in "RDC"}

    def _gradient(self, ctx):
        f = self._values(ctx)
        args = [torch.tensor(f[n], dtype=torch.float64, requires_grad=True) for n in "RDC"]
        G = self.functional(*args)
        dG = torch.autograd.grad(G, args, allow_unused=True)
        dG = [0.0 if d is None else float(d) for d in dG]
        rates = ctx.rates(FREE)
        grad_mu = {m: sum(dG[i] * rates[n][m] for i, n in enumerate("RDC")) for m in FREE}
        return float(G.detach()), grad_mu

    def velocity(self, ctx):
        _, g = self._gradient(ctx)
        return _iso_law(ctx, g["lambda"], g["gamma"], self.alpha, self.clock)

    def constraint(self, ctx):
        return self._gradient(ctx)


PROJECTIONS = (False, True, "newton", "secant")


def iso_classification(alpha: float = 1.0, project: bool | str = True, tol: float = 1e-12,
                       measure: str = "batch", clock: str = "alpha") -> IsoFunctional:
    """Remark 7 / eq. 22 with exact rates: lambda' = -alpha C_gamma, gamma' = alpha C_lambda.

    project: after each step, bring C back to C0 (to `tol`, relative) by moving mu:
      True / "newton": Newton steps along the tangents' dC/dmu, re-equilibrating from the last
        point (exact problems: converges quadratically);
      "secant": a secant iteration on the corrector's own response, every iterate re-equilibrated
        from the same prediction with the same random numbers (stochastic problems, where a
        finite Adam run responds to mu far less than the equilibrium tangents say);
      False: the law alone.
    measure: "batch" or "evaluation" (C on the fixed-noise training set). clock: "alpha" or
    "lambda" (s = lambda - lambda0; projections then move gamma only).
    """
    _checked_clock(clock)
    if project not in PROJECTIONS:
        raise ValueError(f"project must be one of {PROJECTIONS}, got {project!r}")
    p = IsoFunctional(functional=lambda R, D, C: C, label="C", alpha=alpha, project=project, tol=tol, measure=measure,
                      clock=clock)
    p.name, p.holds = "iso-classification", "C"
    return p


def iso_c_plus_r_over_beta(beta: float = 10.0, alpha: float = 1.0, project: bool = True, tol: float = 1e-12):
    """Remark 8: keep C + R / beta constant (the right-hand side of a PAC-Bayes bound)."""
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    p = IsoFunctional(functional=lambda R, D, C: C + R / beta, label=f"C + R/{beta:g}", alpha=alpha, project=project,
                      tol=tol)
    p.name, p.holds, p.beta = "iso-c-plus-r-over-beta", p.label, beta
    return p


@dataclass
class IsoClassificationFD(Process):
    """Iso-classification with C_lambda, C_gamma by finite differences of re-equilibrated models (eq. 31).

    The paper's procedure: C_lambda, C_gamma by central differences of C at models
    re-equilibrated (by the corrector, warm-started) at lambda(1 +- h) and gamma(1 +- h).
    Cost: four corrector runs per evaluation; error O(h^2) plus the corrector's residual.
    """

    alpha: float = 1.0
    h: float = 1e-3  # relative step in lambda and gamma
    project: bool = False
    tol: float = 1e-12
    clock: str = "alpha"  # or "lambda": mu' scaled so that lambda' = 1
    name = "iso-classification-fd"
    holds = "C"

    def __post_init__(self):
        _checked_clock(self.clock)

    def fd_rates(self, ctx):
        if ctx.corrector is None:
            raise ValueError("iso-classification-fd needs a corrector to re-equilibrate at perturbed multipliers")
        rates = {}
        for name in FREE:
            i = mu_index(name)
            step = self.h * float(ctx.mu[i])
            values = []
            for sign in (1.0, -1.0):
                mu = ctx.mu.clone()
                mu[i] += sign * step
                res = ctx.corrector.correct(ctx.system, ctx.x, mu)
                ctx.corrector_iters += res.iters
                if not res.converged:
                    raise RuntimeError(f"iso-classification-fd: re-equilibration at {name} {'+-'[sign < 0]} h "
                                       f"did not converge ({res.status}, |grad| {res.grad_norm:.2e})")
                values.append(float(ctx.system.functionals(res.x, mu)[2]))
            rates[name] = (values[0] - values[1]) / (2 * step)
        return rates

    def value(self, ctx) -> float:
        return ctx.functionals()["C"]

    def velocity(self, ctx):
        r = self.fd_rates(ctx)
        return _iso_law(ctx, r["lambda"], r["gamma"], self.alpha, self.clock)

    def constraint(self, ctx):
        return ctx.functionals()["C"], self.fd_rates(ctx)


TRANSFER = ("lambda", "gamma", "t")
CONDITIONS = ("lambda", "geodesic")


@dataclass
class IsoClassificationTransfer(IsoFunctional):
    """Iso-classification while the task moves (t' = 1, s = t): C_lambda lambda' + C_gamma gamma'
    + C_t = 0 (eq. 26, 35; the task term carries t' = 1, not gamma' as eq. 28 prints it), and

      condition = "lambda":   lambda' = k (appendix G, eq. 38), gamma' from the constraint;
      condition = "geodesic": D' = k R' (section 4.3, eq. 30): the 2 x 2 system
          D_lambda lambda' + D_gamma gamma' = k F_t / (1 + k lambda) - D_t,
          C_lambda lambda' + C_gamma gamma' = -C_t,
        where F_t = R_t + lambda D_t + gamma C_t is what eq. 30 writes dR/dt: the t-derivative of
        R at fixed D and C (with C' = 0, R' = -lambda D' + F_t).

    All rates are total derivatives along the surface (three Krylov solves per point: theta_lambda,
    theta_gamma, theta_t = A^{-1} b_t). Projections (the driver's) move gamma only.
    """

    functional: Callable = lambda R, D, C: C  # noqa: E731
    label: str = "C"
    condition: str = "lambda"
    k: float = 0.0
    project: bool = False
    name = "iso-classification-transfer"
    holds = "C"

    def __post_init__(self):
        if self.condition not in CONDITIONS:
            raise ValueError(f"condition must be one of {CONDITIONS}, got {self.condition!r}")
        if self.project not in PROJECTIONS:
            raise ValueError(f"project must be one of {PROJECTIONS}, got {self.project!r}")

    @property
    def project_along(self) -> tuple:
        return ("gamma",)

    def velocity(self, ctx):
        r = ctx.rates(TRANSFER)
        C, D, R = r["C"], r["D"], r["R"]
        lam, gam = float(ctx.mu[0]), float(ctx.mu[1])
        if self.condition == "lambda":
            if C["gamma"] == 0.0:
                raise FloatingPointError("iso-classification transfer: C_gamma = 0, the constraint cannot fix gamma'")
            lam_dot = self.k
            gam_dot = -(C["lambda"] * lam_dot + C["t"]) / C["gamma"]
        else:
            denom = 1.0 + self.k * lam
            if denom == 0.0:
                raise FloatingPointError(f"geodesic transfer: 1 + k lambda = 0 (k = {self.k}, lambda = {lam})")
            f_t = R["t"] + lam * D["t"] + gam * C["t"]
            det = D["lambda"] * C["gamma"] - D["gamma"] * C["lambda"]
            if det == 0.0:
                raise FloatingPointError("geodesic transfer: det Hess F = 0, eq. 30 has no unique solution")
            r1, r2 = self.k * f_t / denom - D["t"], -C["t"]
            lam_dot = (r1 * C["gamma"] - D["gamma"] * r2) / det
            gam_dot = (D["lambda"] * r2 - C["lambda"] * r1) / det
        return _mu_vector(ctx, {"lambda": lam_dot, "gamma": gam_dot, "t": 1.0})


def iso_classification_transfer(condition: str = "lambda", k: float = 0.0, project: bool | str = False,
                                tol: float = 1e-12, measure: str = "batch") -> IsoClassificationTransfer:
    """Iso-classification transfer, t 0 -> 1 (eq. 26, 35): lambda' = k (eq. 38) or geodesic slope k (eq. 30)."""
    return IsoClassificationTransfer(condition=condition, k=k, project=project, tol=tol, measure=measure)


def quasi_static_transfer(lambda_rate: float = 0.0, gamma_rate: float = 0.0):
    """The task moves at fixed (lambda, gamma): t' = 1 (eq. 24-25, theta' = theta_t); iso-C transfer's comparison."""
    p = QuasiStatic(lambda_rate, gamma_rate, 1.0)
    p.name = "quasi-static-transfer"
    return p


def _quasi_static(lambda_rate=1.0, gamma_rate=0.0, t_rate=0.0):
    """Prescribed constant mu' = (lambda_rate, gamma_rate, t_rate) (eq. 16-17); one Krylov solve per RHS."""
    return QuasiStatic(lambda_rate, gamma_rate, t_rate)


PROCESSES = {
    "quasi-static": _quasi_static,
    "iso-classification": iso_classification,
    "iso-classification-fd": IsoClassificationFD,
    "iso-c-plus-r-over-beta": iso_c_plus_r_over_beta,
    "iso-classification-transfer": iso_classification_transfer,
    "quasi-static-transfer": quasi_static_transfer,
}
