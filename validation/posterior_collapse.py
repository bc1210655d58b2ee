"""Posterior collapse along decreasing lambda on the digits MLP, with the Hessian's smallest eigenvalues.

    python validation/posterior_collapse.py --out out/collapse              # the run (about 2-3 min, 2 cores)
    python validation/posterior_collapse.py --out out/collapse --quick      # a smoke run (under 40 s)
    python validation/posterior_collapse.py --out out/collapse --reliability   # + the eigenvalue spread table

The run: the paper's MLP (64-128-8 encoder, 8-12-10 classifier) on the bundled 8x8 digits with
a Gaussian decoder of std 0.3 (with std 1 the distortion is too cheap for lambda to matter:
every latent the classifier does not need is collapsed at every lambda of the default run),
trained by Adam from scratch at (lambda, gamma) = (1.2, 0.5), then the quasi-static process
lambda' = -1 (gamma fixed) in fixed steps of 0.04 down to lambda = 0.04, theta re-equilibrated at every
point by Adam on the paper's schedule. Each point records kl_z0 ... kl_z7, the rate of each
latent unit (KL of e(z_j|x) to N(0, 1), averaged over the training set: `evaluation_metrics`).

Collapse events: latent j collapses between the last point with kl_zj >= threshold and the
next one (below it); the event's lambda is the linear interpolation of kl_zj in lambda between
those two points to the threshold. A unit that is below the threshold at the start, or never
falls below it, has no event. Written to events.csv and events.nc (dimension `event`); the run's
own [monitor] (crossings of kl_z* at the threshold) writes them into path.nc as it goes.

Eigenvalues: the `n_eig` smallest (algebraic) eigenvalues of A = Hess_theta J at every point,
matrix-free: continuation/singular/stability.py's `lowest_eigenpairs` (the stability monitor's solver:
scipy's LOBPCG on a LinearOperator whose matvec is one HVP), warm-started from the previous
point's vectors, on one fixed HVP batch and noise draw (the problem's `hvp_batch`, draw
`--eig-seed`) for the whole trace. The neural problem declares no gauge directions, so nothing
is deflated (batch norm makes the encoder's hidden biases exact zero modes; they sit at 0, above
the negative eigenvalues a stochastic equilibrium has). For each eigenvector the share of its
squared norm on each latent unit's parameters (its encoder output rows, mean and log-std, with
their biases, and its decoder input column) says which unit, if any, the mode belongs to.
Written to eigs.nc (dimensions step, mode).

--reliability: at three points (just above the first collapse, between, and near the last),
the smallest eigenvalues on independent HVP draws (batch and noise) at two HVP batch sizes,
against a Hessian on the whole training set with 2 noise samples per image (two draws);
reliability.csv and a printed table.

Writes path.nc (+ path.nc.ckpt/), events.csv, events.nc, eigs.nc, collapse.png.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import xarray as xr  # noqa: E402

from continuation.files.path import load_path  # noqa: E402
from continuation.apps.plot import save_figure  # noqa: E402
from continuation.apps.run import run_config  # noqa: E402
from continuation.singular.stability import lowest_eigenpairs  # noqa: E402
from continuation.engine.start import from_point  # noqa: E402
from continuation.surface.system import EquilibriumSystem  # noqa: E402
from problems.registry import mlp  # noqa: E402


def config(quick: bool, lambda0: float, lambda_end: float, step: float, gamma: float, decoder_std: float,
           hvp_batch: int, threshold: float = 0.01) -> dict:
    problem = {"name": "mlp", "dataset": "digits", "hidden": 128, "latent": 8, "decoder_std": decoder_std,
               "samples": 1, "hvp_batch": hvp_batch}
    if quick:
        problem.update(hidden=32, limit=400, hvp_batch=min(hvp_batch, 200))
    return {
        "problem": problem,
        "start": {"lambda": lambda0, "gamma": gamma, "train_steps": 600 if quick else 3000, "train_lr": 3e-3,
                  "train_resample_every": 1, "settle": 1, "seed": 0},
        "process": {"name": "quasi-static", "lambda_rate": -1.0, "gamma_rate": 0.0},
        "predictor": {"name": "none"},
        "corrector": {"name": "adam", "steps": 150 if quick else 300, "eta_max": 1e-3, "resample_every": 1},
        "steps": {"name": "fixed", "size": step},
        "stop": {"max_steps": 1000, "target": {"lambda": lambda_end}},
        # the engine writes each unit's KL crossing the threshold as an event, interpolated between
        # points (a stochastic problem); no eigenvalues in the run (modes = 0: the trace is below)
        "monitor": {"modes": 0, "crossings": {f"kl_z{j}": [threshold] for j in range(problem["latent"])}},
        "output": {"progress": False, "checkpoint_every": 1},
    }


def problem_of(cfg: dict, **override):
    opts = {k: v for k, v in cfg["problem"].items() if k != "name"}
    opts.update(override)
    return mlp(**opts)


# -- collapse events --------------------------------------------------------------------------
def collapse_events(ds, threshold: float) -> list[dict]:
    """One event per latent j whose kl_zj falls below `threshold` along the path: the lambda where
    the linear interpolant of kl_zj in lambda between the bracketing points crosses it."""
    lam = ds["lambda"].values
    events = []
    k = sum(1 for name in ds.data_vars if name.startswith("kl_z"))
    for j in range(k):
        kl = ds[f"kl_z{j}"].values
        for i in range(1, len(kl)):
            if kl[i - 1] >= threshold > kl[i]:
                w = (kl[i - 1] - threshold) / (kl[i - 1] - kl[i])
                events.append({"latent": j, "lambda": float(lam[i - 1] + w * (lam[i] - lam[i - 1])),
                               "step_before": i - 1, "step_after": i, "lambda_before": float(lam[i - 1]),
                               "lambda_after": float(lam[i]), "kl_before": float(kl[i - 1]),
                               "kl_after": float(kl[i]), "threshold": threshold})
                break
    return sorted(events, key=lambda e: -e["lambda"])


def engine_events(ds) -> list[dict]:
    """The crossing events the run's monitor wrote into the path (event_* variables)."""
    return [{"latent": int(str(ds["event_detail"].values[j]).split()[0][len("kl_z"):]),
             "lambda": float(ds["event_lambda"].values[j]), "step": int(ds["event_step"].values[j])}
            for j in range(ds.sizes.get("event", 0)) if str(ds["event_type"].values[j]) == "crossing"]


def write_events(events: list[dict], out: Path) -> None:
    keys = ["latent", "lambda", "step_before", "step_after", "lambda_before", "lambda_after", "kl_before",
            "kl_after", "threshold"]
    with open(out / "events.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(events)
    data = {key: ("event", np.asarray([e[key] for e in events],
                                      dtype=np.int64 if key in ("latent", "step_before", "step_after") else float))
            for key in keys}
    xr.Dataset(data, coords={"event": np.arange(len(events))},
               attrs={"kind": "posterior collapse", "method": "linear interpolation of kl_zj in lambda between "
                      "the last point at or above the threshold and the first below it"}).to_netcdf(out / "events.nc")


# -- eigenvalues ------------------------------------------------------------------------------
def parameter_index(system: EquilibriumSystem, x: torch.Tensor) -> dict:
    """name -> the flat indices (as a tensor of the parameter's shape) of each parameter."""
    idx = system.unflatten(torch.arange(x.numel(), dtype=torch.float64))
    return {f"{m}.{k}": v.long() for m, d in idx.items() for k, v in d.items()}


def unit_indices(index: dict, latent: int) -> list[np.ndarray]:
    out = []
    W, b, dec = index["encoder.out.weight"], index["encoder.out.bias"], index["decoder.0.weight"]
    for j in range(latent):
        parts = [W[j], W[latent + j], b[j:j + 1], b[latent + j: latent + j + 1], dec[:, j]]
        out.append(torch.cat([p.reshape(-1) for p in parts]).numpy())
    return out


def encoder_unit_indices(index: dict, latent: int) -> list[np.ndarray]:
    W, b = index["encoder.out.weight"], index["encoder.out.bias"]
    return [torch.cat([W[j], W[latent + j], b[j:j + 1], b[latent + j: latent + j + 1]]).numpy()
            for j in range(latent)]


def spectrum_at(system, x, mu, k: int, previous=None, maxiter: int = 40, tol: float = 1e-3, seed: int = 0):
    """The k lowest eigenpairs of A = Hess J at (x, mu): continuation/singular/stability.py's
    `lowest_eigenpairs` (LOBPCG on HVPs, off the problem's gauge orbit; the neural problem
    declares none), warm-started from `previous`."""
    spec = lowest_eigenpairs(system, x, mu, k + GUARD, previous=previous, tol=tol, maxiter=maxiter, dense_below=0,
                             seed=seed)
    return spec


GUARD = 4  # LOBPCG's block is n_eig + GUARD vectors (the extra ones speed its convergence); n_eig are reported


def eigen_trace(cfg, path: Path, n_eig: int, maxiter: int, eig_seed: int) -> xr.Dataset:
    """The n_eig smallest eigenvalues at every point of the path on one fixed HVP draw, with
    each mode's share on each latent unit's parameters."""
    problem = problem_of(cfg)
    problem.resample(eig_seed)
    template = problem.init_params(0)
    system = EquilibriumSystem(problem, template)
    ds = load_path(path)
    latent = cfg["problem"]["latent"]
    x0 = system.flatten(template)
    index = parameter_index(system, x0)
    units, enc_units = unit_indices(index, latent), encoder_unit_indices(index, latent)
    n = ds.sizes["step"]
    eig = np.full((n, n_eig), np.nan)
    res = np.full(n, np.nan)
    share = np.full((n, n_eig, latent), np.nan)
    enc_share = np.full((n, n_eig, latent), np.nan)
    hvps = np.zeros(n, dtype=np.int64)
    spec = None
    t0 = time.perf_counter()
    for s in range(n):
        x, mu = from_point(path, s, template)
        spec = spectrum_at(system, x, mu, n_eig, previous=spec, maxiter=maxiter if s else 5 * maxiter, seed=s)
        V = spec.vectors.double().numpy()[:, :n_eig]
        eig[s], res[s], hvps[s] = spec.values.double().numpy()[:n_eig], spec.residual, spec.hvps
        for j in range(latent):
            share[s, :, j] = (V[units[j]] ** 2).sum(0)
            enc_share[s, :, j] = (V[enc_units[j]] ** 2).sum(0)
    seconds = time.perf_counter() - t0
    return xr.Dataset(
        {"eig": (("step", "mode"), eig), "residual": ("step", res),
         "unit_share": (("step", "mode", "latent"), share), "encoder_unit_share": (("step", "mode", "latent"), enc_share),
         "hvps": ("step", hvps), "lambda": ("step", ds["lambda"].values)},
        coords={"step": np.arange(n), "mode": np.arange(n_eig), "latent": np.arange(latent)},
        attrs={"method": "continuation.singular.stability.lowest_eigenpairs: scipy LOBPCG on HVPs, smallest algebraic, "
               "warm-started from the previous point; residual: max_i |A v_i - l_i v_i| / max(1, |l_i|)", "hvp_batch": problem.hvp_batch,
               "draw": eig_seed, "maxiter": maxiter, "seconds": seconds})


# -- reliability -------------------------------------------------------------------------------
def reliability(cfg, path: Path, events: list[dict], n_eig: int, draws: int, maxiter: int, eig_seed: int,
                out: Path) -> list[dict]:
    """Spread of the smallest eigenvalues over independent HVP draws at three points, at the
    configured HVP batch and a quarter of it, against the whole training set with 2 noise samples per image (two draws)."""
    ds = load_path(path)
    lam = ds["lambda"].values
    if events:
        picks = sorted({events[0]["step_before"], events[len(events) // 2]["step_before"],
                        events[-1]["step_before"]})
    else:
        picks = [0, len(lam) // 2, len(lam) - 1]
    hb = cfg["problem"]["hvp_batch"]
    settings = [(f"hvp {hb}", {"hvp_batch": hb}, draws), (f"hvp {hb // 4}", {"hvp_batch": hb // 4}, draws),
                ("whole set x2", {"hvp_batch": 0, "samples": 2}, 2)]
    rows = []
    for s in picks:
        problem = problem_of(cfg)
        problem.resample(eig_seed)
        template = problem.init_params(0)
        x, mu = from_point(path, s, template)
        ref = spectrum_at(EquilibriumSystem(problem, template), x, mu, n_eig, maxiter=5 * maxiter, seed=s)
        for label, opts, nd in settings:
            problem = problem_of(cfg, **opts)
            system = EquilibriumSystem(problem, template)
            index = parameter_index(system, system.flatten(template))
            enc_units = encoder_unit_indices(index, cfg["problem"]["latent"])
            vals, shares, resid, t0 = [], [], [], time.perf_counter()
            for d in range(nd):
                problem.resample(1000 + d)
                spec = spectrum_at(system, x, mu, n_eig, previous=ref, maxiter=maxiter, seed=d)
                V = spec.vectors.double().numpy()
                vals.append(spec.values.double().numpy()[:n_eig])
                resid.append(spec.residual)
                shares.append(max(float((V[u, 0] ** 2).sum()) for u in enc_units))
            vals = np.array(vals)
            row = {"step": s, "lambda": float(lam[s]), "hessian": label, "draws": nd,
                   "eig0_mean": float(vals[:, 0].mean()), "eig0_std": float(vals[:, 0].std(ddof=1)),
                   "eigk_mean": float(vals[:, -1].mean()), "eigk_std": float(vals[:, -1].std(ddof=1)),
                   "max_unit_share_mode0": float(np.mean(shares)), "residual": float(np.max(resid)), "seconds": time.perf_counter() - t0,
                   "values": " ".join(f"{v:.4f}" for v in vals[:, 0])}
            rows.append(row)
            print(f"  step {s:>2} lambda {lam[s]:.3f} {label:<13} eig0 {row['eig0_mean']:+.4f} +- {row['eig0_std']:.4f}  "
                  f"eig{n_eig - 1} {row['eigk_mean']:+.4f} +- {row['eigk_std']:.4f}  unit share {row['max_unit_share_mode0']:.3f} res {row['residual']:.1e}"
                  f"  ({row['seconds']:.0f} s)", flush=True)
    with open(out / "reliability.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return rows


# -- plot --------------------------------------------------------------------------------------
def plot(ds, eigs: xr.Dataset, events: list[dict], threshold: float, out: Path) -> Path:
    fig, ax = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    lam = ds["lambda"].values
    k = sum(1 for name in ds.data_vars if name.startswith("kl_z"))
    colors = plt.cm.tab10(np.arange(k) % 10)
    for j in range(k):
        ax[0].semilogy(lam, np.maximum(ds[f"kl_z{j}"].values, 1e-6), "o-", ms=2.5, color=colors[j], label=f"z{j}")
    for e in events:
        for a in ax:
            a.axvline(e["lambda"], color=colors[e["latent"]], lw=0.8, ls=":")
        ax[0].plot([e["lambda"]], [threshold], "v", color=colors[e["latent"]], ms=7)
    ax[0].axhline(threshold, color="0.5", lw=0.8, ls="--")
    ax[0].set(ylabel="KL of unit to prior (nats)", ylim=(1e-5, None),
              title=f"per-latent rate along decreasing lambda (events: KL < {threshold:g})")
    ax[0].legend(fontsize=7, ncol=4)
    e = eigs["eig"].values
    for m in range(e.shape[1]):
        ax[1].plot(eigs["lambda"].values, e[:, m], ".-", ms=3, lw=0.8, label=f"mode {m}" if m < 3 else None)
    ax[1].axhline(0, color="k", lw=0.6)
    ax[1].set(xlabel="lambda (decreasing: the path runs left to right)", ylabel="eigenvalue of Hess J",
              title=f"{e.shape[1]} smallest eigenvalues (LOBPCG, HVP batch {eigs.attrs['hvp_batch']}, one draw)")
    ax[1].invert_xaxis()
    return save_figure(fig, ax, out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("out/collapse"))
    parser.add_argument("--quick", action="store_true", help="a smoke run: 400 images, hidden 32, few points")
    parser.add_argument("--threshold", type=float, default=0.01, help="collapse: a unit's KL below this (nats)")
    parser.add_argument("--lambda0", type=float, default=1.2)
    parser.add_argument("--lambda-end", type=float, default=0.04)
    parser.add_argument("--step", type=float, default=0.04)
    parser.add_argument("--gamma", type=float, default=0.5)
    parser.add_argument("--decoder-std", type=float, default=0.3)
    parser.add_argument("--hvp-batch", type=int, default=512)
    parser.add_argument("--n-eig", type=int, default=6)
    parser.add_argument("--eig-iters", type=int, default=30,
                        help="LOBPCG iterations per point (warm-started; 5x at the first point)")
    parser.add_argument("--eig-seed", type=int, default=7, help="the HVP draw of the eigenvalue trace")
    parser.add_argument("--reliability", action="store_true", help="also the spread of eigenvalues over draws")
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--reliability-iters", type=int, default=40, help="LOBPCG iterations per draw, warm-started from the trace draw's spectrum there (5x as many)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on a shared 2-core machine a batched HVP took 8 ms with 1 thread, "
                             "150 ms with 2)")
    parser.add_argument("--rerun", action="store_true", help="run the path again even if path.nc exists")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.lambda0, args.lambda_end, args.step = 0.8, 0.1, 0.1
        args.n_eig, args.eig_iters = 3, 10
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = config(args.quick, args.lambda0, args.lambda_end, args.step, args.gamma, args.decoder_std, args.hvp_batch,
                 args.threshold)
    path = args.out / "path.nc"
    t0 = time.perf_counter()
    if args.rerun or not path.exists():
        if path.exists():
            import shutil

            path.unlink()
            shutil.rmtree(args.out / "path.nc.ckpt", ignore_errors=True)
        ds = run_config(cfg, path)
        print(f"path: {ds.sizes['step']} points, {ds.attrs['status']} ({time.perf_counter() - t0:.0f} s)", flush=True)
    ds = load_path(path)
    t1 = time.perf_counter()
    events = collapse_events(ds, args.threshold)
    write_events(events, args.out)
    # the engine's own events (the run's [monitor] crossings) against this script's interpolation
    first = {}
    for e in engine_events(ds):
        first.setdefault(e["latent"], e)
    gap = max((abs(first[e["latent"]]["lambda"] - e["lambda"]) for e in events if e["latent"] in first), default=0.0)
    print(f"the run's monitor wrote {len(engine_events(ds))} crossing events; first per unit vs this script: "
          f"max |lambda difference| {gap:.1e}", flush=True)
    eigs = eigen_trace(cfg, path, args.n_eig, args.eig_iters, args.eig_seed)
    eigs.to_netcdf(args.out / "eigs.nc")
    print(f"eigenvalues: {int(eigs['hvps'].sum())} HVPs ({time.perf_counter() - t1:.0f} s)", flush=True)
    fig = plot(ds, eigs, events, args.threshold, args.out / "collapse.png")
    print(f"\ncollapse events (KL < {args.threshold:g} nats; linear interpolation in lambda):")
    for e in events:
        s = e["step_after"]
        owner = eigs["unit_share"].values[s, :, e["latent"]]
        print(f"  z{e['latent']}: lambda = {e['lambda']:.4f}  (between {e['lambda_before']:.3f}, KL {e['kl_before']:.4f} "
              f"and {e['lambda_after']:.3f}, KL {e['kl_after']:.4f}); smallest eig there {eigs['eig'].values[s, 0]:+.4f}, "
              f"largest share of a mode on z{e['latent']}: {owner.max():.3f} (mode {owner.argmax()})")
    alive = [j for j in range(cfg["problem"]["latent"]) if ds[f"kl_z{j}"].values[-1] >= args.threshold]
    print(f"  active at lambda = {float(ds['lambda'][-1]):.3f}: {alive or 'none'}")
    if args.reliability:
        print("\nreliability of the smallest eigenvalues (mean +- std over independent HVP draws):")
        reliability(cfg, path, events, args.n_eig, args.draws, args.reliability_iters, args.eig_seed, args.out)
    print(f"wrote {fig} ({time.perf_counter() - t0:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
