"""Processes on a task path (paper section 4, appendices E-G): t moves from the source task
(t = 0) to the target (t = 1) with s = t.

| process                     | law                                                         | paper       |
|-----------------------------|-------------------------------------------------------------|-------------|
| iso-classification-transfer | t' = 1, C_lambda lambda' + C_gamma gamma' + C_t = 0, and     | eq. 26, 35, |
|                             | lambda' = k (eq. 38) or the geodesic D' = k R' (eq. 30)     | 30, 38      |
| quasi-static-transfer       | t' = 1 at fixed (lambda, gamma)                             | eq. 24-25   |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, final

from .checks import number
from .processes import IsoFunctional, Process, _checked, _mu_vector


@final
@dataclass
class QuasiStaticTransfer(Process):
    """The task moves at fixed (lambda, gamma): t' = 1 (eq. 24-25, theta' = theta_t); iso-C transfer's comparison."""

    lambda_rate: float = 0.0
    gamma_rate: float = 0.0
    name: ClassVar[str] = "quasi-static-transfer"

    def __post_init__(self):
        number("lambda_rate", self.lambda_rate)
        number("gamma_rate", self.gamma_rate)

    def velocity(self, ctx):
        return _mu_vector(ctx, {"lambda": self.lambda_rate, "gamma": self.gamma_rate, "t": 1.0})


TRANSFER = ("lambda", "gamma", "t")
CONDITIONS = ("lambda", "geodesic")


@final
@dataclass
class IsoClassificationTransfer(IsoFunctional):
    """Iso-classification while the task moves (t' = 1, s = t), C held: eq. 26, 30, 35, 38.

    C_lambda lambda' + C_gamma gamma' + C_t = 0 (eq. 26, 35; the task term carries t' = 1, not
    gamma' as eq. 28 prints it), and

      condition = "lambda":   lambda' = k (appendix G, eq. 38), gamma' from the constraint;
      condition = "geodesic": D' = k R' (section 4.3, eq. 30): the 2 x 2 system
          D_lambda lambda' + D_gamma gamma' = k F_t / (1 + k lambda) - D_t,
          C_lambda lambda' + C_gamma gamma' = -C_t,
        where F_t = R_t + lambda D_t + gamma C_t is what eq. 30 writes dR/dt: the t-derivative of
        R at fixed D and C (with C' = 0, R' = -lambda D' + F_t).

    All rates are total derivatives along the surface (three Krylov solves per point: theta_lambda,
    theta_gamma, theta_t = A^{-1} b_t). Projections move gamma only.
    """

    condition: str = "lambda"
    k: float = 0.0
    tol: float = 1e-12
    measure: str = "batch"
    name: ClassVar[str] = "iso-classification-transfer"
    holds: ClassVar[str] = "C"
    alpha: ClassVar[float] = 1.0
    clock: ClassVar[str] = "alpha"

    def __post_init__(self):
        _checked("condition", self.condition, CONDITIONS)
        number("k", self.k)
        self._check()

    @property
    def project_along(self) -> tuple:
        return ("gamma",)

    def functional(self, R, D, C):
        return C

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


# the lower-case names scripts used before the processes were classes
iso_classification_transfer = IsoClassificationTransfer
quasi_static_transfer = QuasiStaticTransfer
