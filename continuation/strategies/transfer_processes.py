"""Processes on a task path (paper section 4, appendices E-G): t moves from the source task
(t = 0) to the target (t = 1) with s = t.

| process                     | law                                                         | paper       |
|-----------------------------|-------------------------------------------------------------|-------------|
| iso-classification-transfer | t' = 1, C_lambda lambda' + C_gamma gamma' + C_t = 0, and     | eq. 26, 35, |
|                             | lambda' = k (eq. 38) or the geodesic D' = k R' (eq. 30);    | 30, 38      |
|                             | hold = "kl": C less the soft labels' entropy floor          | Remark 11   |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, final

from continuation.strategies.options import number
from continuation.strategies.processes import FREE, IsoFunctional, _checked, _mu_vector


TRANSFER = ("lambda", "gamma", "t")
CONDITIONS = ("lambda", "geodesic")
HOLDS = ("C", "kl")


@final
@dataclass
class IsoClassificationTransfer(IsoFunctional):
    """Iso-classification while the task moves (t' = 1, s = t), C held: eq. 26, 30, 35, 38.

    C_lambda lambda' + C_gamma gamma' + C_t = c' (eq. 26, 35, with c' = 0 when C is held; the
    task term carries t' = 1, not gamma' as eq. 28 prints it), and

      condition = "lambda":   lambda' = k (appendix G, eq. 38), gamma' from the constraint;
      condition = "geodesic": D' = k R' (section 4.3, eq. 30): the 2 x 2 system
          D_lambda lambda' + D_gamma gamma' = k (F_t - gamma c') / (1 + k lambda) - D_t,
          C_lambda lambda' + C_gamma gamma' = c' - C_t,
        where F_t = R_t + lambda D_t + gamma C_t is what eq. 30 writes dR/dt: the t-derivative of
        R at fixed D and C (from F' = D lambda' + C gamma' + F_t and F = R + lambda D + gamma C,
        R' = -lambda D' - gamma C' + F_t). Integrated, D - k R keeps its start value: the process
        holds it as a second functional (`also_holds`), so a projection moves lambda and gamma
        together (a 2 x 2 Newton or secant on (G, D - k R)).

    hold = "C": G = C, c' = 0 (the paper's condition).
    hold = "kl": G = C - C_floor(t), the classification loss less its theta-independent part,
      the labels' own entropy (`Problem.label_floor`): on the optimal-transport path with the
      soft labels of Remark 11 it is q h(t), q = sum_ij Gamma_ij 1[y_i^s != y_j^t],
      h(t) = -(1-t) log(1-t) - t log t, and G is the mean KL divergence from the soft label to
      the classifier, which any model can hold (C itself cannot fall below q h(t), log 2 q at
      t = 1/2); on the linear-Gaussian tasks it is kappa(t) (docs/transfer.md); on the mixture
      path 0 (hard labels). c' = C_floor'(t). h'(t) = log((1-t)/t) is infinite at t = 0 and 1,
      so the law uses the floor's mean slope over [t - w, t + w] clipped to [0, 1]
      (w = `floor_window`): the central difference inside (exact for the Gaussian kappa, a
      quadratic), the chord over the first and last w at the ends; the projection removes what
      the law leaves, since G itself is always exact.

    All rates are total derivatives along the surface (three Krylov solves per point: theta_lambda,
    theta_gamma, theta_t = A^{-1} b_t). Projections move gamma only (condition "lambda"), or
    lambda and gamma (condition "geodesic").
    """

    condition: str = "lambda"
    k: float = 0.0
    hold: str = "C"
    floor_window: float = 0.05
    tol: float = 1e-12
    measure: str = "batch"
    name: ClassVar[str] = "iso-classification-transfer"
    alpha: ClassVar[float] = 1.0
    clock: ClassVar[str] = "alpha"

    def __post_init__(self):
        _checked("condition", self.condition, CONDITIONS)
        _checked("hold", self.hold, HOLDS)
        number("k", self.k)
        if not (number("floor_window", self.floor_window) > 0 and self.floor_window <= 0.5):
            raise ValueError(f"floor_window must be in (0, 0.5], got {self.floor_window}")
        self._check()

    def _omit_settings(self) -> tuple:
        """hold and floor_window are settings only when the floor is held, so that a path
        written before they existed (the same run) still resumes."""
        return () if self.hold == "kl" else ("hold", "floor_window")

    @property
    def holds(self) -> str:
        return "C" if self.hold == "C" else "C - C_floor(t)"

    @property
    def also_holds(self) -> str | None:
        return f"D - {self.k:g} R" if self.condition == "geodesic" else None

    @property
    def project_along(self) -> tuple:
        return ("gamma",) if self.condition == "lambda" else FREE

    def functional(self, R, D, C):
        return C

    # -- the floor ------------------------------------------------------------------------------
    def floor(self, ctx, t: float | None = None) -> float:
        """C_floor at task time t (default: the point's), on this process's measure."""
        if self.hold == "C":
            return 0.0
        t = float(ctx.mu[2]) if t is None else t
        return float(ctx.system.problem.label_floor(t, self.measure))

    def floor_slope(self, ctx) -> float:
        """c' = C_floor'(t), as the mean slope over [t - w, t + w] clipped to [0, 1]."""
        if self.hold == "C":
            return 0.0
        t = min(max(float(ctx.mu[2]), 0.0), 1.0)
        lo, hi = max(t - self.floor_window, 0.0), min(t + self.floor_window, 1.0)
        return (self.floor(ctx, hi) - self.floor(ctx, lo)) / (hi - lo)

    def _values(self, ctx):
        f = dict(super()._values(ctx))
        f["C"] = f["C"] - self.floor(ctx)
        return f

    # -- the second held functional (geodesic): H = D - k R --------------------------------------
    def also_value(self, ctx) -> float:
        if self.also_holds is None:
            return super().also_value(ctx)
        f = self._values(ctx)
        return f["D"] - self.k * f["R"]

    def also_scale(self, ctx) -> float:
        """|D - D_floor| + |k| R at the point: the size of H's terms, without the decoder's
        theta-independent normaliser D_floor (Problem.distortion_floor; 58.8 nats of the digits'
        D at decoder_std 1, against a data term near 1.4), on which H's relative drift is
        measured (a relative drift against H itself would depend on that constant)."""
        if self.also_holds is None:
            return super().also_scale(ctx)
        f = self._values(ctx)
        return abs(f["D"] - ctx.system.problem.distortion_floor()) + abs(self.k) * abs(f["R"])

    def also_constraint(self, ctx):
        if self.also_holds is None:
            return super().also_constraint(ctx)
        r = ctx.rates(FREE)
        return self.also_value(ctx), {m: r["D"][m] - self.k * r["R"][m] for m in FREE}

    def velocity(self, ctx):
        r = ctx.rates(TRANSFER)
        C, D, R = r["C"], r["D"], r["R"]
        lam, gam = float(ctx.mu[0]), float(ctx.mu[1])
        c_dot = self.floor_slope(ctx)
        if self.condition == "lambda":
            if C["gamma"] == 0.0:
                raise FloatingPointError("iso-classification transfer: C_gamma = 0, the constraint cannot fix gamma'")
            lam_dot = self.k
            gam_dot = (c_dot - C["lambda"] * lam_dot - C["t"]) / C["gamma"]
        else:
            denom = 1.0 + self.k * lam
            if denom == 0.0:
                raise FloatingPointError(f"geodesic transfer: 1 + k lambda = 0 (k = {self.k}, lambda = {lam})")
            f_t = R["t"] + lam * D["t"] + gam * C["t"]
            det = D["lambda"] * C["gamma"] - D["gamma"] * C["lambda"]
            if det == 0.0:
                raise FloatingPointError("geodesic transfer: det Hess F = 0, eq. 30 has no unique solution")
            r1, r2 = self.k * (f_t - gam * c_dot) / denom - D["t"], c_dot - C["t"]
            lam_dot = (r1 * C["gamma"] - D["gamma"] * r2) / det
            gam_dot = (D["lambda"] * r2 - C["lambda"] * r1) / det
        return _mu_vector(ctx, {"lambda": lam_dot, "gamma": gam_dot, "t": 1.0})

