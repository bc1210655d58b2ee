"""How far is the equilibrium that holds C - q h(t) on the OT path, and which gamma reaches it?

    python validation/fig5_transfer.py --path ot --out out/fot --sizes '{"hidden": 128, "batch": 200, "T": 1000}'
    python benchmarks/kl_equilibrium.py --path out/fot/transfer.nc --t 0.2 --gamma 24,80 --rounds 20

From a transfer path's first point (the source model theta0 at (lambda0, gamma0, t = 0)), Adam
is run at fixed multipliers (lambda0, gamma, t) for `--rounds` rounds of `--updates` updates
each (`continuation.surface.equilibrate`, its cosine schedule from `--lr` every round, a new batch every
update), and after every round the KL divergence from the soft label, C - q h(t) on the run's
evaluation measure (the whole plan, one fixed noise draw; `Problem.label_floor`), is printed
against KL0 = C at the start. A transfer that holds KL0 along t needs, at each t, a gamma whose
equilibrium has KL = KL0; where that takes more updates than the corrector runs between the
path's points, the secant makes up for the lag by raising gamma further (docs/transfer.md).

Cost: rounds x updates Adam updates (one gradient each) per (t, gamma), and one evaluation pass
per round.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path



def floats(flag: str, text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{flag} must be numbers separated by commas, got {text!r}") from None
    if not values:
        raise ValueError(f"{flag} is empty")
    return values


def main(argv=None) -> int:
    from continuation.apps.cli import OneLineParser

    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--path", required=True, help="an OT transfer path file (fig5_transfer.py --path ot's transfer.nc)")
    p.add_argument("--t", default="0.05,0.2", help="task times, comma-separated (default 0.05,0.2)")
    p.add_argument("--gamma", default="8,24,80", help="gammas, comma-separated (default 8,24,80)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of Adam per (t, gamma) (default 3)")
    p.add_argument("--updates", type=int, default=1500, help="Adam updates per round (default 1500)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate at each round's start (default 1e-3)")
    args = p.parse_args(argv)
    try:
        ts, gammas = floats("--t", args.t), floats("--gamma", args.gamma)
    except ValueError as e:
        p.error(str(e))
    if any(not 0 <= t <= 1 for t in ts):
        p.error(f"--t must lie in [0, 1], got {args.t}")
    if any(not g > 0 for g in gammas):
        p.error(f"--gamma must be positive, got {args.gamma}")
    if args.rounds < 1 or args.updates < 1 or not args.lr > 0:
        p.error("--rounds, --updates and --lr must be positive")
    if not Path(args.path).is_file():
        p.error(f"--path {args.path}: no such path file")

    import xarray as xr

    from continuation.files.config import build
    from continuation.surface.equilibrate import equilibrate
    from continuation.files.path import load_point
    from continuation.surface.system import EquilibriumSystem
    from problems import make_mu

    try:
        with xr.open_dataset(args.path) as ds:
            config = json.loads(ds.attrs["config"])
            lam0, gam0 = float(ds["lambda"][0]), float(ds["gamma"][0])
        x0 = load_point(args.path, 0)["x"]
    except (ValueError, OSError, KeyError) as e:
        p.error(f"--path {args.path}: not a path file with its config ({str(e).splitlines()[0]})")
    if config.get("problem", {}).get("path") != "ot":
        p.error(f"--path {args.path}: not an OT-path transfer (problem path = "
                f"{config.get('problem', {}).get('path')!r}); C - q h(t) is C itself on the mixture")
    problem = build("problem", config["problem"])
    system = EquilibriumSystem(problem, problem.init_params(0))
    kl0 = problem.evaluation_metrics(system.unflatten(x0), make_mu(lam0, gam0, 0.0, dtype=x0.dtype))["train_C"]
    print(f"start {args.path}: (lambda0, gamma0) = ({lam0:g}, {gam0:g}); KL0 = C0 = {kl0:.5f} nats per sample")
    print(f"  {'t':>7} {'gamma':>8} {'x gamma0':>8} {'updates':>8} {'KL':>9} {'KL/KL0 - 1':>11} {'s':>6}")
    for t in ts:
        floor = problem.label_floor(t, "evaluation")
        for gam in gammas:
            x, mu, start = x0, make_mu(lam0, gam, t, dtype=x0.dtype), time.perf_counter()
            for r in range(1, args.rounds + 1):
                x = equilibrate(system, x, mu, steps=args.updates, lr=args.lr, resample_every=1).x
                kl = problem.evaluation_metrics(system.unflatten(x), mu)["train_C"] - floor
                print(f"  {t:>7.4g} {gam:>8.4g} {gam / gam0:>8.3g} {r * args.updates:>8d} {kl:>9.5f} "
                      f"{kl / kl0 - 1:>+11.3f} {time.perf_counter() - start:>6.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
