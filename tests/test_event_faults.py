"""Issue 27's misses of the event logic, each at its root (cases (a) and (b), and the located flag).

(a) Two crossings in one step: J = sum_i (a_i - lambda) x_i^2 / 2 + x_i^4 / 4, a = (1, a2, 3, 4).
    The minimum is x_i^2 = max(lambda - a_i, 0), F = -sum max(lambda - a_i, 0)^2 / 4 (closed form);
    every written point must be that minimum (index 0), the switch repeated until the index is 0.
(b) An imperfect pitchfork: Chafee-Infante u'' + lambda (u - u^3) + eps = 0 (N = 40, a small load
    eps): the branch the path follows turns smoothly and its lowest eigenvalue stays positive, so
    no bifurcation, branch exchange or fold may be written (the only zero nearby is the fold of a
    separate branch the path never visits).
(c') A linear eigenvalue (a trivial branch) is located by the first secant: located = 1, not 60
    stalled trials and located = 0.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from continuation.engine.driver import Output, Start, continue_path
from continuation.strategies.correctors import NewtonCorrector
from continuation.strategies.predictors import ODEPredictor
from continuation.strategies.processes import QuasiStatic
from continuation.strategies.step_control import AdaptiveSteps, StopRule
from problems.energy import EnergyProblem


def events(ds) -> list[dict]:
    return [{k[len("event_"):]: ds[k].values[j].item() if hasattr(ds[k].values[j], "item") else ds[k].values[j]
             for k in ds.data_vars if k.startswith("event_")} for j in range(ds.sizes.get("event", 0))]


def quasi_static(objective, n, start, target, x0=None, **steps):
    problem = EnergyProblem(objective=objective, theta0={"x": torch.zeros(n, dtype=torch.float64)})
    x0 = torch.zeros(n, dtype=torch.float64) if x0 is None else x0
    return continue_path(problem, QuasiStatic(lambda_rate=1.0), ODEPredictor("rk4"), NewtonCorrector(gtol=1e-11),
                         AdaptiveSteps(**steps), StopRule(target={"lambda": target}),
                         start=Start(mu=(start, 1.0), theta0={"x": x0}), output=Output(progress=False))


@pytest.mark.parametrize("a2", [1.0, 1.01, 1.0001])
def test_two_crossings_in_one_step_end_on_the_minimum(a2):
    a = torch.tensor([1.0, a2, 3.0, 4.0], dtype=torch.float64)

    def quartic(theta, mu):
        x = theta["x"]
        return ((a - mu[0]) * x**2 / 2 + x**4 / 4).sum()

    ds = quasi_static(quartic, 4, 0.5, 4.5, initial=0.1, max_step=0.25)
    assert ds.attrs["status"] == "finished"
    lam = ds["lambda"].values
    F_min = np.array([-sum(max(l - ai, 0.0) ** 2 for ai in a.tolist()) / 4 for l in lam])
    np.testing.assert_allclose(ds.F.values, F_min, rtol=0, atol=1e-12)
    assert (ds.morse_index.values == 0).all()
    ev = events(ds)
    bif = sorted((e["lambda"], e["index_before"], e["index_after"]) for e in ev if e["type"] == "bifurcation")
    if a2 == 1.0:  # one double crossing: 0 -> 2, then two switches, 2 -> 1 -> 0
        assert [b[1:] for b in bif[:1]] == [(0, 2)]
        switches = [(e["index_before"], e["index_after"]) for e in ev if e["type"] == "branch_switch"]
        assert switches[:2] == [(2, 1), (1, 0)]
    else:  # two crossings located in one step, each with its own indices
        assert [b[1:] for b in bif[:2]] == [(0, 1), (1, 2)]
        np.testing.assert_allclose([b[0] for b in bif[:2]], [1.0, a2], rtol=1e-8, atol=0)
    assert all(e["located"] == 1 for e in ev if e["type"] == "bifurcation")
    assert not [e for e in ev if e["type"] == "saddle"]


N_CI = 40


def chafee_infante(eps):
    def J(theta, mu):
        u = theta["x"]
        h = 1.0 / (N_CI + 1)
        z = u.new_zeros(1)
        du = torch.diff(torch.cat([z, u, z])) / h
        return h * (0.5 * (du * du).sum() - mu[0] * (u * u / 2 - u**4 / 4).sum() - eps * u.sum())
    return J


@pytest.mark.parametrize("eps", [1e-3, 1e-4, 1e-5])
def test_an_imperfect_pitchfork_writes_no_event_on_a_branch_the_path_did_not_follow(eps):
    ds = quasi_static(chafee_infante(eps), N_CI, 5.0, 15.0)  # default steps: strides of 1 across the turn
    assert ds.attrs["status"] == "finished"
    assert float(np.nanmin(ds.eig.values[:, 0])) > 5e-3 and (ds.morse_index.values == 0).all()
    assert events(ds) == [], events(ds)
    # the first pitchfork of the symmetric problem (the discrete Laplacian's lowest eigenvalue) lies in the range
    lam1 = 4 * (N_CI + 1) ** 2 * np.sin(np.pi / (2 * (N_CI + 1))) ** 2
    assert ds["lambda"].values[0] < lam1 < ds["lambda"].values[-1]


def test_a_linear_eigenvalue_is_located_by_the_first_secant():
    """The trivial branch x = 1e-20 of J = (1 - 1.5 lambda) x^2 / 2 + x^4 / 4: the eigenvalue is linear
    in lambda, zero at 2/3; the secant hits it to rounding and the event is located."""
    def pitchfork(theta, mu):
        x = theta["x"]
        return ((1 - 1.5 * mu[0]) * x**2 / 2 + x**4 / 4).sum()

    ds = quasi_static(pitchfork, 1, 0.2, 0.7, x0=torch.full((1,), 1e-20, dtype=torch.float64))
    bif = [e for e in events(ds) if e["type"] == "bifurcation"]
    assert len(bif) == 1 and bif[0]["located"] == 1 and bif[0]["iterations"] <= 3
    assert bif[0]["lambda"] == pytest.approx(2 / 3, rel=1e-12)
    assert ds.F.values[-1] == pytest.approx(-((1.5 * 0.7 - 1) ** 2) / 4, rel=1e-10)


def test_the_printed_event_line_says_when_it_was_not_located():
    import xarray as xr

    from continuation.apps.cli import _event_line

    ds = xr.Dataset({"event_type": ("event", ["bifurcation", "crossing", "bifurcation"]),
                     "event_method": ("event", ["illinois", "interpolate", "illinois"]),
                     "event_located": ("event", [0, 0, 1]), "event_lambda": ("event", [1.5, 2.0, 2.5]),
                     "event_gamma": ("event", [1.0, 1.0, 1.0]), "event_detail": ("event", ["d0", "d1", "d2"])})
    assert _event_line(ds, 0).startswith("event bifurcation at about lambda = 1.5") and "not located" in _event_line(ds, 0)
    assert "interpolated between two points" in _event_line(ds, 1)
    assert _event_line(ds, 2) == "event bifurcation at lambda = 2.5, gamma = 1: d2"


@pytest.mark.parametrize("offset", [0.0, 3e-9, -3e-9])
def test_a_target_at_a_critical_multiplier_is_landed_on(offset):
    """(c) The linear-Gaussian trivial branch (theta ~ 1e-20) to a target at the first switch-on's
    lambda_c (closed form), and 3e-9 either side: the run finishes there on the minimum (F equal to
    the closed form's, index 0), where the tangent solves at lambda_c have no exact solution."""
    from continuation.apps.run import run_config
    from continuation.files.config import load_config
    from problems import LinearGaussianData, LinearGaussianGibbsProblem
    from problems.linear_gaussian_closed_form import LinearGaussianClosedForm
    from pathlib import Path

    data = LinearGaussianData.random(5, 2, seed=0, noise=0.4)
    cf = LinearGaussianClosedForm.of(LinearGaussianGibbsProblem.from_data(data, latent_dim=3, sigma_d=2.0,
                                                                          sigma_c=1.0))
    lam_c = cf.critical_lambda(0.8, 0)
    config = load_config(Path(__file__).resolve().parents[1] / "validation" / "configs" /
                         "gaussian_phase_diagram.toml")
    config.pop("phase_diagram")
    config["stop"]["target"] = {"lambda": lam_c + offset}
    ds = run_config(config, None, progress=False)
    assert ds.attrs["status"] == "finished", ds.attrs["stop_reason"]
    assert float(ds["lambda"].values[-1]) == lam_c + offset
    assert (ds.morse_index.values == 0).all()
    F = [cf.free_energy(float(l), 0.8) for l in ds["lambda"].values]
    np.testing.assert_allclose(ds.F.values, F, rtol=0, atol=1e-10)


def test_quasi_static_into_a_fold_says_a_fold_is_ahead_and_what_goes_around_it():
    """(d) Bratu (N = 63) in lambda by the quasi-static process: it cannot pass the fold. The stop
    reason says where the lowest eigenvalue's square reaches zero (against scipy's fold of the
    extended system) and names pseudo-arclength."""
    import re

    from problems.bratu import bratu_problem
    from tests.test_energy_fold import reference_fold

    ds = continue_path(bratu_problem(63), QuasiStatic(lambda_rate=1.0), ODEPredictor("rk4"),
                       NewtonCorrector(gtol=1e-10), AdaptiveSteps(), StopRule(target={"lambda": 4.0}),
                       start=Start(mu=(3.0, 1.0)), output=Output(progress=False))
    reason = ds.attrs["stop_reason"]
    assert ds.attrs["status"] == "stopped" and "a fold or a branch end is ahead" in reason
    assert 'pseudo-arclength ([process] name = "pseudo-arclength"' in reason
    fold = float(re.search(r"about lambda = ([0-9.]+) if this is a fold", reason).group(1))
    assert fold == pytest.approx(reference_fold(63), rel=1e-6)
    assert float(ds["lambda"].values[-1]) < fold
