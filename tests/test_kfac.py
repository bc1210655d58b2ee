"""The K-FAC preconditioner of the smooth deterministic MLP (solvers/preconditioners.py KFAC,
problems/smooth_network.py curvature_factors): its factors are the Gauss-Newton matrix's layer
blocks (exact where one data row makes the Kronecker product exact), against the matrix assembled
by another route (`gauss_newton_matrix`: torch.func's Jacobian of the networks' outputs and the
closed-form Hessian of the loss in them; no hooks, no Kronecker factors); its M^-1 is the inverse
of the damped Kronecker blocks; and at an equilibrium the preconditioned tangent solve and
trust-region corrector need fewer products and give the unpreconditioned answer to the solve's
tolerance."""

from __future__ import annotations

import math

import pytest
import torch

from continuation.strategies.correctors import TrustRegionCorrector
from continuation.surface.system import EquilibriumSystem
from problems.neural_problem import _Batch
from problems.registry import PROBLEMS
from solvers.derivatives import hessian_operator
from solvers.krylov import CG, MINRES
from solvers.preconditioners import KFAC, make_preconditioner


def _one_row_problem(decoder_std=0.7):
    problem = PROBLEMS["mlp-smooth"](limit=2, val_limit=4, hidden=5, latent=2, classifier_hidden=4,
                                     weight_decay=1e-2, samples=1, decoder_std=decoder_std)
    b = problem.batch
    problem.batch = problem.hvp = _Batch(b.x[:1], b.y[:1], b.eps[:, :1], None)
    return problem


def _layer_indices(system, part, weight, bias):
    idx = system.unflatten(torch.arange(system.view.numel))
    return torch.cat([idx[part][weight], idx[part][bias][:, None]], 1).reshape(-1)


def test_exact_factors_are_the_gauss_newton_blocks_of_one_data_row():
    problem = _one_row_problem()
    system = EquilibriumSystem(problem, problem.init_params(0))
    x = system.flatten(problem.init_params(3))
    mu = torch.tensor([0.7, 3.0, 0.0], dtype=torch.float64)
    GGN = problem.gauss_newton_matrix(system.unflatten(x), mu)
    GGN -= problem.weight_decay * torch.eye(x.numel(), dtype=x.dtype)  # the prior: not in the factors
    factors = problem.curvature_factors(system.unflatten(x), mu, draws=0)
    assert len(factors) == 6  # every linear layer: encoder 2, decoder 2, classifier 2
    for part, weight, bias, A, G in factors:
        ii = _layer_indices(system, part, weight, bias)
        block = GGN[ii][:, ii]
        assert float((torch.kron(G, A) - block).norm() / block.norm()) < 1e-12, (part, weight)


def test_monte_carlo_factors_average_to_the_exact_ones():
    """One draw is an unbiased estimate of G: the mean of n = 4,000 draws is within three standard
    errors of the exact G, the standard error of a sample second-moment matrix of Gaussian vectors
    being |G|_F sqrt(((tr G)^2 / |G|_F^2 + 1) / n) (0.13 |G|_F for the 64 x 64 decoder output's G,
    0.04-0.05 for the others; measured errors 0.01-0.13 of |G|_F at two seeds); and the draws are
    reproducible by seed. A factor or a scale wrong in one head's u is a bias of tens of per cent."""
    problem = _one_row_problem()
    theta = problem.init_params(3)
    mu = torch.tensor([0.7, 3.0, 0.0], dtype=torch.float64)
    n = 4000
    exact = problem.curvature_factors(theta, mu, draws=0)
    sampled = problem.curvature_factors(theta, mu, draws=n, seed=1)
    for (part, w, _, A0, G0), (_, _, _, A1, G1) in zip(exact, sampled):
        assert torch.equal(A0, A1)  # the input factor involves no draw
        norm = float(G0.norm())
        standard_error = norm * math.sqrt((float(G0.trace()) ** 2 / norm**2 + 1) / n)
        assert float((G1 - G0).norm()) < 3 * standard_error, (part, w, float((G1 - G0).norm()) / norm)
    again = problem.curvature_factors(theta, mu, draws=3, seed=5)
    other = problem.curvature_factors(theta, mu, draws=3, seed=5)
    assert all(torch.equal(a[4], b[4]) for a, b in zip(again, other))


def test_apply_is_the_inverse_of_the_damped_kronecker_blocks():
    problem = PROBLEMS["mlp-smooth"](limit=12, val_limit=4, hidden=5, latent=2, classifier_hidden=4,
                                     weight_decay=1e-2, samples=2)
    system = EquilibriumSystem(problem, problem.init_params(0))
    x = system.flatten(problem.init_params(1))
    mu = torch.tensor([0.5, 2.0, 0.0], dtype=torch.float64)
    pre = KFAC(damping=1e-3, draws=2).bind(problem, problem.init_params(0))
    pre.ready_for(hessian_operator(system.objective, x, mu), x)
    M = torch.eye(x.numel(), dtype=x.dtype) * (1e-2 + 1e-3)
    for part, weight, bias, A, G in problem.curvature_factors(system.unflatten(x), mu, draws=2):
        ii = _layer_indices(system, part, weight, bias)
        M[ii[:, None], ii] += torch.kron(G, A)
    assert pre.shift == pytest.approx(1.1e-2) and pre.build_products == 0 and pre.builds == 1
    V = torch.randn(x.numel(), 5, dtype=x.dtype)
    MinvV = torch.stack([pre.apply(v) for v in V.T], 1)
    assert float((MinvV - torch.linalg.solve(M, V)).norm() / MinvV.norm()) < 1e-10


@pytest.fixture(scope="module")
def equilibrium():
    """A 1,226-parameter model solved to round-off (trust region with L-BFGS first)."""
    problem = PROBLEMS["mlp-smooth"](limit=96, val_limit=8, hidden=8, latent=3, classifier_hidden=6,
                                     weight_decay=1e-2, samples=2, decoder_std=0.5)
    system = EquilibriumSystem(problem, problem.init_params(0))
    mu = torch.tensor([0.5, 3.0, 0.0], dtype=torch.float64)
    x0 = system.flatten(problem.init_params(0))
    res = TrustRegionCorrector(gtol=1e-10, maxiter=300, lbfgs_iters=2000, lbfgs_switch=1e-5).correct(system, x0, mu)
    assert res.converged, res.status
    return problem, system, res.x, mu


@pytest.mark.parametrize("solver", [MINRES, pytest.param(CG, marks=pytest.mark.slow)])
def test_preconditioned_tangent_solve_needs_fewer_products_and_gives_the_same_answer(equilibrium, solver):
    problem, system, x, mu = equilibrium
    A = hessian_operator(system.objective, x, mu)
    b = system.mixed_partials(x, mu)[:, 1]  # the gamma tangent's right-hand side
    plain = solver(rtol=1e-10, maxiter=20000).solve(A, b)
    pre = solver(rtol=1e-10, maxiter=20000, preconditioner=KFAC().bind(problem, problem.init_params(0))).solve(A, b)
    assert plain.converged and pre.converged
    assert pre.iters < 0.7 * plain.iters, (pre.iters, plain.iters)  # measured 865 against 1,585 (MINRES; CG 877 against 1,618)
    # both to rtol 1e-10: they differ by at most about cond(A) x 1e-10 (cond ~ 1e4 here)
    assert float((pre.x - plain.x).norm() / plain.x.norm()) < 1e-6
    assert float((A(pre.x) - b).norm() / b.norm()) < 2e-10


@pytest.mark.slow
def test_preconditioned_trust_region_reaches_the_same_minimum_with_fewer_products(equilibrium):
    problem, system, x, mu = equilibrium
    mu1 = mu + torch.tensor([0.02, 0.0, 0.0], dtype=mu.dtype)
    runs = {}
    for name, pre in (("none", None), ("kfac", KFAC().bind(problem, problem.init_params(0)))):
        system.preconditioner = pre
        runs[name] = TrustRegionCorrector(gtol=1e-10, maxiter=100).correct(system, x, mu1)
    system.preconditioner = None
    assert runs["none"].converged and runs["kfac"].converged
    assert runs["kfac"].hvps < runs["none"].hvps, (runs["kfac"].hvps, runs["none"].hvps)  # measured 2,117 / 2,648
    assert float((runs["kfac"].x - runs["none"].x).norm() / runs["none"].x.norm()) < 1e-7


def test_bad_kfac_options_and_problems_are_one_line():
    with pytest.raises(ValueError, match="damping must be a finite number >= 0"):
        KFAC(damping=-1.0)
    with pytest.raises(ValueError, match=r"draws must be an integer >= 0 \(0: exact factors\)"):
        make_preconditioner("kfac", draws=-1)
    gaussian = PROBLEMS["linear-gaussian"]()
    with pytest.raises(ValueError, match="needs a network problem with K-FAC factors"):
        KFAC().bind(gaussian, gaussian.init_params(0))
    free = PROBLEMS["mlp-smooth"](limit=8, val_limit=4, hidden=3, latent=2, classifier_hidden=3, weight_decay=0.0)
    with pytest.raises(ValueError, match=r"weight_decay \+ preconditioner_damping > 0"):
        KFAC().bind(free, free.init_params(0))
    KFAC(damping=1e-4).bind(free, free.init_params(0))  # the damping alone makes M definite
    pre = KFAC().bind(_one_row_problem(), _one_row_problem().init_params(0))
    with pytest.raises(ValueError, match="needs the operator's point"):
        pre.build(lambda v: v, torch.zeros(3, dtype=torch.float64))


def test_a_shifted_or_damped_operator_keeps_its_point():
    """MINRES's shift and CG's damping wrap the operator: the wrapper keeps A's point, where K-FAC
    is built (found by a new user's trial: `shift = 1e-3` with kfac stopped the run)."""
    problem = PROBLEMS["mlp-smooth"](limit=12, val_limit=4, hidden=5, latent=2, classifier_hidden=4, weight_decay=1e-2)
    system = EquilibriumSystem(problem, problem.init_params(0))
    x = system.flatten(problem.init_params(1))
    mu = torch.tensor([0.5, 2.0, 0.0], dtype=torch.float64)
    A, b = hessian_operator(system.objective, x, mu), system.gradient(x, mu)
    for solver in (MINRES(shift=1e-3, maxiter=5), CG(damping=1e-3, maxiter=5)):
        pre = KFAC().bind(problem, problem.init_params(0))
        solver.preconditioner = pre
        solver.solve(A, b)
        assert pre.builds == 1
