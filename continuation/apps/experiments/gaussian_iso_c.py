"""Iso-classification on the linear-Gaussian problem, checked against the closed-form iso-C curve.

    python validation/gaussian_iso_c.py --out out/gaussian_iso_c

Runs gaussian_iso_c.toml (beside this module, `CONFIG`; lambda 1 -> 4, exact law, rk4 predictor, Newton
corrector), writes the path (iso_c.nc), its figure (iso_c.png), and prints, for that run and for
each predictor x corrector variant and the paper's finite-difference law: the largest relative
error of gamma against the closed-form curve C(lambda, gamma) = C0, the largest C drift, the
first-law residual, and the work per accepted point. With `--json FILE` the table is also
written to FILE (one object per run, the columns by name; `python -m continuation report` reads it).

`gaussian_iso_c(out, quick, json_path)` is the experiment (the report calls it); `main(argv)` the
command line of validation/gaussian_iso_c.py.
"""

from __future__ import annotations

import sys
import copy
import json
import shutil
import time
from pathlib import Path

import numpy as np
from scipy.optimize import brentq

from continuation.apps.scripts import run_experiment
from continuation.files.config import build_run, load_config
from continuation.apps.plot import plot_paths
from continuation.apps.run import run_config

CONFIG = Path(__file__).with_name("gaussian_iso_c.toml")  # package data (pyproject.toml)


def closed_form_errors(closed, ds):
    C0 = ds.attrs["C0"]
    err = []
    for lam, gam in zip(ds["lambda"].values, ds["gamma"].values):
        exact = brentq(lambda g: closed.functionals(lam, g)["C"] - C0, 1e-3, 1e4, xtol=1e-15, rtol=1e-15)
        err.append(abs(gam - exact) / exact)
    return np.array(err)


def first_law(ds):
    R, D, C, lam, gam = (ds[k].values for k in ("R", "D", "C", "lambda", "gamma"))
    dR, dD, dC = np.diff(R), np.diff(D), np.diff(C)
    s = np.sum(dR + 0.5 * (lam[1:] + lam[:-1]) * dD + 0.5 * (gam[1:] + gam[:-1]) * dC)
    return abs(s) / np.sum(np.abs(dR))


def variant(base, **sections):
    cfg = copy.deepcopy(base)
    for name, table in sections.items():
        cfg[name] = table
    return cfg


def main(argv=None):
    return run_experiment(argv, gaussian_iso_c, prog="gaussian_iso_c.py", doc=__doc__, out="out/gaussian_iso_c",
                          quick="only the main run, no variant table")


def gaussian_iso_c(out: Path, quick: bool = False, json_path: Path | None = None) -> int:
    """The main run (and without `quick` the variant table) into the folder `out` (emptied first):
    iso_c.nc, variant_NN.nc, iso_c.png, and the table as JSON at `json_path`. Returns the exit
    status: 0 when the main run's gamma is within 1e-6 of the closed-form curve, 1 otherwise."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    base = load_config(CONFIG)
    closed = None

    runs = [("exact law, rk4, newton (config)", base)]
    if not quick:
        short = {"max_steps": 200, "target": {"lambda": 2.0}}
        fixed = {"name": "fixed", "size": 0.25}  # the same steps for all (none was rejected with adaptive control)
        runs += [
            ("exact law, euler, newton", variant(base, predictor={"name": "ode", "method": "euler"}, stop=short)),
            ("exact law, rk4, newton", variant(base, stop=short)),
            ("exact law, dopri5, newton", variant(base, predictor={"name": "ode", "method": "dopri5", "rtol": 1e-6,
                                                                  "atol": 1e-8}, stop=short)),
            ("exact law, secant, newton", variant(base, predictor={"name": "secant"}, stop=short)),
            ("exact law, none, newton", variant(base, predictor={"name": "none"}, stop=short)),
            ("exact law, rk4, lbfgs", variant(base, corrector={"name": "lbfgs", "gtol": 1e-8},
                                                                 stop=short)),
            ("exact law, rk4, adam", variant(base, corrector={"name": "adam", "steps": 300, "eta_max": 0.05,
                                                              "gtol": 1e-3}, stop=short)),
            ("exact law, rk4, newton, no projection", variant(base, projection={"name": "none"}, stop=short)),
            ("FD law h=1e-2, none, newton (paper)", variant(base, process={"name": "iso-classification-fd", "h": 1e-2},
                                                           projection={"name": "none"},
                                                           predictor={"name": "none"}, stop=short,
                                                           steps=fixed)),
            ("FD law h=1e-3, none, newton (paper)", variant(base, process={"name": "iso-classification-fd", "h": 1e-3},
                                                           projection={"name": "none"},
                                                           predictor={"name": "none"}, stop=short,
                                                           steps=fixed)),
            ("exact law, none, newton, same steps", variant(base, projection={"name": "none"},
                                                           predictor={"name": "none"}, stop=short,
                                                           steps=fixed)),
        ]
    header = f"{'run':<40} {'points':>6} {'lambda end':>10} {'max gamma err':>13} {'max |C drift|':>13} " \
             f"{'first law':>9} {'krylov/pt':>9} {'corr it/pt':>10} {'s/pt':>6}"
    print(header)
    results, records = [], []
    for i, (label, cfg) in enumerate(runs):
        if closed is None:
            from problems import LinearGaussianClosedForm
            closed = LinearGaussianClosedForm.of(build_run(cfg)["problem"])
        path = out / ("iso_c.nc" if i == 0 else f"variant_{i:02d}.nc")
        t0 = time.perf_counter()
        ds = run_config(cfg, path, progress=False)
        seconds = time.perf_counter() - t0
        n = ds.sizes["step"]
        err = closed_form_errors(closed, ds)
        row = (label, n, float(ds["lambda"][-1]), err.max(), np.abs(ds["C_drift"].values).max(), first_law(ds),
               ds["krylov_iters"].values[1:].mean(), ds[ds.attrs["corrector_counts"]].values[1:].mean(), seconds / n)
        results.append(row)
        records.append({"run": label, "file": path.name, "points": n, "lambda_end": row[2], "max_gamma_err": row[3],
                        "max_abs_C_drift": row[4], "first_law": row[5], "krylov_per_point": row[6],
                        "corrector_iters_per_point": row[7], "seconds_per_point": row[8],
                        "status": ds.attrs["status"], "stop_reason": ds.attrs["stop_reason"]})
        print(f"{row[0]:<40} {row[1]:>6d} {row[2]:>10.4g} {row[3]:>13.2e} {row[4]:>13.2e} {row[5]:>9.1e} "
              f"{row[6]:>9.1f} {row[7]:>10.1f} {row[8]:>6.3f}")
        if ds.attrs["status"] != "finished":
            print(f"  {label}: {ds.attrs['status']}: {ds.attrs['stop_reason']}")
    fig = plot_paths([out / "iso_c.nc"], out / "iso_c.png", labels=["iso-C, exact law"])
    print(f"wrote {out / 'iso_c.nc'} and {fig}")
    if json_path is not None:
        Path(json_path).write_text(json.dumps({"config": str(CONFIG), "gamma_err_tolerance": 1e-6, "runs": records},
                                        indent=1, default=float))
        print(f"wrote {json_path}")
    return 0 if results[0][3] <= 1e-6 else 1


if __name__ == "__main__":
    sys.exit(main())
