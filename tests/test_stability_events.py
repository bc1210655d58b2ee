"""Stability monitoring, events and branch switching (issue 11) against closed forms.

The linear-Gaussian problem (5-d input, 2-d label, 3-d latent, float64) has closed-form critical
multipliers where a latent direction switches on (problems/linear_gaussian_closed_form.py, numpy
and scipy only): the located events must agree to 1e-8 relative, in both directions of travel,
for a quasi-static path in lambda and for an iso-C path, and past each one the path must be on
the minimising branch (F equal to the closed-form minimum to 1e-10, Morse index 0).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from scipy.optimize import brentq

from continuation import Output, Start, continue_path
from continuation.strategies.arclength import BorderedNewtonCorrector, PseudoArclength, PseudoArclengthPredictor
from continuation.files.config import ConfigError, build_run
from continuation.strategies.correctors import NewtonCorrector, TrustRegionCorrector
from continuation.errors import ContinuationError
from continuation.singular.monitor import Monitor
from continuation.files.schema import dataset_to_rows, event_file, rows_to_dataset
from continuation.files.path import load_path
from continuation.strategies.predictors import ODEPredictor
from continuation.strategies.processes import IsoClassification, QuasiStatic
from continuation.strategies.projections import NewtonProjection
from continuation.singular.spectrum import non_gauge_eigenvalues
from continuation.singular.stability import lowest_eigenpairs
from continuation.strategies.step_control import AdaptiveSteps, FixedSteps, StopRule
from continuation.surface.system import EquilibriumSystem
from problems import LinearGaussianData, LinearGaussianGibbsProblem, make_mu
from problems.bratu import bratu_problem
from problems.linear_gaussian_closed_form import LinearGaussianClosedForm
from solvers import Dense

GAMMA = 1.7  # quasi-static paths in lambda at this gamma cross two switch-ons in (1, 3)


@pytest.fixture(scope="module")
def case():
    data = LinearGaussianData.random(5, 2, seed=0, noise=0.4)
    problem = LinearGaussianGibbsProblem.from_data(data, latent_dim=3, sigma_d=2.0, sigma_c=1.0)
    return problem, LinearGaussianClosedForm.of(problem)


def theta_star(cf, lam, gam):
    return {k: torch.as_tensor(v) for k, v in cf.theta_star(lam, gam).items()}


def events(path) -> list[dict]:
    out = []
    for j in range(path.sizes.get("event", 0)):
        out.append({k[len("event_"):]: path[k].values[j].item() if hasattr(path[k].values[j], "item")
                    else path[k].values[j] for k in path.data_vars if k.startswith("event_")})
    return out


def assert_on_minimum(path, cf):
    """Every written point has Morse index 0 and F equal to the closed-form minimum to 1e-10."""
    assert (path.morse_index.values == 0).all(), path.morse_index.values
    F_star = np.array([cf.free_energy(l, g) for l, g in zip(path["lambda"].values, path["gamma"].values)])
    np.testing.assert_allclose(path.F.values, F_star, rtol=0, atol=1e-10)


def test_lowest_eigenpairs_dense_and_lobpcg_match_the_dense_reference(case):
    problem, cf = case
    lam, gam = 2.5, GAMMA  # three latent directions on: a 3-dimensional gauge orbit
    system = EquilibriumSystem(problem, problem.init_params(0))
    x, mu = system.flatten(theta_star(cf, lam, gam)), make_mu(lam, gam)
    ref, _ = non_gauge_eigenvalues(system, x, mu)
    dense = lowest_eigenpairs(system, x, mu, 3)
    lob = lowest_eigenpairs(system, x, mu, 3, dense_below=0)
    warm = lowest_eigenpairs(system, x, mu, 3, dense_below=0, previous=lob)
    assert dense.method == "dense" and lob.method == "lobpcg" and lob.converged
    np.testing.assert_allclose(dense.values.numpy(), ref[:3].numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(lob.values.numpy(), ref[:3].numpy(), rtol=0, atol=1e-8)
    assert warm.hvps < lob.hvps  # the previous vectors start LOBPCG near the answer
    Q = system.deflation(x).Q
    assert float((Q.T @ lob.vectors).abs().max()) < 1e-10  # off the gauge orbit
    assert dense.index(1e-9) == 0 and lob.residual < 1e-6
    with pytest.raises(ValueError, match="monitor modes must be an integer"):
        lowest_eigenpairs(system, x, mu, 100)


@pytest.mark.parametrize("rate", [1.0, -1.0], ids=["increasing", "decreasing"])
def test_quasi_static_switches_located_and_path_stays_on_the_minimum(case, rate, tmp_path):
    problem, cf = case
    critical = [cf.critical_lambda(GAMMA, d) for d in (1, 2)]
    assert 1.0 < critical[0] < critical[1] < 3.0
    start, target = (1.0, 3.0) if rate > 0 else (3.0, 1.0)
    out = tmp_path / "path.nc"
    path = continue_path(problem, QuasiStatic(lambda_rate=rate), ODEPredictor("rk4"), NewtonCorrector(gtol=1e-11),
                         AdaptiveSteps(initial=0.1, max_step=0.5), StopRule(target={"lambda": target}),
                         start=Start(mu=(start, GAMMA), theta0=theta_star(cf, start, GAMMA)),
                         output=Output(out, progress=False))
    assert path.attrs["status"] == "finished"
    found = [e for e in events(path) if e["type"] == "bifurcation"]
    got = sorted(e["lambda"] for e in found)
    assert len(got) == 2, events(path)
    np.testing.assert_allclose(got, critical, rtol=1e-8, atol=0)
    assert all(abs(e["eig"]) < 1e-6 and e["located"] == 1 for e in found)
    assert_on_minimum(path, cf)
    # the file holds the same events, with the event points and null vectors beside it
    again = events(load_path(out))
    assert [e["lambda"] for e in again] == [e["lambda"] for e in events(path)]
    system = EquilibriumSystem(problem, problem.init_params(0))
    for e in again:
        if e["type"] == "bifurcation":
            saved = torch.load(event_file(out, e["checkpoint"]))
            mu = make_mu(e["lambda"], e["gamma"])
            v = saved["null_vector"]
            assert abs(float(v.norm()) - 1) < 1e-12
            assert float(system.hessian(saved["x"], mu)(v).norm()) < 1e-6  # A v = 0: a null vector there
    if rate > 0:  # the saddle past each switch-on is left for the minimum, and the switch says so
        switches = [e for e in events(path) if e["type"] == "branch_switch"]
        assert len(switches) == 2 and all(e["index_after"] == 0 < e["index_before"] for e in switches)


def iso_c_reference(cf, C0):
    def gamma_at(lam):
        return math.exp(brentq(lambda lg: cf.functionals(lam, math.exp(lg))["C"] - C0, math.log(1e-6),
                               math.log(1e5), xtol=1e-15, rtol=1e-15))

    def critical(d, lo, hi):
        lam = brentq(lambda l: cf.spectrum(l, gamma_at(l))[0][d] - 1.0, lo, hi, xtol=1e-15, rtol=1e-15)
        return lam, gamma_at(lam)

    return gamma_at, [critical(1, 1.0, 2.0), critical(2, 2.0, 3.0)]


@pytest.mark.parametrize("alpha", [1.0, -1.0], ids=["increasing", "decreasing"])
def test_iso_c_switches_located_on_the_iso_c_curve(case, alpha):
    problem, cf = case
    C0 = cf.functionals(1.0, GAMMA)["C"]
    gamma_at, critical = iso_c_reference(cf, C0)
    start, target = (1.0, 3.0) if alpha > 0 else (3.0, 1.0)
    g0 = gamma_at(start)
    path = continue_path(problem, IsoClassification(alpha=alpha), ODEPredictor("rk4"), NewtonCorrector(gtol=1e-11),
                         AdaptiveSteps(initial=0.05, max_step=0.5, max_drift=None),
                         StopRule(target={"lambda": target}), projection=NewtonProjection(),
                         start=Start(mu=(start, g0), theta0=theta_star(cf, start, g0)), output=Output(progress=False))
    assert path.attrs["status"] == "finished"
    found = sorted((e["lambda"], e["gamma"]) for e in events(path) if e["type"] == "bifurcation")
    assert len(found) == 2, events(path)
    np.testing.assert_allclose(np.array(found), np.array(critical), rtol=1e-8, atol=0)
    assert_on_minimum(path, cf)
    np.testing.assert_allclose(path.C.values, C0, rtol=1e-9)


def test_follow_keeps_the_saddle_and_says_so(case):
    """branch = "follow": past the switch-on the path stays on the branch where the third latent
    direction is off, now a saddle: index 1 written, F above the closed-form minimum, the event in
    the path; further on, the fourth data direction (l_3 = 1 in closed form) makes it index 2."""
    problem, cf = case
    lam_c = cf.critical_lambda(GAMMA, 2)
    lam_4 = brentq(lambda l: cf.spectrum(l, GAMMA)[0][3] - 1.0, 2.0, 3.0, xtol=1e-15, rtol=1e-15)
    start = 1.9
    path = continue_path(problem, QuasiStatic(), ODEPredictor("rk4"), NewtonCorrector(gtol=1e-11),
                         AdaptiveSteps(initial=0.1, max_step=0.25), StopRule(target={"lambda": 2.4}),
                         start=Start(mu=(start, GAMMA), theta0=theta_star(cf, start, GAMMA)),
                         output=Output(progress=False),
                         monitor=Monitor(branch="follow"))
    ev = events(path)
    assert [(e["type"], e["index_before"], e["index_after"]) for e in ev] == [("bifurcation", 0, 1),
                                                                               ("bifurcation", 1, 2)]
    np.testing.assert_allclose([e["lambda"] for e in ev], [lam_c, lam_4], rtol=1e-8, atol=0)
    lam = path["lambda"].values
    np.testing.assert_array_equal(path.morse_index.values, (lam > lam_c).astype(int) + (lam > lam_4))
    F_star = np.array([cf.free_energy(l, GAMMA) for l in lam[lam > lam_c]])
    assert (path.F.values[lam > lam_c] - F_star > 1e-6).all()  # not the minimum: the saddle, reported


def test_user_crossing_of_a_functional_is_located(case):
    problem, cf = case
    value = 2.2
    lam_ref = brentq(lambda l: cf.functionals(l, GAMMA)["C"] - value, 1.3, 2.0, xtol=1e-15, rtol=1e-15)
    path = continue_path(problem, QuasiStatic(), ODEPredictor("rk4"), NewtonCorrector(gtol=1e-11),
                         AdaptiveSteps(initial=0.1, max_step=0.5), StopRule(target={"lambda": 2.0}),
                         start=Start(mu=(1.5, GAMMA), theta0=theta_star(cf, 1.5, GAMMA)), output=Output(progress=False),
                         monitor=Monitor(crossings={"C": [value]}))
    crossing = [e for e in events(path) if e["type"] == "crossing"]
    assert len(crossing) == 1 and crossing[0]["detail"] == "C crossed 2.2"
    assert abs(crossing[0]["lambda"] - lam_ref) <= 1e-8 * lam_ref
    assert abs(crossing[0]["C"] - value) < 1e-9


def test_fold_is_an_event_and_the_far_branch_has_index_one():
    """Bratu (N = 31) by pseudo-arclength from lambda = 3 over the fold and back down to 2: the fold
    is written as an event at the value tests/test_energy_fold.py checks against scipy, and every
    point past it has Morse index 1 (the monitor does not switch: pseudo-arclength follows branches)."""
    from test_energy_fold import reference_fold

    path = continue_path(bratu_problem(31), PseudoArclength(), PseudoArclengthPredictor(), BorderedNewtonCorrector(),
                         AdaptiveSteps(initial=0.1, max_step=0.5),
                         StopRule(max_steps=14, target={"lambda": 2.0}, away_points=0), start=(3.0, 1.0),
                         output=Output(progress=False))
    assert path.attrs["status"] == "finished"
    ev = events(path)
    assert [e["type"] for e in ev] == ["fold"]
    assert abs(ev[0]["lambda"] - reference_fold(31)) <= 1e-8 * ev[0]["lambda"]
    k = ev[0]["step"]
    assert (path.morse_index.values[:k] == 0).all() and (path.morse_index.values[k:] == 1).all()


def test_crossings_alone_and_of_a_missing_quantity(case):
    """modes = 0: no eigenvalues, no eig column, the crossing still located; a quantity the problem
    does not have is refused at the start, naming what it has."""
    problem, cf = case
    value = 2.2
    lam_ref = brentq(lambda l: cf.functionals(l, GAMMA)["C"] - value, 1.3, 2.0, xtol=1e-15, rtol=1e-15)
    kw = dict(start=Start(mu=(1.5, GAMMA), theta0=theta_star(cf, 1.5, GAMMA)), output=Output(progress=False))
    args = (problem, QuasiStatic(), ODEPredictor("rk4"), NewtonCorrector(gtol=1e-11),
            AdaptiveSteps(initial=0.1, max_step=0.5), StopRule(target={"lambda": 2.0}))
    path = continue_path(*args, monitor=Monitor(modes=0, crossings={"C": [value]}), **kw)
    assert "eig" not in path and "morse_index" not in path
    assert int(path.monitor_hvps.sum()) == int(path.event_hvps.sum()) > 0  # the location's Newton trials only
    assert [str(t) for t in path.event_type.values] == ["crossing"]
    assert abs(float(path.event_lambda.values[0]) - lam_ref) <= 1e-8 * lam_ref
    with pytest.raises(ContinuationError, match="'kl_z0' not among this problem's quantities \\(R, D, C, F\\)"):
        continue_path(*args, monitor=Monitor(modes=0, crossings={"kl_z0": [0.01]}), **kw)


def test_rows_round_trip_with_eigenvalues_and_events():
    rows = [{"s": 0.0, "lambda": 1.0, "gamma": 1.0, "t": 0.0, "eig": (0.1, 0.2), "morse_index": 0, "events": []},
            {"s": 0.5, "lambda": 1.5, "gamma": 1.0, "t": 0.0, "eig": (-0.1, 0.2), "morse_index": 1,
             "events": [{"type": "bifurcation", "step": 1, "lambda": 1.25, "eig": 1e-12, "detail": "x", "mode": 0}]}]
    ds = rows_to_dataset(rows, {})
    assert ds["eig"].dims == ("step", "mode") and ds.sizes["event"] == 1
    back = dataset_to_rows(ds)
    assert back[1]["eig"] == (-0.1, 0.2) and back[1]["events"][0]["lambda"] == 1.25 and back[0]["events"] == []


def test_monitor_options_are_checked():
    assert build_run({"monitor": {"enabled": False}})["monitor"] is None
    assert build_run({})["monitor"] == "auto"
    assert build_run({"monitor": {"every": 2, "crossings": {"C": [0.1, 0.2]}}})["monitor"].crossings == {"C": [0.1, 0.2]}
    for table, match in [({"every": 0}, "every"), ({"branch": "lowest"}, "branch"), ({"crossings": {"1x": [1]}}, "not a quantity's name"),
                         ({"crossings": {"C": ["a"]}}, "finite numbers"), ({"modes": 1.5}, "modes"),
                         ({"enabled": "yes"}, "enabled"), ({"bogus": 1}, "bogus")]:
        with pytest.raises(ConfigError, match=match):
            build_run({"monitor": table})


CONFIGS = Path(__file__).parents[1] / "validation" / "configs"


@pytest.mark.parametrize("config, kill_at", [("gaussian_switch_on.toml", "checkpoint:3"),
                                             ("bratu_fold.toml", "checkpoint:5")])
def test_killed_monitored_run_resumes_to_the_same_events(tmp_path, config, kill_at):
    """A run killed after a branch switch (or past the fold) and resumed gives the uninterrupted
    run's rows and events: the eigenvalue history and the monitored point are rebuilt from the file."""
    cmd = [sys.executable, "-m", "continuation", "run", str(CONFIGS / config), "--quiet", "--out"]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]), OMP_NUM_THREADS="1")
    full, part = tmp_path / "full.nc", tmp_path / "part.nc"
    subprocess.run(cmd + [str(full)], check=True, env=env, capture_output=True)
    killed = subprocess.run(cmd + [str(part)], env=dict(env, CONTINUATION_TEST_KILL_AT=kill_at), capture_output=True)
    assert killed.returncode != 0 and load_path(part).attrs["status"] == "running"
    subprocess.run(cmd + [str(part), "--resume"], check=True, env=env, capture_output=True)
    a, b = load_path(full), load_path(part)
    for ds in (a, b):
        del ds.attrs["checkpoint_dir"]
    assert [str(t) for t in a.event_type.values] == [str(t) for t in b.event_type.values]
    xr.testing.assert_allclose(a.drop_vars(["seconds"]), b.drop_vars(["seconds"]), rtol=1e-9, atol=1e-12)


def test_energy_run_from_the_command_line_with_its_progress_bar(tmp_path, capsys):
    """C = 0 for an energy without gamma: the progress bar's drift must not divide by it; the
    summary names the fold."""
    from continuation.apps.cli import main

    assert main(["run", str(CONFIGS / "bratu_fold.toml"), "--out", str(tmp_path / "b.nc")]) == 0
    out = capsys.readouterr().out
    assert "finished" in out and "event fold at lambda = 3.5133843" in out


def test_a_point_where_j_is_not_finite_is_rejected_not_written(tmp_path):
    """J = lambda x^2 / 2 + log(2 - lambda): pseudo-arclength walks lambda past 2, where J is NaN at
    every x; no row with a NaN is written, and the run does not claim to have finished."""
    from problems.energy import EnergyProblem

    problem = EnergyProblem(objective=lambda th, mu: 0.5 * mu[0] * (th["x"] ** 2).sum() + torch.log(2 - mu[0]),
                            theta0={"x": torch.full((2,), 0.3, dtype=torch.float64)})
    path = continue_path(problem, PseudoArclength(), PseudoArclengthPredictor(), BorderedNewtonCorrector(),
                         AdaptiveSteps(initial=0.2, max_step=0.5), StopRule(target={"lambda": 3.0}),
                         start=(1.0, 1.0), output=Output(progress=False))
    assert np.isfinite(path.F.values).all() and np.isfinite(path.R.values).all()
    assert path.attrs["status"] == "stopped" and (path["lambda"].values < 2).all()


def _tilted_well(theta, mu):
    """x^4/4 - x^2/2 - (lambda - 1) x + y^2/2: the left minimum meets the saddle and both vanish
    at lambda_f = 1 + 2/(3 sqrt 3), x = -1/sqrt 3 (J' = x^3 - x - (lambda - 1) = 0 = J'' = 3x^2 - 1)."""
    x, y = theta["x"][0], theta["x"][1]
    return x**4 / 4 - x**2 / 2 - (mu[0] - 1) * x + y**2 / 2


def _soft_well(theta, mu):
    """(1 + (lambda - 1.3)^2) x^2 / 2 + y^2: one minimum whose lowest eigenvalue has a smooth minimum."""
    x, y = theta["x"][0], theta["x"][1]
    return (1 + (mu[0] - 1.3) ** 2) * x**2 / 2 + y**2


@pytest.mark.parametrize("steps", [AdaptiveSteps(initial=0.1, max_step=0.1), AdaptiveSteps(initial=0.05, max_step=0.05)],
                         ids=["0.1", "0.05"])
def test_a_branch_ending_at_a_fold_is_a_located_fold_event_and_the_jump_is_said(steps):
    """Quasi-static in lambda from the left well of a tilted double well: the left minimum ends at a
    saddle-node (no eigenvalue crosses zero on any branch the path visits); the corrector lands in the
    right well. The event is a fold at the closed form's lambda_f to 1e-8, and the path past it is
    in the right well. A lowest eigenvalue with a smooth minimum (one branch throughout) is no event.
    (The finder looks where an eigenvalue's linear extrapolation through the last two points falls
    below zero by the new point: a fold jumped in one step from far, fixed steps of 0.1 from an
    eigenvalue of 0.86 here, is not seen.)"""
    from problems.energy import EnergyProblem

    def run(objective, x0, lam0, lam1):
        problem = EnergyProblem(objective, {"x": torch.tensor(x0, dtype=torch.float64)})
        return continue_path(problem, QuasiStatic(lambda_rate=1.0), ODEPredictor("euler"),
                             TrustRegionCorrector(gtol=1e-12, maxiter=100), steps,
                             StopRule(max_steps=30, target={"lambda": lam1}), start=Start(mu=(lam0, 1.0)),
                             output=Output(progress=False), monitor=Monitor(modes=2, dense_below=10), solver=Dense())

    path = run(_tilted_well, [-1.2, 0.1], 0.8, 1.8)
    assert path.attrs["status"] == "finished"
    ev = events(path)
    assert [e["type"] for e in ev] == ["fold"] and ev[0]["located"] == 1 and ev[0]["method"] == "bisection"
    lam_f = 1 + 2 / (3 * math.sqrt(3))
    assert abs(ev[0]["lambda"] - lam_f) <= 1e-8 * lam_f, ev[0]["lambda"] - lam_f
    assert "first-order" in ev[0]["detail"] and ev[0]["eig"] < 1e-3  # 3 x^2 - 1 near the fold
    x = -path["D"].values  # D = dJ/dlambda = -x: the left well before the fold, the right well past it
    past = path["lambda"].values > lam_f
    assert past.any() and (x[~past] < -0.5).all() and (x[past] > 1.0).all(), x
    assert (path.morse_index.values == 0).all()

    smooth = run(_soft_well, [0.3, 0.2], 1.0, 1.6)
    assert smooth.attrs["status"] == "finished" and smooth.sizes.get("event", 0) == 0


def _soft_y(theta, mu):
    """A double well in x (its left minimum exists for every lambda here) and a y-mode whose stiffness
    (lambda - 1.5)^2 + 0.005 falls toward zero, linearly extrapolated below it, and turns back."""
    x, y = theta["x"][0], theta["x"][1]
    return x**4 / 4 - x**2 / 2 - 0.05 * (mu[0] - 1) * x + ((mu[0] - 1.5) ** 2 + 0.005) * y**2 / 2


@pytest.mark.parametrize("jumps", [False, True], ids=["smooth", "jumper"])
def test_a_jump_off_a_branch_that_goes_on_is_said(jumps):
    """A corrector that leaves a branch which still exists (as trust-newton's L-BFGS phase did on the
    small collapse path, docs/neural_equilibrium.md): here one that starts every solve past lambda
    1.45 from the right well while the left minimum goes on. Where the falling y-mode sends the
    event finder to look, it finds the old branch at the new lambda: a "jump" event, not a fold. The
    same path with the plain trust region (no jump) writes no event."""
    from dataclasses import dataclass
    from typing import ClassVar

    from continuation.strategies.correctors import Corrector
    from problems.energy import EnergyProblem

    @dataclass
    class Jumper(Corrector):
        name: ClassVar[str] = "jumper"
        counts: ClassVar[str] = "newton_iters"
        easy_iters: ClassVar[int | None] = None
        max_iters: ClassVar[int | None] = None

        def correct(self, system, x, mu):
            if jumps and float(mu[0]) > 1.45:
                x = x.clone()
                x[0] = 1.5
            return TrustRegionCorrector(gtol=1e-12, maxiter=100).correct(system, x, mu)

    problem = EnergyProblem(_soft_y, {"x": torch.tensor([-1.0, 0.1], dtype=torch.float64)})
    path = continue_path(problem, QuasiStatic(lambda_rate=1.0), ODEPredictor("euler"), Jumper(), FixedSteps(size=0.1),
                         StopRule(max_steps=8, target={"lambda": 1.6}), start=Start(mu=(1.0, 1.0)),
                         output=Output(progress=False), monitor=Monitor(modes=2, dense_below=10), solver=Dense())
    assert path.attrs["status"] == "finished"
    ev = events(path)
    if not jumps:
        assert ev == []
        return
    assert [e["type"] for e in ev] == ["jump"], ev
    assert ev[0]["lambda"] == pytest.approx(1.5, abs=1e-12) and "goes on" in ev[0]["detail"]
    assert ev[0]["D"] > 0.01  # the old branch's point: D = -0.05 x > 0, the left well
