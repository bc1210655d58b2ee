"""Transfer with the paper's models: the task-path objective (mixture and OT), its t-derivative
b_t against independent computations, an iso-C transfer run holding training C, the baselines,
and the Fig. 5 script at smoke size."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from continuation import EquilibriumSystem
from continuation.baselines import fine_tune, from_scratch
from continuation.config import ConfigError, build, build_run
from continuation.correctors import AdamCorrector
from continuation.driver import continue_path
from continuation.predictors import NoPredictor
from continuation.transfer_processes import iso_classification_transfer, quasi_static_transfer
from continuation.projections import SecantProjection
from continuation.step_control import FixedSteps, StopRule
from problems import make_mu
from problems.registry import transfer_mlp
from solvers import MINRES

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "validation"))

import fig5_transfer  # noqa: E402


def small(path="mixture", **kw):
    opts = dict(dataset="digits", path=path, limit=120, val_limit=60, hidden=16, latent=3, grad_batch=60,
                hvp_batch=30, float64=True)
    opts.update(kw)
    return transfer_mlp(**opts)


def test_mixture_objective_is_linear_in_t_and_b_t_is_the_gradient_difference():
    p = small("mixture")
    theta = p.init_params(0)
    system = EquilibriumSystem(p, theta)
    x = system.flatten(theta)
    J = lambda t: float(system.objective(x, make_mu(0.5, 3.0, t)))  # noqa: E731
    assert J(0.3) == pytest.approx(0.7 * J(0.0) + 0.3 * J(1.0), rel=1e-13)
    b = system.mixed_partials(x, make_mu(0.5, 3.0, 0.3), torch.eye(3, dtype=torch.float64)[[2]])[:, 0]
    diff = system.gradient(x, make_mu(0.5, 3.0, 1.0)) - system.gradient(x, make_mu(0.5, 3.0, 0.0))
    torch.testing.assert_close(b, -diff, rtol=1e-10, atol=1e-12)


def test_ot_b_t_matches_reverse_over_reverse():
    """b_t = -d/dt grad J by forward mode (the code path) against grad_x of dJ/dt by two reverse passes."""
    p = small("ot")
    theta = p.init_params(0)
    system = EquilibriumSystem(p, theta)
    x = system.flatten(theta)
    mu = make_mu(0.5, 3.0, 0.4)
    b = system.mixed_partials(x, mu, torch.eye(3, dtype=torch.float64)[[2]])[:, 0]
    xr, mr = x.clone().requires_grad_(True), mu.clone().requires_grad_(True)
    (dJ_dmu,) = torch.autograd.grad(system.objective(xr, mr), mr, create_graph=True)
    (ref,) = torch.autograd.grad(dJ_dmu[2], xr)
    torch.testing.assert_close(b, -ref, rtol=1e-9, atol=1e-11)
    assert float(b.norm()) > 1e-3


def test_ot_path_pairs_come_from_the_coupling():
    p = small("ot")
    G = p.coupling
    assert G.shape == (len(p.train), len(p.target)) == (120, 120) and G.sum() == pytest.approx(1.0)
    assert np.count_nonzero(G > 1e-12) == 120  # equal sizes, uniform weights: the exact plan is a permutation
    i, j = p.sampler.sample(500, torch.Generator().manual_seed(0))
    assert np.all(G[i.numpy(), j.numpy()] > 0)
    # at t = 0 the coupled inputs and labels are the source's: the OT evaluation (every pair of
    # the support, weight 1/120) equals the mixture's (the whole source set), noise draws alike
    theta = p.init_params(0)
    mix = small("mixture")
    for name in ("train_R", "train_D", "train_C"):
        assert p.evaluation_metrics(theta, make_mu(0.5, 3.0, 0.0))[name] == pytest.approx(
            mix.evaluation_metrics(theta, make_mu(0.5, 3.0, 0.0))[name], rel=1e-12)


def test_bad_task_options_are_one_line():
    with pytest.raises(ConfigError, match="unknown task path 'wasserstein'"):
        build("problem", {"name": "transfer-mlp", "path": "wasserstein"})
    with pytest.raises(ConfigError, match="unknown OT method 'exact'"):
        build("problem", {"name": "transfer-mlp", "path": "ot", "ot_method": "exact"})
    with pytest.raises(ConfigError, match="condition must be one of"):
        build_run({"process": {"name": "iso-classification-transfer", "condition": "straight"}})


def test_iso_c_transfer_holds_training_c_and_baselines_share_the_format(tmp_path):
    p = small("mixture", samples=1)
    system = EquilibriumSystem(p, p.init_params(0))
    from continuation.equilibrate import equilibrate

    # gamma0 = 1 keeps C0 (0.3) within reach of 100 Adam updates at t = 0.25; from an overfit
    # source (gamma0 = 8, C0 = 0.01) no gamma brings C back in 100-150 updates (the corrector
    # cannot learn the target's part that fast) and the secant only drives gamma up
    theta0 = system.unflatten(equilibrate(system, system.flatten(p.init_params(0)), make_mu(0.5, 1.0, 0.0),
                                          steps=600, lr=3e-3, resample_every=1).x)
    corrector = AdamCorrector(steps=100, gtol=float("inf"), resample_every=1)
    control = FixedSteps(size=0.25)
    common = dict(start=(0.5, 1.0, 0.0), theta0=theta0, progress=False, resample=True,
                  solver=MINRES(rtol=1e-2, maxiter=10, shift=-0.1))
    ds = continue_path(p, iso_classification_transfer(tol=5e-3, measure="evaluation"),
                       NoPredictor(), corrector, control, StopRule(target={"t": 1.0}), out=tmp_path / "tr.nc",
                       projection=SecantProjection(), **common)
    assert ds.attrs["status"] == "finished" and list(ds["t"].values) == [0.0, 0.25, 0.5, 0.75, 1.0]
    c = ds["train_C"].values
    assert np.all(ds["lambda"].values == 0.5) and np.max(np.abs(c - c[0])) / c[0] <= 0.005 + 1e-9
    assert {"val_acc", "source_val_acc", "train_R", "train_D"} <= set(ds.data_vars)
    # the same steps at fixed multipliers let C move (the check above is not vacuous)
    qs = continue_path(p, quasi_static_transfer(), NoPredictor(), corrector, control, StopRule(target={"t": 1.0}),
                       start_from=(tmp_path / "tr.nc", 0), **{k: v for k, v in common.items() if k != "start"})
    assert abs(qs["train_C"].values[-1] / c[0] - 1) > 0.05
    # baselines: the fine-tuning curve starts at the source model's accuracy on the target
    tune, _ = fine_tune(p, theta0, 0.5, 1.0, steps=20, record_every=10, out=tmp_path / "ft.nc")
    assert list(tune["updates"].values) == [0, 10, 20] and np.all(tune["t"].values == 1.0)
    assert float(tune["val_acc"][0]) == p.validation_metrics(theta0)["val_acc"]
    assert float(tune["train_C"][0]) == p.evaluation_metrics(theta0, make_mu(0.5, 1.0, 1.0))["train_C"]
    scratch, _ = from_scratch(p, 0.5, 1.0, steps=10)
    assert {"s", "t", "lambda", "gamma", "train_C", "val_acc"} <= set(scratch.data_vars) & set(ds.data_vars)


def test_fig5_script_at_smoke_size(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(fig5_transfer.SIZES, "digits", {"limit": 150, "train_steps": 200, "T": 40, "fine_tune": 20,
                                                         "hidden": 16, "latent": 3, "batch": 75})
    code = fig5_transfer.main(["--dataset", "digits", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "max |C - C0| / C0 over t" in printed and "fine-tuning, start (source model)" in printed
    assert ("targets (t = 1 reached, C within 3%, accuracy within 2 points): met" in printed) == (code == 0)
    for name in ("transfer", "quasi_static", "fine_tune", "scratch1", "scratch0"):
        assert (tmp_path / f"{name}.nc").exists()
    assert (tmp_path / "fig5.png").stat().st_size > 10_000
    from continuation.path import load_path

    transfer, tune = load_path(tmp_path / "transfer.nc"), load_path(tmp_path / "fine_tune.nc")
    assert float(tune["val_acc"][0]) == float(transfer["val_acc"][0])  # both: the source model on the target
    assert float(transfer["t"][-1]) == 1.0


def test_cifar_shape_model_on_a_task_path():
    """transfer-resnet (vehicles -> animals with CIFAR-10; here the digits padded to 32x32 RGB):
    finite functionals on the path and b_t from the mixture's gradient difference."""
    p = build("problem", {"name": "transfer-resnet", "dataset": "digits", "source": "0-4", "target": "5-9",
                          "limit": 8, "val_limit": 8, "grad_batch": 8, "hvp_batch": 4, "width": 16, "latent": 4})
    assert p.train.x.shape[1:] == (3, 32, 32) and p.name.startswith("transfer-resnet:digits")
    theta = p.init_params(0)
    system = EquilibriumSystem(p, theta)
    x = system.flatten(theta)
    f = p.functionals(theta, make_mu(0.5, 2.0, 0.5, dtype=torch.float32))
    assert all(np.isfinite(float(v)) for v in f.values())
    b = system.mixed_partials(x, make_mu(0.5, 2.0, 0.5, dtype=torch.float32),
                              torch.eye(3)[[2]])[:, 0]
    diff = system.gradient(x, make_mu(0.5, 2.0, 1.0, dtype=torch.float32)) - \
        system.gradient(x, make_mu(0.5, 2.0, 0.0, dtype=torch.float32))
    torch.testing.assert_close(b, -diff, rtol=1e-4, atol=1e-5)
