"""What the cheap route's numbers mean (issue 25, item 5): the stochastic default route, run on an
unbiased stochastic estimate of the exact objective, from the exact path's start, at several draw
sequences and Adam budgets, against the exact path at the same lambda.

    python -m continuation run validation/configs/digits_exact.toml --out out/digits_exact.nc
    python benchmarks/stochastic_vs_exact.py --exact out/digits_exact.nc --config validation/configs/digits_exact.toml

The exact path is a path file of the exact route (`--exact`, written by `--config`; deterministic
`mlp-smooth`). Each stochastic route is the same problem with `stochastic = true` and
`draw_seed = s` (problems/smooth_network.py StochasticSmoothNetworkProblem: each image's noise one
of its K fixed draws, chosen anew every draw, so that its expectation is the exact J) and the
default run's route (continuation/apps/defaults.py): the exact iso-C law on a shifted, loosely
solved Hessian as the secant's first slope, no predictor, Adam with a budget of B updates per
corrector run (eta_max 1e-3, a new draw every 5 updates), training C (here the exact J's C) held
to 0.5% by the secant on gamma. Every route starts at the exact path's point 0, taken as it is
(`[start] equilibrate = false`), and takes fixed lambda steps of --step (default 0.05) to --to
(default: the exact path's last lambda). With the exact path's points every 0.01 (digits_exact.toml)
a route's points fall on the exact path's.

Reported, for every (draw_seed, budget) and every point the route wrote: gamma - gamma_exact,
R - R_exact, D - D_exact (nats per sample, the exact J's terms at the route's theta), C's drift
from the start (%), the route's status; the exact path's values are interpolated linearly in
lambda where a route's lambda falls between its points. A route whose point missed the C
tolerance ends "stopped" and says so (the miss rule): never silently.

Writes OUT/stochastic_vs_exact.md (the table), .csv and each route's path OUT/draw{s}_adam{B}.nc.
Cost: draws x budgets routes, each (lambda range / step) steps of up to 6 corrector runs.
"""

from __future__ import annotations

import copy
import csv
import math
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ROUTE_SECTIONS = ("process", "projection", "predictor", "krylov", "corrector")  # the default run's route


def default_route(budget: int) -> dict:
    """The default run's route sections (continuation/apps/defaults.py DEFAULT_CONFIG), its Adam
    corrector with `budget` updates per run."""
    from continuation.apps.defaults import DEFAULT_CONFIG

    route = {k: copy.deepcopy(DEFAULT_CONFIG[k]) for k in ROUTE_SECTIONS}
    route["corrector"]["steps"] = budget
    return route


def main(argv=None) -> int:
    sys.path.insert(0, str(ROOT))
    from continuation.apps.cli import OneLineParser

    p = OneLineParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--exact", required=True, help="the exact path (a path file of --config's route)")
    p.add_argument("--config", required=True, help="the exact route's configuration (its [problem])")
    p.add_argument("--draws", type=int, nargs="+", default=[0, 1, 2, 3], help="draw seeds (default 0 1 2 3)")
    p.add_argument("--budgets", type=int, nargs="+", default=[75, 150, 600], help="Adam budgets (default 75 150 600)")
    p.add_argument("--step", type=float, default=0.05, help="lambda step (default 0.05)")
    p.add_argument("--to", type=float, default=None, help="the routes' last lambda (default: the exact path's last)")
    p.add_argument("--out", default="out/stochastic_vs_exact")
    a = p.parse_args(argv)
    if any(b < 1 for b in a.budgets):
        p.error(f"--budgets must be >= 1, got {a.budgets}")
    if any(s < 0 for s in a.draws):
        p.error(f"--draws must be >= 0, got {a.draws}")
    if not (a.step > 0 and math.isfinite(a.step)):
        p.error(f"--step must be a finite number > 0, got {a.step}")
    for name in ("exact", "config"):
        if not Path(getattr(a, name)).is_file():
            p.error(f"--{name} {getattr(a, name)}: no such file")
    import numpy as np
    import torch

    from continuation.apps.run import run_config
    from continuation.errors import ContinuationError
    from continuation.engine.start import from_point
    from continuation.files.config import build_run, load_config
    from continuation.files.path import load_path

    try:
        base = load_config(a.config)
        exact = load_path(a.exact)
    except (ContinuationError, OSError, ValueError) as e:
        p.error(str(e).splitlines()[0])
    if base.get("problem", {}).get("name") != "mlp-smooth":
        p.error(f"--config {a.config}: [problem] name must be \"mlp-smooth\" (an exact objective with a stochastic "
                f"estimate)")
    lam_e = exact["lambda"].values
    if len(lam_e) < 2:
        p.error(f"--exact {a.exact}: holds {len(lam_e)} point(s); the comparison needs the path beyond its start")
    to = float(lam_e[-1]) if a.to is None else a.to
    if not (math.isfinite(to) and lam_e[0] < to <= lam_e[-1] + 1e-12):
        p.error(f"--to {a.to}: must lie in the exact path's lambda range ({lam_e[0]:g}, {lam_e[-1]:g}]")
    try:  # the problem as the routes build it, and the exact path's start on it (its size), before any route
        r = build_run({"problem": {**base["problem"], "stochastic": True}}, check_start=False)
        template = r["problem"].init_params(0)
        from_point(Path(a.exact), 0, torch.cat([v.reshape(-1) for part in template.values() for v in part.values()]))
    except (ContinuationError, OSError, ValueError) as e:
        p.error(f"--exact {a.exact} with --config {a.config}: {str(e).splitlines()[0]}")
    out = p.out_folder(Path(a.out))
    ref = {k: exact[k].values for k in ("gamma", "R", "D", "C")}
    C0 = float(ref["C"][0])
    rows = []
    for s in a.draws:
        for B in a.budgets:
            c = {"problem": {**base["problem"], "stochastic": True, "draw_seed": s}, **default_route(B),
                 "start": {**base.get("start", {}), "equilibrate": False},
                 "steps": {"name": "fixed", "size": a.step},
                 "stop": {"target": {"lambda": to}, "max_steps": 1000},
                 "output": {"progress": False}}
            path = out / f"draw{s}_adam{B}.nc"
            for f in (path, Path(f"{path}.ckpt"), Path(f"{path}.journal"), Path(f"{path}.lock")):
                if f.is_dir():
                    shutil.rmtree(f)
                elif f.exists():
                    f.unlink()
            t0 = time.perf_counter()
            try:
                ds = run_config(c, path, start_from=(Path(a.exact), 0))
            except ContinuationError as e:
                print(f"draw {s}, Adam {B}: failed: {str(e).splitlines()[0]}", flush=True)
                rows.append({"draw_seed": s, "budget": B, "step": -1, "status": f"failed: {str(e).splitlines()[0]}"})
                continue
            status = str(ds.attrs.get("status", ""))
            reason = str(ds.attrs.get("stop_reason", "") or "")
            print(f"draw {s}, Adam {B}: {status} {reason} ({time.perf_counter() - t0:.0f} s)", flush=True)
            for k in range(1, ds.sizes["step"]):
                lam = float(ds["lambda"].values[k])
                at = {name: float(np.interp(lam, lam_e, v)) for name, v in ref.items()}
                rows.append({"draw_seed": s, "budget": B, "step": k, "lambda": lam,
                             "gamma": float(ds["gamma"].values[k]), "gamma_exact": at["gamma"],
                             "dgamma": float(ds["gamma"].values[k]) - at["gamma"],
                             "dR": float(ds["train_R"].values[k]) - at["R"],
                             "dD": float(ds["train_D"].values[k]) - at["D"],
                             "C_drift_pct": 100 * (float(ds["train_C"].values[k]) / C0 - 1),
                             "grad_norm_rel": float(ds["grad_norm_rel"].values[k]) if "grad_norm_rel" in ds else float("nan"),
                             "status": status + (f" ({reason})" if reason else "")})
    lines = [f"Exact path: `{a.exact}` (lambda {lam_e[0]:g} -> {lam_e[-1]:g}, {len(lam_e)} points, C0 = {C0:.10g}); "
             f"stochastic routes: the default run's route on `stochastic = true` from its point 0, lambda steps "
             f"{a.step:g} to {to:g}.", "",
             "| draw seed | Adam budget | lambda | gamma | gamma - exact | R - exact | D - exact | C drift % | "
             "grad_norm_rel | route status |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["step"] < 0:
            lines.append(f"| {r['draw_seed']} | {r['budget']} | - | - | - | - | - | - | - | {r['status']} |")
            continue
        lines.append(f"| {r['draw_seed']} | {r['budget']} | {r['lambda']:.4f} | {r['gamma']:.5f} | {r['dgamma']:+.2e} | "
                     f"{r['dR']:+.4f} | {r['dD']:+.4f} | {r['C_drift_pct']:+.3f} | {r['grad_norm_rel']:.1e} | "
                     f"{r['status']} |")
    text = "\n".join(lines)
    print("\n" + text)
    (out / "stochastic_vs_exact.md").write_text(text + "\n")
    keys = sorted({k for r in rows for k in r})
    with open(out / "stochastic_vs_exact.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {out / 'stochastic_vs_exact.md'}, stochastic_vs_exact.csv")
    failed = [r for r in rows if str(r["status"]).startswith("failed")]
    if failed:
        print(f"{p.prog}: error: {len(failed)} route(s) failed (the table's 'failed' rows)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
