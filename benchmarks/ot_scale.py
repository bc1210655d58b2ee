"""Optimal-transport plans at scale on the CPU (issue 15, item 3): Fashion-MNIST classes 0-4
(source) against 5-9 (target), n training images per task, the plan of the OT task path (eq. 36)
by each method, its wall time, the process's peak resident memory, and the plan's transport
cost sum_ij Gamma_ij |x_i - x_j|^2 (exact methods must agree; sinkhorn's is higher by its
entropic bias).

    python benchmarks/ot_scale.py                         # n = 1000, 2000, 5000, 10000
    python benchmarks/ot_scale.py --n 1000 20000 --methods assignment

Each (method, n) runs in its own process, so peak RSS is that plan's (the cost matrix is
n x n float64: 0.8 GB at n = 10,000). emd is POT's network simplex with ot_max_iter raised to
--emd-iter (dense plan, 2 n x n matrices); assignment is scipy's linear_sum_assignment (sparse
plan); sinkhorn is POT's log-domain Sinkhorn at reg = --reg relative to the mean cost. A run
past --timeout seconds is stopped and reported as such.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one(method: str, n: int, emd_iter: int, reg: float) -> dict:
    import numpy as np

    from problems.data import class_subset, load_fashion_mnist, train_val_split
    from problems.task_path import coupling, squared_distances

    data = load_fashion_mnist()
    tasks = []
    for classes in ("0-4", "5-9"):
        train, _ = train_val_split(class_subset(data, classes, relabel=True), 0.2, seed=0, limit=n)
        tasks.append(train.flat().x.numpy().astype(np.float64))
    start = time.perf_counter()
    plan = coupling(tasks[0], tasks[1], method, reg, num_itermax=emd_iter)
    seconds = time.perf_counter() - start
    if method == "assignment":
        coo = plan.tocoo()
        cost = float(sum(((tasks[0][i] - tasks[1][j]) ** 2).sum() * w for i, j, w in zip(coo.row, coo.col, coo.data)))
        support = int(coo.nnz)
    else:
        cost = float((plan * squared_distances(*tasks)).sum())
        support = int(np.count_nonzero(plan > 1e-12 * plan.max()))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"method": method, "n": n, "seconds": seconds, "peak_rss_mb": peak_mb, "cost": cost, "support": support}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, nargs="+", default=[1000, 2000, 5000, 10_000])
    p.add_argument("--methods", nargs="+", default=["assignment", "emd", "sinkhorn"],
                   choices=["assignment", "emd", "sinkhorn"])
    p.add_argument("--emd-iter", type=int, default=100_000_000)
    p.add_argument("--reg", type=float, default=0.05)
    p.add_argument("--timeout", type=float, default=900.0)
    p.add_argument("--_one", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._one:
        print(json.dumps(one(args._one[0], int(args._one[1]), args.emd_iter, args.reg)))
        return 0
    print(f"{'method':>11} {'n':>7} {'seconds':>9} {'peak RSS MB':>12} {'support':>9} {'transport cost':>15}")
    for n in args.n:
        for method in args.methods:
            cmd = [sys.executable, __file__, "--_one", method, str(n), "--emd-iter", str(args.emd_iter),
                   "--reg", str(args.reg)]
            try:
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, cwd=ROOT)
            except subprocess.TimeoutExpired:
                print(f"{method:>11} {n:>7} {'> ' + str(int(args.timeout)):>9}  stopped at the timeout", flush=True)
                continue
            if out.returncode != 0:
                why = (out.stderr.strip().splitlines() or ["no output"])[-1]
                print(f"{method:>11} {n:>7}  failed: {why[:150]}", flush=True)
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{method:>11} {n:>7} {r['seconds']:>9.1f} {r['peak_rss_mb']:>12.0f} {r['support']:>9} "
                  f"{r['cost']:>15.6f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
