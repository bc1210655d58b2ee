"""Exact Gibbs encoder by quadrature: a nonlinear problem declared in a few lines, checked
against the covariance formulas of Lemma 5 and eq. 21 (paper appendices C, D), and against the
closed-form linear-Gaussian objective."""

import math

import numpy as np
import pytest
import torch
from torch.func import jacfwd

from continuation import EquilibriumSystem, functional_derivatives, solve_tangents
from problems import (FunctionalHamiltonian, GibbsQuadratureProblem, LinearGaussianData, LinearGaussianGibbsProblem,
                      LinearGaussianHamiltonian, make_mu, standard_normal_log_prior)
from solvers import NewtonCG, dense_hessian


def tanh_hamiltonian():
    """A 1-D latent, a tanh decoder x in R^2 (std 0.5), a 3-class softmax classifier."""

    def params(g, dtype):
        return {"A": torch.randn(2, generator=g, dtype=dtype), "b": 0.1 * torch.randn(2, generator=g, dtype=dtype),
                "u": torch.randn(3, generator=g, dtype=dtype), "v": 0.1 * torch.randn(3, generator=g, dtype=dtype)}

    def log_decoder(th, x, z):
        mean = torch.tanh(z * th["A"] + th["b"])
        return -0.5 * ((x - mean) ** 2).sum(-1) / 0.25 - math.log(2 * math.pi * 0.25)

    def log_classifier(th, y, z):
        logp = torch.log_softmax(z * th["u"] + th["v"], dim=-1)
        shape = torch.broadcast_shapes(y.shape, logp.shape[:-1])
        return torch.gather(logp.expand(*shape, -1), -1, y.expand(shape)[..., None])[..., 0]

    return FunctionalHamiltonian(latent_dim=1, params=params, log_prior_fn=standard_normal_log_prior,
                                 log_decoder_fn=log_decoder, log_classifier_fn=log_classifier)


@pytest.fixture(scope="module")
def tanh_problem():
    g = torch.Generator().manual_seed(3)
    y = torch.randint(0, 3, (24,), generator=g)
    x = torch.tanh(torch.randn(24, 2, generator=g, dtype=torch.float64) + 0.5 * y[:, None])
    return GibbsQuadratureProblem(tanh_hamiltonian(), x, y, half_width=9.0, points=301)


def grid_derivatives(problem, theta, mu):
    """Per-sample, per-node H, grad_theta H, Hess_theta H, log d, grad log d, l = log c, grad l."""
    system = EquilibriumSystem(problem, theta)
    x = system.flatten(theta)
    h = problem.hamiltonian

    def terms(xf):
        th = system.unflatten(xf)
        z = problem.z[None]
        log_m = h.log_prior(th, z).expand(problem.x.shape[0], -1)
        log_d = h.log_decoder(th, problem.x[:, None], z)
        log_c = h.log_classifier(th, problem.y[:, None], z)
        return torch.stack([-(log_m + mu[0] * log_d + mu[1] * log_c), log_d, log_c])

    vals = terms(x)
    jac = jacfwd(terms)(x)  # (3, B, G, P): forward mode, as P is small
    hess_h = jacfwd(jacfwd(lambda xf: terms(xf)[0]))(x)  # (B, G, P, P)
    log_z, _ = problem._log_z(theta, mu)
    p = torch.exp(-vals[0] + problem.log_w - log_z[:, None])  # Gibbs weights at the nodes
    return system, x, p, vals, jac, hess_h


def avg(p, values):
    """<values>, averaged over samples: p (B, G), values (B, G, ...)."""
    return torch.einsum("bg,bg...->b...", p, values)


def test_quadrature_is_a_probability_measure(tanh_problem):
    theta = tanh_problem.init_params(0)
    mu = make_mu(1.3, 0.7)
    _, _, p, *_ = grid_derivatives(tanh_problem, theta, mu)
    np.testing.assert_allclose(p.sum(1).numpy(), 1.0, atol=1e-13)
    f = tanh_problem.functionals(theta, mu)
    J = tanh_problem.objective(theta, mu)
    assert float(J) == pytest.approx(float(f["R"] + 1.3 * f["D"] + 0.7 * f["C"]), rel=1e-12)
    assert float(f["R"]) > 0  # a KL divergence


def test_mixed_partials_and_hessian_equal_lemma5_covariance_formulas(tanh_problem):
    theta = tanh_problem.init_params(1)
    mu = make_mu(1.3, 0.7)
    system, x, p, vals, jac, hess_h = grid_derivatives(tanh_problem, theta, mu)
    grad_h, grad_log_d, grad_l = jac[0], jac[1], jac[2]
    for j, (dH, d_grad_H) in enumerate([(-vals[1], -grad_log_d), (-vals[2], -grad_l)]):
        # b_mu = -E_x[<d grad H> - <dH grad H> + <dH><grad H>]   (Lemma 5)
        formula = -(avg(p, d_grad_H) - avg(p, dH[..., None] * grad_h)
                    + avg(p, dH)[:, None] * avg(p, grad_h)).mean(0)
        autodiff = system.mixed_partials(x, mu)[:, j]
        np.testing.assert_allclose(autodiff.numpy(), formula.numpy(), rtol=0, atol=1e-6 * float(formula.abs().max()))
        assert float(formula.abs().max()) > 1e-2  # not a vacuous comparison
    # A = E_x[<Hess H> + <grad H><grad H>^T - <grad H grad H^T>]   (Lemma 5)
    mean_grad = avg(p, grad_h)
    A_formula = (avg(p, hess_h) + mean_grad[:, :, None] * mean_grad[:, None, :]
                 - avg(p, grad_h[..., :, None] * grad_h[..., None, :])).mean(0)
    A = dense_hessian(system.objective, x, mu)
    np.testing.assert_allclose(A.numpy(), A_formula.numpy(), rtol=0, atol=1e-8 * float(A.abs().max()))


def test_classification_rate_equals_eq21_at_equilibrium(tanh_problem):
    mu = make_mu(1.3, 0.7)
    system = EquilibriumSystem(tanh_problem, tanh_problem.init_params(0))
    res = NewtonCG(gtol=1e-11).solve(system.objective, system.flatten(tanh_problem.init_params(0)), mu)
    assert res.converged, res.message()
    theta = system.unflatten(res.x)
    tangents = solve_tangents(system, res.x, mu)
    assert tangents.converged, tangents.report()
    rates = functional_derivatives(system, res.x, mu, tangents)
    _, _, p, vals, jac, _ = grid_derivatives(tanh_problem, theta, mu)
    ell, grad_h, grad_l = vals[2], jac[0], jac[2]
    for j, dH in enumerate([-vals[1], -vals[2]]):
        v = tangents.theta_mu[:, j]
        vH, vl = grad_h @ v, grad_l @ v
        # eq. 21: C_mu = -E_x[<dH><l> - <dH l> + <v.gradH><l> - <l v.gradH> + <v.grad l>]
        formula = -(avg(p, dH) * avg(p, ell) - avg(p, dH * ell) + avg(p, vH) * avg(p, ell)
                    - avg(p, ell * vH) + avg(p, vl)).mean()
        assert float(rates["C"][j]) == pytest.approx(float(formula), rel=1e-8, abs=1e-12)


def test_quadrature_matches_closed_form_linear_gaussian():
    """Independent check of the closed-form J (docs/linear_gaussian.md) with latent dims 1 and 2."""
    data = LinearGaussianData.random(2, 1, seed=4)
    x, y = data.sample(40, seed=1)
    for k in (1, 2):
        h = LinearGaussianHamiltonian(2, 1, k, sigma_d=0.8, sigma_c=1.3)
        quad = GibbsQuadratureProblem(h, x, y, half_width=8.0, points=161 if k == 2 else 401)
        closed = LinearGaussianGibbsProblem.from_samples(h, x, y)
        theta = quad.init_params(5)
        mu = make_mu(0.9, 1.7)
        assert float(quad.objective(theta, mu)) == pytest.approx(float(closed.objective(theta, mu)), rel=1e-10)
        fq, fc = quad.functionals(theta, mu), closed.functionals(theta, mu)
        for name in "RDC":
            assert float(fq[name]) == pytest.approx(float(fc[name]), rel=1e-9), name


def test_grid_dimension_is_checked():
    h = LinearGaussianHamiltonian(2, 1, 3)
    with pytest.raises(ValueError, match="dimension 1 or 2, got 3"):
        GibbsQuadratureProblem(h, torch.zeros(4, 2, dtype=torch.float64), torch.zeros(4, 1, dtype=torch.float64))
