"""The continuation loop, written once: predict, correct, project, assess, record.

    continue_path(problem, process, predictor, corrector, control, stop, start=..., out=...)

moves (theta, mu) along the equilibrium surface grad_theta J(theta; mu) = 0 by the law of
`process`, one accepted point at a time, and returns the path dataset (continuation/path.py).
With `out`, every accepted point is written as it is accepted, and a run whose file exists is
resumed from its last point (`resume=True`), with the same result as an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from problems.base import MU_NAMES, mu_index
from solvers import MINRES

from .context import PointContext
from .path import PathWriter, checkpoint_file, load_path, load_point, rows_to_dataset
from .processes import FREE
from .system import EquilibriumSystem


class ContinuationError(RuntimeError):
    """A run that cannot go on; the message is one line naming the step and the cause."""


@dataclass
class _Point:
    x: torch.Tensor
    mu: torch.Tensor
    s: float
    ctx: PointContext
    tangent: torch.Tensor | None = None
    drift: float = 0.0  # relative drift of the held functional (0 where none is held)


def _named(mu) -> dict:
    return {n: float(mu[i]) for i, n in enumerate(MU_NAMES)}


def _angle(a, b) -> float | None:
    if a is None or b is None:
        return None
    na, nb = float(a.norm()), float(b.norm())
    if na == 0 or nb == 0:
        return 0.0
    c = max(-1.0, min(1.0, float(a @ b) / (na * nb)))
    return math.degrees(math.acos(c))


def continue_path(problem, process, predictor, corrector, control, stop, *, start=None, theta0=None,
                  equilibrate=True, out=None, resume=False, config=None, solver=None, progress=True,
                  checkpoint_every: int = 1, start_from=None, hvp_mode: str = "rev-rev", resample: bool = False,
                  settle: int = 1):
    """Run one continuation path; returns the path dataset.

    start: (lambda, gamma) or (lambda, gamma, t); theta0: a parameter pytree (default: the
    problem's `init_params(0)`), equilibrated at `start` by the corrector unless
    equilibrate=False. start_from: (path, step) of an earlier run to start from instead.
    hvp_mode: "fwd-rev" or "rev-rev" for the tangent solves (solvers/derivatives.py).
    resample: for stochastic problems, call problem.resample(step) before each step (new batch
    and noise, fixed within the step); the point's context is then recomputed on the new draw.
    settle: corrector runs at the start point (equilibrate=True). A stochastic corrector from a
    model trained with another schedule moves C for a few runs before it settles: on
    Fashion-MNIST the first run after 15k Adam steps moved train C by 3.7%, the next two by
    0.7% and 0.2%; C0 is taken after the last.
    """
    if settle < 1:
        raise ValueError(f"settle must be >= 1, got {settle}")
    solver = solver or MINRES(rtol=1e-12)
    template = theta0 if theta0 is not None else problem.init_params(0)
    system = EquilibriumSystem(problem, template, hvp_mode=hvp_mode)
    make_context = lambda x, mu: PointContext(system, x, mu, solver, corrector)  # noqa: E731
    attrs = {"problem": getattr(problem, "name", type(problem).__name__), "process": process.name,
             "predictor": predictor.name, "corrector": corrector.name,
             "config": json.dumps(config if config is not None else {}, default=str, sort_keys=True),
             "status": "running", "stop_reason": ""}
    uses_theta_tangent = predictor.name in ("ode", "secant")
    writer = None
    rows = []

    def tangent_at(ctx):
        mu_dot = ctx.velocity(process)
        return torch.cat([ctx.theta_dot(mu_dot), mu_dot]) if uses_theta_tangent else mu_dot.clone()

    def held_value(ctx):
        c = process.constraint(ctx) if process.project else None
        return None if c is None else c[0]

    # -- the first point: a fresh start, a resumed file, or a point of an earlier path --------
    out = Path(out) if out is not None else None
    if out is not None and out.exists() and resume:
        old = load_path(out)
        if old.attrs.get("config") != attrs["config"]:
            raise ContinuationError(f"{out} was written with another configuration; use another --out to start anew")
        if old.attrs.get("status") != "running":
            return old
        rows = [{k: old[k].values[i].item() for k in old.data_vars} for i in range(old.sizes["step"])]
        last = load_point(out, -1)
        x, mu = last["x"].to(**_placed(template)), last["mu"].to(**_placed(template))
        C0, G0 = float(old.attrs["C0"]), old.attrs.get("G0")
        G0 = None if G0 in (None, "none") else float(G0)
        current = _Point(x, mu, float(last["s"]), make_context(x, mu), drift=_row_drift(rows[-1], process, G0))
        current.tangent = tangent_at(current.ctx)
        ds_next = float(rows[-1]["next_step"])
        previous = None
        if len(rows) >= 2 and checkpoint_file(out, len(rows) - 2).exists():
            p = load_point(out, len(rows) - 2)
            previous = (p["x"].to(**_placed(template)), p["mu"].to(**_placed(template)), float(p["s"]), current.s)
        attrs.update(C0=C0, G0="none" if G0 is None else G0)
        writer = PathWriter(out, attrs, checkpoint_every, rows=rows)
        t_start = time.perf_counter()
    else:
        if out is not None and out.exists():
            raise ContinuationError(f"{out} exists; pass resume=True (--resume) to continue it, or another --out")
        t_start = time.perf_counter()
        if start_from is not None:
            p = load_point(*start_from)
            x, mu = p["x"].to(**_placed(template)), p["mu"].to(**_placed(template))
        else:
            if start is None:
                raise ValueError("continue_path needs start=(lambda, gamma[, t]) or start_from=(path, step)")
            vals = list(start) + [0.0] * (3 - len(start))
            mu = torch.tensor(vals, dtype=template_dtype(template), device=template_device(template))
            x = system.flatten(template)
        corr = None
        if equilibrate:
            for _ in range(settle):
                try:
                    corr = corrector.correct(system, x, mu)
                except FloatingPointError as e:
                    raise ContinuationError(f"start point {_named(mu)}: {e}") from e
                if not corr.converged:
                    raise ContinuationError(f"the start point did not equilibrate: corrector {corr.status}, "
                                            f"|grad| {corr.grad_norm:.2e} at {_named(mu)}")
                x = corr.x
        current = _Point(x, mu, 0.0, make_context(x, mu))
        current.tangent = tangent_at(current.ctx)
        C0 = current.ctx.functionals()["C"]
        if not all(math.isfinite(v) for v in current.ctx.functionals().values()):
            raise ContinuationError(f"start point {_named(mu)}: R, D, C not finite: {current.ctx.functionals()}")
        G0 = held_value(current.ctx)
        attrs.update(C0=C0, G0="none" if G0 is None else G0)
        if out is not None:
            writer = PathWriter(out, attrs, checkpoint_every)
        grad_norm = corr.grad_norm if corr is not None else float(system.gradient(x, mu).norm())
        row = _row(problem, system, current, 0.0, grad_norm, current.ctx.krylov_iters,
                   corr.iters if corr is not None else 0, time.perf_counter() - t_start, 0, control.initial,
                   C0, G0, held_value, None)
        _append(writer, rows, row, current)
        ds_next = control.initial
        previous = None

    # -- the loop ------------------------------------------------------------------------------
    bar = tqdm(total=stop.max_steps, initial=len(rows) - 1, disable=not progress, unit="step", leave=False)
    reason = stop.reached(len(rows) - 1, current.s, _named(current.mu), current.ctx.functionals())
    try:
        while reason is None:
            t0 = time.perf_counter()
            ds, rejected, krylov, corr_iters = min(ds_next, control.max_step), 0, 0, 0
            if resample and hasattr(problem, "resample"):
                problem.resample(len(rows))
                current.ctx = make_context(current.x, current.mu)
            while True:
                ds_try, landing = _land(process, current, ds, stop)
                try:
                    attempt = _attempt(system, process, predictor, corrector, make_context, current, ds_try,
                                       landing, previous, G0, C0, held_value, tangent_at)
                except (FloatingPointError, torch.linalg.LinAlgError) as e:
                    # a stage or a corrector iterate left the domain where J is defined
                    attempt = None
                    why = f"{type(e).__name__}: {str(e).splitlines()[0]}"
                if attempt is not None:
                    pred_ok, res, x_new, mu_new, ctx_new, tangent, drift, k_used, c_used, ds_try, grad_norm = attempt
                    krylov += k_used
                    corr_iters += c_used
                    step_drift = None if drift is None else drift - current.drift
                    ok, easy, why = control.assess(corrector, res, pred_ok, step_drift,
                                                   _angle(current.tangent, tangent) if res.converged else None)
                else:
                    ok = False
                if ok:
                    break
                rejected += 1
                ds = ds * control.shrink
                if ds < control.min_step:
                    raise _Stop(f"step size {ds:.3g} below min_step {control.min_step} at step {len(rows)} "
                                f"(last rejection: {why})")
            new = _Point(x_new, mu_new, current.s + ds_try, ctx_new, tangent, drift or 0.0)
            if not (landing is not None and ds_try < ds):  # a shortened landing step says nothing of ds
                ds = min(ds * control.grow, control.max_step) if easy else ds
            ds_next = ds
            row = _row(problem, system, new, ds_try, grad_norm, krylov, corr_iters, time.perf_counter() - t0,
                       rejected, ds_next, C0, G0, held_value, _angle(current.tangent, tangent))
            previous = (current.x, current.mu, current.s, new.s)
            current = new
            _append(writer, rows, row, current)
            bar.update(1)
            drift = row["C_drift"] if "train_C" not in row else (row["train_C"] - rows[0]["train_C"]) / rows[0]["train_C"]
            bar.set_postfix(s=f"{current.s:.3g}", lam=f"{row['lambda']:.4g}", gam=f"{row['gamma']:.4g}",
                            drift=f"{drift:.1e}", grad=f"{row['grad_norm']:.1e}")
            reason = stop.reached(len(rows) - 1, current.s, _named(current.mu), current.ctx.functionals())
        status = "finished"
    except _Stop as e:
        status, reason = "stopped", str(e)
    except FloatingPointError as e:
        raise ContinuationError(f"step {len(rows)}: {e} near {_named(current.mu)}") from e
    finally:
        bar.close()
    if writer is not None:
        return writer.finish(status, reason)
    return rows_to_dataset(rows, dict(attrs, status=status, stop_reason=reason))


class _Stop(Exception):
    pass


def _row_drift(row, process, G0) -> float:
    """The drift the step control compares against, as recorded for a point."""
    if process.project and G0 is not None:
        return float(row["constraint_drift"])
    if getattr(process, "holds", None) == "C":
        return float(row["C_drift"])
    return 0.0


def _attempt(system, process, predictor, corrector, make_context, current, ds, landing, previous, G0, C0,
             held_value, tangent_at):
    """Predict, correct, project; the candidate point and what it cost."""
    pred = predictor.predict(make_context, current.ctx, ds, previous, process=process)
    krylov, corr_iters = pred.krylov_iters, pred.corrector_iters
    if landing is not None:
        # ds came from the rate at the start; a higher-order predictor bends away from that
        # line, so adjust ds by secant steps until the parameter lands (0 extra for euler/none)
        i, target = mu_index(landing[0]), landing[1]
        start_value = float(current.mu[i])
        for _ in range(6):
            got = float(pred.mu[i])
            if abs(got - target) <= 64 * torch.finfo(pred.mu.dtype).eps * max(1.0, abs(target)) or got == start_value:
                break
            ds = ds * (target - start_value) / (got - start_value)
            pred = predictor.predict(make_context, current.ctx, ds, previous, process=process)
            krylov += pred.krylov_iters
            corr_iters += pred.corrector_iters
    mu_new = pred.mu.clone()
    if landing is not None:
        mu_new[mu_index(landing[0])] = landing[1]
    named = _named(mu_new)
    if not (named["lambda"] > 0 and named["gamma"] > 0):
        raise FloatingPointError(f"prediction left the domain lambda, gamma > 0: {named}")
    res = corrector.correct(system, pred.x, mu_new)
    corr_iters += res.iters
    x_new, grad_norm = res.x, res.grad_norm
    ctx_new = None
    if res.converged and process.project == "secant":
        x_new, mu_new, ctx_new, extra_c, grad_norm = _project_secant(system, process, corrector, make_context,
                                                                     current, pred.x, mu_new, res, G0, landing)
        corr_iters += extra_c
    elif res.converged and process.project:
        x_new, mu_new, ctx_new, extra_k, extra_c, grad_norm = _project(system, process, corrector, make_context,
                                                                       x_new, mu_new, G0, landing, grad_norm)
        krylov += extra_k
        corr_iters += extra_c
    ctx_new = ctx_new or make_context(x_new, mu_new)
    tangent = tangent_at(ctx_new) if res.converged else None
    krylov += ctx_new.krylov_iters
    corr_iters += ctx_new.corrector_iters
    drift = None
    if res.converged:
        if process.project and G0 is not None:
            drift = (held_value(ctx_new) - G0) / max(abs(G0), 1e-300)
        elif getattr(process, "holds", None) == "C":
            drift = (ctx_new.functionals()["C"] - C0) / max(abs(C0), 1e-300)
    return pred.solves_ok, res, x_new, mu_new, ctx_new, tangent, drift, krylov, corr_iters, ds, grad_norm


def template_dtype(template):
    leaves = torch.utils._pytree.tree_leaves(template)
    return leaves[0].dtype


def template_device(template):
    return torch.utils._pytree.tree_leaves(template)[0].device


def _placed(template) -> dict:
    """dtype and device of the parameters: where x and mu live (a GPU run keeps mu there too)."""
    return {"dtype": template_dtype(template), "device": template_device(template)}


def _land(process, current, ds, stop):
    """Shorten ds so that a parameter lands exactly on its next milestone or target."""
    mu_dot = current.ctx.velocity(process)
    best = (ds, None)
    # rounding of mu in its own dtype: a float32 path that adds 0.075 ten times to 0.25 is at
    # 0.99999988, which must land on 1.0 now, not after one more step of 1e-7
    eps = 64 * torch.finfo(current.mu.dtype).eps
    for name in MU_NAMES:
        rate = float(mu_dot[mu_index(name)])
        if rate == 0.0:
            continue
        value = float(current.mu[mu_index(name)])
        ahead = [v for v in stop.landing_values(name) if (v - value) * rate > eps * max(1.0, abs(v))]
        if not ahead:
            continue
        nxt = min(ahead, key=lambda v: abs(v - value))
        need = (nxt - value) / rate
        if need <= best[0] * (1 + eps):
            best = (need, (name, nxt))
    return best


def _newton_shift(r: float, grad: dict, along, landing, mu) -> torch.Tensor:
    """The least-norm shift of the multipliers in `along` (less one that just landed on a
    milestone) that changes G by -r to first order: -r grad / |grad|^2 over those."""
    free = [n for n in along if landing is None or n != landing[0]]
    shift = torch.zeros_like(mu)
    denom = sum(grad[m] ** 2 for m in free)
    if denom > 0.0:
        for m in free:
            shift[mu_index(m)] = -r * grad[m] / denom
    return shift


def _project_secant(system, process, corrector, make_context, current, x_pred, mu_pred, res, G0, landing,
                    max_iter=6):
    """Restore G = G0 by a secant iteration on tau, mu(tau) = mu_pred + tau d, where d is the
    Newton direction of the tangents at the last point (so tau = -(G - G0) if the tangents were
    the corrector's true response); no iterate moves a multiplier by more than a factor of 2.
    Every iterate is the corrector run from the same prediction x_pred; a stochastic corrector
    draws the same batches and noise each time, so G(tau) is one
    smooth function and the secant converges although the corrector is far from equilibrium.
    Returns the iterate with the smallest |G - G0|, its context, the corrector work, |grad|."""
    _, grad = process.constraint(current.ctx)
    d = _newton_shift(-1.0, grad, getattr(process, "project_along", FREE), landing, mu_pred)
    ctx = make_context(res.x, mu_pred)
    r0 = process.value(ctx) - G0
    best = (abs(r0), res.x, mu_pred, ctx, res.grad_norm)
    tol = process.tol * max(abs(G0), 1e-300)
    if best[0] <= tol or not bool(d.any()):
        return best[1], best[2], best[3], 0, best[4]
    taus, rs = [0.0], [r0]
    tau, iters = _bounded(-rs[0], 0.0, d, mu_pred), 0
    for _ in range(max_iter):
        mu = mu_pred + tau * d
        if not (float(mu[0]) > 0 and float(mu[1]) > 0):
            break
        r = corrector.correct(system, x_pred, mu)
        iters += r.iters
        if not r.converged:
            break
        ctx = make_context(r.x, mu)
        g = process.value(ctx) - G0
        if abs(g) < best[0]:
            best = (abs(g), r.x, mu, ctx, r.grad_norm)
        if abs(g) <= tol or g == rs[-1]:
            break
        taus.append(tau)
        rs.append(g)
        tau = _bounded(taus[-1] - rs[-1] * (taus[-1] - taus[-2]) / (rs[-1] - rs[-2]), taus[-1], d, mu_pred)
    return best[1], best[2], best[3], iters, best[4]


def _bounded(tau, tau_from, d, mu_pred, factor=2.0):
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


def _project(system, process, corrector, make_context, x, mu, G0, landing, grad_norm, max_iter=8):
    """Restore the held functional G = G0 by a scalar Newton iteration in mu, along dG/dmu
    restricted to the free multipliers (not the one that just landed on a milestone).
    Returns x, mu, the context at them (tangents already solved there), the work, and the
    gradient norm at x."""
    free = [n for n in getattr(process, "project_along", FREE) if landing is None or n != landing[0]]
    krylov = iters = 0
    last = math.inf
    ctx = make_context(x, mu)
    for _ in range(max_iter):
        G, grad = process.constraint(ctx)
        r = G - G0
        if abs(r) <= process.tol * max(abs(G0), 1.0) or abs(r) > 0.5 * last:
            break
        last = abs(r)
        dmu = _newton_shift(r, grad, free, None, mu)
        if not bool(dmu.any()):
            break
        x_guess = x + ctx.theta_dot(dmu)
        res = corrector.correct(system, x_guess, mu + dmu)
        iters += res.iters
        if not res.converged:
            break
        krylov += ctx.krylov_iters
        iters += ctx.corrector_iters
        x, mu, grad_norm = res.x, mu + dmu, res.grad_norm
        ctx = make_context(x, mu)
    return x, mu, ctx, krylov, iters, grad_norm


def _row(problem, system, point, ds, grad_norm, krylov, corr_iters, seconds, rejected, next_step, C0, G0,
         held_value, angle):
    f = point.ctx.functionals()
    row = {"s": point.s, **_named(point.mu), "R": f["R"], "D": f["D"], "C": f["C"], "F": point.ctx.objective(),
           "grad_norm": grad_norm, "krylov_iters": int(krylov), "corrector_iters": int(corr_iters),
           "seconds": seconds, "step_size": ds, "next_step": next_step, "rejected": int(rejected),
           "C_drift": (f["C"] - C0) / max(abs(C0), 1e-300),
           "constraint_drift": math.nan if G0 is None else (held_value(point.ctx) - G0) / max(abs(G0), 1e-300),
           "tangent_angle": math.nan if angle is None else angle,
           "krylov_residual": max((r.rel_residual for r in point.ctx.solves), default=math.nan)}
    metrics = getattr(problem, "validation_metrics", None)
    if metrics is not None:
        row.update(metrics(system.unflatten(point.x)))
    evaluation = getattr(problem, "evaluation_metrics", None)
    if evaluation is not None:
        if point.ctx.evaluation is None:
            point.ctx.evaluation = evaluation(system.unflatten(point.x), point.mu)
        row.update(point.ctx.evaluation)
    return row


def _append(writer, rows, row, point):
    if writer is not None:
        writer.append(row, point.x, point.mu)  # also appends to writer.rows
        rows[:] = writer.rows
    else:
        rows.append(dict(row, checkpoint=-1))
