"""Per-latent KL of the neural problems, and the posterior-collapse validation run (quick mode)."""

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from torch.func import functional_call

from problems.registry import mlp

ROOT = Path(__file__).resolve().parents[1]


def test_per_latent_kls_sum_to_the_rate_in_float64():
    problem = mlp(dataset="digits", hidden=16, latent=5, float64=True)
    theta = problem.init_params(3)
    theta["encoder"]["out.bias"] = theta["encoder"]["out.bias"] + 0.3  # away from the prior: KL of order 1
    m = problem.evaluation_metrics(theta)
    kls = [m[f"kl_z{j}"] for j in range(5)]
    assert all(v > 0 for v in kls)
    # the rate computed independently from the encoder's outputs on the whole training set
    mean, log_std = functional_call(problem.encoder, theta["encoder"], (problem.train.x,))
    rate = float((0.5 * (mean**2 + torch.exp(2 * log_std) - 1 - 2 * log_std)).sum(-1).mean())
    assert abs(sum(kls) - rate) < 1e-10
    assert abs(m["train_R"] - rate) < 1e-10
    # one unit at the prior (mean 0, std 1 for every x) has zero KL
    k = 5
    for key in ("out.weight", "out.bias"):
        theta["encoder"][key] = theta["encoder"][key].clone()
        theta["encoder"][key][[0, k]] = 0.0
    assert abs(problem.evaluation_metrics(theta)["kl_z0"]) < 1e-14


def test_evaluation_metrics_keep_their_values_and_key_order():
    problem = mlp(dataset="digits", hidden=16, latent=3, limit=200)
    m = problem.evaluation_metrics(problem.init_params(0))
    assert list(m)[:3] == ["train_R", "train_D", "train_C"]
    assert list(m)[3:] == ["kl_z0", "kl_z1", "kl_z2"]


def test_quick_collapse_run_writes_events_eigenvalues_and_plot(tmp_path):
    out = tmp_path / "collapse"
    r = subprocess.run([sys.executable, str(ROOT / "validation" / "posterior_collapse.py"), "--out", str(out),
                        "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / "collapse.png").stat().st_size > 10_000
    path = xr.open_dataset(out / "path.nc")
    kl = np.stack([path[f"kl_z{j}"].values for j in range(8)])
    assert np.all(np.diff(path["lambda"].values) < 0)  # decreasing lambda
    assert np.allclose(kl.sum(0), path["train_R"].values, rtol=1e-5)
    with open(out / "events.csv") as f:
        events = list(csv.DictReader(f))
    assert events, "the quick run collapses at least one unit"
    ev = xr.open_dataset(out / "events.nc")
    assert ev.sizes["event"] == len(events)
    for e in events:  # each event lies between its bracketing points, where the unit crossed the threshold
        lam, lo, hi = float(e["lambda"]), float(e["lambda_after"]), float(e["lambda_before"])
        assert lo <= lam <= hi and float(e["kl_before"]) >= 0.01 > float(e["kl_after"])
    # the run's monitor wrote the same crossings as events (interpolated in s; lambda is linear in s)
    crossings = [j for j in range(path.sizes["event"]) if str(path["event_type"].values[j]) == "crossing"]
    first = {}
    for j in crossings:
        first.setdefault(str(path["event_detail"].values[j]).split()[0], float(path["event_lambda"].values[j]))
    for e in events:
        assert abs(first[f"kl_z{e['latent']}"] - float(e["lambda"])) < 1e-12
    eigs = xr.open_dataset(out / "eigs.nc")
    assert eigs["eig"].shape == (path.sizes["step"], 3) and np.all(np.isfinite(eigs["eig"].values))
    assert np.all(np.diff(eigs["eig"].values, axis=1) >= 0)
    assert "collapse events" in r.stdout
