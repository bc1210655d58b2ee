"""Trust-region Newton-CG (solvers/trust_region.py) and the trust-newton corrector: converges to a
minimum (not a saddle), quadratically at the end, on analytic nonconvex functions. On the
smooth deterministic MLP: tests/test_exact_route.py."""

from __future__ import annotations

import pytest
import torch

from solvers.trust_region import TrustRegionNewton, steihaug_cg


def rosenbrock(x, mu):
    return (mu[0] * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()


def test_rosenbrock_converges_to_its_minimum_quadratically():
    mu = torch.tensor([100.0, 0.0, 0.0], dtype=torch.float64)
    x0 = torch.full((10,), -1.2, dtype=torch.float64)
    x0[1::2] = 1.0
    r = TrustRegionNewton(gtol=1e-12, maxiter=300).solve(rosenbrock, x0, mu)
    assert r.converged and r.grad_norm <= 1e-12
    assert torch.allclose(r.x, torch.ones(10, dtype=torch.float64), atol=1e-10, rtol=0)
    # the last steps: |g_{k+1}| <= c |g_k|^2 (quadratic) once |g| < 1e-2, down to round-off (~1e-14 here)
    norms = [g for _, g in r.history]
    pairs = [(a, b) for a, b in zip(norms, norms[1:]) if a < 1e-2 and b > 1e-11]
    assert pairs and all(b <= 50 * a * a for a, b in pairs), norms


def saddle(x, mu):
    """x^2 / 2 + y^4 / 4 - y^2 / 2: a saddle at 0, minima at (0, +-1) with Hessian diag(1, 2)."""
    return 0.5 * x[0] ** 2 + 0.25 * x[1] ** 4 - 0.5 * x[1] ** 2


def test_it_leaves_a_saddle_along_negative_curvature():
    """From next to the saddle the model's CG meets negative curvature and goes to the trust
    boundary along it; the method ends at a minimum, with the Hessian's eigenvalues (1, 2)."""
    mu = torch.zeros(3, dtype=torch.float64)
    x0 = torch.tensor([0.8, 1e-6], dtype=torch.float64)
    r = TrustRegionNewton(gtol=1e-12).solve(saddle, x0, mu)
    assert r.converged and r.negative_curvature >= 1
    assert abs(float(r.x[0])) < 1e-12 and abs(abs(float(r.x[1])) - 1) < 1e-12
    H = torch.func.hessian(lambda v: saddle(v, mu))(r.x)
    assert torch.allclose(torch.linalg.eigvalsh(H), torch.tensor([1.0, 2.0], dtype=torch.float64), atol=1e-10)


def test_steihaug_cg_is_the_newton_step_inside_and_stops_on_the_boundary():
    A = torch.diag(torch.tensor([1.0, 4.0, 9.0], dtype=torch.float64))
    g = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)
    newton = -torch.linalg.solve(A, g)
    p, how, _, _ = steihaug_cg(lambda v: A @ v, g, radius=10.0, rtol=1e-12, maxiter=10)
    assert how == "converged" and torch.allclose(p, newton, atol=1e-12)
    p, how, _, _ = steihaug_cg(lambda v: A @ v, g, radius=0.5, rtol=1e-12, maxiter=10)
    assert how == "boundary" and abs(float(p.norm()) - 0.5) < 1e-12 and float(g @ p) < 0
    B = torch.diag(torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64))  # indefinite
    g = torch.tensor([0.1, 1.0, 0.1], dtype=torch.float64)  # -g has negative curvature: d.B d = -1.96
    p, how, _, _ = steihaug_cg(lambda v: B @ v, g, radius=2.0, rtol=1e-12, maxiter=10)
    assert how == "negative_curvature" and abs(float(p.norm()) - 2.0) < 1e-12
    assert float(g @ p + 0.5 * p @ B @ p) < 0  # the model decreases


def test_preconditioned_steihaug_measures_the_ball_in_the_m_norm():
    """With M^-1 = diag(1/m): the Newton step inside the M-ball is the same step; on the boundary
    p.M p = radius^2 (the recurrences for z.Mz, z.Md, d.Md against the explicit M-norm)."""
    A = torch.diag(torch.tensor([1.0, 4.0, 9.0, 100.0], dtype=torch.float64))
    m = torch.tensor([2.0, 3.0, 7.0, 90.0], dtype=torch.float64)
    g = torch.tensor([1.0, -1.0, 2.0, 1.0], dtype=torch.float64)
    newton = -torch.linalg.solve(A, g)
    p, how, _, pnorm = steihaug_cg(lambda v: A @ v, g, radius=10.0, rtol=1e-13, maxiter=10, precondition=lambda r: r / m)
    assert how == "converged" and torch.allclose(p, newton, atol=1e-13)
    assert abs(pnorm - float(torch.sqrt(p @ (m * p)))) < 1e-12
    p, how, _, pnorm = steihaug_cg(lambda v: A @ v, g, radius=0.3, rtol=1e-13, maxiter=10, precondition=lambda r: r / m)
    assert how == "boundary" and abs(float(torch.sqrt(p @ (m * p))) - 0.3) < 1e-12 and pnorm == 0.3
    assert float(g @ p + 0.5 * p @ A @ p) < 0


def test_lbfgs_switch_skips_the_globalisation_near_an_equilibrium(competition):
    """lbfgs_switch: L-BFGS only while |grad J| > lbfgs_switch. From a point whose gradient is
    already below it, the corrector spends two L-BFGS gradients (the entry closure and the exit check) and goes to the
    trust region; without it, L-BFGS runs to gtol first. Both end at the same equilibrium."""
    from continuation.strategies.correctors import TrustRegionCorrector
    from continuation.surface.system import EquilibriumSystem

    problem = competition.problem
    system = EquilibriumSystem(problem, problem.init_params(0))
    mu = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)
    x0 = system.flatten(problem.init_params(0))
    g0 = float(system.gradient(x0, mu).norm())
    near = TrustRegionCorrector(gtol=1e-12, lbfgs_iters=500, lbfgs_switch=2 * g0).correct(system, x0, mu)
    far = TrustRegionCorrector(gtol=1e-12, lbfgs_iters=500).correct(system, x0, mu)
    assert near.converged and far.converged
    assert torch.allclose(near.x, far.x, atol=1e-9)
    trust = TrustRegionCorrector(gtol=1e-12).correct(system, x0, mu)  # no L-BFGS at all
    assert near.grads == trust.grads + 2 < far.grads and near.hvps == trust.hvps  # the same trust-region run


def test_the_lbfgs_globalisation_is_kept_for_the_start_not_the_steps(competition):
    """trust-newton's L-BFGS phase equilibrates the start; a continuation step goes from the
    prediction straight to the trust region (Corrector.for_steps), unless `lbfgs_in_steps`: L-BFGS
    from a predicted point can carry the iterate to another branch (docs/neural_equilibrium.md)
    and costs more than the trust region's few iterations. Both routes reach the same points."""
    from continuation import Output, Start, continue_path
    from continuation.strategies.correctors import TrustRegionCorrector
    from continuation.strategies.predictors import ODEPredictor
    from continuation.strategies.processes import QuasiStatic
    from continuation.strategies.step_control import FixedSteps, StopRule

    c = TrustRegionCorrector(gtol=1e-11, lbfgs_iters=500)
    assert c.for_steps().lbfgs_iters == 0 and c.for_steps().gtol == c.gtol and c.lbfgs_iters == 500
    kept = TrustRegionCorrector(gtol=1e-11, lbfgs_iters=500, lbfgs_in_steps=True)
    assert kept.for_steps() is kept
    with pytest.raises(ValueError, match="lbfgs_in_steps must be true or false"):
        TrustRegionCorrector(lbfgs_in_steps=1)

    problem = competition.problem

    def route(corrector):
        return continue_path(problem, QuasiStatic(lambda_rate=1.0, gamma_rate=0.0), ODEPredictor("euler"), corrector,
                             FixedSteps(size=0.1), StopRule(max_steps=3), start=Start(mu=(1.0, 1.0)),
                             output=Output(progress=False))

    steps, always = route(c), route(kept)
    assert steps.attrs["status"] == always.attrs["status"] == "finished" and steps.sizes["step"] == 4
    g_steps, g_always = steps["gradients"].values, always["gradients"].values
    assert g_steps[0] == g_always[0] > 20  # the start: L-BFGS, then the trust region, in both
    assert (g_steps[1:] < g_always[1:]).all(), (g_steps, g_always)  # the steps: no L-BFGS unless asked
    assert (steps["newton_iters"].values[1:] <= 6).all()
    for v in ("lambda", "gamma", "R", "D", "C"):
        assert abs(steps[v].values - always[v].values).max() <= 1e-9 * (1 + abs(always[v].values).max())
