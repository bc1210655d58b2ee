"""Fold events of a pseudo-arclength path: where the multiplier turns back.

At a fold (limit point) in p the extended tangent tau = (tau_x, tau_p) of grad_x J(x; mu(p)) = 0
has tau_p = 0 and A = Hess_x J is singular with null vector tau_x (A tau_x = b tau_p = 0). A fold
lies between two accepted points a, b where tau_p changes sign (`detect_folds`). `locate_fold`
finds it by the Illinois variant of regula falsi (Dowell & Jarratt 1971) on

    g(sigma) = tau_p at the point at arclength sigma from a,   sigma in [0, s_b - s_a],

each evaluation: the pseudo-arclength prediction from a to sigma, the bordered Newton
correction, and the bordered tangent there (oriented along a's). Near the fold
p(s) = p* + kappa (s - s*)^2 / 2 and tau_p = kappa (s - s*), so the error in p of a point with
tangent component tau_p is tau_p^2 / (2 |kappa|), kappa from the last two evaluations; the
iteration stops when that is <= rtol |p|. Cost: per evaluation the corrector's HVPs (2-4 Newton
steps of one GMRES each) and one bordered GMRES solve for the tangent; 1 HVP for `eig`.

`fold_events(stepper, points)` is what a stepper's event monitor calls with its accepted points
(`stepper.Point`s, each with its context and tangent); it returns one record per fold:

    {"type": "fold", "s", "lambda", "gamma", "t", "R", "D", "C", "F", "eig", "tau", "lambda_error",
     "evaluations", "hvps"}

`eig` is the eigenvalue of A that crosses zero at the fold, as the Rayleigh quotient of tau_x
(~0; its sign and size say how well the fold is resolved); `tau` the last tau_p; `lambda_error`
the error estimate above (of the continuation parameter, whatever its name).
Refs: Keller (1977); Allgower & Georg (1990), ch. 9; BifurcationKit's `locate_fold`.
"""

from __future__ import annotations

import math


from problems.base import MU_NAMES, mu_index

from continuation.errors import ContinuationError


def _tau_p(point, process) -> float:
    n = point.x.numel()
    return float(point.tangent[n + mu_index(process.parameter)])


def detect_folds(points, process) -> list[int]:
    """Indices k with tau_p changing sign from points[k] to points[k + 1] (a fold between them)."""
    taus = [_tau_p(p, process) for p in points]
    return [k for k in range(len(taus) - 1) if taus[k] * taus[k + 1] < 0]


def locate_fold(stepper, a, b, *, rtol: float = 1e-8, maxiter: int = 40) -> dict:
    """The fold between accepted points a and b (tau_p of opposite signs), to rtol relative in p.
    Its cost, every HVP spent locating it (the system's ledger, counted aside), is its `hvps`."""
    with stepper.system.ledger.aside() as spent:
        fold = _locate_fold(stepper, a, b, rtol, maxiter)
    return dict(fold, hvps=spent.hvps)


def _locate_fold(stepper, a, b, rtol: float, maxiter: int) -> dict:
    process, corrector, system = stepper.s.process, stepper.step_corrector, stepper.system
    if not getattr(process, "arclength", False):
        raise ValueError(f"locate_fold needs the pseudo-arclength process, got {process.name!r}")
    i = mu_index(process.parameter)
    ga, gb = _tau_p(a, process), _tau_p(b, process)
    if not ga * gb < 0:
        raise ValueError(f"no fold between s = {a.s:g} and s = {b.s:g}: tau_p {ga:+.3e}, {gb:+.3e} (same sign)")

    def evaluate(sigma):
        pred = stepper.s.predictor.predict(stepper.context, a.ctx, sigma, None, process)
        res = corrector.correct_arclength(system, pred.x, pred.mu, pred.arclength)
        if not res.converged:
            raise ContinuationError(f"fold location: the corrector at s = {a.s + sigma:g} did not converge "
                                    f"({res.status}, |grad| {res.grad_norm:.2e})")
        ctx = stepper.context(res.x, res.mu)
        ctx.reference = a.tangent
        tau_x, tau_mu = process.tangent(ctx)
        return float(tau_mu[i]), ctx, tau_x

    lo, glo, hi, ghi = 0.0, ga, b.s - a.s, gb
    history = [(lo, ga), (hi, gb)]
    side, ctx, tau_x, g, sigma, err = 0, None, None, gb, hi, math.inf
    for k in range(1, maxiter + 1):
        sigma = (lo * ghi - hi * glo) / (ghi - glo)
        g, ctx, tau_x = evaluate(sigma)
        (s1, g1), (s2, g2) = sorted(history, key=lambda h: abs(h[0] - sigma))[:2]
        history.append((sigma, g))
        kappa = (g - g1) / (sigma - s1) if sigma != s1 else (g2 - g1) / (s2 - s1)
        err = g * g / (2 * abs(kappa)) if kappa != 0 else math.inf
        if err <= rtol * max(abs(float(ctx.mu[i])), 1e-300) or g == 0.0:
            break
        if g * ghi > 0:
            hi, ghi = sigma, g
            if side == 1:
                glo /= 2
            side = 1
        else:
            lo, glo = sigma, g
            if side == -1:
                ghi /= 2
            side = -1
    else:
        raise ContinuationError(f"fold location did not reach rtol {rtol:g} in {maxiter} evaluations "
                                f"(estimated error {err:.2e} at {MU_NAMES[i]} = {float(ctx.mu[i]):.10g})")
    v = tau_x / tau_x.norm()
    d = system.deflation(ctx.x)
    if d is not None:
        v = d.project(v)
    eig = float(v @ system.hessian(ctx.x, ctx.mu)(v))
    f = ctx.functionals()
    return {"type": "fold", "s": a.s + sigma, **{n: float(ctx.mu[j]) for j, n in enumerate(MU_NAMES)},
            "R": f["R"], "D": f["D"], "C": f["C"], "F": ctx.objective(), "eig": eig, "tau": g,
            "lambda_error": err, "evaluations": k, "x": ctx.x}


def fold_events(stepper, points, **options) -> list[dict]:
    """Every fold between consecutive accepted points (stepper.Point), located (locate_fold)."""
    return [locate_fold(stepper, points[k], points[k + 1], **options) for k in detect_folds(points, stepper.s.process)]
