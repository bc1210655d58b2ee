"""Does the tangent predictor earn its keep on a neural problem? The equilibrium tangents'
prediction of how training C, R and D respond to (lambda, gamma), against the response a finite
corrector run actually produces; and the gradient norms Newton reaches (issue 14, item 3).

    python benchmarks/tangent_response.py --start out/routes_digits/start.nc --out out/tangent_response
    python benchmarks/tangent_response.py --budgets 75 150 600 2400 --newton-iters 30
    python benchmarks/tangent_response.py --exact validation/configs/smooth_mlp_exact.toml
    python benchmarks/tangent_response.py --exact validation/configs/digits_exact.toml --start out/digits_exact.nc --start-step 0

Part 1, response. At one equilibrated start (mu0 = (lambda0, gamma0); the default run's problem
and start, or --start, a path file of it such as benchmarks/iso_c_routes.py's start.nc):
- predicted: dF/dmu_j = grad_theta F . theta_{mu_j}, theta_{mu_j} = -A^{-1} d(grad J)/dmu_j
  (eq. 17; A the Hessian on the problem's hvp_batch, MINRES with the run's shift), for
  F in (C, R, D) on the run's batch, for each curvature variant in `CURVATURES` (the run's
  shifted Hessian on 512 images; the whole training set; a 10x larger shift, i.e. a damped
  Hessian);
- actual: the corrector (the default run's Adam, budget T updates) from the start's theta at
  mu0 and at mu0 + h e_j with the same random numbers; (F(T; mu0 + h e_j) - F(T; mu0)) / h on the
  fixed-noise training measure, for T in --budgets. h is the run's lambda step (0.075) for
  lambda and 10% of gamma0 for gamma.
The ratio predicted / actual is what a predictor that moves theta along the tangent gets wrong:
1 would let it hold C by itself; the corrector would then only remove the second-order error.

Part 2, Newton. The same model made deterministic (float64, the whole training set as one
batch, one noise draw): ||grad J|| relative to its start along Newton-CG (one Newton step per
call of solvers.NewtonCG(maxiter=1), so its Levenberg damping restarts each step; the inner CG
stops on negative curvature and damping is raised until it sees none) and along L-BFGS (the
corrector "lbfgs", 20 iterations per call). A stationary point Newton can reach would have
||grad J|| <= 1e-6 relative; an "exact" neural route needs one.

Exact mode (--exact CONFIG, issue 25 item 3): the same question on a deterministic objective
whose equilibria are solved to tolerance (the configuration's problem, e.g. `mlp-smooth`, and its
corrector, e.g. trust-newton). At the configuration's start solved by its corrector (or point
--start-step of the path --start, re-solved), predicted dF/dmu_j = grad F . theta_{mu_j} with the
tangents by the configuration's Krylov solver (and preconditioner), against central differences
of F at equilibria converged by the same corrector at mu0 +- h mu0_j e_j for relative steps h and
h/2 (--rel-step), Richardson-extrapolated (error O(h^4) plus the corrector's residual over the
step); each perturbed solve warm-starts at x0 +- h mu0_j theta_{mu_j}. Target: |predicted /
actual - 1| <= 1% for dC/dlambda and dC/dgamma. The perturbed solves use the run's step
corrector (Corrector.for_steps: trust-newton without its L-BFGS start phase). Writes
OUT/exact_response.md and .json. Cost: one tangent solve pair and 9 corrector runs (the start's,
then 8).

Writes OUT/response.json, OUT/response.png (part 1) and OUT/newton.png (part 2) and prints both
tables. Cost: part 1 is (1 + 2 x len(budgets)) corrector runs and 2 Krylov solves per variant;
part 2 is --newton-iters Newton steps and as many L-BFGS calls.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch


CURVATURES = {  # name: (hvp_batch, shift multiplier)
    "run's Hessian (512 images, shift 0.1)": (512, 1.0),
    "whole training set (1437 images)": (0, 1.0),
    "damped (shift x10)": (512, 10.0),
}


def build(config: dict):
    from continuation.files.config import build_run
    from continuation.surface.system import EquilibriumSystem

    r = build_run(copy.deepcopy(config), check_start=False)
    problem = r["problem"]
    return r, problem, EquilibriumSystem(problem, problem.init_params(0))


def start_point(config: dict, system, start: str | None):
    from continuation.surface.equilibrate import equilibrate
    from continuation.engine.start import from_point

    template = system.flatten(system.problem.init_params(0))
    if start:
        return from_point(start, -1, template)
    s = config["start"]
    mu = torch.tensor([s["lambda"], s["gamma"], 0.0], dtype=template.dtype)
    print(f"pre-training: {s['train_steps']} Adam updates at (lambda, gamma) = ({s['lambda']}, {s['gamma']})", flush=True)
    res = equilibrate(system, template, mu, steps=s["train_steps"], lr=s["train_lr"],
                      resample_every=s["train_resample_every"], seed=s["seed"])
    return res.x, mu


def metrics(problem, system, x) -> dict:
    m = problem.evaluation_metrics(system.unflatten(x))
    return {"C": m["train_C"], "R": m["train_R"], "D": m["train_D"]}


def predicted(config, x, mu, hvp_batch: int, shift_factor: float) -> dict:
    """dF/dlambda, dF/dgamma for F in C, R, D from the equilibrium tangents (eq. 17)."""
    from continuation.surface.context import PointContext
    from solvers import MINRES

    c = copy.deepcopy(config)
    c["problem"]["hvp_batch"] = hvp_batch
    _, problem, system = build(c)
    k = c["krylov"]
    ctx = PointContext(system, x, mu, MINRES(rtol=k["rtol"], maxiter=k["maxiter"], shift=k["shift"] * shift_factor))
    rates = ctx.rates()
    return {f: {p: rates[f][p] for p in ("lambda", "gamma")} for f in ("C", "R", "D")} | {
        "krylov_iters": sum(r.iters for r in ctx.solves)}


def actual(corrector_config: dict, config, x, mu, budgets, h: dict) -> dict:
    from continuation.files.config import build as build_strategy

    _, problem, system = build(config)
    out = {}
    for T in budgets:
        corr = build_strategy("corrector", {**corrector_config, "steps": T})
        t0 = time.perf_counter()
        base = metrics(problem, system, corr.correct(system, x, mu).x)
        row = {"base": base}
        for p, i in (("lambda", 0), ("gamma", 1)):
            m = mu.clone()
            m[i] += h[p]
            moved = metrics(problem, system, corr.correct(system, x, m).x)
            row[p] = {f: (moved[f] - base[f]) / h[p] for f in ("C", "R", "D")}
        row["seconds"] = time.perf_counter() - t0
        out[T] = row
        print(f"  T = {T:5d}: dC/dlambda {row['lambda']['C']:+.4f}, dC/dgamma {row['gamma']['C']:+.5f}, "
              f"dR/dlambda {row['lambda']['R']:+.3f} ({row['seconds']:.0f} s)", flush=True)
    return out


def newton_trace(config, x, mu, iters: int) -> dict:
    """||grad J|| along Newton-CG and L-BFGS on the deterministic float64 model."""
    from continuation.files.config import build as build_strategy
    from solvers import NewtonCG

    c = copy.deepcopy(config)
    c["problem"].update(float64=True, grad_batch=0, hvp_batch=0)
    _, problem, system = build(c)
    x = x.to(torch.float64)
    mu = mu.to(torch.float64)
    g0 = float(system.gradient(x, mu).norm())
    traces = {}
    y, newton = x.clone(), []
    for _ in range(iters):
        r = NewtonCG(gtol=1e-6 * g0, maxiter=1).solve(system.objective, y, mu)
        y = r.x
        newton.append({"grad": r.grad_norm / g0, "J": r.value, "negative_curvature": r.negative_curvature,
                       "damping": r.damping, "hvps": r.hvps, "status": r.status})
        if r.grad_norm <= 1e-6 * g0:
            break
    traces["newton-cg"] = newton
    lb = build_strategy("corrector", {"name": "lbfgs", "gtol": 1e-6 * g0, "maxiter": 20})
    y, lbfgs = x.clone(), []
    for _ in range(iters):
        r = lb.correct(system, y, mu)
        y = r.x
        lbfgs.append({"grad": float(r.grad_norm) / g0, "J": float(system.objective(y, mu))})
        if r.converged:
            break
    traces["lbfgs"] = lbfgs
    return {"grad0": g0, **traces}


def plot(resp, pred, newton, out: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = sorted(resp)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, (f, p) in zip(axes, [("C", "lambda"), ("C", "gamma"), ("R", "lambda")]):
        ax.plot(budgets, [resp[T][p][f] for T in budgets], "ko-", label="actual (Adam, T updates)")
        for (name, v), ls in zip(pred.items(), ["-", "--", ":"]):
            ax.axhline(v[f][p], ls=ls, label=f"predicted: {name}")
        ax.axhline(0, color="grey", lw=0.5)
        ax.set(xscale="log", xlabel="corrector budget T (Adam updates)", ylabel=f"d{f}/d{p}",
               title=f"response of training {f} to {p}")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "response.png", dpi=120)
    if newton:
        fig, ax = plt.subplots(figsize=(6, 4))
        for name in ("newton-cg", "lbfgs"):
            ax.semilogy(range(1, len(newton[name]) + 1), [r["grad"] for r in newton[name]], "o-", ms=3, label=name)
        ax.axhline(1e-6, color="grey", ls=":", label="1e-6 (Newton-reachable)")
        ax.set(xlabel="call (Newton step; 20 L-BFGS iterations)", ylabel="||grad J|| / ||grad J||(start)",
               title="deterministic float64 model")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "newton.png", dpi=120)


def exact_run(config_file: str) -> dict:
    """build_run of an exact-mode configuration, checked first: a deterministic problem and a
    corrector named in it that converges to a tolerance (ValueError, one line, before any work)."""
    from continuation.files.config import build_run, load_config

    from problems.base import StochasticProblem

    config = load_config(config_file)
    named = config.get("corrector", {}).get("name")
    if named not in ("trust-newton", "newton"):
        raise ValueError(f"{config_file}: [corrector] name must be \"trust-newton\" or \"newton\" (a corrector that "
                         f"converges to its gtol), got {named or 'none given'!r}")
    if config.get("problem", {}).get("stochastic") is True:
        raise ValueError(f"{config_file}: [problem] stochastic = true; exact mode needs a deterministic J")
    r = build_run(config, check_start=False)
    if isinstance(r["problem"], StochasticProblem):
        raise ValueError(f"{config_file}: the problem is stochastic ({r['problem'].name}); exact mode needs a "
                         f"deterministic J (e.g. mlp-smooth)")
    return r


def exact_response(r: dict, start: str | None, start_step: int, rel_step: float) -> dict:
    """Exact mode (module docstring): predicted and Richardson central-difference dF/dmu at one
    equilibrium; r: exact_run(configuration)."""
    from continuation.engine.start import from_point
    from continuation.surface.system import EquilibriumSystem
    from continuation.surface.tangents import functional_derivatives, solve_tangents

    problem, corrector = r["problem"], r["corrector"]
    template = problem.init_params(r["start"]["seed"])
    system = EquilibriumSystem(problem, template, r["hvp_mode"])
    system.preconditioner = getattr(r["krylov"], "preconditioner", None)
    if start:
        x, mu = from_point(start, start_step, system.flatten(template))
    else:
        s = r["start"]
        x = system.flatten(template)
        mu = torch.tensor([s["lambda"], s["gamma"], s["t"]], dtype=x.dtype, device=x.device)
    t0 = time.perf_counter()
    res = corrector.correct(system, x, mu)
    if not res.converged:
        raise RuntimeError(f"the {corrector.name} corrector did not converge at the start ({res.status}, "
                           f"|grad J| {res.grad_norm:.2e})")
    x = res.x
    print(f"start (lambda, gamma) = ({float(mu[0]):g}, {float(mu[1]):g}) solved: |grad J| "
          f"{float(system.gradient(x, mu).norm()):.2e}, grad_norm_rel "
          f"{float(system.gradient(x, mu).norm()) / system.force_scale(x, mu):.1e} ({time.perf_counter() - t0:.0f} s)",
          flush=True)
    t0 = time.perf_counter()
    tangents = solve_tangents(system, x, mu, solver=r["krylov"])
    if not tangents.converged:
        raise RuntimeError("the tangent solves did not converge")
    rates = functional_derivatives(system, x, mu, tangents)
    print(f"tangents: {time.perf_counter() - t0:.0f} s; predicted dC/dlambda {float(rates['C'][0]):+.6e}, dC/dgamma "
          f"{float(rates['C'][1]):+.6e}", flush=True)
    out = {"mu0": [float(v) for v in mu], "rel_step": rel_step, "grad_norm_rel": float(system.gradient(x, mu).norm())
           / system.force_scale(x, mu), "rows": []}
    for j, name in enumerate(("lambda", "gamma")):
        estimates = []
        for h in (rel_step, rel_step / 2):
            step = h * float(mu[j])
            F = []
            for sign in (1.0, -1.0):
                m = mu.clone()
                m[j] += sign * step
                t0 = time.perf_counter()
                e = corrector.for_steps().correct(system, x + sign * step * tangents.column(name), m)
                if not e.converged:
                    raise RuntimeError(f"the {corrector.name} corrector did not converge at {name} "
                                       f"{float(m[j]):g} ({e.status}, |grad J| {e.grad_norm:.2e})")
                F.append(system.values(e.x, m))
                print(f"  {name} {float(m[j]):.6g}: converged, |grad J| {e.grad_norm:.2e} "
                      f"({e.iters} iterations, {time.perf_counter() - t0:.0f} s)", flush=True)
            estimates.append((F[0] - F[1]) / (2 * step))
        fd = (4 * estimates[1] - estimates[0]) / 3
        for i, f in enumerate(("R", "D", "C")):
            p, a = float(rates[f][j]), float(fd[i])
            out["rows"].append({"response": f"d{f}/d{name}", "predicted": p, "actual": a,
                                "actual_h": float(estimates[0][i]), "actual_h2": float(estimates[1][i]),
                                "rel_error": abs(p / a - 1) if a != 0 else float("inf")})
    return out


def exact_table(res: dict) -> str:
    lines = [f"At (lambda, gamma) = ({res['mu0'][0]:g}, {res['mu0'][1]:g}), solved to grad_norm_rel "
             f"{res['grad_norm_rel']:.1e}; actual: central differences of converged equilibria at relative steps "
             f"{res['rel_step']:g} and {res['rel_step'] / 2:g}, Richardson-extrapolated.", "",
             "| response | predicted (tangents) | actual (Richardson) | actual, h | actual, h/2 | predicted / actual - 1 |",
             "|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['response']} | {r['predicted']:+.8e} | {r['actual']:+.8e} | {r['actual_h']:+.6e} | "
                     f"{r['actual_h2']:+.6e} | {r['rel_error']:.1e} |")
    worst = max(r["rel_error"] for r in res["rows"] if r["response"].startswith("dC/"))
    lines += ["", f"dC/dlambda and dC/dgamma: worst |predicted / actual - 1| = {worst:.1e} (target <= 1e-2: "
                  f"{'met' if worst <= 1e-2 else 'NOT met'})"]
    return "\n".join(lines)


def main(argv=None) -> int:
    from continuation.apps.cli import OneLineParser

    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--start", default="", help="path file whose last point is the start (default: pre-train here)")
    p.add_argument("--budgets", type=int, nargs="+", default=[75, 150, 600, 2400])
    p.add_argument("--newton-iters", type=int, default=30, help="Newton steps and L-BFGS calls in part 2 (0: skip)")
    p.add_argument("--out", default="out/tangent_response")
    p.add_argument("--exact", default="", help="exact mode: a configuration of a deterministic problem and a converging "
                                               "corrector (e.g. validation/configs/digits_exact.toml)")
    p.add_argument("--start-step", type=int, default=-1, help="exact mode: the point of --start (default -1, the last)")
    p.add_argument("--rel-step", type=float, default=2e-2, help="exact mode: relative step h (and h/2; default 2e-2)")
    args = p.parse_args(argv)
    if args.exact:
        if not Path(args.exact).is_file():
            p.error(f"--exact {args.exact}: no such configuration file")
        if not 0 < args.rel_step < 1:
            p.error(f"--rel-step must be in (0, 1), got {args.rel_step}")
        if args.start and not Path(args.start).is_file():
            p.error(f"--start {args.start}: no such path file")
        from continuation.errors import ContinuationError
        try:
            r = exact_run(args.exact)
        except (ContinuationError, OSError, ValueError) as e:
            p.error(str(e).splitlines()[0])
        out = Path(args.out)
        p.out_folder(out)
        try:
            res = exact_response(r, args.start or None, args.start_step, args.rel_step)
        except (ContinuationError, RuntimeError, OSError, ValueError) as e:
            p.error(str(e).splitlines()[0])
        text = exact_table(res)
        print("\n" + text)
        (out / "exact_response.md").write_text(text + "\n")
        (out / "exact_response.json").write_text(json.dumps(res, indent=1))
        print(f"wrote {out / 'exact_response.md'}, exact_response.json")
        return 0
    if any(b < 1 for b in args.budgets):
        p.error(f"--budgets must be >= 1, got {args.budgets}")
    if args.start and not Path(args.start).is_file():
        p.error(f"--start {args.start}: no such path file")
    if args.newton_iters < 0:
        p.error(f"--newton-iters must be >= 0, got {args.newton_iters}")
    from continuation.apps.defaults import DEFAULT_CONFIG

    out = Path(args.out)
    p.out_folder(out)
    config = copy.deepcopy(DEFAULT_CONFIG)
    _, problem, system = build(config)
    try:
        x, mu = start_point(config, system, args.start or None)
    except (ValueError, OSError, KeyError) as e:  # PathFileError: not a path file, or another problem's
        p.error(f"--start {args.start}: {str(e).splitlines()[0]}")
    h = {"lambda": config["steps"]["size"], "gamma": 0.1 * float(mu[1])}
    print(f"start (lambda, gamma) = ({float(mu[0]):g}, {float(mu[1]):g}); h = {h}", flush=True)
    pred = {}
    for name, (batch, factor) in CURVATURES.items():
        t0 = time.perf_counter()
        pred[name] = predicted(config, x, mu, batch, factor)
        print(f"predicted, {name}: dC/dlambda {pred[name]['C']['lambda']:+.4f}, dC/dgamma "
              f"{pred[name]['C']['gamma']:+.5f}, dR/dlambda {pred[name]['R']['lambda']:+.3f} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    print("actual (corrector from the start, same random numbers):", flush=True)
    resp = actual(config["corrector"], config, x, mu, args.budgets, h)
    newton = newton_trace(config, x, mu, args.newton_iters) if args.newton_iters > 0 else {}
    lines = ["| response | " + " | ".join(f"actual T={T}" for T in args.budgets) + " | " + " | ".join(pred) + " |",
             "|---" * (1 + len(args.budgets) + len(pred)) + "|"]
    for f, q in (("C", "lambda"), ("C", "gamma"), ("R", "lambda"), ("D", "lambda"), ("R", "gamma"), ("D", "gamma")):
        lines.append(f"| d{f}/d{q} | " + " | ".join(f"{resp[T][q][f]:+.4g}" for T in args.budgets) + " | "
                     + " | ".join(f"{v[f][q]:+.4g}" for v in pred.values()) + " |")
    text = "\n".join(lines)
    if newton:
        nt, lt = newton["newton-cg"], newton["lbfgs"]
        text += (f"\n\nNewton on the deterministic float64 model (||grad J|| at the start {newton['grad0']:.3g}): "
                 f"after {len(nt)} Newton-CG steps ||grad J|| / start = {nt[-1]['grad']:.3g} (smallest "
                 f"{min(r['grad'] for r in nt):.3g}; inner solves that met negative curvature: "
                 f"{sum(r['negative_curvature'] for r in nt)} in {len(nt)} steps); after {20 * len(lt)} L-BFGS "
                 f"iterations {lt[-1]['grad']:.3g} (smallest {min(r['grad'] for r in lt):.3g}).")
    print("\n" + text)
    (out / "response.md").write_text(text + "\n")
    (out / "response.json").write_text(json.dumps({"h": h, "mu0": [float(v) for v in mu], "predicted": pred,
                                                   "actual": {str(k): v for k, v in resp.items()},
                                                   "newton": newton}, indent=1, default=float))
    plot(resp, pred, newton, out)
    print(f"wrote {out / 'response.md'}, response.json, response.png" + (", newton.png" if newton else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
