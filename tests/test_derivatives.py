"""HVPs and mixed partials against dense autodiff and finite differences; the amortized
problem on a small network; flat views and error messages."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from continuation import EquilibriumSystem
from problems import (AmortizedProblem, FunctionalHamiltonian, GaussianEncoder, NeuralHamiltonian, make_mu, mlp,
                      standard_normal_log_prior)
from solvers import FlatView, NewtonCG, hessian_operator


def small_network_problem(samples=2, hamiltonian=None):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (16,), generator=g)
    k = 2
    ham = hamiltonian or NeuralHamiltonian(mlp([k, 5, 4]), mlp([k, 3]), k, decoder_std=0.7)
    return AmortizedProblem(ham, GaussianEncoder(mlp([4, 5, 2 * k]), k), x, y, samples=samples, seed=1)


@pytest.mark.parametrize("mode", ["fwd-rev", "rev-rev"])
def test_hvp_equals_dense_hessian_of_small_network(mode):
    problem = small_network_problem()
    theta = problem.init_params(0)
    system = EquilibriumSystem(problem, theta, hvp_mode=mode)
    x = system.flatten(theta)
    mu = make_mu(1.5, 2.0)
    assert x.numel() > 50
    dense = torch.autograd.functional.hessian(lambda v: system.objective(v, mu), x)
    hvp = system.hessian(x, mu)
    basis = torch.eye(x.numel(), dtype=x.dtype)
    by_hvp = torch.stack([hvp(e) for e in basis], dim=1)
    np.testing.assert_allclose(by_hvp.numpy(), dense.numpy(), rtol=0, atol=1e-10)
    v = torch.randn(x.shape, dtype=x.dtype)
    np.testing.assert_allclose(hvp(v).numpy(), (dense @ v).numpy(), rtol=0, atol=1e-10)


def test_hvp_mode_is_checked():
    with pytest.raises(ValueError, match="valid modes: fwd-rev, rev-rev"):
        hessian_operator(lambda x, mu: (x**2).sum(), torch.zeros(2), torch.zeros(3), mode="finite-difference")


def test_amortized_mixed_partials_are_minus_gradients_of_D_and_C():
    problem = small_network_problem()
    theta = problem.init_params(0)
    system = EquilibriumSystem(problem, theta)
    x, mu = system.flatten(theta), make_mu(0.8, 3.0, 0.4)
    b = system.mixed_partials(x, mu)
    grads = torch.func.jacrev(system.functionals)(x, mu)  # rows R, D, C
    np.testing.assert_allclose(b[:, 0].numpy(), -grads[1].numpy(), atol=1e-13)
    np.testing.assert_allclose(b[:, 1].numpy(), -grads[2].numpy(), atol=1e-13)
    assert float(b[:, 2].abs().max()) == 0.0  # no task time in this problem


def test_mixed_partials_match_finite_differences_of_the_gradient(gaussian):
    x = gaussian.system.flatten(gaussian.problem.init_params(2))
    mu = make_mu(0.7, 1.9)
    b = gaussian.system.mixed_partials(x, mu)
    for j in range(2):
        e = torch.zeros(3, dtype=x.dtype)
        e[j] = 1e-6
        fd = -(gaussian.system.gradient(x, mu + e) - gaussian.system.gradient(x, mu - e)) / 2e-6
        np.testing.assert_allclose(b[:, j].numpy(), fd.numpy(), rtol=0, atol=1e-8 * float(fd.abs().max()))


def test_amortized_objective_is_deterministic_between_resamples():
    problem = small_network_problem()
    theta = problem.init_params(0)
    mu = make_mu(1.0, 1.0)
    J1, J2 = problem.objective(theta, mu), problem.objective(theta, mu)
    assert float(J1) == float(J2)
    problem.resample(seed=2)
    assert float(problem.objective(theta, mu)) != float(J1)
    problem.resample(seed=1)
    assert float(problem.objective(theta, mu)) == float(J1)
    assert problem.objective(theta, mu).dtype == torch.float64


def test_analytic_kl_matches_monte_carlo_kl():
    """R by the closed-form KL to N(0, I) against the Monte Carlo estimate of a declared prior."""
    neural = NeuralHamiltonian(mlp([2, 4]), mlp([2, 3]), 2)
    as_declared = FunctionalHamiltonian(
        latent_dim=2, params=neural.init_params, log_prior_fn=standard_normal_log_prior,
        log_decoder_fn=neural.log_decoder, log_classifier_fn=neural.log_classifier, prior_is_standard_normal=False)
    analytic = small_network_problem(samples=1, hamiltonian=neural)
    mc = small_network_problem(samples=20000, hamiltonian=as_declared)
    theta = analytic.init_params(0)
    mu = make_mu(1.0, 1.0)
    R_exact = float(analytic.functionals(theta, mu)["R"])
    R_mc = float(mc.functionals(theta, mu)["R"])
    assert R_exact > 0.05
    # standard error of the MC mean over 20000 x 16 draws is well below 1e-2 here
    assert R_mc == pytest.approx(R_exact, abs=1e-2)


def test_newton_converges_quadratically_on_a_smooth_convex_objective():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(30, 10, generator=g, dtype=torch.float64)
    c = torch.randn(10, generator=g, dtype=torch.float64)

    def f(x, mu):
        return mu[0] * torch.logsumexp(A @ x, 0) + 0.5 * mu[1] * (x * x).sum() - c @ x

    res = NewtonCG(gtol=1e-13, eta_max=0.1).solve(f, torch.zeros(10, dtype=torch.float64), make_mu(2.0, 0.5))
    assert res.converged and res.negative_curvature == 0 and res.damping == 0.0
    norms = [gn for _, gn in res.history]
    # in the final phase ||g_{k+1}|| <= K ||g_k||^2 (forcing term eta_k = ||g_k||)
    tail = [(a, b) for a, b in zip(norms[:-1], norms[1:]) if a < 1e-2]
    assert len(tail) >= 2 and all(b <= 10 * a * a for a, b in tail)


def test_newton_leaves_saddles_through_damping():
    """From a saddle's neighbourhood, negative curvature raises the damping and Newton still descends."""
    f = lambda x, mu: 0.25 * (x[0] ** 2 - 1.0) ** 2 + 0.5 * x[1] ** 2  # noqa: E731  minima at (+-1, 0)
    res = NewtonCG(gtol=1e-12).solve(f, torch.tensor([1e-3, 0.3], dtype=torch.float64), make_mu(1.0, 1.0))
    assert res.converged and res.negative_curvature >= 1
    np.testing.assert_allclose(res.x.abs().numpy(), [1.0, 0.0], atol=1e-10)


def test_nan_objective_is_one_clear_error():
    f = lambda x, mu: (x**2).sum() * torch.tensor(math.nan, dtype=x.dtype)  # noqa: E731
    with pytest.raises(FloatingPointError, match="objective at the starting point is not finite"):
        NewtonCG().solve(f, torch.ones(3, dtype=torch.float64), make_mu(1.0, 1.0))
    g = lambda x, mu: torch.sqrt(x).sum()  # noqa: E731  gradient inf at 0
    with pytest.raises(FloatingPointError, match="gradient is not finite"):
        NewtonCG().solve(g, torch.zeros(3, dtype=torch.float64), make_mu(1.0, 1.0))


def test_flat_view_round_trip_and_errors():
    tree = {"a": torch.randn(2, 3, dtype=torch.float64), "b": {"c": torch.randn(4, dtype=torch.float64)}}
    view = FlatView(tree)
    x = view.flatten(tree)
    assert x.shape == (10,)
    back = view.unflatten(x)
    assert torch.equal(back["a"], tree["a"]) and torch.equal(back["b"]["c"], tree["b"]["c"])
    with pytest.raises(ValueError, match="expected a vector of length 10"):
        view.unflatten(torch.zeros(9, dtype=torch.float64))
    with pytest.raises(ValueError, match="structure differs"):
        view.flatten({"a": tree["a"]})
    with pytest.raises(TypeError, match="share one dtype"):
        FlatView({"a": torch.zeros(2), "b": torch.zeros(2, dtype=torch.float64)})


def test_mismatched_data_is_named():
    with pytest.raises(ValueError, match="different numbers of samples: 3 and 4"):
        AmortizedProblem(NeuralHamiltonian(nn.Linear(1, 2), nn.Linear(1, 2), 1), GaussianEncoder(nn.Linear(2, 2), 1),
                         torch.zeros(3, 2), torch.zeros(4, dtype=torch.long))
