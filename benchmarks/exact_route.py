"""Cost at equal accuracy (issue 25, item 6): the exact iso-classification route against three
other ways of putting a network at the same equilibria, from the work ledger, side by side in
one run.

    python benchmarks/exact_route.py                                  # the small smooth MLP, 4 steps
    python benchmarks/exact_route.py --config validation/configs/digits_exact.toml --steps 2 --out out/exact_route_digits

The route is the configuration's (default `validation/configs/smooth_mlp_exact.toml`: the
674-parameter smooth MLP, the tangent predictor, trust-newton, the Newton projection holding C),
run for --steps steps from its start; its points (lambda_k, gamma_k) are the targets. Every
method must put the network at each target with |grad J| <= gtol (the configuration's corrector
gtol, or --gtol; absolute, the path's grad_norm_rel says what it is relative to the forces):

- exact route: the route's own work per step (predictor, corrector, projection, tangent solves);
- (a) the paper's procedure: eq. 31's finite-difference law (h = 0.02, four warm-started
  re-equilibrations per step besides the step's own) with the paper's equilibration (Adam, 600 updates on its
  schedule), no projection, from the same start over the same lambda; it is not a method that
  reaches a tolerance: the table gives the gradient it reaches and its gamma's distance from
  the exact path's;
- (b) from scratch: the configuration's corrector (L-BFGS into Newton's basin, then the trust
  region) from the initial parameters at each target;
- (c) naive warm start, Adam: Adam (torch defaults, lr --adam-lr) from the previous point's
  equilibrium at the new multipliers, until |grad J| <= gtol or --adam-budget updates;
- (c') warm start, corrector: the route's step corrector (the configuration's, without its
  L-BFGS start phase: Corrector.for_steps) from the previous point's equilibrium at the new
  multipliers: the route's corrector without predictor and projection, handed gamma_k.

Gradient-equivalents: gradients + HVPs x w_hvp + mixed partials x w_mixed + evaluations x w_eval,
the weights timed in this run at the route's last point (continuation/apps/experiments/routes.py,
`hvp_weight`); reported per unit of lambda travelled (the start's work is not counted). Targets
(issue 25): the exact route at least 30x cheaper than (b) and ahead of (c).

With --route PATH the route is not run: its first --steps steps are taken from PATH (a path of
the same configuration with every point's checkpoint, e.g. the run's own `--out`), and its work
and seconds are read from there.

Writes OUT/route.nc (the exact route, every point's checkpoint; not with --route), OUT/paper.nc, OUT/exact_route.md
(the table) and OUT/exact_route.json; prints the table. Cost: the route, the paper's route, and
(b), (c), (c') at each of its points.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse(argv):
    sys.path.insert(0, str(ROOT))
    from continuation.apps.cli import OneLineParser

    p = OneLineParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "validation/configs/smooth_mlp_exact.toml"),
                   help="the exact route's configuration (default: validation/configs/smooth_mlp_exact.toml)")
    p.add_argument("--steps", type=int, default=4, help="route steps (default 4)")
    p.add_argument("--route", default="", help="an existing path of the configuration's route (with its checkpoints) "
                                               "instead of running it; its first --steps steps are used")
    p.add_argument("--gtol", type=float, default=None, help="|grad J| every method reaches (default: the corrector's gtol)")
    p.add_argument("--adam-lr", type=float, default=1e-3, help="Adam's learning rate in (c) (default 1e-3)")
    p.add_argument("--adam-budget", type=int, default=20000, help="Adam's updates per point in (c) (default 20000)")
    p.add_argument("--paper-steps", type=int, default=600, help="Adam updates per equilibration in (a) (default 600)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="change the route's configuration, e.g. --set 'predictor.method=\"euler\"' (repeatable)")
    p.add_argument("--skip", default="", help="comma-separated methods to leave out: paper,scratch,warm-adam,warm")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--out", default="out/exact_route", help="output folder (default out/exact_route); the files this "
                                                             "benchmark writes there are replaced")
    a = p.parse_args(argv)
    if a.steps < 1:
        p.error(f"--steps must be >= 1, got {a.steps}")
    if a.gtol is not None and not (a.gtol > 0 and math.isfinite(a.gtol)):
        p.error(f"--gtol must be a finite number > 0, got {a.gtol}")
    if not (a.adam_lr > 0 and math.isfinite(a.adam_lr)):
        p.error(f"--adam-lr must be a finite number > 0, got {a.adam_lr}")
    if a.route and not Path(a.route).is_file():
        p.error(f"--route {a.route}: no such path file")
    for name in ("adam_budget", "paper_steps", "threads"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(a, name)}")
    skip = {s for s in a.skip.split(",") if s}
    unknown = skip - {"paper", "scratch", "warm-adam", "warm"}
    if unknown:
        p.error(f"--skip {','.join(sorted(unknown))}: valid are paper, scratch, warm-adam, warm")
    a.skip = skip
    a.parser = p
    return a


def adam_until(system, x, mu, gtol: float, lr: float, budget: int):
    """Adam (torch defaults) on J(., mu) from x until |grad J| <= gtol or `budget` updates;
    (x, |grad J|, updates, reached). Every gradient goes through the system (counted)."""
    import torch

    p = x.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([p], lr=lr)
    for k in range(budget + 1):
        g = system.gradient(p.detach(), mu)
        norm = float(g.norm())
        if norm <= gtol or k == budget or norm != norm:
            return p.detach(), norm, k, norm <= gtol
        p.grad = g
        opt.step()


def equivalents(work, w: dict) -> float:
    return work["gradients"] + w["weight"] * work["hvps"] + w["mixed_weight"] * work["mixed_partials"] + \
        w["eval_weight"] * work["evaluations"]


def main(argv=None) -> int:
    a = parse(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    import numpy as np
    import torch

    torch.set_num_threads(a.threads)
    from continuation.apps.experiments.routes import hvp_weight, override
    from continuation.apps.run import run_config
    from continuation.errors import ContinuationError
    from continuation.files.config import build, build_run, load_config
    from continuation.files.path import load_path, load_point
    from continuation.surface.system import EquilibriumSystem
    from problems.base import StochasticProblem

    p = a.parser
    try:
        config = override(load_config(a.config), a.set)
        config["output"] = {**config.get("output", {}), "progress": False, "checkpoint_every": 1}
        config.setdefault("stop", {})["max_steps"] = a.steps
        if config.get("corrector", {}).get("name") != "trust-newton":
            p.error(f"--config {a.config}: [corrector] name must be \"trust-newton\" (a corrector that reaches a "
                    f"tolerance), got {config.get('corrector', {}).get('name', 'none given')!r}")
        if a.gtol is not None:
            config["corrector"]["gtol"] = a.gtol
        r = build_run(config)
    except (ContinuationError, OSError, ValueError) as e:
        p.error(f"--config {a.config}: {str(e).splitlines()[0]}")
    if isinstance(r["problem"], StochasticProblem):
        p.error(f"--config {a.config}: the problem is stochastic ({r['problem'].name}); the exact route needs a "
                f"deterministic J (e.g. mlp-smooth without stochastic = true)")
    gtol = float(r["corrector"].gtol)
    out = p.out_folder(Path(a.out))
    for name in ("route.nc", "paper.nc"):  # this benchmark's own files, nothing else in the folder
        for f in (out / name, out / f"{name}.ckpt", out / f"{name}.journal", out / f"{name}.lock"):
            if f.is_dir():
                shutil.rmtree(f)
            elif f.exists():
                f.unlink()

    t0 = time.perf_counter()
    problem = r["problem"]
    template = problem.init_params(r["start"]["seed"])
    size = sum(v.numel() for part in template.values() for v in part.values())
    if a.route:
        route_file = Path(a.route)
        try:
            route = load_path(route_file).isel(step=slice(0, a.steps + 1))
            points = [load_point(route_file, k, size=size) for k in range(route.sizes["step"])]
        except (ContinuationError, OSError, ValueError) as e:
            p.error(f"--route {a.route}: {str(e).splitlines()[0]}")
        print(f"exact route: {a.config}, {a.steps} steps, every method to |grad J| <= {gtol:g}", flush=True)
        print(f"  route: {a.route}, its first {route.sizes['step'] - 1} steps", flush=True)
    else:
        print(f"exact route: {a.config}, {a.steps} steps, every method to |grad J| <= {gtol:g}", flush=True)
        route_file = out / "route.nc"
        route = run_config(config, route_file)
        reason = route.attrs.get("stop_reason", "")
        print(f"  route: {route.attrs['status']}{': ' + reason if reason else ''} ({time.perf_counter() - t0:.0f} s)",
              flush=True)
        points = [load_point(route_file, k) for k in range(route.sizes["step"])]
    n = route.sizes["step"] - 1
    if n < 1:
        print(f"{p.prog}: error: the exact route took no step (status {route.attrs['status']}: "
              f"{route.attrs.get('stop_reason', '')})", file=sys.stderr)
        return 1
    lam = route["lambda"].values
    travelled = float(lam[-1] - lam[0])
    weights = hvp_weight(r, config, route_file, repeats=20)
    cols = ("gradients", "hvps", "mixed_partials", "evaluations")
    rows = []

    def row(name, work, seconds, reached, worst_rel, note=""):
        work = {c: float(work.get(c, 0)) for c in cols}
        rows.append({"method": name, **{f"{c}_per_lambda": work[c] / travelled for c in cols},
                     "grad_equiv_per_lambda": equivalents(work, weights) / travelled,
                     "wall_s_per_lambda": seconds / travelled, "reached": reached, "worst_grad_norm_rel": worst_rel,
                     "note": note})

    rel = route["grad_norm_rel"].values[1:]
    row("exact route", {c: route[c].values[1:].sum() for c in cols}, float(route["seconds"].values[1:].sum()),
        bool((route["grad_norm"].values[1:] <= gtol * (1 + 1e-12)).all()), float(rel.max()))

    def fresh_system():
        s = EquilibriumSystem(problem, template, r["hvp_mode"])
        s.preconditioner = getattr(r["krylov"], "preconditioner", None)
        return s

    def per_point(name, solve):
        work, seconds, ok, worst, notes = {c: 0 for c in cols}, 0.0, True, 0.0, []
        for k in range(1, n + 1):
            system = fresh_system()
            mu = points[k]["mu"].to(dtype=system.view.dtype)
            t = time.perf_counter()
            x, reached, note = solve(system, k, mu)
            seconds += time.perf_counter() - t
            taken = system.ledger.take()
            for c in cols:
                work[c] += getattr(taken, c)
            g = float(system.gradient(x, mu).norm())  # the check: not counted (the ledger was taken)
            worst = max(worst, g / system.force_scale(x, mu))
            ok = ok and reached and g <= gtol * (1 + 1e-12)
            notes.append(note)
            print(f"  {name} point {k}/{n}: |grad J| {g:.2e} ({time.perf_counter() - t:.0f} s) {note}", flush=True)
        row(name, work, seconds, ok, worst, "; ".join(x for x in notes if x))

    def corrector():
        return build("corrector", copy.deepcopy(config["corrector"]))

    if "scratch" not in a.skip:
        def scratch(system, k, mu):
            res = corrector().correct(system, system.flatten(template).detach(), mu)
            return res.x, res.converged, "" if res.converged else res.status
        per_point("(b) from scratch", scratch)
    if "warm" not in a.skip:
        def warm(system, k, mu):  # the route's step corrector (Corrector.for_steps), from the last point
            res = corrector().for_steps().correct(system, points[k - 1]["x"].to(system.flatten(template)), mu)
            return res.x, res.converged, "" if res.converged else res.status
        per_point("(c') warm start, corrector", warm)
    if "warm-adam" not in a.skip:
        def warm_adam(system, k, mu):
            x, g, updates, reached = adam_until(system, points[k - 1]["x"].to(system.flatten(template)), mu, gtol,
                                                a.adam_lr, a.adam_budget)
            ends.append((updates, g, reached))
            return x, reached, ""
        ends = []
        per_point("(c) warm start, Adam", warm_adam)
        rows[-1]["note"] = (f"Adam lr {a.adam_lr:g}: {min(u for u, _, _ in ends)}-{max(u for u, _, _ in ends)} updates a "
                            f"point; {sum(r for _, _, r in ends)} of {len(ends)} points reached gtol; grad norm at the end "
                            f"{min(g for _, g, _ in ends):.1e} to {max(g for _, g, _ in ends):.1e}")
    paper_gamma = None
    if "paper" not in a.skip:
        pc = copy.deepcopy(config)
        pc["process"] = {"name": "iso-classification-fd", "h": 0.02, "clock": "lambda"}
        pc["predictor"], pc["projection"] = {"name": "none"}, {"name": "none"}
        pc["corrector"] = {"name": "adam", "steps": a.paper_steps}
        pc["krylov"] = {"name": "minres"}
        pc["start"] = {**pc.get("start", {}), "equilibrate": False}
        pc["steps"] = {"name": "fixed", "size": float(np.diff(lam).mean())}
        pc["stop"] = {"max_steps": n}
        pc.pop("monitor", None)
        t = time.perf_counter()
        paper = run_config(pc, out / "paper.nc", start_from=(route_file, 0))
        print(f"  paper's procedure: {paper.attrs['status']} ({time.perf_counter() - t:.0f} s)", flush=True)
        m = min(paper.sizes["step"], n + 1)
        paper_gamma = float(np.abs(paper["gamma"].values[1:m] - np.interp(paper["lambda"].values[1:m], lam,
                                                                          route["gamma"].values)).max())
        prel = paper["grad_norm_rel"].values[1:]
        row("(a) the paper's procedure", {c: paper[c].values[1:].sum() for c in cols},
            float(paper["seconds"].values[1:].sum()), bool((paper["grad_norm"].values[1:] <= gtol).all()),
            float(prel.max()), f"5 Adam runs of {a.paper_steps} updates a step (the step's, eq. 31's four, h = 0.02); "
                               f"max gamma distance from the exact path's "
                               f"{paper_gamma:.2e}")

    exact = rows[0]["grad_equiv_per_lambda"]
    lines = [f"Exact route: `{a.config}`, {n} steps, lambda {lam[0]:g} -> {lam[-1]:g}; every method to |grad J| <= "
             f"{gtol:g} at every point (the exact route's worst grad_norm_rel {rows[0]['worst_grad_norm_rel']:.1e}).",
             f"Weights (timed here, {weights['mode']}): an HVP {weights['weight']:.2f} gradients, a mixed partial "
             f"{weights['mixed_weight']:.2f}, an evaluation {weights['eval_weight']:.2f}.", "",
             "| method | reached at every point | worst grad_norm_rel | gradients / lambda | HVPs / lambda | "
             "grad-equiv / lambda | x exact route | wall s / lambda | wall x exact route | note |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    wall = rows[0]["wall_s_per_lambda"]
    for x in rows:
        short = "" if x["reached"] else " (short of gtol)"
        lines.append(f"| {x['method']} | {'yes' if x['reached'] else 'no'} | {x['worst_grad_norm_rel']:.1e} | "
                     f"{x['gradients_per_lambda']:.0f} | {x['hvps_per_lambda']:.0f} | {x['grad_equiv_per_lambda']:.0f} | "
                     f"{x['grad_equiv_per_lambda'] / exact:.2f}{short} | {x['wall_s_per_lambda']:.1f} | "
                     f"{x['wall_s_per_lambda'] / wall:.2f}{short} | {x['note']} |")
    by = {x["method"]: x for x in rows}
    verdicts = []
    if "(b) from scratch" in by:
        ratio = by["(b) from scratch"]["grad_equiv_per_lambda"] / exact
        verdicts.append(f"(b) / exact route = {ratio:.1f} (target >= 30: {'met' if ratio >= 30 else 'NOT met'})")
    for name in ("(c) warm start, Adam", "(c') warm start, corrector"):
        if name in by:
            x = by[name]
            ahead = x["grad_equiv_per_lambda"] > exact or not x["reached"]
            verdicts.append(f"{name}: {x['grad_equiv_per_lambda'] / exact:.2f} x the exact route in gradient-equivalents, "
                            f"{x['wall_s_per_lambda'] / wall:.2f} x in wall seconds"
                            f"{'' if x['reached'] else ' and short of the tolerance'} (exact route ahead: "
                            f"{'yes' if ahead else 'NO'})")
    verdicts.append("(The verdicts are in gradient-equivalents: HVPs weighted by one timed HVP; a dense solve's "
                    "HVPs are vmapped blocks, cheaper per product, so on a dense-solver route wall seconds can "
                    "disagree.)")
    text = "\n".join(lines + [""] + verdicts)
    print("\n" + text)
    (out / "exact_route.md").write_text(text + "\n")
    (out / "exact_route.json").write_text(json.dumps({"config": str(a.config), "steps": n, "gtol": gtol,
                                                      "weights": weights, "rows": rows}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
