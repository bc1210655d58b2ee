"""Critical points followed in two multipliers (issue 27, item 1): the phase diagram.

Checked against references computed here by other means:
- the linear-Gaussian switch-on curves lambda_c,i(gamma), where l_i(lambda, gamma) = 1 (the
  weighted covariance's eigenvalue, problems/linear_gaussian_closed_form.py: numpy and brentq),
  latent 2 and 3, to 1e-8 at >= 20 points each, started from the closed form's branch point;
- the fold of the loaded Bratu problem u'' + lambda e^u + gamma = 0 followed in the load gamma,
  against scipy's fsolve on the extended system [F = 0, F_u phi = 0, h sum phi = 1] written in
  numpy, to 1e-8 at >= 5 points;
- the regions' Morse index against numpy's eigenvalues of the dense Hessian (torch.func.hessian)
  on the trivial branch.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from scipy.optimize import fsolve

from continuation.apps.cli import main
from continuation.errors import ContinuationError
from continuation.singular.critical_curve import CriticalCurveTracer, branch_index, follow
from continuation.surface.system import EquilibriumSystem
from problems import LinearGaussianData, LinearGaussianGibbsProblem, make_mu
from problems.bratu import bratu_forced_energy
from problems.energy import EnergyProblem
from problems.linear_gaussian_closed_form import LinearGaussianClosedForm

CONFIGS = Path(__file__).resolve().parents[1] / "validation" / "configs"
GAMMA0 = 0.8


def gaussian(latent: int):
    data = LinearGaussianData.random(5, 2, seed=0, noise=0.4)
    problem = LinearGaussianGibbsProblem.from_data(data, latent_dim=latent, sigma_d=2.0, sigma_c=1.0)
    return problem, LinearGaussianClosedForm.of(problem), EquilibriumSystem(problem, problem.init_params(0))


@pytest.mark.parametrize("latent", [2, 3])
def test_switch_on_curves_equal_the_closed_form(latent):
    problem, cf, system = gaussian(latent)
    lo, hi = 0.3, 1.5
    curves = 0
    for d in range(latent):
        lam_c = cf.critical_lambda(GAMMA0, d)
        if lam_c is None:
            continue
        # the branch with directions 0 .. d-1 on, just past the switch-on of d (a saddle there)
        lam = lam_c * (1 + 1e-3)
        theta = {k: torch.as_tensor(v) for k, v in cf.stationary_point(lam, GAMMA0, list(range(d))).items()}
        curve = follow(system, system.flatten(theta), make_mu(lam, GAMMA0), low=lo, high=hi, step=0.05)
        gam, got = curve.column("gamma"), curve.column("lambda")
        ref = np.array([cf.critical_lambda(g, d) for g in gam])
        assert len(gam) >= 20 and np.all(np.diff(gam) > 0)
        assert curve.kind == "bifurcation"
        np.testing.assert_allclose(got, ref, rtol=1e-8, atol=0)
        assert max(p.eps_norm for p in curve.points) < 1e-12  # a critical point of J itself
        assert max(abs(p.ell) for p in curve.points) <= 1e-10
        assert curve.ended["low"] == "range end"
        if cf.critical_lambda(hi, d) is None:  # the curve meets lambda = 0 inside the range: said so
            assert "approaches 0" in curve.ended["high"] and got[-1] < 1e-3
        else:
            assert curve.ended["high"] == "range end" and gam[-1] == pytest.approx(hi, abs=1e-12)
        curves += 1
    assert curves == latent


def bratu_reference(n: int):
    h = 1.0 / (n + 1)
    L = (np.eye(n, k=1) + np.eye(n, k=-1) - 2 * np.eye(n)) / h**2

    def G(z, g):
        u, phi, lam = z[:n], z[n:2 * n], z[2 * n]
        return np.r_[L @ u + lam * np.exp(u) + g, L @ phi + lam * np.exp(u) * phi, h * phi.sum() - 1]

    def solve(g, z0):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            z = fsolve(G, z0, args=(g,), xtol=1e-13)
        assert np.abs(G(z, g)).max() < 1e-9
        return z

    s = np.sin(np.pi * np.arange(1, n + 1) * h)
    return solve, np.r_[1.2 * s, s / (h * s.sum()), 3.0]


def bratu_system(n: int):
    problem = EnergyProblem(objective=bratu_forced_energy, theta0={"x": torch.zeros(n, dtype=torch.float64)})
    return EquilibriumSystem(problem, {"x": torch.zeros(n, dtype=torch.float64)})


def test_bratu_fold_followed_in_the_load_equals_scipys_extended_system():
    n = 31
    solve, z0 = bratu_reference(n)
    z = solve(1.0, z0)
    system = bratu_system(n)
    # start 0.1% off the fold in lambda
    curve = follow(system, torch.tensor(z[:n]), make_mu(z[2 * n] * 1.001, 1.0), low=0.5, high=3.0, step=0.25)
    assert curve.kind == "fold" and curve.ended == {"low": "range end", "high": "range end"}
    assert len(curve.points) >= 5
    lam = curve.column("lambda")
    assert np.all(np.diff(lam) < 0)  # the load lowers the fold
    for p in curve.points:
        g = float(p.mu[1])
        zr = solve(g, z)
        assert float(p.mu[0]) == pytest.approx(zr[2 * n], rel=1e-8, abs=0)
        np.testing.assert_allclose(p.x.numpy(), zr[:n], rtol=0, atol=1e-8)


def test_matrix_free_newton_equals_the_dense_one():
    n = 31
    solve, z0 = bratu_reference(n)
    z = solve(1.0, z0)
    x, mu = torch.tensor(z[:n]), make_mu(z[2 * n] * 1.001, 1.0)
    dense = follow(bratu_system(n), x, mu, low=1.0, high=1.5, step=0.25)
    gmres = follow(bratu_system(n), x, mu, low=1.0, high=1.5, step=0.25, dense_below=0)
    np.testing.assert_allclose(gmres.column("lambda"), dense.column("lambda"), rtol=1e-11, atol=0)


def test_bad_options_are_one_line():
    _, _, system = gaussian(2)
    for kwargs, match in ((dict(free="lambda", along="lambda"), "two different"),
                          (dict(free="beta"), "free must be one of"), (dict(kind="cusp"), "kind must be one of"),
                          (dict(mode=-1), "mode must be"), (dict(gtol=0.0), "gtol must be")):
        with pytest.raises(ValueError, match=match):
            CriticalCurveTracer(system, **kwargs)
    with pytest.raises(ValueError, match="outside the range"):
        follow(system, torch.zeros(14, dtype=torch.float64), make_mu(1.0, 2.0), low=0.3, high=1.5, step=0.1)


def test_no_critical_point_nearby_is_a_continuation_error():
    """A regular minimum far from any critical multiplier: Newton on the extended system fails, one line."""
    problem, cf, system = gaussian(2)
    theta = {k: torch.as_tensor(v) for k, v in cf.theta_star(3.0, 2.0).items()}
    tracer = CriticalCurveTracer(system, maxiter=4)
    with pytest.raises(ContinuationError, match="no critical point found near"):
        tracer.start(system.flatten(theta), make_mu(3.0, 2.0))


def dense_index(problem, system, lam, gam) -> int:
    x = torch.zeros(system.flatten(problem.init_params(0)).numel(), dtype=torch.float64)
    H = torch.func.hessian(lambda y: system.objective(y, make_mu(lam, gam)))(x).numpy()
    vals = np.linalg.eigvalsh(0.5 * (H + H.T))
    return int((vals < -1e-9 * np.abs(vals).max()).sum())


def test_branch_index_counts_the_trivial_branchs_negative_eigenvalues():
    problem, _, system = gaussian(3)
    x0 = torch.zeros(21, dtype=torch.float64)
    for lam, gam in ((0.3, 0.8), (1.0, 0.9), (2.0, 1.5), (2.8, 2.6)):
        x, index, at_least = branch_index(system, x0, make_mu(0.4, 0.8), make_mu(lam, gam))
        assert float(x.abs().max()) < 1e-12 and not at_least
        assert index == dense_index(problem, system, lam, gam)


def small_range(tmp_path, name, low, high):
    """The linear-Gaussian configuration with [phase_diagram] over a smaller range of gamma."""
    import tomllib

    from continuation.files.config import write_toml

    config = tomllib.loads((CONFIGS / "gaussian_phase_diagram.toml").read_text())
    config["phase_diagram"].update(range=[low, high], step=0.04)
    return write_toml(config, tmp_path / name)


def test_phase_diagram_command_writes_the_curves_and_the_plane(tmp_path, capsys):
    out = tmp_path / "phase.nc"
    config = small_range(tmp_path, "c.toml", 0.4, 1.25)
    assert main(["phase-diagram", str(config), "--out", str(out), "--quiet"]) == 0
    assert "3 critical curves" in capsys.readouterr().out
    assert out.with_suffix(".png").stat().st_size > 10_000 and out.with_suffix(".path.nc").exists()
    ds = xr.load_dataset(out)
    problem, cf, system = gaussian(3)
    assert list(ds.curve_kind.values) == [1, 1, 1]
    # k - r equivalent latent units switch on together (r on before): 3, 2, 1; at theta = 0 the gauge
    # orbit is a point, and deflating its rounding-size "directions" had reported the first as 1
    assert list(ds.curve_multiplicity.values) == [3, 2, 1]
    for i in range(3):
        ok = np.isfinite(ds["gamma"].values[i])
        gam, lam = ds["gamma"].values[i][ok], ds["lambda"].values[i][ok]
        assert len(gam) >= 20
        ref = np.array([cf.critical_lambda(g, i) for g in gam])
        np.testing.assert_allclose(lam, ref, rtol=1e-8, atol=0)
        assert ds.curve_event_gamma.values[i] == pytest.approx(GAMMA0)
    # every region's index is the trivial branch's, measured by an independent dense Hessian
    assert ds.sizes["region"] >= 6
    for lam, gam, index in zip(ds.region_lambda.values, ds.region_gamma.values, ds.region_index.values):
        assert index == dense_index(problem, system, float(lam), float(gam))
    assert ds["lambda"].attrs["units"] == "1" and ds["F"].attrs["units"] == "nats per sample"
    # the file's own path is reused with --path (no second run): the same curves over a part of the range
    again = tmp_path / "again.nc"
    assert main(["phase-diagram", str(small_range(tmp_path, "d.toml", 0.72, 0.88)), "--out", str(again),
                 "--path", str(out.with_suffix(".path.nc")), "--quiet"]) == 0
    part = xr.load_dataset(again)
    assert not (tmp_path / "again.path.nc").exists() and part.sizes["curve"] == 3
    for i in range(3):
        ok = np.isfinite(part["gamma"].values[i])
        ref = np.array([cf.critical_lambda(g, i) for g in part["gamma"].values[i][ok]])
        np.testing.assert_allclose(part["lambda"].values[i][ok], ref, rtol=1e-8, atol=0)


@pytest.mark.parametrize("table, match", [
    ({}, "needs a \\[phase_diagram\\] table"),
    ({"phase_diagram": {"along": "gamma"}}, "range must be"),
    ({"phase_diagram": {"along": "gamma", "range": [2.0, 1.0]}}, "range must be"),
    ({"phase_diagram": {"along": "lambda", "range": [0.5, 2.0]}}, "is the multiplier the process moves"),
    ({"phase_diagram": {"along": "gamma", "range": [1.0, 2.0]}}, "must contain the start's gamma"),
    ({"phase_diagram": {"along": "gamma", "range": [0.3, 2.0], "stride": 1}}, "unknown key 'stride'"),
    ({"phase_diagram": {"along": "gamma", "range": [0.3, 2.0], "step": -1}}, "step must be a positive number"),
])
def test_phase_diagram_bad_tables_are_one_line(tmp_path, capsys, table, match):
    import tomllib

    config = tomllib.loads((CONFIGS / "gaussian_phase_diagram.toml").read_text())
    config.pop("phase_diagram")
    config.update(table)
    from continuation.files.config import write_toml

    path = write_toml(config, tmp_path / "c.toml")
    assert main(["phase-diagram", str(path), "--out", str(tmp_path / "p.nc"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
    import re

    assert re.search(match, err[0]), err[0]
    assert not (tmp_path / "p.path.nc").exists()  # refused before any work


def test_a_run_of_the_same_file_ignores_the_table_and_checks_it(tmp_path):
    from continuation.files.config import ConfigError, build_run, load_config

    config = load_config(CONFIGS / "gaussian_phase_diagram.toml")
    assert build_run(config)["monitor"] is not None
    config["phase_diagram"]["range"] = [1.0]
    with pytest.raises(ConfigError, match="range must be"):
        build_run(config)


def test_a_path_without_events_is_one_line(tmp_path, capsys):
    import tomllib

    from continuation.files.config import write_toml

    config = tomllib.loads((CONFIGS / "gaussian_phase_diagram.toml").read_text())
    config["stop"]["target"] = {"lambda": 0.6}  # before the first switch-on
    path = write_toml(config, tmp_path / "c.toml")
    assert main(["phase-diagram", str(path), "--out", str(tmp_path / "p.nc"), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no located fold or bifurcation" in err[0]


def test_bratu_phase_diagram_config_follows_the_fold_in_the_load(tmp_path):
    """validation/configs/bratu_phase_diagram.toml: pseudo-arclength locates the fold at gamma = 1, the
    command follows it over gamma in [0.25, 4]; its lambda*(gamma) against scipy's extended system."""
    out = tmp_path / "bp.nc"
    assert main(["phase-diagram", str(CONFIGS / "bratu_phase_diagram.toml"), "--out", str(out), "--quiet"]) == 0
    ds = xr.load_dataset(out)
    assert ds.sizes["curve"] == 1 and int(ds.curve_kind.values[0]) == 0  # a fold
    gam, lam = ds["gamma"].values[0], ds["lambda"].values[0]
    ok = np.isfinite(gam)
    assert ok.sum() >= 5 and gam[ok].min() == pytest.approx(0.25) and gam[ok].max() == pytest.approx(4.0)
    solve, z = bratu_reference(63)
    z = solve(1.0, z)
    for g, l in list(zip(gam[ok], lam[ok]))[::4]:
        z = solve(float(g), z)
        assert l == pytest.approx(z[2 * 63], rel=1e-8, abs=0)
    # left of the fold the start branch (the minimum) is there with index 0; right of it there is none
    left = ds.region_lambda.values < np.interp(ds.region_gamma.values, gam[ok][np.argsort(gam[ok])],
                                               lam[ok][np.argsort(gam[ok])])
    assert (ds.region_index.values[left] == 0).all() and (ds.region_index.values[~left] == -1).all()


def test_phase_diagram_refuses_before_any_work(tmp_path, capsys):
    """What the new user's trial found: a monitor that is off, a --path of another problem, steps that
    contradict each other, an --out that exists; each one line, exit 2, nothing run."""
    import tomllib

    from continuation.files.config import write_toml

    base = tomllib.loads((CONFIGS / "gaussian_phase_diagram.toml").read_text())
    cases = []
    off = {**base, "monitor": {"enabled": False}}
    cases.append((write_toml(off, tmp_path / "off.toml"), [], "the monitor is off"))
    steps = {**base, "phase_diagram": {**base["phase_diagram"], "max_step": 0.01, "min_step": 0.1}}
    cases.append((write_toml(steps, tmp_path / "steps.toml"), [], "step = 0.05 exceeds max_step = 0.01"))
    tree_root = tmp_path / "tree.branches" / "branch_000.nc"
    assert main(["run", str(CONFIGS / "chafee_infante_tree.toml"), "--out", str(tree_root), "--quiet"]) == 0
    cases.append((CONFIGS / "gaussian_phase_diagram.toml", ["--path", str(tree_root)],
                  "its points have 40 parameters, the configuration's problem 21"))
    (tmp_path / "exists.nc").write_text("")
    for config, extra, match in cases:
        out = tmp_path / "p.nc"
        assert main(["phase-diagram", str(config), "--out", str(out), "--quiet", *extra]) == 2, match
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and match in err[0], err
        assert not out.exists() and not out.with_suffix(".path.nc").exists()
    assert main(["phase-diagram", str(CONFIGS / "gaussian_phase_diagram.toml"), "--out", str(tmp_path / "exists.nc"),
                 "--quiet"]) == 2
    assert "exists" in capsys.readouterr().err


def test_python_api_mistakes_are_one_line():
    _, _, system = gaussian(2)
    with pytest.raises(ValueError, match="low < high"):
        follow(system, torch.zeros(14, dtype=torch.float64), make_mu(1.0, 1.0), low=1.5, high=0.5, step=0.1)
    with pytest.raises(TypeError, match="mu must be a tensor of shape"):
        follow(system, torch.zeros(14, dtype=torch.float64), [1.0, 1.0, 0.0], low=0.5, high=1.5, step=0.1)
