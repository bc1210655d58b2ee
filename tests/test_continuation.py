"""Continuation runs on the linear-Gaussian problem against closed forms: iso-classification
paths for every predictor x corrector pair, the first law, the finite-difference law, milestones,
quasi-static paths, resumption after a kill, and one-line errors."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from scipy.optimize import brentq

from continuation.apps.cli import main
from continuation.surface.context import PointContext
from continuation.strategies.correctors import AdamCorrector, LBFGSCorrector, NewtonCorrector
from continuation.engine.driver import ContinuationError, Output, Start, continue_path
from continuation.strategies.projections import NewtonProjection, SecantProjection, bounded
from continuation.files.path import load_path, load_point
from continuation.strategies.predictors import NoPredictor, ODEPredictor, SecantPredictor
from continuation.strategies.processes import IsoClassificationFD, QuasiStatic, iso_c_plus_r_over_beta, iso_classification
from continuation.strategies.step_control import AdaptiveSteps as StepControl, FixedSteps, StopRule
from problems import Problem, make_mu
from solvers import MINRES

ROOT = Path(__file__).parents[1]
CONFIG = ROOT / "continuation" / "apps" / "experiments" / "gaussian_iso_c.toml"


def iso_c_gamma(closed, lam, C0):
    """gamma on the closed-form iso-C curve C(lambda, gamma) = C0 (C falls with gamma)."""
    return brentq(lambda g: closed.functionals(lam, g)["C"] - C0, 1e-3, 1e4, xtol=1e-15, rtol=1e-15)


def gamma_errors(closed, ds):
    C0 = ds.attrs["C0"]
    return np.array([abs(g - iso_c_gamma(closed, l, C0)) / g for l, g in zip(ds["lambda"].values, ds["gamma"].values)])


PREDICTORS = {"euler": lambda: ODEPredictor("euler"), "rk4": lambda: ODEPredictor("rk4"),
              "dopri5": lambda: ODEPredictor("dopri5", rtol=1e-6, atol=1e-8), "secant": SecantPredictor,
              "none": NoPredictor}
CORRECTORS = {"newton": lambda: NewtonCorrector(gtol=1e-11, hvp_mode="rev-rev"), "lbfgs": LBFGSCorrector}


@pytest.mark.parametrize("corrector", list(CORRECTORS))
@pytest.mark.parametrize("predictor", list(PREDICTORS))
def test_iso_classification_path_matches_closed_form_curve(competition, predictor, corrector):
    ds = continue_path(competition.problem, iso_classification(), PREDICTORS[predictor](), CORRECTORS[corrector](),
                       StepControl(initial=0.25, max_step=1.0), StopRule(max_steps=60, target={"lambda": 2.0}),
                       projection=NewtonProjection(), start=(1.0, 1.0), output=Output(progress=False),
                       hvp_mode="rev-rev")
    assert ds.attrs["status"] == "finished" and ds.attrs["stop_reason"] == "target lambda = 2.0 reached"
    assert float(ds["lambda"][-1]) == 2.0 and ds.sizes["step"] >= 5
    assert gamma_errors(competition.closed, ds).max() <= 1e-6
    if corrector == "newton":
        assert np.abs(ds["C_drift"].values).max() <= 1e-8
        assert ds["grad_norm"].values.max() <= 1e-10
    # along the process lambda and gamma both rise here (C_lambda > 0, C_gamma < 0)
    assert np.all(np.diff(ds["gamma"].values) > 0)


@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_ode_predictor_alone_tracks_the_curve(competition, method):
    """No projection: the drift is the integrator's own, held per step by max_drift."""
    pred = ODEPredictor(method, rtol=1e-9, atol=1e-11)
    ds = continue_path(competition.problem, iso_classification(), pred, NewtonCorrector(gtol=1e-11, hvp_mode="rev-rev"),
                       StepControl(initial=0.25, max_step=1.0, max_drift=1e-8), StopRule(target={"lambda": 2.0}),
                       start=(1.0, 1.0), output=Output(progress=False), hvp_mode="rev-rev")
    assert ds.attrs["status"] == "finished"
    assert gamma_errors(competition.closed, ds).max() <= 1e-6
    assert np.abs(ds["C_drift"].values).max() <= 1e-7


def test_adam_corrector_follows_the_curve_to_its_own_accuracy(competition):
    corr = AdamCorrector(steps=300, eta_max=0.05, gtol=1e-3)
    ds = continue_path(competition.problem, iso_classification(), ODEPredictor("rk4"), corr,
                       StepControl(initial=0.5, max_step=1.0), StopRule(target={"lambda": 2.0}),
                       projection=NewtonProjection(), start=(1.0, 1.0), output=Output(progress=False),
                       hvp_mode="rev-rev")
    # Adam stops at |grad| ~ 1e-4, so C(theta) is C at a point near, not on, the surface
    assert ds["grad_norm"].values.max() <= 1e-3
    assert gamma_errors(competition.closed, ds).max() <= 1e-3
    assert ds.attrs["corrector_counts"] == "adam_updates" and int(ds["adam_updates"][1]) >= 300
    assert int(ds["gradients"][1]) >= int(ds["adam_updates"][1])


def test_first_law_and_remark_10_along_iso_c_path(competition):
    # the trapezoid rule's own error is O(ds^2): 7e-6 of sum |dR| with ds = 0.03, 1.6e-5 with 0.05
    ds = continue_path(competition.problem, iso_classification(), SecantPredictor(),
                       NewtonCorrector(gtol=1e-11, hvp_mode="rev-rev"),
                       StepControl(initial=0.03, max_step=0.03), StopRule(max_steps=200, target={"lambda": 1.5}),
                       projection=NewtonProjection(), start=(1.0, 1.0), output=Output(progress=False),
                       hvp_mode="rev-rev")
    R, D, C, lam, gam = (ds[k].values for k in ("R", "D", "C", "lambda", "gamma"))
    dR, dD, dC = np.diff(R), np.diff(D), np.diff(C)
    trapezoid = np.sum(dR + 0.5 * (lam[1:] + lam[:-1]) * dD + 0.5 * (gam[1:] + gam[:-1]) * dC)
    assert abs(trapezoid) <= 1e-5 * np.sum(np.abs(dR))
    assert np.all(dD < 0) and np.all(dR > 0)  # alpha > 0: distortion falls, rate rises


def test_finite_difference_law_agrees_with_exact_law_to_its_error(competition):
    exact = iso_classification()
    x = competition.equilibrate(1.3, 1.2).x
    mu = make_mu(1.3, 1.2)
    ctx = PointContext(competition.system, x, mu, MINRES(rtol=1e-12), NewtonCorrector(gtol=1e-12, hvp_mode="rev-rev"))
    v_exact = exact.velocity(ctx)[:2].numpy()
    errors = []
    for h in (2e-2, 1e-2):
        v_fd = IsoClassificationFD(h=h).velocity(ctx)[:2].numpy()
        errors.append(np.abs(v_fd - v_exact).max() / np.abs(v_exact).max())
    assert errors[0] < 1e-3
    assert errors[0] / errors[1] == pytest.approx(4.0, rel=0.1)  # central differences: O(h^2)
    # and the two laws drive paths that end close together (FD with the paper's none predictor)
    common = dict(control=StepControl(initial=0.25, max_step=0.25, max_drift=None), stop=StopRule(target={"lambda": 2.0}),
                  start=(1.0, 1.0), output=Output(progress=False), hvp_mode="rev-rev")
    fd = continue_path(competition.problem, IsoClassificationFD(h=1e-3), NoPredictor(), NewtonCorrector(gtol=1e-11, hvp_mode="rev-rev"),
                       **common)
    ex = continue_path(competition.problem, iso_classification(), NoPredictor(),
                       NewtonCorrector(gtol=1e-11, hvp_mode="rev-rev"), **common)
    assert float(fd["lambda"][-1]) == float(ex["lambda"][-1]) == 2.0
    assert fd.sizes["step"] == ex.sizes["step"]
    np.testing.assert_allclose(fd["gamma"].values, ex["gamma"].values, rtol=1e-5)


def test_milestones_are_landed_exactly(competition):
    ds = continue_path(competition.problem, iso_classification(), ODEPredictor("rk4"), NewtonCorrector(gtol=1e-11, hvp_mode="rev-rev"),
                       StepControl(initial=0.4, max_step=1.0),
                       StopRule(target={"lambda": 2.5}, milestones={"lambda": [1.5, 2.0, 2.2]}),
                       projection=NewtonProjection(), start=(1.0, 1.0), output=Output(progress=False),
                       hvp_mode="rev-rev")
    lams = list(ds["lambda"].values)
    for m in (1.5, 2.0, 2.2, 2.5):
        assert lams.count(m) == 1
    assert np.all(np.diff(ds["s"].values) > 0)


def test_quasi_static_path_matches_closed_form(competition):
    ds = continue_path(competition.problem, QuasiStatic(lambda_rate=1.0, gamma_rate=0.5), ODEPredictor("rk4"),
                       NewtonCorrector(gtol=1e-11, hvp_mode="rev-rev"), StepControl(initial=0.2, max_step=0.5),
                       StopRule(target={"lambda": 3.0}), start=(1.0, 1.0), output=Output(progress=False),
                       hvp_mode="rev-rev")
    for row in range(ds.sizes["step"]):
        lam, gam = float(ds["lambda"][row]), float(ds["gamma"][row])
        assert gam == pytest.approx(1.0 + 0.5 * (lam - 1.0), rel=1e-12)
        closed = competition.closed.functionals(lam, gam)
        for name in "RDCF":
            assert float(ds[name][row]) == pytest.approx(closed[name], rel=1e-9, abs=1e-12)


def test_iso_c_plus_r_over_beta_holds_its_functional(competition):
    ds = continue_path(competition.problem, iso_c_plus_r_over_beta(beta=2.0), ODEPredictor("rk4"),
                       NewtonCorrector(gtol=1e-11, hvp_mode="rev-rev"), StepControl(initial=0.25, max_step=1.0),
                       StopRule(target={"lambda": 2.0}), projection=NewtonProjection(), start=(1.0, 1.0),
                       output=Output(progress=False), hvp_mode="rev-rev")
    G = ds["C"].values + ds["R"].values / 2.0
    assert np.abs(G - G[0]).max() <= 1e-9 * abs(G[0])
    assert np.abs(ds["C_drift"].values).max() > 1e-4  # C itself moves: a different process


def test_step_failure_stops_with_the_reason(competition):
    ds = continue_path(competition.problem, iso_classification(), NoPredictor(),
                       NewtonCorrector(gtol=1e-11, hvp_mode="rev-rev"), StepControl(initial=0.5, min_step=1e-2, max_drift=1e-12),
                       StopRule(target={"lambda": 2.0}), start=(1.0, 1.0), output=Output(progress=False),
                       hvp_mode="rev-rev")
    assert ds.attrs["status"] == "stopped"
    assert "below min_step" in ds.attrs["stop_reason"] and "drift" in ds.attrs["stop_reason"]


def write_config(path, **overrides):
    text = CONFIG.read_text()
    for key, value in overrides.items():
        text = text.replace(key, value)
    path.write_text(text)
    return path


def test_cli_run_plot_and_start_from_saved_point(tmp_path, capsys):
    cfg = write_config(tmp_path / "c.toml", **{"target = {lambda = 4.0}": "target = {lambda = 2.0}",
                                               "milestones = {lambda = [2.0, 3.0]}": "milestones = {lambda = [1.5]}"})
    out = tmp_path / "p.nc"
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 0
    assert "target lambda = 2.0 reached" in capsys.readouterr().out
    ds = load_path(out)
    for name in ("s", "lambda", "gamma", "t", "R", "D", "C", "F", "grad_norm", "krylov_iters", "hvps", "gradients",
                 "corrector_runs", "newton_iters", "seconds"):
        assert name in ds, name
    assert ds.attrs["process"] == "iso-classification" and '"predictor"' in ds.attrs["config"]
    assert main(["plot", str(out), "--out", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").stat().st_size > 10_000
    # a quasi-static branch off point 3 of that path
    cfg2 = write_config(tmp_path / "q.toml", **{'name = "iso-classification"': 'name = "quasi-static"',
                                                 'name = "newton"  #': 'name = "none"  #',
                                                 "alpha = 1.0": "lambda_rate = 1.0",
                                                 "target = {lambda = 4.0}": "max_steps = 3"})
    cfg2.write_text(cfg2.read_text().replace("max_steps = 200\n", ""))
    out2 = tmp_path / "q.nc"
    assert main(["run", str(cfg2), "--out", str(out2), "--from", str(out), "--from-step", "3", "--quiet"]) == 0
    branch = load_path(out2)
    for name in ("lambda", "gamma", "R", "D", "C"):
        assert float(branch[name][0]) == float(ds[name][3])
    assert float(branch["gamma"][-1]) == float(ds["gamma"][3])  # quasi-static in lambda only
    assert branch.attrs["process"] == "quasi-static"


@pytest.mark.parametrize("edit,message", [
    (("[corrector]\nname = \"newton\"", "[corrector]\nname = \"newton\"\ngtoll = 1"), "[corrector] unknown key 'gtoll'"),
    (("name = \"newton\"", "name = \"newtn\""), "[corrector] unknown name 'newtn'; valid: newton, adam, sgd, lbfgs"),
    (("initial = 0.25", "initial = \"big\""), "[steps] initial must be a number"),
    (("initial = 0.25", "initial = -1.0"), "[steps] bad value for steps 'adaptive': steps must satisfy"),
    (("lambda = 1.0\n", "lambda = 0.0\n"), "[start] lambda must be > 0"),
    (("lambda = 1.0\n", "lambda = 1.0\nsettle = 0\n"), "[start] settle must be an integer >= 1"),
    (("[stop]", "[stopp]"), "unknown section [stopp]"),
    (("method = \"rk4\"", "method = \"rk5\""), "unknown ODE method 'rk5'"),
])
def test_bad_configuration_is_one_line(tmp_path, capsys, edit, message):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(CONFIG.read_text().replace(*edit, 1))
    assert main(["run", str(cfg), "--out", str(tmp_path / "x.nc")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err, err


def test_missing_files_are_one_line(tmp_path, capsys):
    assert main(["run", str(tmp_path / "none.toml"), "--out", str(tmp_path / "x.nc")]) == 2
    assert capsys.readouterr().err.strip() == f"error: configuration file not found: {tmp_path / 'none.toml'}"
    assert main(["plot", str(tmp_path / "none.nc"), "--out", str(tmp_path / "x.png")]) == 2
    assert "path file not found" in capsys.readouterr().err


class NaNAbove(Problem):
    """The competition problem, but J is NaN once lambda exceeds a threshold."""

    name = "nan-above"

    def __init__(self, inner, threshold):
        self.inner, self.threshold = inner, threshold

    def init_params(self, seed=0):
        return self.inner.init_params(seed)

    def functionals(self, theta, mu):
        f = self.inner.functionals(theta, mu)
        bad = torch.where(mu[0] > self.threshold, torch.nan, 0.0)
        return {k: v + bad for k, v in f.items()}

    def objective(self, theta, mu):
        return self.inner.objective(theta, mu) + torch.where(mu[0] > self.threshold, torch.nan, 0.0)


def test_nan_objective_is_one_line(competition, capsys, monkeypatch, tmp_path):
    with pytest.raises(ContinuationError, match=r"^start point .*objective at the starting point is not finite"):
        continue_path(NaNAbove(competition.problem, 0.5), iso_classification(), ODEPredictor("rk4"),
                      NewtonCorrector(), StepControl(), StopRule(), projection=NewtonProjection(), start=(1.0, 1.0),
                      output=Output(progress=False), hvp_mode="rev-rev")
    ds = continue_path(NaNAbove(competition.problem, 1.5), QuasiStatic(), ODEPredictor("rk4"), NewtonCorrector(),
                       StepControl(initial=0.2, min_step=1e-3), StopRule(target={"lambda": 3.0}), start=(1.0, 1.0),
                       output=Output(progress=False), hvp_mode="rev-rev")
    assert ds.attrs["status"] == "stopped" and "not finite" in ds.attrs["stop_reason"]
    assert float(ds["lambda"][-1]) <= 1.5
    # through the command line: one line, exit 1
    from problems import registry
    monkeypatch.setitem(registry.PROBLEMS, "nan-above", lambda: NaNAbove(competition.problem, 0.5))
    cfg = tmp_path / "nan.toml"
    cfg.write_text('[problem]\nname = "nan-above"\n[start]\nlambda = 1.0\ngamma = 1.0\n')
    assert main(["run", str(cfg), "--out", str(tmp_path / "nan.nc"), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: start point") and "not finite" in err and "\n" not in err


@pytest.mark.slow  # default suite's time: run with -m slow (and in .ci/run)
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    cfg = write_config(tmp_path / "c.toml", **{"initial = 0.25": "initial = 0.05", "max_step = 1.0": "max_step = 0.05",
                                               "target = {lambda = 4.0}": "target = {lambda = 2.0}",
                                               "milestones = {lambda = [2.0, 3.0]}": "milestones = {lambda = [1.5]}"})
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "continuation", "run", str(cfg), "--quiet", "--out"]
    full = tmp_path / "full.nc"
    subprocess.run(cmd + [str(full)], check=True, env=env, capture_output=True)
    part = tmp_path / "part.nc"
    proc = subprocess.Popen(cmd + [str(part)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    points = 0
    while time.time() < deadline and proc.poll() is None:
        if part.exists():
            try:
                points = load_path(part).sizes["step"]
            except (OSError, ValueError):
                points = 0
            if points >= 6:
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = load_path(part)
    assert killed.attrs["status"] == "running"
    n_full = load_path(full).sizes["step"]
    assert 6 <= killed.sizes["step"] < n_full
    subprocess.run(cmd + [str(part), "--resume"], check=True, env=env, capture_output=True)
    a, b = load_path(full), load_path(part)
    assert a.sizes["step"] == b.sizes["step"]
    for ds in (a, b):
        del ds.attrs["checkpoint_dir"]  # names the file's own checkpoint folder
        del ds.attrs["history"]  # the sessions that wrote the file: a resume adds one
    xr.testing.assert_identical(a.drop_vars("seconds"), b.drop_vars("seconds"))
    assert torch.equal(load_point(full)["x"], load_point(part)["x"])


def test_resume_refuses_another_configuration(tmp_path, competition):
    out = tmp_path / "p.nc"
    args = (competition.problem, iso_classification(), ODEPredictor("rk4"), NewtonCorrector(gtol=1e-11, hvp_mode="rev-rev"),
            StepControl(), StopRule(max_steps=2))
    continue_path(*args, start=(1.0, 1.0), output=Output(out, progress=False, config={"a": 1}), hvp_mode="rev-rev")
    with pytest.raises(ContinuationError, match="exists; pass resume=True"):
        continue_path(*args, start=(1.0, 1.0), output=Output(out, progress=False, config={"a": 1}), hvp_mode="rev-rev")
    with pytest.raises(ContinuationError, match=r"another configuration \(steps.initial: 0.05 in the file, 0.1 now\)"):
        continue_path(*args[:4], StepControl(initial=0.1), args[5], start=(1.0, 1.0),
                      output=Output(out, resume=True, progress=False, config={"a": 1}), hvp_mode="rev-rev")
    # the TOML text is not a setting (a default written out is the same run): only the settings are compared
    continue_path(*args, start=(1.0, 1.0), output=Output(out, resume=True, progress=False, config={"a": 2}),
                  hvp_mode="rev-rev")
    assert math.isfinite(float(load_path(out)["F"][-1]))


def test_a_run_built_in_python_records_its_settings_and_resume_refuses_a_changed_one(tmp_path, competition):
    """No TOML: the file holds every strategy's options, and --resume with one changed is one line."""
    out = tmp_path / "p.nc"

    def run(gtol, max_steps=2, resume=False):
        return continue_path(competition.problem, iso_classification(), ODEPredictor("rk4"),
                             NewtonCorrector(gtol=gtol), StepControl(initial=0.25),
                             StopRule(max_steps=max_steps), projection=SecantProjection(max_iter=4), start=(1.0, 1.0),
                             output=Output(out, resume=resume, progress=False))

    ds = run(1e-11)
    settings = json.loads(ds.attrs["settings"])
    assert json.loads(ds.attrs["config"]) == settings
    assert settings["corrector"] == {"name": "newton", "gtol": 1e-11, "maxiter": 20, "hvp_mode": "rev-rev"}
    assert settings["projection"] == {"name": "secant", "max_iter": 4, "factor": 2.0}
    assert settings["steps"]["name"] == "adaptive" and settings["steps"]["initial"] == 0.25
    assert settings["process"]["name"] == "iso-classification" and settings["run"]["start"] == [1.0, 1.0, 0.0]
    assert len(settings["theta0"]["sha256"]) == 64  # a Python run: the initial parameters' fingerprint
    with pytest.raises(ContinuationError) as err:
        run(1e-10, resume=True)
    msg = str(err.value)
    assert "\n" not in msg and "another configuration (corrector.gtol: 1e-11 in the file, 1e-10 now)" in msg, msg
    load_path(out).close()
    # the same settings resume (and this run has already finished: the file comes back as it was)
    assert run(1e-11, resume=True).sizes["step"] == 3


@pytest.mark.parametrize("maxiter", [1, 200])
def test_secant_projection_holds_c_even_when_the_tangents_are_wrong(competition, maxiter):
    """project = "secant": C back to C0 at every point by a secant on the corrector's response.
    With one MINRES iteration the tangents (hence the law and the secant's first guess) are crude;
    the secant lands on the closed-form iso-C curve all the same."""
    solver = MINRES(rtol=1e-12, maxiter=maxiter)
    ds = continue_path(competition.problem, iso_classification(clock="lambda", tol=1e-11),
                       NoPredictor(), NewtonCorrector(gtol=1e-12), FixedSteps(size=0.2),
                       StopRule(max_steps=60, target={"lambda": 1.8}), projection=SecantProjection(), start=(1.0, 1.0),
                       output=Output(progress=False), solver=solver)
    assert ds.attrs["status"] == "finished"
    assert np.allclose(np.diff(ds["lambda"].values), 0.2)  # s is lambda - lambda0; gamma alone is projected
    assert np.abs(ds["C_drift"].values).max() <= 1e-10
    assert gamma_errors(competition.closed, ds).max() <= 1e-9
    assert ds.attrs["corrector_counts"] == "newton_iters"
    newton_runs = ds["newton_iters"].values[1:]
    assert newton_runs.max() <= 60  # a handful of Newton solves per point


def test_secant_reusing_the_measured_response_tends_to_one_on_exact_tangents(competition):
    """reuse_response: the measured response (G(tau*) - G(0)) / tau* is the corrector's response
    over the prediction of the tangents at the point the step left. With a Newton corrector and
    converged tangents on the Gaussian problem it differs from 1 only because the tangents are
    one step old: |k - 1| is first order in ds (halving ds halves it), and the path still lands
    on the closed-form iso-C curve. With one MINRES iteration (crude tangents) k is further from 1
    and reusing it saves corrector runs at the same accuracy."""
    def run(maxiter, reuse, ds=0.2):
        return continue_path(competition.problem, iso_classification(clock="lambda", tol=1e-11), NoPredictor(),
                             NewtonCorrector(gtol=1e-12), FixedSteps(size=ds),
                             StopRule(max_steps=60, target={"lambda": 1.8}),
                             projection=SecantProjection(reuse_response=reuse), start=(1.0, 1.0),
                             output=Output(progress=False),
                             solver=MINRES(rtol=1e-12, maxiter=maxiter))

    errors = []
    for ds in (0.2, 0.1):
        exact = run(200, True, ds)
        k = exact["secant_response"].values[1:]
        assert np.isfinite(k).all() and gamma_errors(competition.closed, exact).max() <= 1e-9
        errors.append(np.abs(k[0] - 1))  # the first step: from the same point (1, 1) for both ds
    assert 0.02 < errors[0] < 0.3 and 1.7 < errors[0] / errors[1] < 2.3, errors
    crude, crude_plain = run(1, True), run(1, False)
    assert "secant_response" not in crude_plain
    for ds in (crude, crude_plain):
        assert np.abs(ds["C_drift"].values).max() <= 1e-10 and gamma_errors(competition.closed, ds).max() <= 1e-9
    assert crude["corrector_runs"].values.sum() < crude_plain["corrector_runs"].values.sum()
    with pytest.raises(ValueError, match="reuse_response must be true or false"):
        SecantProjection(reuse_response="yes")


def test_plain_law_drifts_at_first_order_in_the_step(competition):
    """Without projection the none predictor is Euler in mu: halving ds halves the C drift."""
    drifts = []
    for h in (0.2, 0.1, 0.05):
        ds = continue_path(competition.problem, iso_classification(clock="lambda"), NoPredictor(),
                           NewtonCorrector(gtol=1e-11), StepControl(initial=h, max_step=h, max_drift=None),
                           StopRule(max_steps=60, target={"lambda": 1.8}), start=(1.0, 1.0),
                           output=Output(progress=False))
        drifts.append(np.abs(ds["C_drift"].values).max())
    ratios = np.array(drifts[:-1]) / np.array(drifts[1:])
    assert np.all((ratios > 1.8) & (ratios < 2.2)), drifts


def test_lambda_clock_rescales_the_law_without_turning_it(competition):
    x, mu = competition.equilibrate(1.3, 1.2).x, make_mu(1.3, 1.2)
    ctx = PointContext(competition.system, x, mu, MINRES(rtol=1e-12))
    v = iso_classification().velocity(ctx)
    w = iso_classification(clock="lambda").velocity(ctx)
    assert float(w[0]) == 1.0 and float(w[1]) == pytest.approx(float(v[1] / v[0]), rel=1e-12)
    with pytest.raises(ValueError, match="clock must be one of"):
        iso_classification(clock="gamma")
    with pytest.raises(ValueError, match="clock must be one of"):
        IsoClassificationFD(clock="gamma")
    with pytest.raises(TypeError, match="project"):
        iso_classification(project="bisect")  # a projection is its own strategy now


def test_settle_runs_the_start_corrector_that_many_times(competition):
    calls = []

    class Counting(NewtonCorrector):
        def correct(self, system, x, mu):
            calls.append(float(mu[0]))
            return super().correct(system, x, mu)

    continue_path(competition.problem, iso_classification(), NoPredictor(), Counting(gtol=1e-11), StepControl(),
                  StopRule(max_steps=0), projection=NewtonProjection(), start=Start(mu=(1.0, 1.0), settle=3),
                  output=Output(progress=False))
    assert calls == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="settle must be an integer >= 1"):
        continue_path(competition.problem, iso_classification(), NoPredictor(), Counting(), StepControl(),
                      StopRule(max_steps=0), projection=NewtonProjection(), start=Start(mu=(1.0, 1.0), settle=0),
                      output=Output(progress=False))


def test_secant_iterates_move_a_multiplier_by_at_most_a_factor_of_two():
    _bounded = bounded
    mu = torch.tensor([0.5, 4.0, 0.3], dtype=torch.float64)
    d = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)  # along gamma
    assert _bounded(1e6, 0.0, d, mu) == pytest.approx(4.0)  # gamma 4 -> 8 at most
    assert _bounded(-1e6, 0.0, d, mu) == pytest.approx(-2.0)  # gamma 4 -> 2 at least
    assert _bounded(1e6, 4.0, d, mu) == pytest.approx(12.0)  # from gamma 8: up to 16
    assert _bounded(0.5, 0.0, d, mu) == 0.5  # small moves pass unchanged
    both = torch.tensor([-0.1, 1.0, 0.0], dtype=torch.float64)  # lambda falls: 0.5 -> 0.25 binds first
    assert _bounded(1e6, 0.0, both, mu) == pytest.approx(2.5)


def test_a_float32_step_that_ends_within_rounding_of_the_target_lands_on_it():
    """t = 0.2 + 31 x 0.025 in float32 is 0.97499919; the next step of 0.025 ends 8e-7 short of
    t = 1, inside the band where 1.0 no longer counts as ahead: it must land on 1.0 exactly, or
    the run passes its target and never stops (it went on to t = 1.55)."""
    t = torch.tensor(0.2, dtype=torch.float32)
    for _ in range(31):
        t = t + torch.tensor(0.025, dtype=torch.float32)
    mu = torch.tensor([0.25, 1.0, float(t)], dtype=torch.float32)
    rate = torch.tensor([0.0, -3.0, 1.0], dtype=torch.float32)
    ds, landing = StopRule(target={"t": 1.0}).landing(mu, rate, 0.025)
    assert landing == ("t", 1.0) and ds == pytest.approx(1.0 - float(t), rel=1e-12)
    # a value well beyond the step is not landed on
    assert StopRule(target={"t": 1.0}).landing(mu, rate, 0.01) == (0.01, None)


def test_importing_the_plot_module_leaves_the_matplotlib_backend_alone():
    code = "import continuation.apps.plot, matplotlib; print(matplotlib.get_backend())"
    env = dict(os.environ, MPLBACKEND="template", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "template"


def test_progress_runs_from_0_to_1_toward_the_target_and_stays_on_screen(competition, capsys):
    stop = StopRule(max_steps=1000, target={"lambda": 2.0})
    start = {"lambda": 1.0, "gamma": 1.0, "t": 0.0}
    assert stop.progress(3, 0.7, {"lambda": 1.25, "gamma": 3.0, "t": 0.0}, start) == 0.25
    assert StopRule(max_steps=40).progress(10, 0.0, start, start) == 0.25  # no target: steps over max_steps
    assert StopRule(max_s=2.0).progress(10, 0.5, start, start) == 0.25
    continue_path(competition.problem, QuasiStatic(), ODEPredictor("rk4"), NewtonCorrector(gtol=1e-11),
                  StepControl(initial=0.5, max_step=0.5), stop, start=(1.0, 1.0), output=Output(progress=True))
    err = capsys.readouterr().err
    assert "100%" in err and "lam=2" in err and err.rstrip().endswith("]")  # the last state is left on screen


def test_the_secant_predictor_lands_on_milestones_and_the_target_it_would_pass(competition):
    """The secant chord moves mu at the last chord's rate, not the law's (about twice the law's
    rate by lambda = 2 here), so ds chosen from the law's rate did not foresee a milestone the
    chord passes: the run skipped 3.0, crossed the target 4.0 and ran on to lambda = 6.6."""
    ds = continue_path(competition.problem, iso_classification(), SecantPredictor(), NewtonCorrector(gtol=1e-11),
                       StepControl(initial=0.25, max_step=1.0),
                       StopRule(max_steps=200, target={"lambda": 4.0}, milestones={"lambda": [2.0, 3.0]}),
                       projection=NewtonProjection(), start=(1.0, 1.0), output=Output(progress=False))
    lams = list(ds["lambda"].values)
    assert ds.attrs["stop_reason"] == "target lambda = 4.0 reached" and max(lams) == 4.0
    assert lams.count(2.0) == 1 and lams.count(3.0) == 1
    assert gamma_errors(competition.closed, ds).max() <= 1e-9


def test_a_point_that_missed_the_held_tolerance_stops_the_run_saying_so(competition):
    """The secant with one iterate and crude tangents (one MINRES iteration) cannot restore C to
    1e-11 in a step of 0.2: the run writes the point, whose constraint_drift shows the miss, and ends
    "stopped" naming the step, the miss and the tolerance, never "finished" (issue 25: a missed
    tolerance was silent). With its iterates the same route finishes (the test above)."""
    ds = continue_path(competition.problem, iso_classification(clock="lambda", tol=1e-11), NoPredictor(),
                       NewtonCorrector(gtol=1e-12), FixedSteps(size=0.2),
                       StopRule(max_steps=60, target={"lambda": 1.8}), projection=SecantProjection(max_iter=1),
                       start=(1.0, 1.0), output=Output(progress=False), solver=MINRES(rtol=1e-12, maxiter=1))
    assert ds.attrs["status"] == "stopped"
    assert ds.sizes["step"] == 2 and abs(float(ds["constraint_drift"][-1])) > 1e-11
    reason = ds.attrs["stop_reason"]
    assert reason.startswith("step 1: C missed its tolerance") and "against 1e-11 (tol = 1e-11;" in reason, reason
    assert f"{abs(float(ds['constraint_drift'][-1])):.3g} from its start" in reason


def test_each_projection_states_the_miss_it_accepts():
    """Relative to |G0|: the secant stops at |G - G0| <= tol |G0| (tol), the Newton projection at
    tol max(|G0|, 1) (tol / |G0| below |G0| = 1); the stepper's miss rule uses these."""
    from continuation.strategies.projections import NewtonProjection

    assert SecantProjection().bound(0.02, 0.433) == 0.02
    assert NewtonProjection().bound(1e-9, 0.25) == pytest.approx(4e-9, rel=1e-15)
    assert NewtonProjection().bound(1e-9, 3.0) == 1e-9
