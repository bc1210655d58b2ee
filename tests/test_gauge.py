"""Gauge zero modes deflated from every Krylov solve (issue 11, item 1): the case that stalled,
the deflated solve against the minimum-norm least-squares solution, and tangents off the orbit."""

import numpy as np
import pytest
import torch

from continuation import Output, continue_path, solve_tangents
from continuation.strategies.correctors import NewtonCorrector
from continuation.strategies.predictors import ODEPredictor
from continuation.strategies.processes import IsoClassification
from continuation.strategies.projections import NewtonProjection
from continuation.strategies.step_control import AdaptiveSteps, StopRule
from problems import LinearGaussianData, LinearGaussianGibbsProblem, make_mu
from solvers import MINRES, Deflation, orthonormal_basis


def test_deflated_minres_gives_the_minimum_norm_solution_of_a_singular_system():
    """A = V diag(0, 1e-11, 2, 3, ...) V^T with a known near-null pair: deflating the two gives the
    pseudo-inverse solution on their complement, which numpy computes independently."""
    g = torch.Generator().manual_seed(0)
    n = 12
    V, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    lam = torch.cat([torch.tensor([0.0, 1e-11], dtype=torch.float64), torch.linspace(0.5, 4.0, n - 2,
                                                                                    dtype=torch.float64)])
    A = V @ torch.diag(lam) @ V.T
    b = A @ torch.randn(n, generator=g, dtype=torch.float64) + 1e-9 * V[:, 1]  # a little along the near-null mode
    d = Deflation(orthonormal_basis([V[:, 0], V[:, 1]]))
    res = d.solve(MINRES(rtol=1e-14), lambda v: A @ v, b)
    P = torch.eye(n, dtype=torch.float64) - d.Q @ d.Q.T
    expected = np.linalg.lstsq((P @ A @ P).numpy(), (P @ b).numpy(), rcond=1e-8)[0]
    assert res.converged and res.iters < 25
    np.testing.assert_allclose(res.x.numpy(), expected, rtol=0, atol=1e-12)
    assert float((d.Q.T @ res.x).abs().max()) < 1e-14
    with pytest.raises(ValueError, match="at least one vector"):
        orthonormal_basis([])


def case_problem():
    data = LinearGaussianData.random(5, 2, seed=7, spectrum=[4.0, 2.5, 1.5, 0.8, 0.3], noise=0.4)
    return LinearGaussianGibbsProblem.from_data(data, latent_dim=3, sigma_d=0.8, sigma_c=1.3)


def test_tangents_are_off_the_gauge_orbit_and_solve_the_system(gaussian):
    x = gaussian.equilibrate(1.3, 1.2).x
    mu = make_mu(1.3, 1.2)
    t = solve_tangents(gaussian.system, x, mu, solver=MINRES(rtol=1e-13))
    Q = gaussian.system.deflation(x).Q
    assert Q.shape[1] == 1  # latent_dim 2: one rotation generator
    assert float((Q.T @ t.theta_mu).abs().max()) < 1e-12 * float(t.theta_mu.abs().max())
    A = gaussian.system.hessian(x, mu)
    for j in range(2):
        r = A(t.theta_mu[:, j]) - t.b_mu[:, j]
        assert float(r.norm()) <= 1e-11 * float(t.b_mu[:, j].norm())


def test_the_iso_c_path_that_stalled_on_gauge_modes_reaches_its_target():
    """../shared/cases/gauge_stall_iso_c.py (5-d input, 2-d label, 3-d latent): before deflation the
    step landing on lambda = 2 was rejected 9 times (MINRES "inaccurate" at 2-5e-11 on gauge
    eigenvalues ~1e-11 at the RK stages) and 42 steps ended at lambda 1.9957. max_steps is 70
    here: at max_step 0.25 the law moves lambda by ~0.027 a step, so even with no rejection 42
    steps end at lambda ~2.15."""
    path = continue_path(case_problem(), IsoClassification(alpha=1.0), ODEPredictor("rk4"),
                         NewtonCorrector(gtol=1e-11), AdaptiveSteps(initial=0.1, max_step=0.25),
                         StopRule(target={"lambda": 2.5}, milestones={"lambda": [1.5, 2.0]}, max_steps=70),
                         projection=NewtonProjection(), start=(1.0, 1.0), output=Output(progress=False))
    assert path.attrs["stop_reason"] == "target lambda = 2.5 reached"
    assert int(path["rejected"].sum()) == 0
    assert float(path["krylov_residual"].max()) < 1e-11
    assert np.abs(path["C_drift"].values).max() < 1e-10
