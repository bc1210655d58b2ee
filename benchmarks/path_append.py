"""What writing a path costs per accepted point: the append in place (continuation/files/writer.py) and
the whole-file rewrite it replaced, side by side on the same rows.

The row is a real one: the second point of the linear-Gaussian iso-C run of
continuation/apps/experiments/gaussian_iso_c.toml (3 points run here, a few seconds), with its attributes
(settings and config as JSON) and its monitor variables: 25 variables along `step`, `eig` of 3
modes, no events; theta (4 parameters) checkpointed at every point (checkpoint_every = 1, so the
pruning deletes one file a point in both). Each writer gets `--points` points (default 1000), s
and lambda moving; every append is timed (its checkpoint included). Then, for the cost at a long
path without writing it point by point: a path of `--at` - 50 points (default 10,000) is written
whole (a resume: the writer rebuilds OUT and its journal) and 50 more points are appended.

Prints for each writer the mean and median ms per point over points 1-50 and the last 50, the
ratio end / start of the means, and the total seconds; then the same at `--at` points, and what
`finish` and a resume's rebuild cost at `--points` points.

    python benchmarks/path_append.py [--points N] [--at M] [--chunk C]

`--chunk` sets the chunk length along the unlimited dimensions (writer.CHUNK, 128). Times are
wall clock on a shared machine: the median is the figure to read when other work runs.
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

from continuation.files import writer as writer_module  # noqa: E402
from continuation.files.config import load_config  # noqa: E402
from continuation.files.schema import checkpoint_dir, checkpoint_file, rows_to_dataset, tmp_file  # noqa: E402
from continuation.apps.run import run_config  # noqa: E402
from continuation.files.writer import PathWriter  # noqa: E402


def real_row() -> tuple[dict, dict, torch.Tensor]:
    """The second row of a 3-point linear-Gaussian iso-C run, its attributes and its theta."""
    config = load_config(ROOT / "continuation" / "apps" / "experiments" / "gaussian_iso_c.toml")
    config["stop"] = {"max_steps": 2}
    config.setdefault("output", {})["progress"] = False
    ds = run_config(config)
    from continuation.files.schema import dataset_to_rows

    row = dataset_to_rows(ds)[1]
    row.pop("checkpoint")
    attrs = {k: v for k, v in ds.attrs.items() if k not in ("history", "Conventions", "continuation_version")}
    return row, attrs, torch.zeros(4, dtype=torch.float64)


def rows_for(row: dict, n: int, start: int = 0) -> list[dict]:
    out = []
    for k in range(start, start + n):
        r = copy.deepcopy(row)
        r["s"], r["lambda"] = 0.1 * k, 1.0 + 0.01 * k
        out.append(r)
    return out


class _RewriteWhole:
    """The writer before (reference only): per point the checkpoint, then rows_to_dataset of every
    row written to OUT.tmp by xarray and renamed over OUT; the checkpoint of k - 2 pruned."""

    def __init__(self, path, attrs):
        self.path, self.attrs, self.rows = Path(path), dict(attrs), []
        checkpoint_dir(self.path).mkdir(parents=True, exist_ok=True)

    def append(self, row, x, mu):
        step = len(self.rows)
        torch.save({"x": x, "mu": mu, "s": row["s"], "step": step}, checkpoint_file(self.path, step))
        self.rows.append(dict(row, checkpoint=step))
        if step >= 2:
            self.rows[step - 2]["checkpoint"] = -1
        _rewrite_whole(self.path, self.rows, self.attrs)
        if step >= 2:
            checkpoint_file(self.path, step - 2).unlink(missing_ok=True)


def _rewrite_whole(path, rows, attrs):
    ds = rows_to_dataset(rows, attrs)
    tmp = tmp_file(path)
    ds.to_netcdf(tmp, engine="netcdf4")
    os.replace(tmp, path)


def timed_appends(writer, rows, x) -> np.ndarray:
    ms = np.empty(len(rows))
    for i, r in enumerate(rows):
        mu = torch.tensor([r["lambda"], r["gamma"], r["t"]], dtype=torch.float64)
        t0 = time.perf_counter()
        writer.append(r, x, mu)
        ms[i] = 1e3 * (time.perf_counter() - t0)
    return ms


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=1000, help="points written by each writer (default 1000)")
    ap.add_argument("--at", type=int, default=10_000, help="length of the long-path probe (default 10000; 0: none)")
    ap.add_argument("--chunk", type=int, default=writer_module.CHUNK, help="chunk length along step and event")
    args = ap.parse_args(argv)
    if args.points < 100:
        ap.error("--points must be at least 100 (the first and last 50 points are compared)")
    writer_module.CHUNK = args.chunk
    torch.set_num_threads(1)

    t0 = time.perf_counter()
    row, attrs, x = real_row()
    n_step = sum(1 for k in row if k not in ("eig", "events")) + 1  # and the checkpoint
    print(f"path_append: {args.points} points of a linear-Gaussian row ({n_step} variables along step, eig of "
          f"{len(row['eig'])} modes, {len(row.get('events', []))} events; the row taken from a run of "
          f"{time.perf_counter() - t0:.1f} s), chunk {args.chunk}")
    rows = rows_for(row, args.points)
    print(f"{'writer':<30} {'ms/point 1-50':>22} {f'ms/point {args.points - 49}-{args.points}':>22} "
          f"{'end/start':>10} {'total s':>8}")
    print(f"{'':<30} {'mean':>10} {'median':>11} {'mean':>10} {'median':>11}")
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, make in (("append in place (journal)", lambda p: PathWriter(p, attrs)),
                           ("whole-file rewrite (before)", lambda p: _RewriteWhole(p, attrs))):
            out = Path(folder) / f"{len(results)}.nc"
            ms = timed_appends(make(out), rows, x)
            a, b = ms[:50], ms[-50:]
            results[name] = ms
            print(f"{name:<30} {a.mean():>10.2f} {np.median(a):>11.2f} {b.mean():>10.2f} {np.median(b):>11.2f} "
                  f"{b.mean() / a.mean():>10.2f} {ms.sum() / 1e3:>8.1f}")

        # finish and a resume's rebuild at --points points
        out = Path(folder) / "0.nc"
        from continuation.files.schema import dataset_to_rows
        from continuation.files.path import load_path

        t = time.perf_counter()
        ds = load_path(out)
        t_load = time.perf_counter() - t
        written = dataset_to_rows(ds)
        t = time.perf_counter()
        w = PathWriter(out, attrs, rows=written)
        t_resume = time.perf_counter() - t
        t = time.perf_counter()
        w.finish("finished", "benchmark")
        t_finish = time.perf_counter() - t
        print(f"at {args.points} points: load_path from the journal {1e3 * t_load:.0f} ms, a resume's rebuild of OUT "
              f"and the journal {1e3 * t_resume:.0f} ms, finish (OUT whole, journal deleted) {1e3 * t_finish:.0f} ms; "
              f"file {out.stat().st_size / 1e3:.0f} kB")

        if args.at:
            start = args.at - 50
            long_rows = rows_for(row, start)
            for k, r in enumerate(long_rows):
                r["checkpoint"] = k if k >= start - 2 else -1
            tail = rows_for(row, 50, start)
            line = []
            for name in results:
                out = Path(folder) / f"long_{len(line)}.nc"
                checkpoint_dir(out).mkdir(parents=True, exist_ok=True)
                for k in (start - 2, start - 1):
                    torch.save({"x": x}, checkpoint_file(out, k))
                t = time.perf_counter()
                if name.startswith("append"):
                    w = PathWriter(out, attrs, rows=copy.deepcopy(long_rows))
                else:
                    w = _RewriteWhole(out, attrs)
                    w.rows = copy.deepcopy(long_rows)
                    _rewrite_whole(out, w.rows, attrs)
                setup = time.perf_counter() - t
                ms = timed_appends(w, tail, x)
                line.append(f"{name.split(' (')[0]} {ms.mean():.2f} (median {np.median(ms):.2f}; "
                            f"{setup:.1f} s to write the first {start})")
            print(f"at {args.at} points, ms/point over 50 appends: " + "; ".join(line))
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
