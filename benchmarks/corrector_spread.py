"""How far does one corrector run move the held functionals with no step at all? The noise
floor of a transfer's projection on a stochastic problem.

    python validation/fig5_transfer.py --dataset digits --condition geodesic --k 0.5 --out out/fig5g
    python benchmarks/corrector_spread.py --path out/fig5g/transfer.nc --draws 5

From a transfer path's first point (theta0 at mu0 = (lambda0, gamma0, t = 0)), the run's own
corrector (its [corrector] table: Adam, T updates on the paper's schedule, a new batch every
update) is run at mu0 itself for draws 1..N (the draws steps 1..N of the run would use), and
C, R, D are measured on the run's evaluation measure (the whole training set, one fixed noise
draw). Printed per draw: C's relative change and D - k R's change on its scale
|D0 - D_floor| + |k| R0 (the geodesic's H_scale; docs/transfer.md). A projection holds a
functional by moving the multipliers so that the run from the prediction lands on the start
value for that step's draw; when the spread is large against the target, the multipliers must
make up for the draw's noise as well as for the step.

Cost: N corrector runs and N + 1 evaluation passes.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path



def main(argv=None) -> int:
    from continuation.apps.cli import OneLineParser

    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--path", required=True, help="a transfer path file (validation/fig5_transfer.py's transfer.nc)")
    p.add_argument("--draws", type=int, default=5, help="corrector runs, one per draw 1..N (default 5)")
    p.add_argument("--k", type=float, default=None, help="the slope k of D - k R (default: the run's, else 0.5)")
    args = p.parse_args(argv)
    if args.draws < 1:
        p.error(f"--draws must be >= 1, got {args.draws}")
    if not Path(args.path).is_file():
        p.error(f"--path {args.path}: no such path file")

    import xarray as xr

    from continuation.files.config import build
    from continuation.files.path import load_point
    from continuation.surface.system import EquilibriumSystem

    try:
        with xr.open_dataset(args.path) as ds:
            config = json.loads(ds.attrs["config"])
            mu = [float(ds["lambda"][0]), float(ds["gamma"][0]), float(ds["t"][0])]
        x0 = load_point(args.path, 0)["x"]
    except (ValueError, OSError, KeyError) as e:
        p.error(f"--path {args.path}: not a path file with its config ({str(e).splitlines()[0]})")
    process = config.get("process", {})
    if args.k is not None:
        k = args.k
    elif process.get("condition") == "geodesic":
        k = float(process.get("k", 0.0))
    else:
        k = 0.5
        print("the run is not a geodesic: D - k R with k = 0.5 (--k to choose)")
    problem = build("problem", config["problem"])
    corrector = build("corrector", config["corrector"])
    system = EquilibriumSystem(problem, problem.init_params(0))
    import torch

    m = torch.tensor(mu, dtype=x0.dtype)
    floor = problem.distortion_floor()

    def values(x):
        f = problem.evaluation_metrics(system.unflatten(x), m)
        return f["train_C"], f["train_D"], f["train_R"]

    C0, D0, R0 = values(x0)
    H0, scale = D0 - k * R0, abs(D0 - floor) + abs(k) * abs(R0)
    print(f"start {args.path}: (lambda, gamma, t) = ({mu[0]:g}, {mu[1]:g}, {mu[2]:g}); C0 = {C0:.5f}, "
          f"D0 = {D0:.4f} (floor {floor:.4f}), R0 = {R0:.4f}; D - {k:g} R on the scale {scale:.4f} nats")
    print(f"corrector: {config['corrector']}")
    print(f"  {'draw':>4} {'C change %':>11} {'D - kR change, % of scale':>26} {'R change, nats':>15} "
          f"{'D change, nats':>15}")
    changes = []
    for draw in range(1, args.draws + 1):
        problem.resample(draw)
        r = corrector.correct(system, x0, m)
        C, D, R = values(r.x)
        dc, dh = 100 * (C / C0 - 1), 100 * ((D - k * R) - H0) / scale
        changes.append((dc, dh))
        print(f"  {draw:>4} {dc:>+11.2f} {dh:>+26.2f} {R - R0:>+15.4f} {D - D0:>+15.4f}", flush=True)
    n = len(changes)
    rms = [math.sqrt(sum(c[i] ** 2 for c in changes) / n) for i in (0, 1)]
    print(f"  rms over {n} draws: C {rms[0]:.2f}%, D - kR {rms[1]:.2f}% of scale")
    return 0


if __name__ == "__main__":
    sys.exit(main())
