"""The smooth deterministic MLP on a task path (problems/smooth_transfer.py, `transfer-smooth`):
J is the exact sum over the source and target sets (mixture) or the emd plan's support (ot),
checked against independent computations: R at t = 0 and t = 1 is the smooth single-task
problem's on the source and target (R is analytic in the encoder, so the noise does not enter),
q against the plan computed by POT here, b_t against central differences of grad J in t, and the
mixture's J linear in t. The exact iso-C transfer holds the soft labels' KL to 1e-8 (slow)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from continuation import EquilibriumSystem, Output, Start, continue_path
from continuation.files.config import ConfigError, build, build_run, load_config
from continuation.strategies.correctors import TrustRegionCorrector
from continuation.strategies.predictors import ODEPredictor
from continuation.strategies.projections import NewtonProjection
from continuation.strategies.step_control import FixedSteps, StopRule
from continuation.strategies.transfer_processes import IsoClassificationTransfer
from problems import make_mu
from problems.registry import PROBLEMS
from solvers import Dense

SMALL = dict(limit=24, val_limit=8, hidden=4, latent=2, classifier_hidden=4, samples=2, weight_decay=1e-2)


def small(path="ot", **kw):
    return PROBLEMS["transfer-smooth"](**{**SMALL, "path": path, **kw})


@pytest.mark.parametrize("path", ["ot", "mixture"])
def test_rate_at_the_ends_is_the_single_task_problems(path):
    p = small(path)
    theta = p.init_params(3)
    for t, classes in ((0.0, "0-4"), (1.0, "5-9")):
        single = PROBLEMS["mlp-smooth"](**SMALL, classes=classes)
        mu = make_mu(0.5, 3.0, t)
        R = float(p.functionals(theta, mu)["R"])
        assert R == pytest.approx(float(single.functionals(theta, mu)["R"]), rel=1e-12), (path, t)
        kl = p.evaluation_metrics(theta, mu)
        assert sum(kl[f"kl_z{j}"] for j in range(2)) == pytest.approx(R, rel=1e-12)


def test_the_objective_is_deterministic_and_the_mixture_linear_in_t():
    p = small("mixture")
    system = EquilibriumSystem(p, p.init_params(0))
    x = system.flatten(p.init_params(0))
    J = lambda t: float(system.objective(x, make_mu(0.5, 3.0, t)))  # noqa: E731
    assert J(0.3) == J(0.3)
    assert not hasattr(p, "resample")
    # (1 - t) J_s + t J_t: J(0.3) from J(0) and J(1), the prior in both
    assert J(0.3) == pytest.approx(0.7 * J(0.0) + 0.3 * J(1.0), rel=1e-12)


@pytest.mark.parametrize("path", ["ot", "mixture"])
def test_b_t_agrees_with_central_differences_of_the_gradient(path):
    p = small(path)
    system = EquilibriumSystem(p, p.init_params(0))
    x = system.flatten(p.init_params(1))
    mu = make_mu(0.5, 3.0, 0.4)
    b_t = system.mixed_partials(x, mu, torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64))[:, 0]
    estimates = []
    for h in (1e-3, 5e-4):
        plus, minus = make_mu(0.5, 3.0, 0.4 + h), make_mu(0.5, 3.0, 0.4 - h)
        estimates.append(-(system.gradient(x, plus) - system.gradient(x, minus)) / (2 * h))
    fd = (4 * estimates[1] - estimates[0]) / 3
    assert float((b_t - fd).norm() / b_t.norm()) < 1e-8


def test_the_label_mismatch_is_the_plans_own():
    import ot

    p = small("ot")
    xs, xt = p.train.x.numpy(), p.target.x.numpy()
    plan = ot.emd(np.full(len(xs), 1 / len(xs)), np.full(len(xt), 1 / len(xt)), ot.dist(xs, xt))
    differ = p.train.y.numpy()[:, None] != p.target.y.numpy()[None, :]
    q = float((plan * differ).sum() / plan.sum())
    assert p.label_mismatch() == pytest.approx(q, rel=1e-12)
    assert 0 < q < 1
    # C cannot go below q h(t), whatever theta: the floor the KL hold subtracts
    for seed in range(3):
        theta = p.init_params(seed)
        for t in (0.2, 0.5, 0.9):
            C = float(p.functionals(theta, make_mu(0.5, 3.0, t))["C"])
            h = -(t * math.log(t) + (1 - t) * math.log(1 - t))
            assert C >= q * h and p.label_floor(t) == pytest.approx(q * h, rel=1e-12)


def test_bad_options_are_one_line():
    with pytest.raises(ValueError, match="sinkhorn"):
        small("ot", ot_method="sinkhorn")
    with pytest.raises(ValueError, match="unknown task path 'geodesic'"):
        small("geodesic")
    with pytest.raises(ConfigError, match="ot_max_iter"):
        build("problem", {"name": "transfer-smooth", "ot_max_iter": 0, **SMALL})


def test_the_digits_configuration_builds():
    from pathlib import Path

    config = load_config(Path(__file__).resolve().parents[1] / "validation/configs/digits_transfer_exact.toml")
    config["problem"].update(limit=24, val_limit=8, hidden=4)  # the same sections, a smaller problem
    r = build_run(config)
    assert r["problem"].task_path and r["problem"].path == "ot" and r["process"].hold == "kl"
    assert r["corrector"].name == "trust-newton" and r["corrector"].for_steps().lbfgs_iters == 0


@pytest.mark.slow  # about 1 min on one thread
def test_the_exact_transfer_holds_the_kl_at_equilibria():
    """Iso-C transfer on the OT path holding G = C - q h(t): each point an equilibrium to 1e-9 of
    the start's gradient, G held to 1e-8 (the stochastic route's hold spread 1.9% run to run,
    docs/transfer.md), lambda fixed, and t advanced by the fixed steps."""
    p = small("ot")
    system = EquilibriumSystem(p, p.init_params(0))
    mu = make_mu(1.0, 2.0, 0.0)
    x0 = system.flatten(p.init_params(0))
    g0 = float(system.gradient(x0, mu).norm())
    start = TrustRegionCorrector(gtol=1e-9 * g0, maxiter=500, lbfgs_iters=300).correct(system, x0, mu)
    assert start.converged, start.status
    ds = continue_path(p, IsoClassificationTransfer(hold="kl", tol=1e-10), ODEPredictor("euler"),
                       TrustRegionCorrector(gtol=1e-9 * g0, maxiter=60, subproblem="dense"), FixedSteps(size=5e-4),
                       StopRule(max_steps=3), projection=NewtonProjection(),
                       start=Start(mu=(1.0, 2.0, 0.0), theta0=system.unflatten(start.x)),
                       output=Output(progress=False), solver=Dense())
    assert ds.attrs["status"] == "finished" and ds.sizes["step"] == 4, ds.attrs
    t = ds["t"].values
    assert np.allclose(t, [0.0, 5e-4, 1e-3, 1.5e-3], atol=1e-15)
    G = ds["C"].values - np.array([p.label_floor(v) for v in t])
    assert abs(G / G[0] - 1).max() <= 1e-8, G
    assert (ds["grad_norm"].values <= 1e-9 * g0).all()
    assert (ds["lambda"].values == 1.0).all()
    assert (np.diff(ds["gamma"].values) > 0).all()  # the new task's KL is held by raising gamma
