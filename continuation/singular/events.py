"""Events between two monitored points of a path: detection, location, branch switching.

An event is a dict (one entry of the path's `event` dimension, continuation/files/path.py):
type ("bifurcation", "fold", "jump", "branch_switch", "crossing", "saddle"; a bifurcation found on the
branch the path left or joined says "branch exchange" in its detail), step (the first accepted
point after it), s, lambda, gamma, t, R, D, C, F, eig (the crossing eigenvalue there, ~0),
index_before / index_after (Morse index on either side), mode (which of the sorted eigenvalues),
iterations and hvps (the location's cost), method ("illinois", "interpolate", "bisection" for a branch that ended at a fold, "descent" for a switch, "none"), detail (one line),
and the tensors x and null_vector (the event's point and the eigenvector; the writer saves them
as a checkpoint, `event_checkpoint`).

Location: the Illinois variant of regula falsi (Dowell & Jarratt 1971; superlinear, order
~1.44, bracketed) on a scalar test function g(s) along the branch: the j-th lowest eigenvalue
for a bifurcation, G(s) - value for a crossing of a functional. A trial point at s is the run's
predictor from the bracket's base point, then Newton on grad J = 0 with the gauge deflated and
no descent requirement (the bordered-newton corrector's fixed-mu Newton, continuation/strategies/arclength.py:
it converges to saddles, which is what following a branch through a bifurcation needs), then the
eigenvalues (warm-started). A branch that ends at a fold while the path follows minima (a monitored
eigenvalue's extrapolation through the last two points falls below zero by the new point, no
branch visited has a sign change, and the old branch does not reach the new point: a
saddle-node, after which the corrector found another minimum) is a "fold" event located by
bisection on the old branch's existence, its detail saying the path jumped (a first-order
transition); where the old branch does reach the new clock but the path is elsewhere, a "jump".
A fold crossed in one step from where no eigenvalue's extrapolation reaches zero is not seen. Cost per trial: the predictor's solves, the Newton iterations' HVPs, and the monitor's
eigenvalue HVPs; reported per event.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from problems.base import MU_NAMES, StochasticProblem

from continuation.strategies.arclength import BorderedNewtonCorrector
from continuation.surface.work import count
from solvers.bordered import BorderedNewton
from continuation.singular.fold import detect_folds, locate_fold
from continuation.singular.stability import Spectrum


@dataclass
class _Base:
    """A trial point as a base for the next trial (what `trial` reads of a stepper Point)."""

    ctx: object
    s: float
    spectrum: object


@dataclass
class Trial:
    """A point on a branch: x, mu at the process clock s, its spectrum and functionals."""

    x: torch.Tensor
    mu: torch.Tensor
    s: float
    spectrum: Spectrum | None
    f: dict  # R, D, C, F
    converged: bool = True


class EventFinder:
    """Detects and locates events between two accepted points of a Stepper's path."""

    def __init__(self, stepper, monitor):
        self.stepper, self.monitor = stepper, monitor
        # Newton on grad J = 0 needs a deterministic J (a stochastic problem's changes with its draw)
        self.newton_ok = not isinstance(stepper.problem, StochasticProblem)
        gtol = getattr(stepper.s.corrector, "gtol", None)
        self.gtol = gtol if isinstance(gtol, float) and 0 < gtol < 1e-6 else 1e-10
        mode = monitor.locate
        self.interpolate = mode == "interpolate" or (mode == "auto" and not self.newton_ok)
        if mode == "newton" and not self.newton_ok:
            raise ValueError(f"monitor locate = 'newton' needs a deterministic problem; {stepper.problem.name!r} "
                             f"draws a new J with each batch (use 'interpolate' or 'auto')")
        self.saddle_newton = BorderedNewtonCorrector(gtol=self.gtol, maxiter=30)

    # -- points ---------------------------------------------------------------------------------
    def newton(self, x, mu, stall: bool = False):
        """Newton on grad J = 0 at fixed mu without a descent requirement (converges to saddles):
        the bordered-newton corrector's fixed-mu solve (continuation/strategies/arclength.py).
        stall: give up once ||grad J|| has not halved in 3 iterations (a fold's bisection, whose
        trials past the fold have no root to find)."""
        if not stall:
            r = self.saddle_newton.correct(self.stepper.system, x, mu)
            return r.x, r.converged
        system = self.stepper.system
        r = BorderedNewton(gtol=self.gtol, maxiter=self.saddle_newton.maxiter, stall_iters=3,
                           linear=system.direct, preconditioner=system.preconditioner).solve(
            system.objective, x, mu, None, system.deflation)
        count(system, gradients=r.grads, hvps=r.hvps)
        return r.x, r.converged

    def spectrum(self, x, mu, previous):
        return self.monitor.spectrum(self.stepper.system, x, mu, previous)

    def of_point(self, p) -> Trial:
        return Trial(p.x, p.mu, p.s, p.spectrum, self.quantities(p.ctx))

    def quantities(self, ctx) -> dict:
        """R, D, C, F and the problem's evaluation metrics (train_C, kl_z0, ...) at a point."""
        return {**ctx.functionals(), "F": ctx.objective(), **ctx.evaluation_metrics()}

    def trial(self, base, s: float, stall: bool = False) -> Trial:
        """The branch through `base` (a Point) at clock s: predict, Newton, eigenvalues."""
        st = self.stepper
        pred = st.s.predictor.predict(st.context, base.ctx, s - base.s, None, st.s.process)
        x, ok = self.newton(pred.x, pred.mu, stall)
        return Trial(x, pred.mu, s, self.spectrum(x, pred.mu, base.spectrum), self.quantities(st.context(x, pred.mu)),
                     ok)

    def probe(self, base, s: float, *, max_halvings: int = 6) -> Trial:
        """The branch through `base` at clock s, for the branch-exchange check, followed with step
        control: natural continuation from base in pieces, each a trial (the run's predictor, then
        Newton that stays on saddles) accepted only where Newton's correction is at most half the
        prediction's move (a predictor-corrector contraction test: a Newton that lands on another
        branch moves by the distance between branches, not by the predictor's error). A rejected
        piece is halved, down to 2^-max_halvings of the interval; then the trial is returned as not
        converged (the branch was not followed: nothing may be concluded from it). In one step a
        large stride across a sharp turn (the imperfect pitchfork's smooth branch) had landed on a
        separate branch, whose fold was then reported as a "branch exchange" the path never made.
        Cost: a trial per piece (usually one or two)."""
        cur, h = base, s - base.s
        floor = abs(h) / 2 ** max_halvings
        while True:
            h = s - cur.s if abs(s - cur.s) <= abs(h) else h
            t, ok = self._checked_trial(cur, cur.s + h)
            if ok:
                if t.s == s:
                    return t
                cur = _Base(self.stepper.context(t.x, t.mu), t.s, t.spectrum)
                continue
            h /= 2
            if abs(h) < floor:
                return replace(t, converged=False)

    def _checked_trial(self, base, s: float) -> tuple[Trial, bool]:
        st = self.stepper
        pred = st.s.predictor.predict(st.context, base.ctx, s - base.s, None, st.s.process)
        x, ok = self.newton(pred.x, pred.mu)
        move = float((pred.x - base.ctx.x).norm())
        correction = float((x - pred.x).norm())
        ok = ok and correction <= 0.5 * move + 1e-12 * (1.0 + float(x.norm()))
        t = Trial(x, pred.mu, s, self.spectrum(x, pred.mu, base.spectrum) if ok else None,
                  self.quantities(st.context(x, pred.mu)) if ok else {}, ok)
        return t, ok

    # -- location -------------------------------------------------------------------------------
    def _close(self, a: Trial, b: Trial) -> bool:
        tol = self.monitor.locate_tol
        for i, name in enumerate(MU_NAMES):
            da = abs(float(a.mu[i]) - float(b.mu[i]))
            scale = 1.0 if name == "t" else max(abs(float(a.mu[i])), 1e-300)
            if da > tol * scale:
                return False
        return True

    def locate(self, base, a: Trial, b: Trial, g) -> tuple[Trial, int, bool]:
        """The root of g between a and b (g(a) g(b) < 0), trial points from `base`."""
        fa, fb = g(a), g(b)
        if self.interpolate:
            w = fa / (fa - fb)
            mu = a.mu.double() + w * (b.mu.double() - a.mu.double())  # float64 even for a float32 model
            f = {k: a.f[k] + w * (b.f[k] - a.f[k]) for k in a.f}
            return Trial(a.x + w * (b.x - a.x), mu, a.s + w * (b.s - a.s), None, f), 0, True
        c, iters = (a if abs(fa) < abs(fb) else b), 0
        zero = 16 * torch.finfo(torch.float64).eps * max(abs(fa), abs(fb))  # g is zero to rounding there
        while iters < self.monitor.max_locate and not self._close(a, b) and fa != 0 and fb != 0:
            s = (a.s * fb - b.s * fa) / (fb - fa)
            c = self.trial(base, s)
            iters += 1
            if not c.converged:
                return c, iters, False
            fc = g(c)
            if abs(fc) <= zero:  # the root to rounding: a linear g (a trivial branch's eigenvalue) is solved
                return c, iters, True  # exactly by the first secant, whose repeats then stalled 60 trials
            if fc * fb < 0:
                a, fa = b, fb
            else:
                fa = fa / 2  # Illinois: halve the retained end's value
            b, fb = c, fc
        return c, iters, self._close(a, b) or fa == 0 or fb == 0

    # -- detection ------------------------------------------------------------------------------
    def event(self, kind: str, step: int, t: Trial, **extra) -> dict:
        row = {"type": kind, "step": step, "s": t.s, **{n: float(t.mu[i]) for i, n in enumerate(MU_NAMES)},
               **t.f}
        row.update(extra)
        return row

    def between(self, old, new, step: int, history) -> list[dict]:
        """Events between accepted points old and new (Points with spectra); `history`: the
        monitored (s, lowest values) before old, for the branch-exchange check."""
        zt, out = self.monitor.zero_tol, []
        a, b = self.of_point(old), self.of_point(new)
        spectra = old.spectrum is not None and new.spectrum is not None  # modes = 0: none
        i0, i1 = (old.spectrum.index(zt), new.spectrum.index(zt)) if spectra else (-1, -1)
        if getattr(self.stepper.s.process, "arclength", False) and detect_folds([old, new], self.stepper.s.process):
            fold = locate_fold(self.stepper, old, new, rtol=self.monitor.locate_tol)
            p = self.stepper.s.process.parameter
            out.append(dict(fold, step=step, mode=0, multiplicity=1, index_before=i0, index_after=i1,
                            iterations=fold["evaluations"], located=1, method="illinois",
                            detail=f"fold in {p}: the tangent's {p}-component changed sign (Morse index {i0} -> "
                                   f"{i1}; estimated error in {p} {fold['lambda_error']:.1e})"))
            i1 = i0  # the fold is the crossing eigenvalue: not a bifurcation besides
        if not spectra:
            return out + self._crossings(old, a, b, step, i0, i1)
        j = min(i0, i1)
        while j < min(max(i0, i1), len(old.spectrum.values), len(new.spectrum.values)):
            ev = self._bifurcation(old, a, b, j, i0, i1, step, "bifurcation")
            out.append(ev)
            j += ev["multiplicity"]
        if i0 == i1:
            out += self._exchange(old, new, a, b, i0, step, history)
        return out + self._crossings(old, a, b, step, i0, i1)

    def _crossings(self, old, a, b, step, i0, i1) -> list[dict]:
        out = []
        for name, values in self.monitor.crossings.items():
            for v in values:
                if (a.f[name] - v) * (b.f[name] - v) < 0:
                    with self.stepper.system.ledger.aside() as spent:
                        c, iters, ok = self.locate(old, a, b, lambda p, n=name, v=v: p.f[n] - v)
                    out.append(self.event("crossing", step, c, eig=math.nan, mode=-1, index_before=i0,
                                          index_after=i1, iterations=iters, hvps=spent.hvps, located=int(ok),
                                          method=self._method(), detail=f"{name} crossed {v:g}"))
        return out

    def _method(self) -> str:
        return "interpolate" if self.interpolate else "illinois"

    def _bifurcation(self, base, a, b, j, i0, i1, step, kind, detail=None) -> dict:
        with self.stepper.system.ledger.aside() as spent:
            c, iters, ok = self.locate(base, a, b, lambda p: float(p.spectrum.values[j]) if p.spectrum is not None
                                       else math.nan)
        if c.spectrum is None:  # interpolated: the eigenvalue is zero there by construction
            eig, null, mult = 0.0, None, 1
        else:
            eig, null = float(c.spectrum.values[j]), c.spectrum.vectors[:, j]
            # eigenvalues that cross together (a symmetry: equivalent latent units) are one event
            vals = c.spectrum.values
            scale = max(1e-12, float(vals.abs().max()) * 1e-6)
            mult = 1 + sum(1 for v in vals[j + 1:max(i0, i1)] if abs(float(v) - eig) <= scale)
        if detail is None and i0 != i1:  # this crossing's own indices (two crossings in one step: 0 -> 1, 1 -> 2)
            i0, i1 = (j, j + mult) if i1 > i0 else (j + mult, j)
        what = ("a direction of negative curvature appeared: the branch became a saddle (a latent direction switching "
                "on, a collapse, another bifurcation)" if i1 > i0 else "an unstable direction stabilised")
        many = f"eigenvalues {j}-{j + mult - 1} of A (multiplicity {mult})" if mult > 1 else f"eigenvalue {j} of A"
        return self.event(kind, step, c, eig=eig, mode=j, multiplicity=mult, index_before=i0, index_after=i1,
                          iterations=iters, hvps=spent.hvps, located=int(ok), method=self._method(),
                          detail=detail or f"Morse index {i0} -> {i1}: {many} crossed zero ({what})",
                          x=c.x, null_vector=null)

    def _exchange(self, old, new, a, b, i0, step, history) -> list[dict]:
        """An eigenvalue j >= i0 (the lowest non-negative first) was heading for zero before `new`
        (falling, its linear extrapolation below zero at new) but is positive there: the path may
        have changed branches. For j = i0, probe the old branch at new's clock, then the new
        branch at old's clock, for the sign change, and locate it on that branch. Without one,
        and the old branch found at new's clock elsewhere than new's point, the old branch ended
        at a fold or goes on beside the path (`_fold_jump`); where Newton does not find the old
        branch at new's clock nothing is concluded and nothing written."""
        if not history or self.interpolate or i0 >= len(old.spectrum.values):
            return []
        s_prev, prev = history[-1]
        if old.s == s_prev:
            return []
        ds = new.s - old.s

        def heading(j: int) -> bool:
            if j >= len(prev) or j >= len(new.spectrum.values):
                return False
            e_prev, e_old, e_new = prev[j], float(old.spectrum.values[j]), float(new.spectrum.values[j])
            slope = (e_old - e_prev) / (old.s - s_prev)
            return e_old > 0 and e_new > 0 and slope * ds < 0 and e_old + slope * ds < 0

        modes = [j for j in range(i0, len(old.spectrum.values)) if heading(j)]
        if not modes:
            return []
        j, zt, ev = modes[0], self.monitor.zero_tol, None
        with self.stepper.system.ledger.aside() as spent:  # the probes' and the location's cost
            first = self.probe(old, new.s)
            if j == i0:
                for base, here in ((old, a), (new, b)):
                    probe = first if base is old else self.probe(new, old.s)
                    if probe.converged and float(probe.spectrum.values[i0]) < -zt:
                        lo, hi = (here, probe) if here.s < probe.s else (probe, here)
                        ev = self._bifurcation(base, lo, hi, i0, i0, i0, step, "bifurcation",
                                               detail=f"eigenvalue {i0} of A crossed zero on the branch the path "
                                                      f"{'left' if base is old else 'joined'} (branch exchange)")
                        ev["index_before"], ev["index_after"] = (i0, i0 + 1) if base is old else (i0 + 1, i0)
                        if not ev["located"]:  # the sign change was not located on that branch: an exchange
                            ev = None          # is not established (nothing is written about a branch the
                            # path did not follow on evidence that does not hold together)
                        break
                    if base is old and probe.converged and self._same_point(probe.x, new.x):
                        return []  # one smooth branch through both points
            if ev is None:
                if first.converged and self._same_point(first.x, new.x):
                    return []
                ev = self._fold_jump(old, a, new, j, step, first)
                if ev is None:
                    return []
        ev["hvps"] = spent.hvps
        return [ev]

    @staticmethod
    def _same_point(x, y) -> bool:
        """Two equilibria at the same multipliers are one (Newton's answers to 1e-6 of their size)."""
        return float((x - y).norm()) <= 1e-6 * (1.0 + float(y.norm()))

    def _fold_jump(self, old, a: Trial, new, j: int, step: int, there: Trial) -> dict | None:
        """The eigenvalue j was heading for zero, neither branch has a sign change between `old` and
        `new`: the branch through `old` ended at a fold (a saddle-node: the minimum meets a saddle
        and both vanish) and the corrector found another minimum, a first-order jump. Bisection
        on the old branch's existence between old.s and new.s: a trial from `old` is on the branch
        if its Newton converged with eigenvalue j in [-zero_tol, that at old] (past the fold Newton
        fails, or lands on the saddle (negative) or on another minimum (not the falling mode)).
        The event is the last point found on the branch; `located` when the bracket is within
        locate_tol (relative, in the clock). Its trials give up when Newton stalls (||grad J|| not
        halved in 3 iterations: past the fold there is no root). None (no event: nothing established) where Newton
        finds no point of the branch within 1/32 of the step from old, or the last point found
        still has eigenvalue j above a tenth of its value at old (a fold's eigenvalue goes to
        zero there). Cost: one Newton solve and spectrum per halving."""
        zt, e_old = self.monitor.zero_tol, float(old.spectrum.values[j])
        on_branch = lambda c: (c.converged and c.spectrum is not None  # noqa: E731
                               and -zt <= float(c.spectrum.values[j]) <= e_old)
        if on_branch(there):  # `there` (the old branch at new's clock) exists: the path left a branch that goes on
            return self.event("jump", step, there, eig=float(there.spectrum.values[j]), mode=j, multiplicity=1,
                              index_before=int(old.spectrum.index(zt)), index_after=int(new.spectrum.index(zt)),
                              iterations=1, hvps=0, located=0, method="none",
                              detail=f"the path left a branch that goes on past s = {float(new.s):.10g} (its point "
                                     f"there has F = {there.f['F']:.10g}, the path's new point F = "
                                     f"{float(new.ctx.objective()):.10g}): the corrector jumped to another minimum")
        lo, hi_s, iters = a, float(new.s), 1
        scale = max(abs(float(old.s)), abs(hi_s), 1e-300)
        found = [(float(old.s), e_old)]  # points on the branch: (s, eigenvalue j)
        while iters < self.monitor.max_locate and abs(hi_s - lo.s) > self.monitor.locate_tol * scale:
            c = self.trial(old, 0.5 * (lo.s + hi_s), stall=True)
            iters += 1
            if on_branch(c):
                lo = c
                found.append((float(c.s), float(c.spectrum.values[j])))
            else:
                hi_s = c.s
                if lo is a and iters > 5:
                    return None  # Newton finds no branch even 1/32 of the step from old: nothing established
        eig = float(lo.spectrum.values[j])
        if not eig <= 0.1 * e_old:
            return None  # the branch's last point found is no nearer a zero eigenvalue: not a fold established
        width = abs(hi_s - lo.s)
        # at a fold the eigenvalue goes as sqrt(s* - s): its square, extrapolated linearly through the
        # last two points found, reaches zero inside the unresolved bracket. A branch that turns sharply
        # without ending (an imperfect pitchfork's smooth branch, its eigenvalue dipping to a positive
        # minimum) stops the one-step trials too, but its squared eigenvalue flattens out: no fold
        (s1, e1), (s2, e2) = found[-2], found[-1]
        slope = (e2 * e2 - e1 * e1) / (s2 - s1) if s2 != s1 else 0.0
        reach = -e2 * e2 / slope if slope * (hi_s - s2) < 0 else math.inf  # s* - s2 along the bracket
        if not abs(reach) <= 4 * width + self.monitor.locate_tol * scale:
            return None
        clock = getattr(self.stepper.s.process, "clock", "s")
        return self.event("fold", step, lo, eig=eig, mode=j, multiplicity=1, index_before=int(old.spectrum.index(zt)),
                          index_after=int(new.spectrum.index(zt)), iterations=iters, hvps=0,
                          located=int(width <= self.monitor.locate_tol * scale), method="bisection",
                          detail=f"the branch ended at a fold: A's eigenvalue number {j} (0: the lowest) fell to "
                                 f"{eig:.3g} (from {e_old:.3g}) without a sign change and the branch has no point past "
                                 f"s = {lo.s:.10g} (bracket {width:.1e} in {clock}); the path jumped to another minimum, "
                                 f"where eigenvalue number {j} is {float(new.spectrum.values[j]):.3g} (a first-order "
                                 f"transition)",
                          x=lo.x, null_vector=lo.spectrum.vectors[:, j])
