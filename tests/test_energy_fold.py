"""Energies given by J directly, pseudo-arclength continuation through a fold, fold location.

The classic example: the 1-D Bratu problem u'' + lambda e^u = 0 (problems/bratu.py) as the
energy J(u) = h sum 1/2 |grad u|^2 - lambda h sum e^u. The discrete fold is computed here
independently (numpy dense Jacobians, scipy fsolve on [F = 0, F_u v = 0, |v| = 1]) and the
located fold must agree to 1e-8 relative; past the fold the upper branch has Morse index 1.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy.optimize import fsolve

from continuation.strategies.arclength import (BorderedNewtonCorrector, PseudoArclength, PseudoArclengthPredictor,
                                    extended_tangent)
from continuation.apps.cli import main
from continuation.files.config import ConfigError, build_run
from continuation.engine.driver import Output, continue_path
from continuation.singular.fold import detect_folds, fold_events, locate_fold
from continuation.files.path import load_path
from continuation.strategies.predictors import ODEPredictor
from continuation.strategies.processes import QuasiStatic
from continuation.singular.spectrum import non_gauge_eigenvalues
from continuation.strategies.step_control import AdaptiveSteps, StopRule
from continuation.engine.stepper import Stepper, Strategies
from problems import make_mu
from problems.bratu import FOLD_CONTINUUM, bratu_problem
from problems.energy import EnergyProblem
from solvers import MINRES

N = 31


def reference_fold(n: int) -> float:
    """The discrete Bratu fold by scipy alone: lower branch by fsolve up to lambda = 3.4, then
    fsolve on the extended system [L u - lambda e^u = 0, (L - lambda diag e^u) v = 0, v.v = 1]."""
    h = 1.0 / (n + 1)
    L = (2 * np.eye(n) - np.eye(n, k=1) - np.eye(n, k=-1)) / h**2
    F = lambda u, lam: L @ u - lam * np.exp(u)  # noqa: E731
    u = np.zeros(n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for lam in np.linspace(0.5, 3.4, 30):
            u = fsolve(F, u, args=(lam,), fprime=lambda u, lam: L - lam * np.diag(np.exp(u)), xtol=1e-13)
    v = np.linalg.eigh(L - 3.4 * np.diag(np.exp(u)))[1][:, 0]
    v = v * np.sign(v.sum())

    def G(z):
        u, v, lam = z[:n], z[n:2 * n], z[-1]
        return np.concatenate([F(u, lam), (L - lam * np.diag(np.exp(u))) @ v, [v @ v - 1]])

    def dG(z):
        u, v, lam = z[:n], z[n:2 * n], z[-1]
        e = np.exp(u)
        Jm = L - lam * np.diag(e)
        M = np.zeros((2 * n + 1, 2 * n + 1))
        M[:n, :n], M[:n, -1] = Jm, -e
        M[n:2 * n, :n], M[n:2 * n, n:2 * n], M[n:2 * n, -1] = -lam * np.diag(e * v), Jm, -e * v
        M[-1, n:2 * n] = 2 * v
        return M

    z = fsolve(G, np.concatenate([u, v, [3.4]]), fprime=dG, xtol=1e-14)
    assert np.abs(G(z)).max() < 1e-9
    return float(z[-1])


def _strategies(max_steps=9, **stop):
    return Strategies(PseudoArclength(), PseudoArclengthPredictor(), BorderedNewtonCorrector(),
                      AdaptiveSteps(initial=0.1, max_step=0.5), StopRule(max_steps=max_steps, **stop))


@pytest.fixture(scope="module")
def bratu_run():
    """Accepted points of a pseudo-arclength run from lambda = 1 on the lower branch, past the fold."""
    problem = bratu_problem(N)
    stepper = Stepper(problem, _strategies(), solver=MINRES(rtol=1e-12), template=problem.init_params(0))
    mu = make_mu(1.0, 1.0)
    res = stepper.s.corrector.correct(stepper.system, stepper.system.flatten(problem.init_params(0)), mu)
    assert res.converged
    state, row = stepper.init(res.x, mu)
    points, rows = [state.current], [row]
    while not stepper.done(state):
        state, row = stepper.step(state)
        if row is None:
            break
        points.append(state.current)
        rows.append(row)
    return stepper, points, rows


# --- (a) an energy from a function, and from a dotted path in TOML --------------------------

def test_energy_problem_from_a_function_runs_through_continue_path():
    def scalar_fold(theta, mu):  # grad J = x^3 - x - (lambda - 1): folds at lambda = 1 +- 2 / 3^1.5
        x = theta["x"]
        return (x**4 / 4 - x**2 / 2 - (mu[0] - 1.0) * x).sum()

    problem = EnergyProblem(objective=scalar_fold, theta0={"x": torch.tensor([-1.2], dtype=torch.float64)})
    ds = continue_path(problem, PseudoArclength(weight=0.5), PseudoArclengthPredictor(), BorderedNewtonCorrector(),
                       AdaptiveSteps(initial=0.05, max_step=0.2), StopRule(max_steps=60), start=(0.8, 1.0),
                       output=Output(progress=False))
    lam, x = ds["lambda"].values, -ds["D"].values  # D = dJ/dlambda = -x
    assert np.allclose(lam, 1 + x**3 - x, atol=1e-9)  # every point on the S-curve
    turns = [k for k in range(1, len(lam) - 1) if (lam[k] - lam[k - 1]) * (lam[k + 1] - lam[k]) < 0]
    # up to the fold at 1 + 2/3^1.5, down the middle (saddle) branch to 1 - 2/3^1.5, up the last branch
    assert len(turns) == 2 and lam[-1] > 2.0
    assert lam[turns[0]] == pytest.approx(1 + 2 / 3**1.5, abs=0.02)
    assert lam[turns[1]] == pytest.approx(1 - 2 / 3**1.5, abs=0.02)
    # R, D, C by the envelope rule: D = dJ/dlambda = -x, C = 0, J = R + lambda D
    assert np.allclose(ds["C"].values, 0.0)
    assert np.allclose(ds["R"].values + ds["lambda"].values * ds["D"].values, ds["F"].values, atol=1e-12)


CONFIG = """
[problem]
name = "energy"
objective = "problems.bratu:bratu_energy"
size = 31
[start]
lambda = 3.0
gamma = 1.0
[process]
name = "pseudo-arclength"
parameter = "lambda"
[predictor]
name = "pseudo-arclength"
[corrector]
name = "bordered-newton"
[steps]
name = "adaptive"
initial = 0.1
max_step = 0.5
[stop]
max_steps = 40
target = {lambda = 2.0}   # behind the start: reached on the upper branch, after the fold
away_points = 0           # the distance to it grows on the way up to the fold
"""


def test_energy_from_a_dotted_path_runs_from_toml_and_lands_on_a_target_past_the_fold(tmp_path):
    cfg = tmp_path / "bratu.toml"
    cfg.write_text(CONFIG)
    out = tmp_path / "bratu.nc"
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 0
    ds = load_path(out)
    assert ds.attrs["problem"] == "energy" and ds.attrs["process"] == "pseudo-arclength"
    assert ds.attrs["stop_reason"] == "target lambda = 2.0 reached"
    lam = ds["lambda"].values
    top = int(np.argmax(lam))
    assert float(lam[-1]) == 2.0 and lam[top] > 3.45 and (np.diff(lam[top:]) < 0).all()  # round the fold
    assert float(ds["R"][-1]) > 2 * float(ds["R"][0])  # on the upper branch: larger u at smaller lambda
    assert (np.diff(ds["s"].values) > 0).all() and (ds["grad_norm"].values < 1e-9).all()
    assert np.allclose(ds["C"].values, 0.0) and (ds["R"].values > 0).all()


def test_a_bad_dotted_path_is_one_line(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(CONFIG.replace("problems.bratu:bratu_energy", "problems.nothere:energy"))
    assert main(["run", str(cfg), "--out", str(tmp_path / "bad.nc"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "objective 'problems.nothere:energy': cannot import module" in err
    cfg.write_text(CONFIG.replace("problems.bratu:bratu_energy", "problems.bratu:missing"))
    assert main(["run", str(cfg), "--out", str(tmp_path / "bad.nc"), "--quiet"]) == 2
    assert "module 'problems.bratu' has no attribute 'missing'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="^objective 'no-dots' is not a dotted path"):
        from problems.registry import energy
        energy(objective="no-dots", size=3)


def test_incompatible_strategies_are_refused_at_setup():
    import tomllib

    config = tomllib.loads(CONFIG)
    config["predictor"] = {"name": "ode"}
    with pytest.raises(ConfigError, match=r"^\[predictor\] process 'pseudo-arclength' .* needs predictor"):
        build_run(config)
    config["predictor"], config["corrector"] = {"name": "pseudo-arclength"}, {"name": "newton"}
    with pytest.raises(ConfigError, match="corrector 'newton' corrects at fixed mu only"):
        build_run(config)
    with pytest.raises(ValueError, match="follows the extended tangent"):
        continue_path(bratu_problem(5), QuasiStatic(), PseudoArclengthPredictor(), BorderedNewtonCorrector(),
                      AdaptiveSteps(), StopRule(), start=(1.0, 1.0), output=Output(progress=False))
    with pytest.raises(ValueError, match="needs predictor 'pseudo-arclength'"):
        continue_path(bratu_problem(5), PseudoArclength(), ODEPredictor(), BorderedNewtonCorrector(),
                      AdaptiveSteps(), StopRule(), start=(1.0, 1.0), output=Output(progress=False))


# --- (b) the fold, located, against scipy ------------------------------------------------------

def test_fold_located_against_an_independent_reference(bratu_run):
    stepper, points, rows = bratu_run
    taus = [float(p.tangent[p.x.numel()]) for p in points]
    assert detect_folds(points, stepper.s.process) == [k for k in range(len(points) - 1) if taus[k] > 0 > taus[k + 1]]
    events = fold_events(stepper, points)
    assert len(events) == 1
    fold = events[0]
    ref = reference_fold(N)
    assert fold["type"] == "fold" and abs(fold["lambda"] - ref) <= 1e-8 * ref, (fold["lambda"], ref)
    assert abs(fold["eig"]) < 1e-3 and fold["hvps"] < 1000
    assert fold["lambda"] == pytest.approx(FOLD_CONTINUUM, rel=1e-3)  # the discretisation's O(h^2)
    assert set(fold) >= {"s", "lambda", "gamma", "t", "R", "D", "C", "F", "eig", "hvps"}
    # the fold lies between the two points whose tangents disagree in sign
    k = detect_folds(points, stepper.s.process)[0]
    assert points[k].s < fold["s"] < points[k + 1].s
    assert fold["lambda"] > max(rows[k]["lambda"], rows[k + 1]["lambda"])  # the top of the turn
    with pytest.raises(ValueError, match="no fold between"):
        locate_fold(stepper, points[0], points[1])


def test_discrete_fold_converges_to_the_continuum_value():
    refs = [reference_fold(n) for n in (15, 31, 63)]
    errors = [FOLD_CONTINUUM - r for r in refs]
    assert all(e > 0 for e in errors) and 3.5 < errors[0] / errors[1] < 4.5 and 3.5 < errors[1] / errors[2] < 4.5


# --- (c) past the fold: the other branch, Morse index 1 -----------------------------------------

def test_path_continues_past_the_fold_onto_the_index_one_branch(bratu_run):
    stepper, points, rows = bratu_run
    lam = [r["lambda"] for r in rows]
    top = int(np.argmax(lam))
    assert 0 < top < len(lam) - 2 and lam[-1] < lam[top] - 0.3
    for p, r in zip(points, rows):
        ev, _ = non_gauge_eigenvalues(stepper.system, p.x, p.mu)
        negative = int((ev < 0).sum())
        tau_l = float(p.tangent[p.x.numel()])
        assert negative == (1 if tau_l < 0 else 0), (r["lambda"], tau_l, ev[:2])
        assert r["grad_norm"] < 1e-9


# --- (d) the bordered tangent against finite differences -----------------------------------------

def test_bordered_tangent_agrees_with_finite_differences(bratu_run):
    stepper, points, rows = bratu_run
    process, corrector, system = stepper.s.process, stepper.s.corrector, stepper.system
    k = detect_folds(points, process)[0]
    for p in (points[1], points[k]):  # a regular point, and the last point before the fold
        n = p.x.numel()
        tau = torch.cat([p.tangent[:n], p.tangent[n:n + 1]])
        ends = []
        for delta in (1e-3, -1e-3):
            pred = stepper.s.predictor.predict(stepper.context, p.ctx, delta, None, process)
            res = corrector.correct_arclength(system, pred.x, pred.mu, pred.arclength)
            assert res.converged
            ends.append(torch.cat([res.x, res.mu[:1]]))
        fd = (ends[0] - ends[1]) / 2e-3
        assert float((fd - tau).norm() / tau.norm()) < 1e-5
        # and the tangent solves the extended system: A tau_x = b tau_lambda, unit weighted norm
        w_x, w_p = process.weights(n)
        assert w_x * float(tau[:n] @ tau[:n]) + w_p * float(tau[n]) ** 2 == pytest.approx(1.0, rel=1e-12)
    # without a reference the tangent is the natural one, lambda increasing
    p = points[0]
    tx, tp, res = extended_tangent(system, p.x, p.mu, 0, process.weights(p.x.numel()))
    assert res.converged and float(tp) > 0 and torch.allclose(tx, p.tangent[:p.x.numel()], atol=1e-9)


# --- gauge: the bordered solves deflate the latent rotations -------------------------------------

def test_pseudo_arclength_on_a_problem_with_gauge_modes_matches_the_closed_form():
    from problems import LinearGaussianClosedForm
    from problems.registry import PROBLEMS

    problem = PROBLEMS["linear-gaussian"](sigma_diag=[3.0, 1.0, 0.6], B=[[0.3, 1.0, 0.5]],
                                          noise=0.316227766016838, latent_dim=2)
    assert len(problem.gauge_directions(problem.init_params(0))) == 1  # the rotation of the 2-d latent
    ds = continue_path(problem, PseudoArclength(), PseudoArclengthPredictor(),
                       BorderedNewtonCorrector(gtol=1e-11, descent=True), AdaptiveSteps(initial=0.2, max_step=0.5),
                       StopRule(max_steps=10, target={"lambda": 1.5}), start=(1.0, 1.0), output=Output(progress=False))
    closed = LinearGaussianClosedForm.of(problem)
    assert ds.attrs["stop_reason"] == "target lambda = 1.5 reached"
    for k in range(ds.sizes["step"]):
        lam = float(ds["lambda"][k])
        assert float(ds["R"][k]) == pytest.approx(closed.functionals(lam, 1.0)["R"], rel=1e-9)
    assert (ds["krylov_residual"].values < 1e-11).all()


def test_a_target_the_corrector_carries_past_is_landed_on_at_fixed_lambda():
    """From lambda = 3.48 the step that passes the fold predicts lambda up (the tangent still
    rises) and the corrector brings it down past the target 3.45: the step lands on 3.45 at fixed
    lambda from the corrected point, on the upper branch; s is the projected arclength."""
    problem = bratu_problem(N)
    ds = continue_path(problem, PseudoArclength(), PseudoArclengthPredictor(), BorderedNewtonCorrector(),
                       AdaptiveSteps(initial=0.1, max_step=0.5),
                       StopRule(max_steps=30, target={"lambda": 3.45}, away_points=0), start=(3.48, 1.0),
                       output=Output(progress=False))
    lam = ds["lambda"].values
    assert ds.attrs["stop_reason"] == "target lambda = 3.45 reached" and lam[-1] == 3.45 and lam.max() > 3.5
    assert 0 < float(ds["step_size"][-1]) < float(ds["next_step"][-2])  # the landed step is shorter than tried
    # the upper branch at 3.45: u larger than on the lower branch at 3.48
    assert float(ds["R"][-1]) > float(ds["R"][0])


def test_a_run_killed_past_the_fold_resumes_on_the_same_branch(tmp_path):
    """The resumed tangent is oriented by the tangent saved with the point before (start.resume),
    not by `direction`: a run killed on the upper branch goes on down it, and the resumed path is
    the uninterrupted one to the last bit (every variable but `seconds`)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    cfg = tmp_path / "b.toml"
    cfg.write_text(CONFIG.replace("lambda = 3.0", "lambda = 1.0").replace("target = {lambda = 2.0}", "")
                   .replace("max_steps = 40", "max_steps = 11"))
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root), CONTINUATION_TEST_KILL_AT="write:9")
    cmd = [sys.executable, "-m", "continuation", "run", str(cfg), "--quiet", "--out"]
    killed = subprocess.run(cmd + [str(tmp_path / "b.nc")], env=env, capture_output=True, cwd=root)
    assert killed.returncode != 0
    assert main(["run", str(cfg), "--out", str(tmp_path / "b.nc"), "--quiet", "--resume"]) == 0
    assert main(["run", str(cfg), "--out", str(tmp_path / "whole.nc"), "--quiet"]) == 0
    resumed, whole = load_path(tmp_path / "b.nc"), load_path(tmp_path / "whole.nc")
    assert resumed.sizes["step"] == whole.sizes["step"] == 12
    lam = whole["lambda"].values
    assert lam[-1] < lam.max() - 1.0  # well down the upper branch
    for name in whole.data_vars:
        if name != "seconds":
            np.testing.assert_array_equal(resumed[name].values, whole[name].values, err_msg=name)
