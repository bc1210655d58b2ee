"""Energies at scale: the Bratu fold in 1-D (N = 10^2 ... 10^6) and 2-D (30^2 ... 300^2 unknowns),
the Hessian assembled from coloured HVPs and factored by SuperLU (`solvers/sparse.py`,
`[krylov] name = "sparse-lu"`), against an independent scipy solve of the extended system and,
where `bice` is importable by the given interpreter, bice on the same grids in the same run.

    OMP_NUM_THREADS=1 python benchmarks/energy_scale.py                       # the default grids
    OMP_NUM_THREADS=1 python benchmarks/energy_scale.py --dim 1 --n 10000 --bice-python /path/to/python

Each case runs in its own process (its peak resident memory is that process's, torch included):
pseudo-arclength from lambda = 3 (1-D) or 6 (2-D) on the lower branch, through the fold, down
the upper branch to lambda = 2.9 (1-D) or 5.9 (2-D), with the monitor's two lowest eigenvalues
(shift-invert on the factors) at every point, the fold located by the run's event finder.

Printed per case: the located fold, the reference's, their relative difference; the Morse index
past the fold; wall time (the start's equilibration, the path, the monitor and the fold's location;
imports and the problem's construction excluded, after a
warm-up run on an 8-point grid that pays the lazy imports of torch.func, scipy and netCDF); HVPs,
factorisations (banded LU or SuperLU), points; peak RSS.

The reference (`reference_fold`) is numpy/scipy only: the lower branch by Newton (spsolve) up to
lambda_ref, the lowest eigenvector of F_u there (eigsh, shift-invert), then Newton with spsolve on
the extended system G(u, v, lambda) = [F; F_u v; l.v - 1] (Moore & Spence 1980; Seydel, Practical
Bifurcation and Stability Analysis, section 5.5), F = L u - lambda e^u with L the Dirichlet
Laplacian of the same grid (the energy's gradient is h^dim F).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as sla

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_1D = [100, 1000, 10_000, 100_000, 1_000_000]
DEFAULT_2D = [30, 100, 300]
RANGES = {1: (3.0, 2.9, 3.4), 2: (6.0, 5.9, 6.7)}  # (start, target on the upper branch, lambda_ref)


# -- the independent reference -----------------------------------------------------------------------
def laplacian(n: int, dim: int) -> sp.csc_matrix:
    """The Dirichlet Laplacian -Delta_h on n (1-D) or n x n (2-D) interior points, h = 1/(n+1)."""
    h = 1.0 / (n + 1)
    T = sp.diags([-np.ones(n - 1), 2 * np.ones(n), -np.ones(n - 1)], [-1, 0, 1]) / h**2
    if dim == 1:
        return T.tocsc()
    eye = sp.identity(n)
    return (sp.kron(T, eye) + sp.kron(eye, T)).tocsc()


def reference_fold(n: int, dim: int) -> float:
    """The discrete fold lambda* of F(u) = L u - lambda e^u = 0, by scipy alone (module docstring)."""
    L = laplacian(n, dim)
    N = L.shape[0]
    u = np.zeros(N)
    lam_ref = RANGES[dim][2]
    for lam in np.linspace(0.5, lam_ref, 12):
        for _ in range(30):  # Newton to the rounding floor: until the update stops shrinking tenfold
            du = sla.spsolve((L - sp.diags(lam * np.exp(u))).tocsc(), -(L @ u - lam * np.exp(u)))
            u += du
            if np.linalg.norm(du) <= 1e-10 * max(1.0, np.linalg.norm(u)):
                break
    Fu = (L - sp.diags(lam_ref * np.exp(u))).tocsc()
    _, V = sla.eigsh(Fu, k=1, sigma=-1.0, which="LM")
    v = V[:, 0] * np.sign(V[:, 0].sum())
    ell = v.copy()
    lam = lam_ref
    last = np.inf
    for _ in range(30):
        e = np.exp(u)
        Fu = L - sp.diags(lam * e)
        G = np.concatenate([L @ u - lam * e, Fu @ v, [ell @ v - 1.0]])
        J = sp.bmat([[Fu, None, sp.csc_matrix(-e[:, None])],
                     [sp.diags(-lam * e * v), Fu, sp.csc_matrix(-(e * v)[:, None])],
                     [None, sp.csr_matrix(ell[None, :]), None]], format="csc")
        dz = sla.spsolve(J, -G)
        u, v, lam = u + dz[:N], v + dz[N:2 * N], lam + dz[-1]
        step = abs(dz[-1]) / lam
        if step <= 1e-15 or (step < 1e-11 and step > 0.1 * last):  # converged, or at the rounding floor
            break
        last = step
    return float(lam)


# -- this project ---------------------------------------------------------------------------------------
def ours(n: int, dim: int, krylov: str = "sparse-lu") -> dict:
    """One run through the fold (module docstring); the figures as a dict. krylov: "sparse-lu", or
    "minres" for the matrix-free route (MINRES, GMRES on the bordered systems, LOBPCG monitor), or
    "amg" for that route preconditioned by algebraic multigrid (solvers/preconditioners.py AMG)."""
    sys.path.insert(0, str(ROOT))
    import torch

    from continuation import Output, continue_path
    from continuation.singular.monitor import Monitor
    from continuation.strategies.arclength import BorderedNewtonCorrector, PseudoArclength, PseudoArclengthPredictor
    from continuation.strategies.step_control import AdaptiveSteps, StopRule
    from problems.bratu import bratu2d_problem, bratu_problem
    from solvers import MINRES, SparseLU

    torch.set_num_threads(1)
    if n > 8:  # a warm-up run on a tiny grid, not timed: the lazy imports of torch.func, scipy and netCDF
        ours(8, dim, krylov)
    problem = bratu_problem(n) if dim == 1 else bratu2d_problem(n)
    N = n ** dim
    start, target, _ = RANGES[dim]
    from solvers.preconditioners import AMG

    solver = {"sparse-lu": SparseLU, "minres": MINRES, "amg": lambda: MINRES(preconditioner=AMG())}[krylov]()
    # ||grad J|| floors at the stencil's rounding, about 1e-16 / h an entry (1-D) times sqrt(N): measured
    # 9.6e-11, 3.1e-9, 9.7e-8 at N = 10^4, 10^5, 10^6. gtol is 3 times that: at 30 times, the N = 10^5 fold
    # was 4.9e-7 off (the points, not the fold's secant, limit its accuracy)
    gtol = max(1e-10, 3e-16 * (n + 1) * N ** 0.5) if dim == 1 else max(1e-10, 3e-16 * N ** 0.5)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        path = continue_path(problem, PseudoArclength(parameter="lambda"), PseudoArclengthPredictor(),
                             BorderedNewtonCorrector(gtol=gtol), AdaptiveSteps(initial=0.1, max_step=0.5),
                             StopRule(max_steps=40, target={"lambda": target}, away_points=0),
                             start=(start, 1.0), solver=solver, monitor=Monitor(modes=2),
                             output=Output(path=os.path.join(tmp, "p.nc"), progress=False))
        wall = time.perf_counter() - t0
        folds = [i for i in range(path.sizes.get("event", 0)) if str(path["event_type"].values[i]) == "fold"]
        fold = float(path["event_lambda"].values[folds[0]]) if folds else float("nan")
        index = path["morse_index"].values
        out = {"tool": f"this project ({krylov})", "dim": dim, "n": n, "unknowns": N, "fold_lambda": fold,
               "status": str(path.attrs.get("status", "")), "points": int(path.sizes["step"]),
               "morse_index_first": int(index[0]), "morse_index_last": int(index[-1]),
               "hvps": int(path["hvps"].values.sum() + path["monitor_hvps"].values.sum()),
               "factorisations": getattr(solver, "factorisations", 0), "wall_s": wall, "gtol": gtol}
    return out


def bice(python: str, n: int, dim: int) -> dict | None:
    """bice on the same grid (benchmarks/bice_bratu.py, run by `python`), or None where it does not import."""
    script = ROOT / "benchmarks" / "bice_bratu.py"
    if subprocess.run([python, "-c", "import bice"], capture_output=True).returncode != 0 or not script.exists():
        return None
    r = subprocess.run([python, str(script), "--n", str(n), "--dim", str(dim)], capture_output=True, text=True,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    if r.returncode != 0:
        return {"tool": "bice", "error": (r.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def _child(kind: str, n: int, dim: int) -> dict:
    """Run one case in a fresh process: its figures and its peak RSS."""
    r = subprocess.run([sys.executable, __file__, "--child", kind, "--n", str(n), "--dim", str(dim)],
                       capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    if r.returncode != 0:
        return {"tool": kind, "dim": dim, "n": n, "error": (r.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description="The Bratu fold at scale on sparse factorisations, against a scipy "
                                             "reference and bice (module docstring).")
    ap.add_argument("--dim", type=int, choices=(1, 2), action="append", help="1 or 2 (default: both)")
    ap.add_argument("--n", type=int, action="append",
                    help=f"grid points a side, with one --dim (default: {DEFAULT_1D} in 1-D, {DEFAULT_2D} in 2-D)")
    ap.add_argument("--bice-python", default=sys.executable, help="an interpreter that imports bice")
    ap.add_argument("--minres", action="store_true",
                    help="also run the matrix-free route (MINRES / GMRES / LOBPCG) on each grid, for the ratio")
    ap.add_argument("--amg", action="store_true", help="also run that route preconditioned by algebraic multigrid")
    ap.add_argument("--child", choices=("ours", "minres", "amg", "reference"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        n, dim = a.n[0], a.dim[0]
        if a.child in ("ours", "minres", "amg"):
            out = ours(n, dim, "sparse-lu" if a.child == "ours" else a.child)
        else:
            t0 = time.perf_counter()
            out = {"reference": reference_fold(n, dim), "reference_s": time.perf_counter() - t0}
        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(out))
        return
    if a.n and (not a.dim or len(a.dim) != 1):
        ap.error("--n needs exactly one --dim (the grids of one dimension)")
    cases = [(d, n) for d in (a.dim or [1, 2]) for n in (a.n or (DEFAULT_1D if d == 1 else DEFAULT_2D))]
    print(f"{'dim':>3} {'unknowns':>9} | {'fold':>14} {'reference':>14} {'rel.diff':>8} | index | "
          f"{'wall s':>7} {'HVPs':>6} {'LUs':>4} {'pts':>3} {'RSS MB':>7} | bice: fold, wall s")
    for dim, n in cases:
        r = _child("ours", n, dim)
        ref = _child("reference", n, dim)
        b = bice(a.bice_python, n, dim)
        bice_txt = "not importable" if b is None else (f"error: {b['error']}" if "error" in b
                                                          else f"{b['fold_lambda']:.10f}, {b['wall_s']:.1f}")
        if "error" in r:
            print(f"{dim:>3} {n ** dim:>9} | error: {r['error']}")
            continue
        rel = abs(r["fold_lambda"] - ref["reference"]) / ref["reference"]
        print(f"{dim:>3} {n ** dim:>9} | {r['fold_lambda']:14.10f} {ref['reference']:14.10f} {rel:8.1e} | "
              f"{r['morse_index_first']} -> {r['morse_index_last']} | {r['wall_s']:7.1f} {r['hvps']:6d} "
              f"{r['factorisations']:4d} {r['points']:3d} {r['peak_rss_mb']:7.0f} | {bice_txt}", flush=True)
        for route, label in [("amg", "AMG-preconditioned MINRES/GMRES/LOBPCG"),
                             ("minres", "matrix-free MINRES/GMRES/LOBPCG")]:
            if not getattr(a, route):
                continue
            m = _child(route, n, dim)
            if "error" in m:
                print(f"    {label}: error: {m['error']}")
            else:
                print(f"    {label}: fold {m['fold_lambda']:.10f} "
                      f"(rel.diff {abs(m['fold_lambda'] - ref['reference']) / ref['reference']:.1e}), "
                      f"{m['wall_s']:.1f} s, {m['hvps']} HVPs, {m['points']} points: "
                      f"{m['wall_s'] / r['wall_s']:.1f} x the sparse-lu wall time", flush=True)


if __name__ == "__main__":
    main()
