"""The continuation loop body, written once: predict, correct, project, assess, record.

    strategies = Strategies(process, predictor, corrector, control, stop, projection)
    stepper = Stepper(problem, strategies, solver=MINRES(), template=problem.init_params(0))
    x = stepper.system.flatten(theta)              # theta on the surface at mu (e.g. corrector.correct first;
    state, row = stepper.init(x, mu)               # continuation/engine/start.py: fresh, --from, --resume)
    rows = [row]
    while not stepper.done(state):
        state, row = stepper.step(state)           # row is None when the run stopped (state.reason says why)
        if row is not None:
            rows.append(row)

x and mu are flat tensors (mu = problems.make_mu(lambda, gamma, t)); `template` is a parameter
pytree of the problem's shape (its flat view); `solver` the Krylov solver of the tangents.

`State` is the point (theta, mu, s, its cached context, the tangent), the previous point (for a
secant), the proposed next step size, the held values C0 and G0, and why the run ended once it
has. Every strategy is passed in (as diffrax and optax do); nothing here knows a strategy by name.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import torch

from problems.base import MU_NAMES, StochasticProblem

from continuation.surface.context import PointContext
from continuation.strategies.correctors import Corrector
from continuation.errors import ContinuationError, Misconfigured, first_line
from continuation.singular.branch_end import BranchEnd
from continuation.singular.events import EventFinder
from continuation.singular.monitor import Monitor
from continuation.strategies.predictors import Predictor, Previous
from continuation.engine.state import (Accepted, Attempt, Point, State, init_slots, named, relative as _relative,
                                       update_slots)
from continuation.strategies.processes import Process
from continuation.strategies.projections import NoProjection, Projection, ProjectionTask
from continuation.strategies.step_control import StepControl, StepsExhausted, StopRule, Verdict
from continuation.strategies.base import settings_of
from continuation.surface.system import EquilibriumSystem




@dataclass
class Strategies:
    """The roles of a run, each a strategy object (continuation/*.py registries map names to them)."""

    process: Process
    predictor: Predictor
    corrector: Corrector
    control: StepControl
    stop: StopRule
    projection: Projection = field(default_factory=NoProjection)

    def roles(self, monitor=None) -> dict:
        """role -> strategy, one per slot of the run's State (continuation/engine/state.py ROLES)."""
        return {"process": self.process, "predictor": self.predictor, "corrector": self.corrector,
                "projection": self.projection, "control": self.control, "stop": self.stop, "monitor": monitor}

    def settings(self) -> dict:
        roles = {"process": self.process, "predictor": self.predictor, "corrector": self.corrector,
                 "projection": self.projection, "steps": self.control, "stop": self.stop}  # config's sections
        return {section: settings_of(strategy) for section, strategy in roles.items()}


def _angle(a, b) -> float | None:
    """Degrees between two tangents: 2 atan2(|u - v|, |u + v|) of the unit vectors (Kahan), accurate
    to rounding at every angle (acos of the cosine loses half the digits near 0: 1 ulp of the
    cosine moves an angle of 0.01 degree by 3e-11 degree)."""
    if a is None or b is None:
        return None
    na, nb = float(a.norm()), float(b.norm())
    if na == 0 or nb == 0:
        return 0.0
    u, v = a / na, b / nb
    return math.degrees(2.0 * math.atan2(float((u - v).norm()), float((u + v).norm())))


def _factor(mu_old, mu_new) -> float:
    """The largest factor max(new/old, old/new) by which lambda or gamma changed (inf where one left > 0)."""
    out = 1.0
    for i in (0, 1):
        a, b = float(mu_old[i]), float(mu_new[i])
        if not (a > 0 and b > 0):
            return math.inf
        out = max(out, b / a, a / b)
    return out


class Stepper:
    """init / step / done over the equilibrium surface grad_theta J(theta; mu) = 0.

    resample: for stochastic problems, the problem re-draws its batch and noise (problem.resample
    with the point's index) before each step, fixed within the step; the point's context is then
    recomputed on the new draw. Default: the problem's `resample_between_points`. A point's
    tangent is computed on the draw of its own step (a resumed run redraws it: start.resume).
    Statuses: `judged` asks the stop rule (StopRule.judge) for "finished" or "stopped" and why.
    """

    def __init__(self, problem, strategies: Strategies, *, solver, template, hvp_mode: str = "rev-rev",
                 resample: bool | None = None, monitor: Monitor | None = None):
        self.problem, self.s = problem, strategies
        self.monitor = monitor
        self.finder = None if monitor is None else EventFinder(self, monitor)
        self.system = EquilibriumSystem(problem, template, hvp_mode=hvp_mode)
        self.system.preconditioner = getattr(solver, "preconditioner", None)
        if callable(getattr(self.system.preconditioner, "bind", None)):  # one built from the problem's pattern (amg)
            self.system.preconditioner.bind(problem, template)
        if getattr(solver, "direct", False):  # a sparse direct solver (solvers/sparse.py) takes the problem's pattern
            self.system.direct = solver.bind(problem, template)
        self.solver = solver
        self.roles = strategies.roles(monitor)
        # the corrector of the steps, projections and re-equilibrations (the start's is the run's own:
        # a globalisation phase such as trust-newton's L-BFGS is kept for the start, Corrector.for_steps)
        self.step_corrector = strategies.corrector.for_steps()
        stochastic = isinstance(problem, StochasticProblem)
        self.resample = (stochastic and problem.resample_between_points) if resample is None else resample
        if self.resample and not stochastic:
            raise ValueError(f"resample=True needs a stochastic problem; {problem.name!r} draws nothing")

    # -- point quantities ----------------------------------------------------------------------
    def context(self, x, mu) -> PointContext:
        return PointContext(self.system, x, mu, self.solver, self.step_corrector)

    def tangent_at(self, ctx) -> torch.Tensor:
        mu_dot = ctx.velocity(self.s.process)
        return torch.cat([ctx.theta_dot(mu_dot), mu_dot]) if self.s.predictor.uses_theta_tangent else mu_dot.clone()

    def held(self, ctx) -> float | None:
        return None if self.s.process.holds is None else self.s.process.value(ctx)

    def also_held(self, ctx) -> float | None:
        return None if self.s.process.also_holds is None else self.s.process.also_value(ctx)

    @staticmethod
    def drift2(H: float, state) -> float:
        """(H - H0) / H_scale: the second held functional's relative drift (|H0| where no scale is recorded)."""
        scale = state.H_scale if state.H_scale is not None else abs(state.H0)
        return (H - state.H0) / max(scale, 1e-300)

    def point(self, x, mu, s, drift=0.0, reference=None) -> Point:
        """The point at (x, mu), clock s, with its context and tangent (oriented by `reference`,
        the previous point's tangent, where the tangent is defined up to sign)."""
        ctx = self.context(x, mu)
        ctx.reference = reference
        return Point(x, mu, s, ctx, self.tangent_at(ctx), drift)

    def row(self, state: State, point: Point, *, step_size, grad_norm, seconds, rejected, next_step, angle) -> dict:
        """The point's row of the path (continuation/files/schema.py); its work columns are the
        system's ledger, taken (read and reset): everything spent since the last row."""
        f = point.ctx.functionals()
        G = self.held(point.ctx)
        scale = self.system.force_scale(point.x, point.mu)
        head = {"s": point.s, **named(point.mu), "R": f["R"], "D": f["D"], "C": f["C"], "F": point.ctx.objective(),
                "grad_norm": grad_norm, "grad_norm_rel": grad_norm / scale if scale > 0 else math.nan}
        tail = {"seconds": seconds, "step_size": step_size, "next_step": next_step, "rejected": int(rejected),
                "C_drift": _relative(f["C"], state.C0),
                "constraint_drift": math.nan if G is None or state.G0 is None else _relative(G, state.G0),
                "tangent_angle": math.nan if angle is None else angle,
                "krylov_residual": max((r.rel_residual for r in point.ctx.solves), default=math.nan)}
        if self.s.process.also_holds is not None:
            H = self.also_held(point.ctx)
            tail["constraint2_drift"] = math.nan if H is None or state.H0 is None else self.drift2(H, state)
        if getattr(self.s.projection, "reuse_response", False):
            own = state.slots["projection"]
            tail["secant_response"] = math.nan if own is None else own
        tail.update(self.system.validation_metrics(point.x))
        tail.update(point.ctx.evaluation_metrics())
        work = self.system.ledger.take().row(self.s.corrector.counts)  # taken last: all the point's work
        row = {**head, **work, **tail}
        if self.monitor is not None:
            sp, k = point.spectrum, self.monitor.modes
            if k > 0:
                values = [] if sp is None else [float(v) for v in sp.values]
                row["eig"] = tuple(values + [math.nan] * (k - len(values)))
                row["morse_index"] = -1 if sp is None else sp.index(self.monitor.zero_tol)
            row["monitor_hvps"] = 0  # the monitor's work (Ledger.aside): set by init and step
            row["events"] = []
        return row

    # -- monitoring -----------------------------------------------------------------------------
    def monitored(self, point: Point, previous=None) -> Point:
        """The point with its spectrum (the monitor's lowest eigenpairs), warm-started from `previous`."""
        sp = self.monitor.spectrum(self.system, point.x, point.mu, previous)
        return replace(point, spectrum=sp)

    def _switch(self, p: Point, step: int, G0: float | None) -> tuple[Point, dict] | None:
        """From a saddle p, the minimising branch: along the eigenvector of the lowest eigenvalue
        as long as J decreases (doubling steps from 1e-6 |x|), then the run's corrector, then the
        run's projection back onto the held functional G = G0 (the switch changes it at fixed mu).
        None when that does not reach a point of lower index and lower J."""
        v = p.spectrum.vectors[:, 0].to(p.x)
        J = lambda y: float(self.system.objective(y, p.mu))
        J0, a, best = p.ctx.objective(), 1e-6 * max(1.0, float(p.x.norm())), None
        for _ in range(60):
            Ja = J(p.x + a * v)
            if best is not None and Ja >= best[1]:
                break
            if Ja < J0:
                best = (a, Ja)
            a *= 2.0
        if best is None:
            return None
        with self.system.ledger.aside() as spent:  # the switch's cost, reported in its event
            res = self.step_corrector.correct(self.system, p.x + best[0] * v, p.mu)
            if not res.converged:
                return None
            q = self.point(res.x, p.mu, p.s)
            F_switched = q.ctx.objective()
            if not isinstance(self.s.projection, NoProjection) and G0 is not None:
                pr = self.s.projection.project(ProjectionTask(self.system, self.s.process, self.step_corrector,
                                                              self.context, q, q.x, p.mu, res, G0, None))
                q = self.point(pr.x, pr.mu, p.s)
            q = self.monitored(q, p.spectrum)
        zt = self.monitor.zero_tol
        if not (q.spectrum.index(zt) < p.spectrum.index(zt) and F_switched < J0):
            return None
        if G0 is not None:
            q = replace(q, drift=_relative(self.held(q.ctx), G0))
        f = {**q.ctx.functionals(), "F": q.ctx.objective()}
        ev = {"type": "branch_switch", "step": step, "s": p.s, **named(p.mu), **f, "eig": float(p.spectrum.values[0]),
              "mode": 0, "index_before": p.spectrum.index(zt), "index_after": q.spectrum.index(zt), "iterations": res.iters,
              "hvps": spent.hvps, "located": 1, "method": "descent",
              "detail": f"switched to the minimising branch: F {J0:.12g} -> {F_switched:.12g} at the same mu "
                        f"(a step of {best[0]:.3g} along the unstable eigenvector, then the corrector"
                        f"{'' if q.mu is p.mu else ', then the projection'})",
              "x": p.x, "null_vector": v}
        return q, ev

    # -- init / step / done ---------------------------------------------------------------------
    def init(self, x, mu, *, s: float = 0.0, grad_norm: float | None = None,
             seconds: float = 0.0) -> tuple[State, dict]:
        """The first state at (x, mu), which must be on the surface, and its row."""
        current, events = self.point(x, mu, s), []
        if self.monitor is not None:
            self.monitor.check_crossings(list(self.finder.quantities(current.ctx)))
            d = self.system.deflation(x)
            free = x.numel() - (0 if d is None else d.size)
            if self.monitor.modes > free:
                raise Misconfigured(f"monitor modes = {self.monitor.modes} exceeds the {free} parameters off the "
                                        f"gauge orbit at the start; ask for at most {free}")
            with self.system.ledger.aside() as spent:  # the monitor's work is its own (monitor_hvps)
                current, events = self._leave_saddle(self.monitored(current), 0, None, [])
            if current.x is not x:  # switched off a saddle at the start
                x, mu, grad_norm = current.x, current.mu, None
        f = current.ctx.functionals()
        if not all(math.isfinite(v) for v in f.values()):
            raise ContinuationError(f"start point {named(mu)}: R, D, C not finite: {f}")
        state = State(current, None, 0, init_slots(self.roles, current),
                      monitored=current if self.monitor is not None else None)
        if grad_norm is None:
            grad_norm = float(self.system.gradient(x, mu).norm())
        row = self.row(state, current, step_size=0.0, grad_norm=grad_norm, seconds=seconds, rejected=0,
                       next_step=state.ds_next, angle=None)
        if self.monitor is not None:
            row["events"], row["monitor_hvps"] = events, spent.hvps
        return self.judged(state), row

    def resumed(self, x, mu, s, *, previous: Previous | None, step: int, slots: dict, reference=None) -> State:
        """The state of a run at a saved point, with the strategies' slots saved there
        (continuation/engine/state.py); its context and tangent recomputed there, on the draw the
        uninterrupted run had (the caller sets the problem's draw first), the tangent oriented by
        `reference` (the previous point's tangent, saved with its checkpoint) as the run had it."""
        current = self.point(x, mu, s, reference=reference)
        G0 = slots["process"]["G0"]
        if G0 is not None:
            current = replace(current, drift=_relative(self.held(current.ctx), G0))
        if self.monitor is not None:
            current = self.monitored(current)
        state = State(current, previous, step, slots, monitored=current if self.monitor is not None else None)
        return self.judged(state)

    def judged(self, state: State) -> State:
        """The state with the stop rule's verdict at its point: (status, reason), or still running."""
        p = state.current
        end = self.s.stop.judge(state.step, p.s, named(p.mu), p.ctx.functionals(), state.slots["stop"],
                                self.s.control.initial_step, p.mu.dtype)
        return state if end is None else replace(state, status=end[0], reason=end[1])

    def done(self, state: State) -> bool:
        return state.reason is not None

    def step(self, state: State) -> tuple[State, dict | None]:
        """One accepted point (and its row), or the state stopped with the reason (row None)."""
        t0 = time.perf_counter()
        control, current = self.s.control, state.current
        ds = min(state.ds_next, control.largest_step)
        if self.resample:
            self.problem.resample(state.step + 1)
            current = replace(current, ctx=self.context(current.x, current.mu).carry_draw_free(current.ctx))
        rejected = 0
        end = BranchEnd.ahead(self.monitor, state.monitored, state.current, state.slots["monitor"])
        while True:
            ds_try, landing = self.s.stop.landing(current.mu, current.ctx.velocity(self.s.process), ds)
            try:
                attempt = self._attempt(state, current, ds_try, landing)
                verdict = self._assess(current, attempt)
                why = verdict.reason
            except (FloatingPointError, torch.linalg.LinAlgError) as e:
                # a stage or a corrector iterate left the domain where J is defined
                verdict, why = None, first_line(e)
            if verdict is not None and verdict.accepted:
                break
            rescued = None if end is None else end.rescue(
                ds_try, lambda h, predictor: self._attempt(state, current, h, None, predictor))
            if rescued is not None:
                attempt, verdict = rescued
                break
            rejected += 1
            try:
                ds = control.after_rejection(ds)
            except StepsExhausted as e:
                reason = f"{e} at step {state.step + 1} (last rejection: {why}){self._ahead(state)}"
                return replace(state, current=current, reason=reason, status="stopped"), None
        new = Point(attempt.x, attempt.mu, current.s + attempt.ds, attempt.ctx, attempt.tangent, attempt.drift or 0.0)
        if not (attempt.landing is not None and attempt.ds < ds):  # a shortened landing step says nothing of ds
            ds = control.after_acceptance(ds, verdict.easy)
        events, monitored, due = [], state.monitored, self.monitor is not None and self.monitor.due(state.step + 1)
        spent = None
        if due:
            new.ctx.evaluation_metrics()  # the row's, computed (and counted) before the monitor's aside
            with self.system.ledger.aside() as spent:  # the monitor's work is its own (monitor_hvps)
                new, events = self._monitor(state, new)
            monitored = new
        accepted = Accepted(state.step + 1, attempt.ds, ds, new, current, named(new.mu), attempt.response, due,
                            state.monitored, tuple(events))
        nxt = replace(state, current=new, previous=Previous(current.x, current.mu, current.s, new.s),
                      step=state.step + 1, slots=update_slots(self.roles, state.slots, accepted), monitored=monitored)
        row = self.row(nxt, new, step_size=attempt.ds, grad_norm=attempt.grad_norm,
                       seconds=time.perf_counter() - t0, rejected=rejected, next_step=ds,
                       angle=_angle(current.tangent, new.tangent))
        if self.monitor is not None:
            row["events"], row["monitor_hvps"] = events, 0 if spent is None else spent.hvps
        return self.missed(self.judged(nxt), attempt.miss), row

    def _ahead(self, state: State) -> str:
        """For a run that stopped on its step size: what the monitor's last two points say lies
        ahead (issue 27 (d)), or "". Where the lowest non-negative eigenvalue e of A is falling, its
        zero is extrapolated twice: linearly in the clock s, and with e^2 linear in s (a fold:
        e ~ sqrt(s* - s)); both are said in the multiplier that moves, with what to do."""
        p, history = state.monitored, state.slots.get("monitor")
        if self.monitor is None or p is None or p is not state.current or not history or p.spectrum is None:
            return ""
        s_old, old = history[-1]
        i = p.spectrum.index(self.monitor.zero_tol)
        if i >= len(old) or i >= len(p.spectrum.values) or p.s == s_old:
            return ""
        e, e0 = float(p.spectrum.values[i]), float(old[i])
        ds = p.s - s_old
        if not (e > 0 and (e - e0) * ds < 0):
            return ""
        s_lin = p.s - e * ds / (e - e0)
        s_fold = p.s - e * e * ds / (e * e - e0 * e0)
        v = p.ctx.velocity(self.s.process)
        moving = [n for j, n in enumerate(MU_NAMES) if float(v[j]) != 0.0]
        if len(moving) != 1:
            return ""
        name, j = moving[0], MU_NAMES.index(moving[0])
        at = lambda s_star: float(p.mu[j]) + (s_star - p.s) * float(v[j])  # noqa: E731
        arclength = getattr(self.s.process, "arclength", False)
        advice = "" if arclength else ("; pseudo-arclength ([process] name = \"pseudo-arclength\", [predictor] name = "
                                       "\"pseudo-arclength\", [corrector] name = \"bordered-newton\") continues around "
                                       "a fold")
        return (f"; ahead: A's eigenvalue number {i} (0: the lowest) fell from {e0:.3g} to {e:.3g} over the last two "
                f"monitored points and reaches zero at about {name} = {at(s_fold):.10g} if this is a fold (its square "
                f"falling linearly), {at(s_lin):.10g} extrapolated linearly: a fold or a branch end is ahead{advice}")

    def missed(self, state: State, miss: float | None) -> State:
        """The state stopped when its point is farther from the held value than the projection
        accepts (Projection.bound of the process's tol; or the step control's max_miss, where it
        accepts up to that: held steps), say a secant that used up its iterates or a projection
        that did not converge: the point is written (its constraint_drift is the miss) and the
        run ends "stopped" saying so, never "finished" over a point that missed (issue 25)."""
        tol = getattr(self.s.process, "tol", 0.0)
        if miss is None or not self.s.projection.holds_to_tol or not tol > 0:
            return state
        bound = max(self.s.projection.bound(tol, state.G0), getattr(self.s.control, "max_miss", 0.0))
        if miss <= bound:
            return state
        held = getattr(self.s.process, "holds", None) or "the held functional"
        after = f"; the stop rule had also ended it: {state.reason}" if state.reason else ""
        return replace(state, status="stopped",
                       reason=f"step {state.step}: {held} missed its tolerance, {miss:.3g} from its start (relative; "
                              f"the path's constraint_drift) against {bound:.3g} (tol = {tol:g}; the "
                              f"{self.s.projection.name} projection did not restore it; the point is written){after}")

    def _assess(self, current: Point, attempt: Attempt) -> Verdict:
        """The step control's verdict on an attempt from `current` (StepControl.assess)."""
        ok = attempt.result.converged
        return self.s.control.assess(self.s.corrector, attempt.result, attempt.prediction_ok,
                                     None if attempt.drift is None else attempt.drift - current.drift,
                                     _angle(current.tangent, attempt.tangent) if ok else None, miss=attempt.miss,
                                     factor=_factor(current.mu, attempt.mu), ds=attempt.ds)

    def _monitor(self, state: State, new: Point) -> tuple[Point, list]:
        """The new point's spectrum, the events since the last monitored point, and the switch to
        the minimising branch where the new point is a saddle (Monitor.branch)."""
        old = state.monitored
        new = self.monitored(new, old.spectrum if old is not None else None)
        step = state.step + 1
        events = [] if old is None else self.finder.between(old, new, step, state.slots["monitor"])
        if self.monitor.branch == "switch" and getattr(self.s.process, "arclength", False):
            new, events = self._switch_branch(state, new, events, step)
        before = None if old is None or old.spectrum is None else old.spectrum.index(self.monitor.zero_tol)
        return self._leave_saddle(new, step, state.G0, events, before)

    def _switch_branch(self, state: State, new: Point, events: list, step: int) -> tuple[Point, list]:
        """`[monitor] branch = "switch"` on a pseudo-arclength path: at a located simple bifurcation
        between the last two points, the new point is replaced by the start of the branch born there
        (switch_branch: offset 1% of the multiplier, on the side the path travels, the null vector's
        sign as computed where that branch exists), its tangent oriented away from the bifurcation
        point, and a `branch_switch` event is written; where no branch is found an event says so and
        the path goes on. Stateless (a resumed run decides as the uninterrupted one did)."""
        from continuation.singular.branch_switch import switch_branch

        if any(e.get("type") == "branch_switch" for e in events):
            return new, events
        located = [e for e in events if e.get("type") == "bifurcation" and e.get("located") == 1]
        bif = [e for e in located if e.get("multiplicity", 1) == 1 and e.get("null_vector") is not None]
        if not bif:
            if located:  # said: a multiple one is not switched at (its branches form a family, not a pair)
                m = located[0].get("multiplicity", 1)
                ev = self.finder.event("saddle", step, self.finder.of_point(new), eig=math.nan, mode=-1,
                                       index_after=-1, located=0, method="none",
                                       detail=f"branch = 'switch': the bifurcation at {self.s.process.parameter} = "
                                              f"{float(located[0][self.s.process.parameter]):.10g} has multiplicity "
                                              f"{m}; only simple bifurcations are switched at, the path goes on on "
                                              f"its branch")
                return new, events + [ev]
            return new, events
        e = bif[0]
        name = self.s.process.parameter
        i = MU_NAMES.index(name)
        mu_e = torch.tensor([float(e[n]) for n in MU_NAMES], dtype=new.mu.dtype, device=new.mu.device)
        travel = 1 if float(new.mu[i]) >= float(state.current.mu[i]) else -1
        with self.system.ledger.aside() as spent:
            found = switch_branch(self.system, e["x"], mu_e, e["null_vector"], name, offset=0.01,
                                  sides=(travel, -travel), first=True)
            if not found:
                ev = self.finder.event("saddle", step, self.finder.of_point(new), eig=math.nan, mode=-1,
                                       index_after=-1, located=0, method="none",
                                       detail=f"branch = 'switch': no branch found along the null vector at {name} = "
                                              f"{float(mu_e[i]):.10g}; the path goes on on its branch")
                return new, events + [ev]
            x_s, mu_s, side, sign = found[0]
            ref = torch.cat([x_s - e["x"], mu_s - mu_e])
            q = self.monitored(self.point(x_s, mu_s, new.s, reference=ref), new.spectrum)
            q.ctx.own_reference = ref
        f = {**q.ctx.functionals(), "F": q.ctx.objective()}
        zt = self.monitor.zero_tol
        ev = {"type": "branch_switch", "step": step, "s": q.s, **named(q.mu), **f,
              "eig": float(q.spectrum.values[0]) if q.spectrum is not None else math.nan, "mode": int(e["mode"]),
              "index_before": int(new.spectrum.index(zt)) if new.spectrum is not None else -1,
              "index_after": int(q.spectrum.index(zt)) if q.spectrum is not None else -1, "iterations": 1,
              "hvps": spent.hvps, "located": 1, "method": "null-vector",
              "detail": f"switched to the branch born at the bifurcation at {name} = {float(mu_e[i]):.10g}: it "
                        f"starts at {name} = {float(mu_s[i]):.10g} ({'+' if side > 0 else '-'}1% of the multiplier, "
                        f"{'+' if sign > 0 else '-'} the null vector) and is followed away from it",
              "x": e["x"], "null_vector": e["null_vector"]}
        return q, events + [ev]

    def _leave_saddle(self, p: Point, step: int, G0, events: list, before: int | None = None) -> tuple[Point, list]:
        """A minimising process at a point of index > 0 (Monitor.branch "minimising") switches to the
        minimising branch; where it does not, an event says so unless one already did (an event of
        this step, or the same index at the last monitored point): no silent saddles."""
        if p.spectrum is None:  # modes = 0: no eigenvalues, nothing to say
            return p, events
        index = p.spectrum.index(self.monitor.zero_tol)
        if index == 0:
            return p, events
        if not self.finder.newton_ok:
            why = "negative curvature of the step's Hessian (no switch without a Newton corrector: docs/stability.md)"
        elif self.monitor.branch == "minimising" and self.s.process.minimising:
            # repeated until the index is 0: two eigenvalues crossing in one step (a double crossing,
            # or two close ones) leave a saddle of index 2, from which one descent step and the
            # corrector reach a saddle of index 1 (F -0.0127 where the minimum is -0.0253 on the
            # quartic with a = (1, 1, 3, 4)); each switch lowers the index by at least one
            switches = 0
            while index > 0:
                switched = self._switch(p, step, G0)
                if switched is None:
                    break
                p, events, switches = switched[0], events + [switched[1]], switches + 1
                index = p.spectrum.index(self.monitor.zero_tol)
            if index == 0:
                return p, events
            why = ("a saddle of a minimising process: the switch to a lower branch failed" if not switches else
                   f"a saddle of a minimising process: {switches} switch{'es' if switches > 1 else ''} lowered the "
                   f"index to {index}, then the next switch failed")
            if switches:  # said even though a switch event of this step ends at this index
                f = {**p.ctx.functionals(), "F": p.ctx.objective()}
                return p, events + [{"type": "saddle", "step": step, "s": p.s, **named(p.mu), **f,
                                     "eig": float(p.spectrum.values[0]), "mode": 0, "index_after": index,
                                     "located": 0, "method": "none", "detail": f"Morse index {index}: {why}"}]
        else:
            why = "a saddle (branch = 'follow' or a process that follows any branch)"
        if index == before or any(e.get("index_after") == index for e in events):
            return p, events
        f = {**p.ctx.functionals(), "F": p.ctx.objective()}
        return p, events + [{"type": "saddle", "step": step, "s": p.s, **named(p.mu), **f,
                             "eig": float(p.spectrum.values[0]), "mode": 0, "index_after": index,
                             "located": 0, "method": "none", "detail": f"Morse index {index}: {why}"}]

    @staticmethod
    def _own(strategy, role: str, state: State) -> dict:
        """own=<its slot> for a stateful strategy's call (strategies/base.py), nothing for the others."""
        return {"own": state.slots[role]} if strategy.stateful else {}

    def _attempt(self, state: State, current: Point, ds: float, landing, predictor=None) -> Attempt:
        """Predict (landing on a milestone: StopRule.land), correct (Prediction.correct), project
        (the run's projection onto the held values): the candidate point. Raises
        FloatingPointError where the prediction leaves lambda, gamma > 0 or R, D, C, J are not
        finite at the corrected point. Its work is counted where spent (the system's ledger)."""
        s, system = self.s, self.system
        predictor = predictor or s.predictor

        def predict(h):
            return predictor.predict(self.context, current.ctx, h, state.previous, s.process,
                                     **self._own(predictor, "predictor", state))

        pred, ds, landing, mu_new = s.stop.land(predict, current.mu, ds, landing, predict(ds))
        if not (float(mu_new[0]) > 0 and float(mu_new[1]) > 0):
            raise FloatingPointError(f"prediction left the domain lambda, gamma > 0: {named(mu_new)}")
        corr = pred.correct(self.step_corrector, system, mu_new, landing, s.stop, current.mu,
                            self._own(s.corrector, "corrector", state))
        res, mu_new, landing, ds = corr.result, corr.mu, corr.landing, corr.ds or ds
        x_new, grad_norm, ctx_new, response = res.x, res.grad_norm, None, None
        if res.converged:
            p = s.projection.project(ProjectionTask(system, s.process, self.step_corrector, self.context, current, pred.x,
                                                    mu_new, res, state.G0, landing, state.H0, state.H_scale,
                                                    own=state.slots["projection"]))
            x_new, mu_new, ctx_new, grad_norm, response = p.x, p.mu, p.ctx, p.grad_norm, p.response
        ctx_new = ctx_new or self.context(x_new, mu_new)
        if res.converged:
            f = {**ctx_new.functionals(), "J": ctx_new.objective()}
            if not all(math.isfinite(v) for v in f.values()):  # J defined but not finite there: not a point
                raise FloatingPointError(f"R, D, C or J not finite at the corrected point {named(mu_new)}: "
                                         + ", ".join(f"{k} = {v:.6g}" for k, v in f.items()))
        ctx_new.reference = current.tangent  # orients a tangent defined up to sign (pseudo-arclength)
        tangent = self.tangent_at(ctx_new) if res.converged else None
        drift = miss = None
        if res.converged and state.G0 is not None:
            drift = _relative(self.held(ctx_new), state.G0)
            miss = abs(drift)
            if state.H0 is not None and self.s.process.also_holds is not None:
                miss = max(miss, abs(self.drift2(self.also_held(ctx_new), state)))
        return Attempt(pred.solves_ok, res, x_new, mu_new, ctx_new, tangent, drift, miss, ds, grad_norm, landing, response)
