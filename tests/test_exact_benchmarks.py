"""The exact-route benchmarks (issue 25) run end to end on a tiny smooth MLP and say what they
measured: benchmarks/exact_route.py (cost at equal accuracy), benchmarks/tangent_response.py
--exact (tangents against converged responses) and benchmarks/stochastic_vs_exact.py (the cheap
route's distance from the exact path). Slow: about 2 min together on one thread."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

TINY = """
[problem]
name = "mlp-smooth"
limit = 16
val_limit = 8
hidden = 3
latent = 2
classifier_hidden = 3
samples = 2
weight_decay = 3e-2

[start]
lambda = 1.0
gamma = 2.0

[process]
name = "iso-classification"
clock = "lambda"
tol = 1e-10

[predictor]
name = "ode"
method = "euler"

[corrector]
name = "trust-newton"
gtol = 1e-9
lbfgs_iters = 300
subproblem = "dense"

[projection]
name = "newton"

[krylov]
name = "dense"

[steps]
name = "fixed"
size = 0.01

[stop]
target = {lambda = 1.02}
"""


def _run(*args, timeout=600):
    p = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                       env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("exact")
    config = folder / "tiny.toml"
    config.write_text(TINY)
    return folder, config


def test_exact_route_prints_the_cost_table_with_every_method_at_the_tolerance(tiny):
    folder, config = tiny
    out = folder / "cost"
    text = _run("benchmarks/exact_route.py", "--config", str(config), "--steps", "2", "--adam-budget", "300",
                "--paper-steps", "50", "--out", str(out))
    data = json.loads((out / "exact_route.json").read_text())
    rows = {r["method"]: r for r in data["rows"]}
    assert set(rows) == {"exact route", "(b) from scratch", "(c') warm start, corrector", "(c) warm start, Adam",
                         "(a) the paper's procedure"}
    for name in ("exact route", "(b) from scratch", "(c') warm start, corrector"):
        assert rows[name]["reached"], rows[name]
        assert rows[name]["worst_grad_norm_rel"] < 1e-6
    assert not rows["(c) warm start, Adam"]["reached"]  # 300 Adam updates do not reach 1e-9
    assert rows["(b) from scratch"]["grad_equiv_per_lambda"] > rows["exact route"]["grad_equiv_per_lambda"] > 0
    assert "(b) / exact route = " in text and "target >= 30" in text
    assert (out / "exact_route.md").read_text().startswith("Exact route:")


def test_tangent_response_exact_mode_agrees_with_converged_differences(tiny):
    folder, config = tiny
    out = folder / "response"
    _run("benchmarks/tangent_response.py", "--exact", str(config), "--out", str(out))
    res = json.loads((out / "exact_response.json").read_text())
    by = {r["response"]: r for r in res["rows"]}
    assert set(by) == {f"d{f}/d{q}" for f in "RDC" for q in ("lambda", "gamma")}
    assert max(r["rel_error"] for r in res["rows"]) < 1e-5
    # D_gamma = C_lambda (both second derivatives of F): the tangents' and the differences' agree
    assert by["dD/dgamma"]["predicted"] == pytest.approx(by["dC/dlambda"]["predicted"], rel=1e-8)
    assert by["dD/dgamma"]["actual"] == pytest.approx(by["dC/dlambda"]["actual"], rel=1e-5)


def test_stochastic_vs_exact_compares_each_route_with_the_exact_path(tiny):
    folder, config = tiny
    exact = folder / "exact.nc"
    _run("-m", "continuation", "run", str(config), "--out", str(exact))
    out = folder / "sve"
    _run("benchmarks/stochastic_vs_exact.py", "--exact", str(exact), "--config", str(config), "--draws", "0", "1",
         "--budgets", "20", "--step", "0.01", "--out", str(out))
    with open(out / "stochastic_vs_exact.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["draw_seed"], r["budget"]) for r in rows} == {("0", "20"), ("1", "20")}
    lam = sorted({round(float(r["lambda"]), 9) for r in rows})
    assert lam == [1.01, 1.02]
    for r in rows:
        assert abs(float(r["gamma"]) - float(r["gamma_exact"]) - float(r["dgamma"])) < 1e-12
    # the two draw sequences are different routes
    g = {(r["draw_seed"], round(float(r["lambda"]), 9)): float(r["gamma"]) for r in rows}
    assert g[("0", 1.01)] != g[("1", 1.01)]
