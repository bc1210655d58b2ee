"""Iso-classification routes side by side from one equilibrated start (issue 14).

    python benchmarks/iso_c_routes.py                                   # digits, every route, 4 points each
    python benchmarks/iso_c_routes.py --dataset fashion-mnist --points 3 --out out/routes_fmnist
    python benchmarks/iso_c_routes.py --routes paper,adam150-secant --threads 2
    python benchmarks/iso_c_routes.py --dataset mnist --data-dir DIR --full --device cuda
    python benchmarks/iso_c_routes.py --set problem.limit=200 --set start.train_steps=50   # a smaller run
    python benchmarks/iso_c_routes.py --from out/default/path.nc --from-step 0   # start: a point of a run

A route is a process (exact iso-C law, or the paper's finite-difference law), a predictor, a
corrector budget and a projection. Every route starts from the same equilibrated point (pre-trained
once and written to OUT/start.nc; each route is `python -m continuation run ROUTE.toml --from
OUT/start.nc` with `[start] equilibrate = false`) and takes the same lambda steps (0.075). Each
route runs in its own process (continuation/apps/child.py), one after another, so that its peak
memory is its own and no two routes share the cores. With `--from PATH.nc --from-step K` the start is point K of an earlier
run of the same problem (point 0 of the default run is the digits start: the same pre-training
and settling), taken as it is, without pre-training or re-equilibration.

Reported per unit of lambda travelled (the start point's work is not counted):
- gradient-equivalents: gradients + HVPs x (HVP cost / gradient cost) + mixed-partial columns x
  (their cost / gradient cost) + evaluations x (an evaluation's cost / gradient cost), from the
  path's work columns (counted where spent: continuation/surface/work.py). The costs are timed in
  this run at the start point on the batches the route uses (a gradient on the corrector's
  `grad_batch`, an HVP on `hvp_batch`, reverse-over-reverse as the law uses it, the one-off
  graph build of the Hessian operator spread over `krylov.maxiter` products; a mixed-partial
  column, forward-over-reverse in mu on `grad_batch`; an evaluation, R, D, C on `grad_batch`);
- wall seconds (the path's per-point `seconds`) and their ratio to the paper's procedure;
- peak resident memory of the route's process (MiB, host memory; GPU memory is not counted);
- the largest drift of training C (one fixed noise draw over the training set) from its start,
  in percent; and the change of training R and of training D over the route.

The routes (`ROUTES`):
- paper: the paper's procedure, eq. 31's finite-difference law (h = 0.02) and the paper's Adam
  schedule (600 updates per run), no projection;
- adam600-secant: the default before issue 14, the exact law, no predictor, Adam 600, training C
  held to 0.5% by the secant projection on gamma;
- ode-euler-adam600: the exact law integrated by the ode predictor (one Euler step: theta moved
  along the tangent),
  Adam 600, no projection;
- law-adam150: the exact law alone with Adam 150 (no projection);
- adam150-secant: Adam 150 with the secant;
- adam75-secant: today's default (`continuation/apps/defaults.py`), Adam 75 with the secant;
- adam150-secant-reuse: Adam 150 with the secant whose first iterate uses the response the
  previous step measured (`reuse_response`), not the tangents' prediction.

Output: the table on stdout and in OUT/routes.md, the numbers in OUT/routes.csv, each route's
path OUT/ROUTE.nc, and OUT/routes.png (training C drift and the R-D trade-off along lambda).

This module is the experiment; benchmarks/iso_c_routes.py is its command line (`main(argv,
configs)`, which `python -m continuation report` also calls in-process). The Fashion-MNIST and
MNIST problems are the Fig. 2 sweep's configurations, read from the repository's
validation/configs (`configs`, which the script passes); the digits need none.
"""

from __future__ import annotations

import argparse
import copy
import csv
import os
import sys
import tomllib
from pathlib import Path

import numpy as np

from continuation.apps.child import run_child
from continuation.files.config import write_toml

H_FD = 0.02
STEP = 0.075

ROUTES = {
    "paper": {"process": {"name": "iso-classification-fd", "h": H_FD, "clock": "lambda"},
              "projection": {"name": "none"}, "predictor": {"name": "none"}, "steps": 600},
    "adam600-secant": {"projection": {"name": "secant"}, "predictor": {"name": "none"}, "steps": 600},
    "ode-euler-adam600": {"projection": {"name": "none"}, "predictor": {"name": "ode", "method": "euler"}, "steps": 600},
    "law-adam150": {"projection": {"name": "none"}, "predictor": {"name": "none"}, "steps": 150},
    "adam150-secant": {"projection": {"name": "secant"}, "predictor": {"name": "none"}, "steps": 150},
    "adam75-secant": {"projection": {"name": "secant"}, "predictor": {"name": "none"}, "steps": 75},
    "adam150-secant-reuse": {"projection": {"name": "secant", "reuse_response": True}, "predictor": {"name": "none"},
                             "steps": 150},
}
EXACT_LAW = {"name": "iso-classification", "tol": 5e-3, "measure": "evaluation", "clock": "lambda"}


def base_config(dataset: str, full: bool, data_dir: str, device: str, configs: Path | None = None) -> dict:
    """The problem, start and corrector settings of the route family: the default run's on the
    digits, the Fig. 2 sweep's (CPU size, or `_full` with `full`) on Fashion-MNIST or MNIST, read
    from the folder `configs` (the repository's validation/configs; ValueError without it)."""
    if dataset == "digits":
        from continuation.apps.defaults import DEFAULT_CONFIG
        config = copy.deepcopy(DEFAULT_CONFIG)
    else:
        name = {"fashion-mnist": "fig2_mnist_full" if full else "fig2_fashion_mnist", "mnist": "fig2_mnist_full"}[dataset]
        if configs is None or not (Path(configs) / f"{name}.toml").is_file():
            raise ValueError(f"--dataset {dataset}: needs the Fig. 2 configuration {name}.toml of the repository's "
                             f"validation/configs (run benchmarks/iso_c_routes.py from the repository)")
        with open(Path(configs) / f"{name}.toml", "rb") as f:
            config = tomllib.load(f)
        config.pop("sweep", None)
        config["problem"]["dataset"] = dataset
        config.setdefault("process", dict(EXACT_LAW))
    if data_dir:
        config["problem"]["data_dir"] = data_dir
    config["problem"]["device"] = device
    config["output"] = {"progress": False}
    return config


def override(config: dict, settings: list[str]) -> dict:
    """`config` with each "SECTION.KEY=VALUE" of `settings` set (VALUE a TOML value: 200, 0.5,
    "cpu", [1, 2]); a malformed one is a ValueError naming it. The routes' own settings (process,
    predictor, projection, corrector steps, step size, stop) are applied after these."""
    c = copy.deepcopy(config)
    for item in settings:
        key, eq, text = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not (eq and dot and section and name):
            raise ValueError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. problem.limit=200")
        try:
            value = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"--set {item!r}: {text.strip()!r} is not a TOML value ({e})") from None
        c.setdefault(section, {})[name] = value
    return c


def start_config(base: dict, taken: bool = False) -> dict:
    """The start run: pre-training and settling, no steps; `taken`: a point of an earlier run as it is."""
    c = copy.deepcopy(base)
    c["process"], c["projection"], c["predictor"] = dict(EXACT_LAW), {"name": "none"}, {"name": "none"}
    c["stop"] = {"max_steps": 0}
    if taken:
        c["start"] = {**c["start"], "equilibrate": False}
    return c


def route_config(base: dict, route: dict, points: int) -> dict:
    c = copy.deepcopy(base)
    c["process"] = dict(route.get("process", EXACT_LAW))
    c["projection"], c["predictor"] = dict(route["projection"]), dict(route["predictor"])
    c["corrector"] = {**c["corrector"], "steps": route["steps"]}
    c["start"] = {**c["start"], "equilibrate": False, "train_steps": 0}
    c["steps"] = {"name": "fixed", "size": STEP}
    lam0 = float(c["start"]["lambda"])
    c["stop"] = {"max_steps": points + 5, "target": {"lambda": round(lam0 + points * STEP, 12)}}
    return c


def hvp_weight(r: dict, config: dict, start: Path, repeats: int) -> dict:
    """HVP cost over gradient cost at the start point, as the routes pay them (r: build_run(config))."""
    import torch

    from continuation.apps.experiments.hvp_cost import timed
    from continuation.engine.start import from_point
    from continuation.surface.system import EquilibriumSystem
    from solvers import hessian_operator

    problem = r["problem"]
    system = EquilibriumSystem(problem, problem.init_params(0))
    x, mu = from_point(start, -1, system.flatten(problem.init_params(0)))
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    system.gradient(x, mu)
    t_grad = timed(lambda: system.gradient(x, mu), repeats, sync)
    setup = timed(lambda: hessian_operator(system.hessian_objective, x, mu, r["hvp_mode"]), 3, sync)
    op = hessian_operator(system.hessian_objective, x, mu, r["hvp_mode"])
    v = torch.randn_like(x)
    op(v)
    t_hvp = timed(lambda: op(v), repeats, sync)
    per_setup = max(int(config["krylov"].get("maxiter") or 30), 1)
    direction = torch.zeros(1, mu.numel(), dtype=mu.dtype, device=mu.device)
    direction[0, 0] = 1.0
    t_mixed = timed(lambda: system.mixed_partials(x, mu, direction), max(repeats // 4, 1), sync)
    t_eval = timed(lambda: system.values(x, mu), repeats, sync)
    return {"t_grad": t_grad, "t_hvp": t_hvp, "t_setup": setup, "t_mixed": t_mixed, "t_eval": t_eval,
            "weight": (t_hvp + setup / per_setup) / t_grad, "mixed_weight": t_mixed / t_grad,
            "eval_weight": t_eval / t_grad, "mode": r["hvp_mode"]}


def summarise(name: str, ds, weights: dict, rss: float, rc: int, reason: str) -> dict:
    lam = ds["lambda"].values
    travelled = float(lam[-1] - lam[0])
    total = lambda v: float(ds[v].values[1:].sum()) if v in ds else 0.0  # noqa: E731 (a file before the ledger lacks some)
    grads, hvps, mixed, evals = total("gradients"), total("hvps"), total("mixed_partials"), total("evaluations")
    c = ds["train_C"].values
    per = (lambda v: v / travelled) if travelled > 0 else (lambda v: float("nan"))
    equiv = grads + weights["weight"] * hvps + weights["mixed_weight"] * mixed + weights["eval_weight"] * evals
    return {"route": name, "points": int(len(lam) - 1), "lambda_travelled": travelled,
            "grad_equiv_per_lambda": per(equiv), "gradients_per_lambda": per(grads),
            "hvps_per_lambda": per(hvps), "mixed_partials_per_lambda": per(mixed), "evaluations_per_lambda": per(evals),
            "wall_s_per_lambda": per(float(ds["seconds"].values[1:].sum())),
            "peak_rss_mib": rss, "max_C_drift_pct": float(np.abs(c / c[0] - 1).max() * 100),
            "dR": float(ds["train_R"].values[-1] - ds["train_R"].values[0]),
            "dD": float(ds["train_D"].values[-1] - ds["train_D"].values[0]),
            "status": str(ds.attrs.get("status", "")) if rc == 0 else f"failed: {reason}"}


def table(rows: list[dict], weight: dict, header: str) -> str:
    paper = next((r["wall_s_per_lambda"] for r in rows if r["route"] == "paper"), float("nan"))
    lines = [header, "",
             f"HVP / gradient cost at the start ({weight['mode']}): {weight['t_hvp'] * 1e3:.2f} ms / "
             f"{weight['t_grad'] * 1e3:.2f} ms, graph build {weight['t_setup'] * 1e3:.2f} ms; weight "
             f"{weight['weight']:.2f} gradient-equivalents per HVP; a mixed-partial column "
             f"{weight['t_mixed'] * 1e3:.2f} ms ({weight['mixed_weight']:.2f}), an evaluation "
             f"{weight['t_eval'] * 1e3:.2f} ms ({weight['eval_weight']:.2f})", "",
             "| route | points | grad-equiv / lambda | wall s / lambda | wall ratio | peak MiB | max train-C drift % "
             "| dR (nats) | dD (nats) | status |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['route']} | {r['points']} | {r['grad_equiv_per_lambda']:.0f} | {r['wall_s_per_lambda']:.1f} | "
                     f"{_ratio(r['wall_s_per_lambda'], paper)} | {r['peak_rss_mib']:.0f} | {r['max_C_drift_pct']:.3f} | "
                     f"{r['dR']:+.3f} | {r['dD']:+.3f} | {r['status']} |")
    return "\n".join(lines)


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.3f}" if b == b and b > 0 else "-"  # "-" without the paper's route in this run


def _steps(n: int) -> str:
    return f"{n} step{'s' if n != 1 else ''}"


def check_configs(p, base: dict, names: list[str], points: int, start_from: str, from_step: int) -> dict:
    """Every configuration the routes will run, checked before any work (ConfigError: one line);
    returns build_run(base)."""
    from continuation.files.config import build, build_run

    try:
        built = build_run(copy.deepcopy(base), check_start=False)  # the base as given (the HVP timing uses it)
        for name in names:
            c = route_config(base, ROUTES[name], points)
            for section in ("process", "predictor", "corrector", "projection", "steps"):
                build(section, copy.deepcopy(c[section]))
    except Exception as e:  # ConfigError, ValueError from a strategy, a device that is not there
        p.error(f"{type(e).__name__}: {str(e).splitlines()[0]}" if not str(e).startswith("[") else str(e).splitlines()[0])
    if start_from:
        from continuation.files.path import load_path
        try:
            n = load_path(start_from).sizes["step"]
        except Exception as e:
            p.error(f"--from {start_from}: {str(e).splitlines()[0]}")
        if not -n <= from_step < n:
            p.error(f"--from-step {from_step}: {start_from} has {n} points (0 .. {n - 1})")
    return built


def plot(paths: dict, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, ds in paths.items():
        c = ds["train_C"].values
        a.plot(ds["lambda"].values, (c / c[0] - 1) * 100, marker="o", label=name)
        b.plot(ds["train_D"].values, ds["train_R"].values, marker="o", label=name)
    a.set(xlabel="lambda", ylabel="training C drift from start (%)", title="iso-C: what each route holds")
    a.axhline(0.5, color="grey", ls=":"), a.axhline(-0.5, color="grey", ls=":")
    b.set(xlabel="training D (nats per sample)", ylabel="training R (nats per sample)", title="rate-distortion")
    a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv=None, configs: Path | None = None) -> int:
    """The command line (benchmarks/iso_c_routes.py); `configs`: the folder of the Fig. 2
    configurations (validation/configs) for --dataset fashion-mnist and mnist."""
    from continuation.apps.scripts import OneLineParser

    p = OneLineParser(prog="iso_c_routes.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits", choices=["digits", "fashion-mnist", "mnist"])
    p.add_argument("--data-dir", default="", help="folder of MNIST (torchvision layout) for --dataset mnist")
    p.add_argument("--full", action="store_true", help="the full-size Fig. 2 problem (fig2_mnist_full.toml; for one GPU)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--points", type=int, default=4, help="lambda steps of 0.075 per route (default 4)")
    p.add_argument("--routes", default=",".join(ROUTES), help=f"comma-separated, from {', '.join(ROUTES)}")
    p.add_argument("--threads", type=int, default=1, help="torch threads of every run (default 1)")
    p.add_argument("--out", default="", help="output folder (default out/routes_DATASET)")
    p.add_argument("--repeats", type=int, default=20, help="timings of the gradient and the HVP (median)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a setting of the base configuration (a TOML value; repeatable), e.g. "
                        "--set problem.limit=200 --set start.train_steps=50")
    p.add_argument("--from", dest="start_from", default="", help="start from a point of this path file (of the same "
                                                                 "problem) instead of pre-training")
    p.add_argument("--from-step", type=int, default=None, help="which point of --from (default 0, the start)")
    args = p.parse_args(argv)
    if args.from_step is not None and not args.start_from:
        p.error("--from-step needs --from (the path file to take the point from)")
    args.from_step = 0 if args.from_step is None else args.from_step
    if args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    if args.repeats < 1:
        p.error(f"--repeats must be >= 1, got {args.repeats}")
    names = [n.strip() for n in args.routes.split(",") if n.strip()]
    bad = [n for n in names if n not in ROUTES]
    if bad or not names:
        p.error(f"--routes: unknown route {bad[0] if bad else '(none given)'!r}; choose from {', '.join(ROUTES)}")
    if args.points < 1:
        p.error(f"--points must be >= 1, got {args.points}")
    if args.dataset == "mnist" and not args.data_dir:
        p.error("--dataset mnist needs --data-dir (a folder with MNIST in torchvision's layout)")
    if args.start_from and not Path(args.start_from).is_file():
        p.error(f"--from {args.start_from}: no such path file")
    out = Path(args.out or f"out/routes_{args.dataset}")
    p.out_folder(out)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    os.environ.update({k: env[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")})
    import torch
    torch.set_num_threads(args.threads)
    from continuation.files.path import load_path

    try:
        base = override(base_config(args.dataset, args.full, args.data_dir, args.device, configs), args.set)
    except ValueError as e:
        p.error(str(e))
    built = check_configs(p, base, names, args.points, args.start_from, args.from_step)
    start = out / "start.nc"
    if not start.exists():
        write_toml(start_config(base, taken=bool(args.start_from)), out / "start.toml")
        if args.start_from:
            print(f"start: point {args.from_step} of {args.start_from} -> {start}", flush=True)
            taken = ["--from", str(Path(args.start_from).resolve()), "--from-step", str(args.from_step)]
        else:
            print(f"start: {base['start']['train_steps']} Adam updates and {base['start'].get('settle', 1)} corrector "
                  f"runs at (lambda, gamma) = ({base['start']['lambda']}, {base['start']['gamma']}) -> {start}",
                  flush=True)
            taken = []
        rc, wall, _, last = run_child(["-m", "continuation", "run", str(out / "start.toml"), "--out", str(start),
                                       "--quiet", *taken], env)
        if rc != 0:
            print(f"iso_c_routes: the start run failed: {last}", file=sys.stderr)
            return 1
        print(f"  {wall:.0f} s", flush=True)
    else:
        print(f"start: reusing {start}", flush=True)
    weight = hvp_weight(built, base, start, args.repeats)
    rows, paths = [], {}
    for name in names:
        cfg_path, path = out / f"{name}.toml", out / f"{name}.nc"
        write_toml(route_config(base, ROUTES[name], args.points), cfg_path)
        for stale in (path, Path(str(path) + ".journal")):
            stale.unlink(missing_ok=True)
        print(f"route {name}: {_steps(args.points)} of {STEP} ...", end=" ", flush=True)
        rc, wall, rss, last = run_child(["-m", "continuation", "run", str(cfg_path), "--from", str(start), "--out",
                                         str(path), "--quiet"], env)
        print(f"{wall:.0f} s{'' if rc == 0 else ' (failed: ' + last + ')'}", flush=True)
        if not path.exists():
            continue
        ds = load_path(path)
        paths[name] = ds
        rows.append(summarise(name, ds, weight, rss, rc, last))
    header = (f"Iso-C routes on {args.dataset}{' (full size)' if args.full else ''}, device {args.device}, "
              f"{args.threads} thread(s), torch {torch.__version__}; from lambda = {base['start']['lambda']}, "
              f"gamma = {base['start']['gamma']}, {_steps(args.points)} of {STEP} per route")
    text = table(rows, weight, header)
    print("\n" + text)
    (out / "routes.md").write_text(text + "\n")
    with open(out / "routes.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["route"])
        w.writeheader()
        w.writerows(rows)
    if paths:
        plot(paths, out / "routes.png")
    print(f"wrote {out / 'routes.md'}, {out / 'routes.csv'}, {out / 'routes.png'}")
    return 0 if len(rows) == len(names) else 1


if __name__ == "__main__":
    sys.exit(main())
