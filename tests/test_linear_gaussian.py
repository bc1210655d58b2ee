"""The linear-Gaussian problem against its closed forms (docs/linear_gaussian.md), float64.

Each test compares an autodiff/Krylov/Newton number with an independent one: the numpy
eigen-decomposition formulas, finite differences of re-equilibrated models, or the explicit
scalar formulas.
"""

import numpy as np
import pytest
import torch
from scipy.optimize import root

from continuation.singular.spectrum import gauge_basis, non_gauge_eigenvalues
from continuation import free_energy_hessian, functional_derivatives, maxwell_gap, solve_tangents
from problems import (LinearGaussianClosedForm, LinearGaussianData, LinearGaussianGibbsProblem,
                      ScalarGaussianClosedForm, make_mu)
from solvers import CG, MINRES, NewtonCG, dense_hessian

POINTS = [(1.0, 1.0), (0.25, 1.0), (3.0, 0.5), (0.6, 2.5)]  # two, one, two, two directions on


def test_closed_form_J_equals_R_plus_lambda_D_plus_gamma_C(gaussian):
    """Two independent closed forms: J as a PPCA likelihood, R, D, C as posterior expectations."""
    theta = gaussian.problem.init_params(7)
    for lam, gam in POINTS:
        mu = make_mu(lam, gam)
        f = gaussian.problem.functionals(theta, mu)
        J = gaussian.problem.objective(theta, mu)
        assert float(J) == pytest.approx(float(f["R"] + lam * f["D"] + gam * f["C"]), rel=1e-13)


def test_closed_form_equilibrium_is_stationary_and_gauge_invariant(gaussian):
    for lam, gam in POINTS:
        mu = make_mu(lam, gam)
        x = gaussian.theta_star(lam, gam)
        assert float(gaussian.system.gradient(x, mu).norm()) < 1e-12
        assert float(gaussian.system.objective(x, mu)) == pytest.approx(gaussian.closed.free_energy(lam, gam), rel=1e-13)
        c, s = np.cos(0.3), np.sin(0.3)
        t = gaussian.closed.theta_star(lam, gam, rotation=np.array([[c, -s], [s, c]]))
        x_rot = gaussian.system.flatten({k: torch.tensor(v) for k, v in t.items()})
        assert float(gaussian.system.objective(x_rot, mu)) == pytest.approx(float(gaussian.system.objective(x, mu)), rel=1e-14)


@pytest.mark.parametrize("lam,gam", POINTS + [(0.05, 0.3)])
def test_newton_cg_reaches_closed_form_free_energy(gaussian, lam, gam):
    res = gaussian.equilibrate(lam, gam)
    F = gaussian.closed.free_energy(lam, gam)
    assert abs(res.value - F) <= 1e-8 * abs(F)
    assert res.grad_norm <= 1e-12 and res.hvps > 0 and res.iters >= 1
    np.testing.assert_allclose(gaussian.closed.gram(lam, gam),
                               (lambda t: np.vstack([t["W"], t["V"]]) @ np.vstack([t["W"], t["V"]]).T)(
                                   {k: v.numpy() for k, v in gaussian.system.unflatten(res.x).items()}),
                               atol=1e-8)


def test_newton_reports_failure_to_converge(gaussian):
    res = NewtonCG(maxiter=1).solve(gaussian.system.objective, gaussian.system.flatten(gaussian.problem.init_params(0)),
                                    make_mu(1.0, 1.0))
    assert not res.converged and res.status == "max_iters" and res.iters == 1
    assert "max_iters" in res.message()


def test_D_and_C_are_derivatives_of_F(gaussian):
    cf = gaussian.closed
    for lam, gam in POINTS:
        f = gaussian.problem.functionals(gaussian.system.unflatten(gaussian.equilibrate(lam, gam).x), make_mu(lam, gam))
        h1, h2 = 1e-5 * lam, 1e-5 * gam
        dF_dlam = (cf.free_energy(lam + h1, gam) - cf.free_energy(lam - h1, gam)) / (2 * h1)
        dF_dgam = (cf.free_energy(lam, gam + h2) - cf.free_energy(lam, gam - h2)) / (2 * h2)
        assert float(f["D"]) == pytest.approx(dF_dlam, rel=1e-6)
        assert float(f["C"]) == pytest.approx(dF_dgam, rel=1e-6)
        closed = cf.functionals(lam, gam)
        for name in "RDC":
            assert float(f[name]) == pytest.approx(closed[name], rel=1e-9, abs=1e-12)


def hess_f_by_finite_differences(cf, lam, gam, h=1e-4):
    rows = []
    for name in "DC":
        dl = (cf.functionals(lam + h, gam)[name] - cf.functionals(lam - h, gam)[name]) / (2 * h)
        dg = (cf.functionals(lam, gam + h)[name] - cf.functionals(lam, gam - h)[name]) / (2 * h)
        rows.append([dl, dg])
    return np.array(rows)


@pytest.mark.parametrize("lam,gam", POINTS)
def test_hess_F_from_tangents_matches_finite_differences(gaussian, lam, gam):
    mu = make_mu(lam, gam)
    x = gaussian.equilibrate(lam, gam).x
    tangents = solve_tangents(gaussian.system, x, mu)
    assert tangents.converged, tangents.report()
    H = free_energy_hessian(gaussian.system, x, mu, tangents).numpy()
    fd = hess_f_by_finite_differences(gaussian.closed, lam, gam)
    np.testing.assert_allclose(H, fd, rtol=0, atol=1e-5 * np.abs(fd).max())
    assert np.linalg.eigvalsh(0.5 * (H + H.T)).max() < 0  # F is concave: Hess F negative definite
    assert maxwell_gap(torch.tensor(H)) < 1e-10  # dD/dgamma = dC/dlambda


def test_hess_R_of_D_C_times_hess_F_is_minus_identity(gaussian):
    """Appendix B. R(D, C) on the surface by inverting (lambda, gamma) -> (D, C) numerically."""
    cf = gaussian.closed
    lam0, gam0 = 1.0, 1.0
    mu = make_mu(lam0, gam0)
    x = gaussian.equilibrate(lam0, gam0).x
    H_F = free_energy_hessian(gaussian.system, x, mu, solve_tangents(gaussian.system, x, mu)).numpy()

    def R_of(D, C):
        sol = root(lambda p: [cf.functionals(*p)["D"] - D, cf.functionals(*p)["C"] - C], [lam0, gam0],
                   method="hybr", options={"xtol": 1e-15})
        f = cf.functionals(*sol.x)
        assert abs(f["D"] - D) + abs(f["C"] - C) < 1e-13
        return f["R"]

    f0 = cf.functionals(lam0, gam0)
    # steps sized to the curvature: C moves little with gamma here (C_gamma ~ -0.07), so R(D, C)
    # bends faster along C; truncation error O(h^2) is ~6e-7 with these, 4e-5 with h_C = 2e-3
    D0, C0, hD, hC = f0["D"], f0["C"], 1e-3, 2e-4
    R = {(i, j): R_of(D0 + i * hD, C0 + j * hC) for i in (-1, 0, 1) for j in (-1, 0, 1)}
    H_R = np.array([[(R[1, 0] - 2 * R[0, 0] + R[-1, 0]) / hD**2, (R[1, 1] - R[1, -1] - R[-1, 1] + R[-1, -1]) / (4 * hD * hC)],
                    [0.0, (R[0, 1] - 2 * R[0, 0] + R[0, -1]) / hC**2]])
    H_R[1, 0] = H_R[0, 1]
    np.testing.assert_allclose(H_R @ H_F, -np.eye(2), rtol=0, atol=1e-5)
    assert np.linalg.eigvalsh(H_R).min() > 0  # the RDC surface is convex
    # first law: dR/dD = -lambda, dR/dC = -gamma
    assert (R[1, 0] - R[-1, 0]) / (2 * hD) == pytest.approx(-lam0, rel=1e-6)
    assert (R[0, 1] - R[0, -1]) / (2 * hC) == pytest.approx(-gam0, rel=1e-6)


def gram(x, system):
    t = system.unflatten(x)
    th = torch.cat([t["W"], t["V"]])
    return th @ th.T


@pytest.mark.parametrize("lam,gam", [(1.0, 1.0), (0.25, 1.0)])
def test_theta_lambda_matches_reequilibrated_finite_difference(gaussian, lam, gam):
    mu = make_mu(lam, gam)
    x = gaussian.equilibrate(lam, gam).x
    tangents = solve_tangents(gaussian.system, x, mu)
    for j, (dl, dg) in enumerate([(1, 0), (0, 1)]):
        h = 1e-4
        xp = gaussian.equilibrate(lam + h * dl, gam + h * dg, x0=x, gtol=1e-13).x
        xm = gaussian.equilibrate(lam - h * dl, gam - h * dg, x0=x, gtol=1e-13).x
        fd = (gram(xp, gaussian.system) - gram(xm, gaussian.system)) / (2 * h)
        # d(Theta Theta^T) = dTheta Theta^T + Theta dTheta^T: gauge invariant
        th = torch.cat([gaussian.system.unflatten(x)["W"], gaussian.system.unflatten(x)["V"]])
        t = gaussian.system.unflatten(tangents.theta_mu[:, j])
        dth = torch.cat([t["W"], t["V"]])
        exact = dth @ th.T + th @ dth.T
        np.testing.assert_allclose(exact.numpy(), fd.numpy(), rtol=0, atol=1e-5 * float(fd.abs().max()))
        assert float(fd.abs().max()) > 1e-2


def smallest_non_gauge_eigenvalue(gaussian, x, lam, gam):
    eigs, on_orbit = non_gauge_eigenvalues(gaussian.system, x, make_mu(lam, gam))
    assert eigs.numel() == x.numel() - gauge_basis(gaussian.system, x).shape[1]
    assert on_orbit < 1e-10  # the gauge directions really are zero modes
    return float(eigs[0])


def trivial_branch(gaussian, lam, gam):
    """The stationary point with latent direction 1 held off (a saddle once it should be on)."""
    t = gaussian.closed.stationary_point(lam, gam, [0])
    x = gaussian.system.flatten({k: torch.tensor(v) for k, v in t.items()})
    assert float(gaussian.system.gradient(x, make_mu(lam, gam)).norm()) < 1e-12
    return x


def test_smallest_non_gauge_eigenvalue_crosses_zero_at_critical_lambda(gaussian):
    gam = 1.0
    lam_c = gaussian.closed.critical_lambda(gam, direction=1)
    assert lam_c == pytest.approx(0.3407308793119065, rel=1e-9)  # regression value of this instance
    ell = gaussian.closed.spectrum(lam_c, gam)[0]
    assert ell[1] == pytest.approx(1.0, abs=1e-12)
    # on the branch with direction 1 off, the eigenvalue changes sign at lambda_c ...
    below = [smallest_non_gauge_eigenvalue(gaussian, trivial_branch(gaussian, lam_c * (1 - d), gam), lam_c * (1 - d), gam)
             for d in (1e-1, 1e-2, 1e-3)]
    above = [smallest_non_gauge_eigenvalue(gaussian, trivial_branch(gaussian, lam_c * (1 + d), gam), lam_c * (1 + d), gam)
             for d in (1e-1, 1e-2, 1e-3)]
    assert all(e > 0 for e in below) and all(e < 0 for e in above)
    at = smallest_non_gauge_eigenvalue(gaussian, trivial_branch(gaussian, lam_c, gam), lam_c, gam)
    assert abs(at) < 1e-10
    # ... linearly in lambda - lambda_c (a transversal crossing)
    assert below[2] / below[1] == pytest.approx(0.1, rel=0.05) and above[2] / above[1] == pytest.approx(0.1, rel=0.05)
    # on the minimising branch (direction 1 switches on) it touches zero: A is singular at lambda_c
    on_min = [smallest_non_gauge_eigenvalue(gaussian, gaussian.theta_star(lam_c * (1 + d), gam), lam_c * (1 + d), gam)
              for d in (-1e-2, -1e-3, 1e-3, 1e-2)]
    assert all(e > 0 for e in on_min)
    assert on_min[1] / on_min[0] == pytest.approx(0.1, rel=0.05) and on_min[2] / on_min[3] == pytest.approx(0.1, rel=0.05)


def test_solvers_say_so_on_indefinite_hessian(gaussian):
    gam = 1.0
    lam = 1.2 * gaussian.closed.critical_lambda(gam, direction=1)
    mu = make_mu(lam, gam)
    x = trivial_branch(gaussian, lam, gam)  # a saddle: A indefinite
    A = gaussian.system.hessian(x, mu)
    # b_lambda is blind to the unstable direction here (by the sign symmetry of the switched-off
    # column), so a generic right-hand side is what exposes the indefiniteness
    b = torch.randn(x.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(0))
    cg = CG(rtol=1e-12).solve(A, b)
    assert not cg.converged and cg.status == "negative_curvature" and cg.rel_residual > 1e-3
    # A is also singular (the gauge): the part of b along the zero mode cannot be matched
    Q = gauge_basis(gaussian.system, x)
    mr = MINRES(rtol=1e-12).solve(A, b)
    assert not mr.converged and mr.status in ("singular", "least_squares")
    assert mr.residual >= float((Q.T @ b).norm()) * (1 - 1e-9)
    dense = dense_hessian(gaussian.system.objective, x, mu)
    b_range = b - Q @ (Q.T @ b)  # a singular (gauge) A: solvable only for b off the zero modes
    mr = MINRES(rtol=1e-12).solve(A, b_range)
    assert mr.converged
    np.testing.assert_allclose((dense @ mr.x).numpy(), b_range.numpy(), atol=1e-9)


def test_scalar_case_explicit_formulas():
    sc = ScalarGaussianClosedForm(s2=2.0, b=0.7, tau2=0.3, sigma_d=0.9, sigma_c=1.1)
    cf = LinearGaussianClosedForm(sc.second_moment(), 1, 1, 1, sigma_d=0.9, sigma_c=1.1)
    for lam, gam in [(0.1, 0.2), (0.3, 0.4), (1.3, 0.4), (2.0, 3.0)]:
        assert sc.free_energy(lam, gam) == pytest.approx(cf.free_energy(lam, gam), rel=1e-14)
        assert np.allclose(sorted(sc.eigenvalues(lam, gam)), sorted(cf.spectrum(lam, gam)[0]), rtol=1e-13)
    for gam in (0.1, 0.3, 0.5):
        assert sc.critical_lambda(gam) == pytest.approx(cf.critical_lambda(gam, 0), rel=1e-10)
    assert sc.critical_lambda(5.0) is None and cf.critical_lambda(5.0, 0) is None
    # and Newton on the scalar problem reaches the explicit F
    problem = LinearGaussianGibbsProblem(
        LinearGaussianGibbsProblem.from_data(LinearGaussianData(2.0, 0.7, 0.3), 1, 0.9, 1.1).hamiltonian, sc.second_moment())
    from continuation import EquilibriumSystem
    system = EquilibriumSystem(problem, problem.init_params(0))
    for lam, gam in [(1.3, 0.4), (0.1, 0.2)]:
        res = NewtonCG(gtol=1e-12).solve(system.objective, system.flatten(problem.init_params(0)), make_mu(lam, gam))
        assert res.converged
        assert res.value == pytest.approx(sc.free_energy(lam, gam), rel=1e-10)


def test_functionals_forward_mode_matches_finite_differences(gaussian):
    """Guards the torch.cholesky_inverse forward-mode bug (wrong JVP in torch 2.14)."""
    from torch.func import jvp
    x = gaussian.system.flatten(gaussian.problem.init_params(3))
    mu = make_mu(0.7, 1.4)
    v = torch.randn(x.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(1))
    dmu = torch.tensor([0.3, -0.2, 0.0], dtype=x.dtype)
    _, tangent = jvp(gaussian.system.functionals, (x, mu), (v, dmu))
    e = 1e-6
    fd = (gaussian.system.functionals(x + e * v, mu + e * dmu) - gaussian.system.functionals(x - e * v, mu - e * dmu)) / (2 * e)
    np.testing.assert_allclose(tangent.numpy(), fd.numpy(), rtol=1e-7, atol=1e-9)


def test_functional_derivatives_are_float64_and_consistent(gaussian):
    lam, gam = 1.0, 1.0
    mu = make_mu(lam, gam)
    x = gaussian.equilibrate(lam, gam).x
    tangents = solve_tangents(gaussian.system, x, mu, wrt=("lambda", "gamma", "t"))
    d = functional_derivatives(gaussian.system, x, mu, tangents)
    assert x.dtype == tangents.theta_mu.dtype == d["R"].dtype == torch.float64
    # no t-dependence in this problem: theta_t = 0 and every t-rate vanishes
    assert float(tangents.column("t").abs().max()) == 0.0 and float(d["C"][2]) == 0.0
    # first law along the surface: dR = -lambda dD - gamma dC, in each direction
    for j in range(2):
        assert float(d["R"][j]) == pytest.approx(float(-lam * d["D"][j] - gam * d["C"][j]), rel=1e-9, abs=1e-12)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="lambda > 0 and gamma > 0"):
        LinearGaussianClosedForm(np.eye(2), 1, 1, 1).free_energy(0.0, 1.0)
    with pytest.raises(ValueError, match="not positive definite"):
        LinearGaussianData(np.diag([1.0, -1.0]), np.ones((1, 2)), np.eye(1))
    with pytest.raises(ValueError, match="second moment has shape"):
        LinearGaussianGibbsProblem(LinearGaussianGibbsProblem.from_data(LinearGaussianData.random(2, 1), 1).hamiltonian,
                                   np.eye(2))
    with pytest.raises(ValueError, match="direction must be in"):
        LinearGaussianClosedForm(np.eye(2), 1, 1, 1).critical_lambda(1.0, 1)
    with pytest.raises(ValueError, match="direction 0 has eigenvalue .* <= 1"):
        LinearGaussianClosedForm(np.eye(2), 1, 1, 1).stationary_point(0.1, 0.1, [0])
