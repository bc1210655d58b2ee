"""Correctors: bring theta back onto grad_theta J(theta; mu) = 0 at a fixed mu.

- `NewtonCorrector`: damped Newton-CG (solvers.NewtonCG). Quadratic convergence; cost per
  iteration one gradient and the CG iterations' HVPs. The default for deterministic problems.
- `AdamCorrector`, `SGDCorrector`: T updates on the paper's equilibration schedule
  eta(k) = eta_max c (k/T)^2 (1 - k/T)^5, c normalising the peak to eta_max (section 5.1),
  by Adam or by SGD with momentum (Remark 4); both run `continuation.surface.equilibrate.optimize`.
  Cost: T + 1 gradients. A fixed budget: iteration counts say nothing about a step's difficulty.
- `LBFGSCorrector`: torch.optim.LBFGS with a strong-Wolfe line search. Cost: about one
  gradient per iteration, no HVPs.

Each returns a `CorrectorResult` with its work: `grads` gradient evaluations (the final |grad|
check included), `hvps` Hessian-vector products; and counts the run, its iterations, gradients,
HVPs and evaluations into the system's ledger (continuation/surface/work.py) as it spends them. Class attributes: `counts` names the path
variable that counts `iters`; `easy_iters` / `max_iters` bound the iterations of an easy /
an accepted step (None: no bound, a fixed budget).
"""

from __future__ import annotations

import time
from abc import abstractmethod
from dataclasses import dataclass, replace
from typing import ClassVar, final

import torch

from problems.base import StochasticProblem
from solvers import NewtonCG, check_finite
from solvers.trust_region import TrustRegionNewton

from continuation.strategies.options import hvp_mode, integer, non_negative, positive
from continuation.surface.equilibrate import optimize
from continuation.surface.work import count, ledger_of
from continuation.strategies.base import Strategy


@dataclass
class CorrectorResult:
    x: torch.Tensor
    converged: bool
    status: str  # "converged", "budget_spent" (a fixed budget without gtol), or why not
    iters: int
    grad_norm: float
    hvps: int = 0
    grads: int = 0
    seconds: float = 0.0
    mu: torch.Tensor | None = None  # where a corrector moved mu too (the arclength condition); None: unchanged


class Corrector(Strategy):
    """x near the surface at mu -> a point with grad_theta J(x; mu) ~ 0."""

    name: ClassVar[str]
    counts: ClassVar[str]  # the path variable that counts `iters`
    easy_iters: ClassVar[int | None]  # at most this many iterations: an easy step (None: no limit)
    max_iters: ClassVar[int | None]  # more than this many: reject the step and shrink (None: no limit)
    solves_arclength: ClassVar[bool] = False  # has correct_arclength(system, x, mu, condition)

    @abstractmethod
    def correct(self, system, x: torch.Tensor, mu: torch.Tensor) -> CorrectorResult:
        """Correct x at mu; never raises on non-convergence (the result says so)."""

    def for_steps(self) -> "Corrector":
        """The corrector a continuation step uses (from a prediction, near the last point), where
        the start's equilibration uses this one: itself, unless a globalisation phase that could
        carry the iterate to another branch is kept for the start (TrustRegionCorrector)."""
        return self

    @staticmethod
    def counted(system, result: CorrectorResult) -> CorrectorResult:
        """`result`, with its run and iterations counted in the system's ledger."""
        ledger = ledger_of(system)
        if ledger is not None:
            ledger.count_corrector(result)
        return result


@final
@dataclass
class NewtonCorrector(Corrector):
    """Damped Newton-CG to ||grad J|| <= gtol: one gradient and the CG HVPs per iteration."""

    gtol: float = 1e-10
    maxiter: int = 20
    hvp_mode: str = "rev-rev"
    name = "newton"
    counts = "newton_iters"
    easy_iters = 3
    max_iters = 10

    def __post_init__(self):
        # gtol <= 0 can never be met: the run would report that the start "did not equilibrate"
        positive("gtol", self.gtol)
        integer("maxiter", self.maxiter, minimum=1)
        hvp_mode(self.hvp_mode)

    def correct(self, system, x, mu):
        res = NewtonCG(gtol=self.gtol, maxiter=self.maxiter, hvp_mode=self.hvp_mode).solve(system.objective, x, mu,
                                                                                         deflation=system.deflation)
        # NewtonCG (solvers/, below the system) tallies its own passes: one gradient per
        # iterate, one HVP per CG matvec, one evaluation per line-search trial and the start's
        count(system, gradients=res.grads, hvps=res.hvps, evaluations=res.fevals)
        return self.counted(system, CorrectorResult(res.x, res.converged, res.status, res.iters, res.grad_norm,
                                                    res.hvps, res.grads, res.seconds))


def paper_schedule(k: int, T: int, eta_max: float) -> float:
    """eta(k) = eta_max c (k/T)^2 (1-k/T)^5 with c = 1 / max_u u^2 (1-u)^5 (peak at u = 2/7)."""
    peak = (2 / 7) ** 2 * (5 / 7) ** 5
    u = k / T
    return eta_max * u * u * (1 - u) ** 5 / peak


@dataclass
class ScheduledCorrector(Corrector):
    """`steps` updates of a torch optimizer on the paper's schedule: update k = 1..T has learning
    rate eta_max c (k/(T+1))^2 (1 - k/(T+1))^5. Cost: steps + 1 gradients, no HVPs.

    gtol: None for a fixed budget (converged, status "budget_spent"); a number: converged iff
    the final ||grad J|| <= gtol. resample_every > 0 (stochastic problems): a new batch and noise
    every that many updates, draw seeds 1_000_003 (s + 1) + k from the step's own seed s, which
    is restored at the end (so a corrector run from one point repeats itself exactly). With one
    fixed draw, hundreds of updates fit that draw: on the digits, C on fresh noise rose from
    0.13 to 1.1 in one step while C on the step's draw fell to 0.035.
    monitor(k, x, mu): at the start (k = 0), every `monitor_every` updates and at the end.
    """

    steps: int = 500
    eta_max: float = 1.5e-3
    gtol: float | None = None
    resample_every: int = 0
    monitor: object = None  # monitor(k, x, mu), e.g. to log F along the equilibration
    monitor_every: int = 0
    easy_iters = None  # a fixed budget: the count never rejects a step nor stops it growing
    max_iters = None

    def __post_init__(self):
        integer("steps", self.steps, minimum=1)
        positive("eta_max", self.eta_max)
        if self.gtol is not None and self.gtol != float("inf"):  # inf: any point is converged (a fixed budget)
            non_negative("gtol", self.gtol)
        integer("resample_every", self.resample_every, minimum=0)
        integer("monitor_every", self.monitor_every, minimum=0)

    @abstractmethod
    def optimizer(self, params: list) -> torch.optim.Optimizer:
        """The torch optimizer over params (its learning rate is set before every update)."""

    def correct(self, system, x, mu):
        if self.monitor is not None and not callable(self.monitor):
            raise ValueError(f"the {self.name} corrector's monitor must be a function (k, x, mu), got {self.monitor!r}")
        problem = system.problem
        own_seed = problem.seed if isinstance(problem, StochasticProblem) else 0
        watch = self.monitor is not None and self.monitor_every > 0
        if watch:
            self.monitor(0, x.detach(), mu)
        T = self.steps
        res = optimize(system, x, mu, steps=T, optimizer=self.optimizer,
                       schedule=lambda k: paper_schedule(k + 1, T + 1, self.eta_max),
                       resample_every=self.resample_every, seed_of_update=lambda k: 1_000_003 * (own_seed + 1) + k + 1,
                       callback=(lambda k, y: self.monitor(k, y, mu)) if watch else None,
                       callback_every=self.monitor_every, desc=f"{self.name} corrector")
        if self.gtol is None:
            ok, status = True, "budget_spent"
        else:
            ok = res.grad_norm <= self.gtol
            status = "converged" if ok else "gradient_above_gtol"
        return self.counted(system, CorrectorResult(res.x, ok, status, T, res.grad_norm, 0, res.grads, res.seconds))


@final
@dataclass
class AdamCorrector(ScheduledCorrector):
    """Adam (torch defaults betas (0.9, 0.999), eps 1e-8) on the paper's schedule, peak
    eta_max = 1.5e-3 (the paper's value, section 5.1)."""

    name = "adam"
    counts = "adam_updates"

    def optimizer(self, params):
        return torch.optim.Adam(params, lr=0.0)


@final
@dataclass
class SGDCorrector(ScheduledCorrector):
    """SGD with heavy-ball momentum (paper Remark 4's updates, eq. 12) on the paper's schedule:
    v <- momentum v + grad J, theta <- theta - eta(k) v.

    eta_max = 1e-2 by default: unlike Adam's step (about eta per coordinate whatever the
    gradient's scale), SGD's step is eta |grad| / (1 - momentum), 10 eta |grad| at momentum 0.9,
    and the heavy ball is stable for eta < 2 (1 + momentum) / L at curvature L; 1e-2 is stable
    up to L = 380, far above the top curvature of the linear-Gaussian competition problem
    (L = 0.99 at (lambda, gamma) = (1, 1), 2.3 at (2, 3), where eta_max = 0.5 converges in 300
    updates: tests/test_optimizers.py), and on networks a peak effective step of 0.1 |grad| is
    the usual SGD scale. Raise it towards 2 (1 + momentum) / L on well-conditioned problems;
    lower it as 1 / L on stiffer ones.
    """

    eta_max: float = 1e-2
    momentum: float = 0.9
    name = "sgd"
    counts = "sgd_updates"

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.momentum < 1:
            raise ValueError(f"sgd corrector: momentum must be in [0, 1), got {self.momentum}")

    def optimizer(self, params):
        return torch.optim.SGD(params, lr=0.0, momentum=self.momentum)


@final
@dataclass
class LBFGSCorrector(Corrector):
    """torch.optim.LBFGS with a strong-Wolfe line search to ||grad J|| <= gtol; no HVPs.

    Cost: the closure's gradient evaluations (about one per iteration) plus the final check.
    gtol default 1e-7: a line search judges steps by J's values, and near a minimum J changes by
    ~|grad|^2 / (2 curvature), below J's float64 rounding once |grad| ~ 1e-8. Measured on the
    competition problem (iso-C, secant predictor, lambda 1 -> 2): with gtol 1e-8 the line searches
    stalled at |grad| 1.0-2.5e-8 in 42 of 110 attempts and the path took 68 points; with 3e-8 or
    1e-7, 7 points and no rejection (and gamma within 2e-9 of the closed form either way)."""

    gtol: float = 1e-7
    maxiter: int = 200
    history: int = 20
    name = "lbfgs"
    counts = "lbfgs_iters"
    easy_iters = 15
    max_iters = 150

    def __post_init__(self):
        positive("gtol", self.gtol)
        integer("maxiter", self.maxiter, minimum=1)
        integer("history", self.history, minimum=1)

    def correct(self, system, x, mu):
        return self.counted(system, self.run(system, x, mu))

    def run(self, system, x, mu) -> CorrectorResult:
        """The L-BFGS run, its gradients counted where spent but not counted as a corrector run (a
        phase of another corrector's: TrustRegionCorrector)."""
        start = time.perf_counter()
        y = x.detach().clone().requires_grad_(True)
        # torch stops on the max-norm of the gradient; gtol/sqrt(N) there bounds the 2-norm by gtol
        opt = torch.optim.LBFGS([y], lr=1.0, max_iter=self.maxiter, history_size=self.history,
                                tolerance_grad=self.gtol / y.numel() ** 0.5, tolerance_change=0.0,
                                line_search_fn="strong_wolfe")
        evals = 0

        def closure():
            nonlocal evals
            evals += 1
            opt.zero_grad()
            J = system.objective(y, mu)
            check_finite(J, "objective during L-BFGS")
            J.backward()
            count(system, gradients=1)
            return J

        opt.step(closure)
        y = y.detach()
        gnorm = float(system.gradient(y, mu).norm())
        iters = opt.state[opt._params[0]].get("n_iter", 0)
        ok = gnorm <= self.gtol
        if ok:
            status = "converged"
        elif iters >= self.maxiter:
            status = "max_iters"
        else:  # torch stopped early: its evaluation budget spent in line searches that found no decrease
            status = f"line_search_stalled (J's changes below its rounding; {evals} evaluations)"
        return CorrectorResult(y, ok, status, iters, gnorm, 0, evals + 1, time.perf_counter() - start)


@final
@dataclass
class TrustRegionCorrector(Corrector):
    """For nonconvex J (networks): up to `lbfgs_iters` L-BFGS iterations (strong Wolfe) to enter
    Newton's basin, stopping once ||grad J|| <= max(gtol, lbfgs_switch) (none when the entry
    point is already there: a predicted point near the last equilibrium goes straight to
    Newton), then trust-region Newton-CG (Steihaug-Toint, solvers.TrustRegionNewton) to
    ||grad J|| <= gtol, which follows negative curvature out of saddles and converges
    quadratically at the end (the damped line-search Newton, `newton`, shifts the Hessian past
    negative curvature instead, and stalls on networks: docs/neural_equilibrium.md).

    cg_maxiter: CG iterations per trust-region model (0: the dimension); subproblem "dense":
    each model solved exactly from the Hessian assembled by N HVPs (small problems, whatever
    their conditioning). The CG is preconditioned by the run's `[krylov] preconditioner` where
    one is set (the system's; its trust region is then in the M-norm).

    In a continuation step (`for_steps`) the L-BFGS phase is left out unless `lbfgs_in_steps`:
    from a predicted point it is the trust region's job to return to the branch the prediction
    left, while L-BFGS, a descent method on J with line searches, can carry the iterate into
    another basin (measured: on a 1,248-parameter model along decreasing lambda it jumped to a
    branch with 0.44 nats less rate, the tangent turning 82 degrees in one step, with no
    eigenvalue near zero; and at the default width it spent 10,000 gradients on a step whose
    trust region alone needs a few hundred HVPs). The start's equilibration and direct calls of
    `correct` use it as configured. Cost: the L-BFGS
    gradients (about one per iteration), then per trust-region iteration one gradient, one
    objective evaluation and the CG HVPs plus one."""

    gtol: float = 1e-10
    maxiter: int = 200
    cg_maxiter: int = 0
    lbfgs_iters: int = 0
    lbfgs_switch: float = 0.0
    lbfgs_in_steps: bool = False
    subproblem: str = "cg"
    hvp_mode: str = "rev-rev"
    name = "trust-newton"
    counts = "newton_iters"
    easy_iters = 5
    max_iters = 40

    def __post_init__(self):
        positive("gtol", self.gtol)
        integer("maxiter", self.maxiter, minimum=1)
        integer("cg_maxiter", self.cg_maxiter, minimum=0)
        integer("lbfgs_iters", self.lbfgs_iters, minimum=0)
        non_negative("lbfgs_switch", self.lbfgs_switch)
        if self.subproblem not in ("cg", "dense"):
            raise ValueError(f"subproblem must be 'cg' (Steihaug-Toint) or 'dense' (exact, small problems), got "
                             f"{self.subproblem!r}")
        hvp_mode(self.hvp_mode)
        if not isinstance(self.lbfgs_in_steps, bool):
            raise ValueError(f"lbfgs_in_steps must be true or false, got {self.lbfgs_in_steps!r}")

    def for_steps(self):
        return self if self.lbfgs_in_steps or self.lbfgs_iters == 0 else replace(self, lbfgs_iters=0)

    def correct(self, system, x, mu):
        start = time.perf_counter()
        lbfgs_grads = 0
        if self.lbfgs_iters > 0:
            pre = LBFGSCorrector(gtol=max(self.gtol, self.lbfgs_switch), maxiter=self.lbfgs_iters,
                                 history=30).run(system, x, mu)
            x, lbfgs_grads = pre.x, pre.grads
        res = TrustRegionNewton(gtol=self.gtol, maxiter=self.maxiter, cg_maxiter=self.cg_maxiter or None,
                                hvp_mode=self.hvp_mode, subproblem=self.subproblem,
                                preconditioner=getattr(system, "preconditioner", None)).solve(
            system.objective, x, mu, deflation=system.deflation)
        count(system, gradients=res.grads, hvps=res.hvps, evaluations=res.fevals)
        return self.counted(system, CorrectorResult(res.x, res.converged, res.status, res.iters, res.grad_norm,
                                                    res.hvps, res.grads + lbfgs_grads, time.perf_counter() - start))


CORRECTORS = {"newton": NewtonCorrector, "adam": AdamCorrector, "sgd": SGDCorrector, "lbfgs": LBFGSCorrector}
