"""Processes: the law that moves mu = (lambda, gamma, t) along the process clock s.

A process gives mu' at a point (`velocity`) and, when it holds a functional G constant, G at the
point (`value`) and G with its total mu-gradient along the surface (`constraint`). What it holds
(`holds`), the relative tolerance to hold it to (`tol`) and the multipliers a projection may move
(`project_along`) are fields of the process; the projection itself is a separate strategy
(continuation/strategies/projections.py).

| process                     | law                                                         | paper       |
|-----------------------------|-------------------------------------------------------------|-------------|
| quasi-static                | mu' prescribed                                              | eq. 16-17   |
| iso-classification          | lambda' = -alpha C_gamma, gamma' = alpha C_lambda (tangents)  | eq. 20, 22  |
| iso-classification-fd       | the same law with C_lambda, C_gamma by finite differences of  | eq. 22, 31  |
|                             | re-equilibrated models (the paper's procedure; the baseline)|             |
| iso-c-plus-r-over-beta      | keep G = C + R/beta: (lambda', gamma') = alpha (-G_gamma, G_lambda) | Remark 8 |

(and on a task path, continuation/strategies/transfer_processes.py: iso-classification-transfer;
the task moved at fixed multipliers, eq. 24-25, is quasi-static with lambda_rate = 0, t_rate = 1).

s is the process clock: mu' = d mu / ds as the law gives it (alpha scales it; with clock =
"lambda", s = lambda - lambda0; on a transfer path s = t).
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import ClassVar, final

import torch

from problems.base import mu_index

from continuation.strategies.options import in_range, non_negative, number, positive
from continuation.surface.context import PointContext
from continuation.strategies.base import Strategy

FREE = ("lambda", "gamma")
CLOCKS = ("alpha", "lambda")
MEASURES = ("batch", "evaluation")


class Process(Strategy):
    """Base: `velocity(ctx)` gives mu' at a point. A process that holds a functional sets `holds`
    (its label) and implements `value(ctx)` and `constraint(ctx)` -> (G, {m: dG/dm})."""

    holds: ClassVar[str | None] = None
    minimising: ClassVar[bool] = True  # follows minima of J (the monitor switches off a saddle: continuation/singular/monitor.py)
    tol: float = 0.0
    arclength: ClassVar[bool] = False  # s is the arclength of the extended tangent (continuation/strategies/arclength.py)
    project_along: ClassVar[tuple] = FREE

    @abstractmethod
    def velocity(self, ctx: PointContext) -> torch.Tensor:
        """mu' at the point (shape (3,), the dtype and device of mu)."""

    def value(self, ctx: PointContext) -> float:
        """The held functional G at the point (no tangents needed)."""
        raise TypeError(f"process {self.name!r} holds no functional")

    def constraint(self, ctx: PointContext):
        """(G, {"lambda": G_lambda, "gamma": G_gamma}): G and its total derivatives along the surface."""
        raise TypeError(f"process {self.name!r} holds no functional")

    # A process may hold a second functional H = H0 beside G (the geodesic transfer holds C and
    # D - k R): `also_holds` is its label, `also_value` / `also_constraint` as for G. A projection
    # then moves both multipliers (a 2 x 2 Newton or secant; continuation/strategies/projections.py).
    also_holds: ClassVar[str | None] = None

    def also_value(self, ctx: PointContext) -> float:
        """The second held functional H at the point."""
        raise TypeError(f"process {self.name!r} holds no second functional")

    def also_constraint(self, ctx: PointContext):
        """(H, {"lambda": H_lambda, "gamma": H_gamma})."""
        raise TypeError(f"process {self.name!r} holds no second functional")

    def also_scale(self, ctx: PointContext) -> float:
        """The scale H's relative drift is measured on, (H - H0) / scale, taken at the start: |H| by
        default; a process whose H carries an arbitrary constant gives the size of its terms."""
        return abs(self.also_value(ctx))

    # its state: the values held, taken at the start (C0 for the path's C_drift whatever is held)
    def init_state(self, start) -> dict:
        ctx = start.ctx
        G0 = None if self.holds is None else self.value(ctx)
        H0 = None if self.also_holds is None else self.also_value(ctx)
        return {"C0": ctx.functionals()["C"], "G0": G0, "H0": H0,
                "H_scale": None if H0 is None else self.also_scale(ctx)}


def _checked(option: str, value, valid: tuple):
    if value not in valid:
        raise ValueError(f"{option} must be one of {valid}, got {value!r}")
    return value


def _alpha(alpha) -> None:
    """alpha scales the clock: 0 writes the same point over and over, NaN fails later on a Cholesky."""
    if number("alpha", alpha) == 0:
        raise ValueError("alpha must be != 0 (it scales mu'; 0 would not move), got 0")


def _iso_law(ctx, g_lambda: float, g_gamma: float, alpha: float, clock: str) -> torch.Tensor:
    """(lambda', gamma') = alpha (-G_gamma, G_lambda); with clock = "lambda" rescaled so that
    lambda' = 1 (s is then lambda - lambda0, whatever the size of the rates; the ratio
    gamma'/lambda' = -G_lambda / G_gamma, which is what holds G, is the same)."""
    lam, gam = -alpha * g_gamma, alpha * g_lambda
    if _checked("clock", clock, CLOCKS) == "lambda":
        if lam == 0.0:
            raise FloatingPointError("clock = 'lambda' needs lambda' != 0, but G_gamma = 0 at this point")
        lam, gam = 1.0, gam / lam  # lambda increases with s, whichever way the law points
    return _mu_vector(ctx, {"lambda": lam, "gamma": gam})


def _mu_vector(ctx, values: dict) -> torch.Tensor:
    v = torch.zeros_like(ctx.mu)
    for name, value in values.items():
        v[mu_index(name)] = value
    return v


@final
@dataclass
class QuasiStatic(Process):
    """Prescribed constant mu' = (lambda_rate, gamma_rate, t_rate) (eq. 16-17); one Krylov solve per RHS."""

    lambda_rate: float = 1.0
    gamma_rate: float = 0.0
    t_rate: float = 0.0
    name: ClassVar[str] = "quasi-static"

    def __post_init__(self):
        rates = [number(f"{n}_rate", getattr(self, f"{n}_rate")) for n in ("lambda", "gamma", "t")]
        if not any(rates):
            raise ValueError("lambda_rate, gamma_rate and t_rate are all 0: the process would not move")

    def velocity(self, ctx):
        return _mu_vector(ctx, {"lambda": self.lambda_rate, "gamma": self.gamma_rate, "t": self.t_rate})


class IsoFunctional(Process):
    """Hold G(R, D, C) constant: (lambda', gamma') = alpha (-G_gamma, G_lambda), which makes
    G' = G_lambda lambda' + G_gamma gamma' = 0 exactly, with G_mu = sum_F dG/dF F_mu the total
    derivatives along the surface (two Krylov solves per point). Concrete processes give G
    (`functional`) and their fields alpha, tol, measure, clock.

    measure "batch": G on the step's batch; "evaluation" (stochastic problems): G on the
    problem's fixed-noise training metrics (`evaluation_metrics`), the same draw at every point.
    """

    alpha: float
    measure: str
    clock: str

    @abstractmethod
    def functional(self, R, D, C):
        """G(R, D, C) on torch scalars."""

    @property
    def project_along(self) -> tuple:
        """The multipliers a projection may move: gamma alone when s is lambda's clock."""
        return ("gamma",) if self.clock == "lambda" else FREE

    def _check(self):
        _checked("clock", self.clock, CLOCKS)
        _checked("measure", self.measure, MEASURES)
        _alpha(self.alpha)
        non_negative("tol", self.tol)

    def value(self, ctx) -> float:
        f = self._values(ctx)
        return float(self.functional(*(torch.tensor(f[n], dtype=torch.float64) for n in "RDC")))

    def _values(self, ctx):
        """R, D, C where G is measured: the step's batch, or one fixed noise draw over the training set."""
        if self.measure == "batch":
            return ctx.functionals()
        ev = ctx.evaluation_metrics()
        if not ev:
            raise ValueError("measure = 'evaluation' needs a problem with evaluation_metrics (a stochastic one)")
        return {n: ev[f"train_{n}"] for n in "RDC"}

    def _gradient(self, ctx, names=FREE):
        f = self._values(ctx)
        args = [torch.tensor(f[n], dtype=torch.float64, requires_grad=True) for n in "RDC"]
        G = self.functional(*args)
        dG = torch.autograd.grad(G, args, allow_unused=True)
        dG = [0.0 if d is None else float(d) for d in dG]
        rates = ctx.rates(names)
        grad_mu = {m: sum(dG[i] * rates[n][m] for i, n in enumerate("RDC")) for m in FREE}
        return float(G.detach()), grad_mu

    def velocity(self, ctx):
        _, g = self._gradient(ctx)
        return _iso_law(ctx, g["lambda"], g["gamma"], self.alpha, self.clock)

    def constraint(self, ctx):
        return self._gradient(ctx)


@final
@dataclass
class IsoClassification(IsoFunctional):
    """Remark 7 / eq. 22 with exact rates: lambda' = -alpha C_gamma, gamma' = alpha C_lambda.

    Holds C; a projection (continuation/strategies/projections.py) restores C = C0 to `tol` (relative).
    measure: "batch" or "evaluation" (C on the fixed-noise training set). clock: "alpha" or
    "lambda" (s = lambda - lambda0; projections then move gamma only). Cost: two Krylov solves
    per law evaluation (theta_lambda, theta_gamma) and one JVP each.
    """

    alpha: float = 1.0
    tol: float = 1e-12
    measure: str = "batch"
    clock: str = "alpha"
    name: ClassVar[str] = "iso-classification"
    holds: ClassVar[str] = "C"

    def __post_init__(self):
        self._check()

    def functional(self, R, D, C):
        return C


@final
@dataclass
class IsoCPlusROverBeta(IsoFunctional):
    """Remark 8: keep C + R / beta constant (the right-hand side of a PAC-Bayes bound)."""

    beta: float = 10.0
    alpha: float = 1.0
    tol: float = 1e-12
    measure: str = "batch"
    clock: str = "alpha"
    name: ClassVar[str] = "iso-c-plus-r-over-beta"

    def __post_init__(self):
        positive("beta", self.beta)
        self._check()

    @property
    def holds(self) -> str:
        return f"C + R/{self.beta:g}"

    def functional(self, R, D, C):
        return C + R / self.beta


@final
@dataclass
class IsoClassificationFD(Process):
    """Iso-classification with C_lambda, C_gamma by finite differences of re-equilibrated models (eq. 31).

    The paper's procedure: C_lambda, C_gamma by central differences of C at models
    re-equilibrated (by the corrector, warm-started) at lambda(1 +- h) and gamma(1 +- h).
    Cost: four corrector runs per evaluation; error O(h^2) plus the corrector's residual.
    """

    alpha: float = 1.0
    h: float = 1e-3  # relative step in lambda and gamma
    tol: float = 1e-12
    clock: str = "alpha"  # or "lambda": mu' scaled so that lambda' = 1
    name: ClassVar[str] = "iso-classification-fd"
    holds: ClassVar[str] = "C"

    def __post_init__(self):
        _checked("clock", self.clock, CLOCKS)
        _alpha(self.alpha)
        # relative step: lambda (1 - h) must stay > 0
        in_range("h", self.h, 0.0, 1.0, closed=False)
        non_negative("tol", self.tol)

    @property
    def project_along(self) -> tuple:
        return ("gamma",) if self.clock == "lambda" else FREE

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
                if not res.converged:
                    raise RuntimeError(f"iso-classification-fd: re-equilibration at {name} {'+-'[sign < 0]} h "
                                       f"did not converge ({res.status}, |grad| {res.grad_norm:.2e})")
                values.append(float(ctx.system.values(res.x, mu)[2]))
            rates[name] = (values[0] - values[1]) / (2 * step)
        return rates

    def value(self, ctx) -> float:
        return ctx.functionals()["C"]

    def velocity(self, ctx):
        r = self.fd_rates(ctx)
        return _iso_law(ctx, r["lambda"], r["gamma"], self.alpha, self.clock)

    def constraint(self, ctx):
        return ctx.functionals()["C"], self.fd_rates(ctx)


# the lower-case names scripts used before the processes were classes
iso_classification = IsoClassification
iso_c_plus_r_over_beta = IsoCPlusROverBeta
