"""Transfer on linear-Gaussian tasks against closed forms (docs/transfer.md): a source and a
target with different input covariances, moved by the mixture (eq. 23) and by the W2-optimal
coupling of the Gaussians (eq. 37, soft labels of Remark 11); and OT couplings by hand."""

import math

import numpy as np
import pytest
import torch
from scipy.optimize import brentq
from torchdiffeq import odeint

from continuation import EquilibriumSystem, Output, continue_path
from continuation.strategies.correctors import NewtonCorrector
from continuation.strategies.step_control import AdaptiveSteps, FixedSteps, HeldSteps, StopRule
from continuation.strategies.predictors import ODEPredictor
from continuation.strategies.processes import QuasiStatic
from continuation.strategies.transfer_processes import IsoClassificationTransfer
from continuation.strategies.projections import NewtonProjection, SecantProjection
from continuation.surface.tangents import solve_tangents
from problems import LinearGaussianData, make_mu
from problems.task_path import (CoupledMoments, CouplingSampler, coupled_sample_joint, coupling, gaussian_ot_joint,
                                gaussian_ot_map, interpolate)
from solvers import MINRES, NewtonCG

from continuation.apps.experiments import gaussian_transfer

LAM, GAM = gaussian_transfer.LAM, gaussian_transfer.GAM


class TransferCase:
    """x in R^3, a scalar label, a 1-D latent that stays on for all t near (LAM, GAM)
    (validation/gaussian_transfer.py): the target has another input covariance and the same
    labelling rule y = B x + noise; along the iso-C paths below gamma first rises, then falls
    (1.30 at t = 0.1, 0.58 at t = 0.7 for the mixture)."""

    def __init__(self, path):
        self.source, self.target = gaussian_transfer.tasks()
        self.problem, self.closed = gaussian_transfer.build(path)
        self.system = EquilibriumSystem(self.problem, self.problem.init_params(0))

    def gram(self, x):
        th = self.system.unflatten(x)
        m = torch.cat([th["W"], th["V"]]).numpy()
        return m @ m.T

    def run(self, process, predictor, step=0.1, **kw):
        return continue_path(self.problem, process, predictor, NewtonCorrector(gtol=1e-12),
                             AdaptiveSteps(initial=step, max_step=step, grow=1.0, max_drift=None, max_angle_deg=180),
                             StopRule(max_steps=100, target={"t": 1.0}), start=(LAM, GAM, 0.0),
                             output=Output(progress=False), **kw)


@pytest.fixture(scope="module", params=["mixture", "ot"])
def case(request):
    return TransferCase(request.param)


def test_functionals_along_the_task_path_match_the_closed_form(case):
    for t in (0.0, 0.3, 0.7, 1.0):
        assert case.closed.at(t).active(LAM, GAM)[0], "the latent must stay on for this test"
        mu = make_mu(LAM, GAM, t)
        res = NewtonCG(gtol=1e-12).solve(case.system.objective, case.system.flatten(case.problem.init_params(0)), mu)
        assert res.converged
        f = case.problem.functionals(case.system.unflatten(res.x), mu)
        ref = case.closed.functionals(LAM, GAM, t)
        for name in "RDC":
            assert float(f[name]) == pytest.approx(ref[name], abs=1e-9, rel=1e-9)
        assert float(case.system.objective(res.x, mu)) == pytest.approx(ref["F"], rel=1e-10)
        np.testing.assert_allclose(case.gram(res.x), case.closed.gram(LAM, GAM, t), atol=1e-9)


def test_theta_t_integrated_alone_transports_the_equilibrium(case):
    """theta' = theta_t = A^{-1} b_t (eq. 25) integrated by dopri5 from the source equilibrium,
    no corrector: lands on the target's closed-form equilibrium."""
    x0 = NewtonCG(gtol=1e-13).solve(case.system.objective, case.system.flatten(case.problem.init_params(0)),
                                    make_mu(LAM, GAM, 0.0)).x

    def rhs(t, x):
        tan = solve_tangents(case.system, x, make_mu(LAM, GAM, float(t)), wrt=("t",), solver=MINRES(rtol=1e-13))
        return tan.theta_mu[:, 0]

    xs = odeint(rhs, x0, torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64), method="dopri5", rtol=1e-10, atol=1e-12)
    for t, x in zip((0.5, 1.0), xs[1:]):
        np.testing.assert_allclose(case.gram(x), case.closed.gram(LAM, GAM, t), atol=1e-7)


def test_quasi_static_transfer_path_and_its_rates(case):
    ds = case.run(QuasiStatic(lambda_rate=0.0, t_rate=1.0), ODEPredictor("rk4"))
    assert ds["t"].values[-1] == 1.0 and np.all(ds["lambda"].values == LAM) and np.all(ds["gamma"].values == GAM)
    for i in range(ds.sizes["step"]):
        ref = case.closed.functionals(LAM, GAM, float(ds["t"][i]))
        for name in "RDC":
            assert float(ds[name][i]) == pytest.approx(ref[name], abs=1e-9)
    # C_t along the surface against a central difference of the closed form
    from continuation.surface.context import PointContext

    t = 0.4
    x = NewtonCG(gtol=1e-13).solve(case.system.objective, case.system.flatten(case.problem.init_params(0)),
                                   make_mu(LAM, GAM, t)).x
    ctx = PointContext(case.system, x, make_mu(LAM, GAM, t), MINRES(rtol=1e-13))
    rates = ctx.rates(("lambda", "gamma", "t"))
    h = 1e-5
    for name in "RDC":
        fd = (case.closed.functionals(LAM, GAM, t + h)[name] - case.closed.functionals(LAM, GAM, t - h)[name]) / (2 * h)
        assert rates[name]["t"] == pytest.approx(fd, rel=1e-6, abs=1e-8)


def test_iso_c_transfer_with_constant_lambda_rate_matches_closed_form(case):
    """eq. 38: lambda' = k, gamma from C_lambda k + C_gamma gamma' + C_t = 0; the law alone
    (no projection), integrated by dopri5: gamma(t) against brentq on the closed form."""
    k = 0.5
    ds = case.run(IsoClassificationTransfer("lambda", k=k), ODEPredictor("dopri5", rtol=1e-9, atol=1e-10), step=0.25)
    C0 = case.closed.functionals(LAM, GAM, 0.0)["C"]
    assert float(ds["t"][-1]) == 1.0 and ds.attrs["status"] == "finished"
    moved = 0.0
    for i in range(1, ds.sizes["step"]):
        t = float(ds["t"][i])
        assert float(ds["lambda"][i]) == pytest.approx(LAM + k * t, abs=1e-12)
        gam = case.closed.iso_c_gamma(LAM + k * t, t, C0)
        assert float(ds["gamma"][i]) == pytest.approx(gam, abs=1e-6)
        assert float(ds["C"][i]) == pytest.approx(C0, abs=1e-7)
        moved = max(moved, abs(gam - GAM))
    assert moved > 0.05  # the task change moves gamma: the check is not vacuous


def test_geodesic_transfer_matches_closed_form(case):
    """eq. 30 (slope k = dD/dR): (lambda, gamma)(t) against the closed-form solution of
    C = C0, D - k R = D0 - k R0 (which has a solution for all t in [0, 1] for k = 0.5 here; for
    k = -0.5 on the mixture it stops existing near t = 0.15)."""
    k = 0.5
    ds = case.run(IsoClassificationTransfer("geodesic", k=k), ODEPredictor("dopri5", rtol=1e-9, atol=1e-10),
                  step=0.25)
    f0 = case.closed.functionals(LAM, GAM, 0.0)
    invariant = f0["D"] - k * f0["R"]
    guess = (LAM, GAM)
    for i in range(1, ds.sizes["step"]):
        t = float(ds["t"][i])
        lam, gam = case.closed.geodesic_multipliers(t, k, f0["C"], invariant, guess)
        assert float(ds["lambda"][i]) == pytest.approx(lam, abs=1e-6)
        assert float(ds["gamma"][i]) == pytest.approx(gam, abs=1e-6)
        guess = (lam, gam)
        D, R = float(ds["D"][i]), float(ds["R"][i])
        assert D - k * R == pytest.approx(invariant, abs=1e-7)
    assert abs(float(ds["lambda"][-1]) - LAM) > 0.01


def test_projection_holds_c_along_gamma(case):
    """A coarse euler law with the Newton projection: C back to C0 to 1e-10, lambda untouched."""
    ds = case.run(IsoClassificationTransfer("lambda", k=0.3), ODEPredictor("euler"), step=0.25,
                  projection=NewtonProjection())
    C0 = float(ds["C"][0])
    assert np.max(np.abs(ds["C"].values - C0)) < 1e-10
    np.testing.assert_allclose(ds["lambda"].values, LAM + 0.3 * ds["t"].values, atol=1e-12)


@pytest.mark.parametrize("projection", [NewtonProjection(), SecantProjection(max_iter=12)], ids=["newton", "secant"])
def test_geodesic_projection_holds_c_and_d_minus_kr_in_both_multipliers(case, projection):
    """A coarse euler law (0.25 in t) with the 2 x 2 projection on (C, D - k R): both held to
    the tolerance at every point, and (lambda, gamma) on the closed-form geodesic (a 2-D root of
    C = C0, D - k R = D0 - k R0, computed without tangents)."""
    k, tol = 0.5, 1e-9
    process = IsoClassificationTransfer(condition="geodesic", k=k, tol=tol)
    ds = case.run(process, ODEPredictor("euler"), step=0.25, projection=projection)
    assert ds.attrs["status"] == "finished" and float(ds["t"][-1]) == 1.0
    f0 = case.closed.functionals(LAM, GAM, 0.0)
    invariant, guess = f0["D"] - k * f0["R"], (LAM, GAM)
    assert float(ds.attrs["H0"]) == pytest.approx(invariant, rel=1e-10)
    # H's drift is measured on the size of its terms, D less its Gaussian normaliser n/2 log(2 pi)
    scale = abs(f0["D"] - 1.5 * math.log(2 * math.pi)) + k * abs(f0["R"])
    assert float(ds.attrs["H_scale"]) == pytest.approx(scale, rel=1e-10)
    for i in range(1, ds.sizes["step"]):
        t = float(ds["t"][i])
        lam, gam = case.closed.geodesic_multipliers(t, k, f0["C"], invariant, guess)
        guess = (lam, gam)
        f = case.closed.functionals(float(ds["lambda"][i]), float(ds["gamma"][i]), t)
        assert abs(f["C"] - f0["C"]) <= 1.01 * tol * abs(f0["C"])
        assert abs(f["D"] - k * f["R"] - invariant) <= 1.01 * tol * scale
        assert float(ds["lambda"][i]) == pytest.approx(lam, rel=1e-6)
        assert float(ds["gamma"][i]) == pytest.approx(gam, rel=1e-6)
        assert abs(float(ds["constraint2_drift"][i])) <= 1.01 * tol
        assert float(ds["constraint2_drift"][i]) == pytest.approx((f["D"] - k * f["R"] - invariant) / scale,
                                                                  abs=1e-12)
    assert abs(float(ds["lambda"][-1]) - LAM) > 0.01  # both multipliers moved: not vacuous


@pytest.mark.slow  # default suite's time: run with -m slow (and in .ci/run)
def test_iso_c_transfer_holding_c_less_its_label_floor_matches_closed_form():
    """hold = "kl" on the Gaussian OT path: C - kappa(t) held (kappa = c t (1 - t), the soft
    label's theta-free part). With the Newton projection: gamma(t) against brentq on the closed
    form's hard-label C (LinearGaussianClosedForm at S(t), no kappa in it). The law alone
    (dopri5) misses by exactly what the floor's chord slope leaves at the start: over t < w it
    is c (1 - t - w) against c (1 - 2 t), which integrates to -c w^2 / 2, and the same error of
    the other sign over the last w cancels it at t = 1."""
    case = TransferCase("ot")
    hard = lambda lam, gam, t: case.closed.at(t).functionals(lam, gam)["C"]  # noqa: E731
    C0 = hard(LAM, GAM, 0.0)
    c = 4 * case.closed.spread(0.5) / 2  # kappa(t) = c t (1 - t), sigma_c = 1
    assert c > 0.1  # the floor is there: holding C instead would differ
    w = 0.05
    process = IsoClassificationTransfer(condition="lambda", k=0.0, hold="kl", tol=1e-11, floor_window=w)
    law = case.run(process, ODEPredictor("dopri5", rtol=1e-9, atol=1e-10), step=0.25)
    drift = law["constraint_drift"].values
    np.testing.assert_allclose(drift[1:-1], -c * w**2 / 2 / C0, rtol=1e-4)
    assert abs(drift[-1]) < 1e-7
    ds = case.run(process, ODEPredictor("euler"), step=0.25, projection=NewtonProjection())
    assert ds.attrs["status"] == "finished" and ds.attrs["held"] == "C - C_floor(t)"
    moved = 0.0
    for i in range(1, ds.sizes["step"]):
        t = float(ds["t"][i])
        g = math.exp(brentq(lambda v: hard(LAM, math.exp(v), t) - C0, math.log(1e-3), math.log(1e3), xtol=1e-14))
        assert float(ds["gamma"][i]) == pytest.approx(g, rel=1e-7)
        assert abs(hard(LAM, float(ds["gamma"][i]), t) - C0) <= 1.01e-11 * C0
        moved = max(moved, abs(g - GAM) / GAM)
    assert moved > 0.5
    # C itself is not held: it carries kappa(t) on top of C0
    t2 = float(ds["t"][2])
    assert float(ds["C"][2]) - C0 == pytest.approx(c * t2 * (1 - t2), rel=1e-8)


def test_label_floor_slope_is_the_central_difference_inside_and_the_chord_at_the_ends():
    case = TransferCase("ot")
    process = IsoClassificationTransfer(hold="kl", floor_window=0.05)

    class Ctx:  # what floor_slope reads: the problem and t
        def __init__(self, t):
            self.mu = make_mu(LAM, GAM, t)
            self.system = case.system

    kappa = lambda t: case.closed.spread(t) / 2  # noqa: E731  (sigma_c = 1)
    # kappa is c t (1 - t): its central difference is exact, c (1 - 2 t)
    c = kappa(0.5) * 4
    assert process.floor_slope(Ctx(0.4)) == pytest.approx(c * (1 - 0.8), rel=1e-10)
    assert process.floor_slope(Ctx(0.0)) == pytest.approx((kappa(0.05) - kappa(0.0)) / 0.05, rel=1e-10)
    assert process.floor_slope(Ctx(1.0)) == pytest.approx((kappa(1.0) - kappa(0.95)) / 0.05, rel=1e-10)
    assert IsoClassificationTransfer(hold="C").floor_slope(Ctx(0.4)) == 0.0


@pytest.mark.parametrize("bad, why", [({"hold": "D"}, "hold must be one of"),
                                      ({"floor_window": 0.0}, "floor_window must be in"),
                                      ({"floor_window": 0.7}, "floor_window must be in")])
def test_transfer_hold_options_are_checked(bad, why):
    with pytest.raises(ValueError, match=why):
        IsoClassificationTransfer(**bad)


# -- optimal transport ---------------------------------------------------------------------------
def test_emd_coupling_matches_a_hand_computed_assignment():
    """3 source and 3 target points on a line: x_s = (0, 1, 3), x_t = (2, 0.5, 4). Among the six
    permutations the sorted (monotone) matching 0->0.5, 1->2, 3->4 has cost 0.25 + 1 + 1 = 2.25,
    the least; so Gamma = P / 3 with P that permutation."""
    xs, xt = np.array([[0.0], [1.0], [3.0]]), np.array([[2.0], [0.5], [4.0]])
    G = coupling(xs, xt, "emd")
    expected = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]]) / 3.0
    np.testing.assert_allclose(G, expected, atol=1e-15)
    # the interpolated points at t = 0.5, from pairs sampled from Gamma
    sampler = CouplingSampler(G)
    i, j = sampler.sample(100, torch.Generator().manual_seed(0))
    assert set(zip(i.tolist(), j.tolist())) == {(0, 1), (1, 0), (2, 2)}
    mid = interpolate(torch.tensor(xs)[i], torch.tensor(xt)[j], 0.5)
    assert set(np.round(mid.numpy().ravel(), 12)) == {0.25, 1.5, 3.5}


def test_emd_with_unequal_weights_splits_mass_as_by_hand():
    """Source weights (1/2, 1/4, 1/4) at 0, 1, 2; target (1/4, 1/4, 1/2) at 0, 1, 2 (2-D points on
    the x axis). The monotone plan on the line: 0 sends 1/4 to 0 and 1/4 to 1; 1 sends 1/4 to 2;
    2 sends 1/4 to 2: cost 1/4*1 + 1/4*1 = 1/2."""
    pts = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    G = coupling(pts, pts, "emd", a=[0.5, 0.25, 0.25], b=[0.25, 0.25, 0.5])
    np.testing.assert_allclose(G, [[0.25, 0.25, 0], [0, 0, 0.25], [0, 0, 0.25]], atol=1e-15)


def test_sinkhorn_approaches_emd_and_keeps_marginals():
    rng = np.random.default_rng(0)
    xs, xt = rng.normal(size=(6, 2)), rng.normal(size=(6, 2)) + 1.0
    exact = coupling(xs, xt, "emd")
    prev = math.inf
    for reg in (0.5, 0.1, 0.02):
        G = coupling(xs, xt, "sinkhorn", reg=reg)
        np.testing.assert_allclose(G.sum(1), 1 / 6, atol=1e-8)
        np.testing.assert_allclose(G.sum(0), 1 / 6, atol=1e-8)
        err = np.abs(G - exact).sum()
        assert err < prev
        prev = err
    assert prev < 0.25  # of a total variation 2: at reg = 0.02 the plan is the emd one, blurred
    np.testing.assert_array_equal(G.argmax(1), exact.argmax(1))
    with pytest.raises(RuntimeError, match="sinkhorn did not converge in 5 iterations at reg = 0.02"):
        coupling(xs, xt, "sinkhorn", reg=0.02, num_itermax=5)
    with pytest.raises(ValueError, match="unknown OT method"):
        coupling(xs, xt, "exact")


def test_gaussian_ot_map_pushes_source_to_target_and_matches_large_sample_emd():
    src = LinearGaussianData.random(2, 1, seed=0, spectrum=[3.0, 0.5])
    tgt = LinearGaussianData.random(2, 1, seed=1, spectrum=[1.0, 2.0])
    T = gaussian_ot_map(src.Sigma, tgt.Sigma)
    np.testing.assert_allclose(T, T.T, atol=1e-14)
    assert np.linalg.eigvalsh(T).min() > 0
    np.testing.assert_allclose(T @ src.Sigma @ T, tgt.Sigma, atol=1e-12)
    # the empirical emd coupling of samples, turned into a joint moment, approaches the Gaussian one
    xs, ys = src.sample(600, seed=3)
    xt, yt = tgt.sample(600, seed=4)
    joint = coupled_sample_joint(xs, ys, xt, yt, coupling(xs.numpy(), xt.numpy(), "emd"))
    exact = gaussian_ot_joint(src, tgt)
    cross = slice(3, 5), slice(0, 2)  # E[x_t x_s^T] = T Sigma_s
    np.testing.assert_allclose(joint[cross], exact[cross], atol=0.25)


def test_coupled_moments_match_the_interpolated_samples():
    """S(t) and the soft-label spread of CoupledMoments against direct sums over coupled pairs."""
    rng = np.random.default_rng(1)
    xs, ys, xt, yt = rng.normal(size=(4, 2)), rng.normal(size=(4, 1)), rng.normal(size=(5, 2)), rng.normal(size=(5, 1))
    G = coupling(xs, xt, "sinkhorn", reg=0.2)
    mom = CoupledMoments(coupled_sample_joint(xs, ys, xt, yt, G), 2, 1)
    t = 0.3
    S = np.zeros((3, 3))
    spread = 0.0
    for i in range(4):
        for j in range(5):
            u = np.concatenate([(1 - t) * xs[i] + t * xt[j], (1 - t) * ys[i] + t * yt[j]])
            S += G[i, j] * np.outer(u, u)
            spread += G[i, j] * ((1 - t) * ys[i] @ ys[i] + t * yt[j] @ yt[j] - u[2:] @ u[2:])
    np.testing.assert_allclose(mom.second_moment(torch.tensor(t, dtype=torch.float64)).numpy(), S, atol=1e-12)
    assert float(mom.label_spread(torch.tensor(t, dtype=torch.float64))) == pytest.approx(spread, abs=1e-12)


def test_a_task_path_ends_at_t_1_without_a_target(case):
    """t is the task time in [0, 1]: with no target the run lands on t = 1 and ends there (it went
    on to t = 1.4 and said "finished: max_steps reached")."""
    ds = continue_path(case.problem, QuasiStatic(lambda_rate=0.0, t_rate=1.0), ODEPredictor("rk4"), NewtonCorrector(gtol=1e-12),
                       FixedSteps(size=0.3), StopRule(max_steps=20), start=(LAM, GAM, 0.0),
                       output=Output(progress=False))
    assert list(ds["t"].values) == pytest.approx([0.0, 0.3, 0.6, 0.9, 1.0], abs=1e-15)
    assert ds.attrs["status"] == "finished" and ds.attrs["stop_reason"] == "t = 1 reached (the end of the task path)"


def test_a_start_outside_the_bounds_is_stopped(case):
    ds = continue_path(case.problem, QuasiStatic(lambda_rate=0.0, t_rate=1.0), ODEPredictor("rk4"), NewtonCorrector(gtol=1e-12),
                       FixedSteps(size=0.3), StopRule(max_steps=20, bounds={"R": [100.0, 200.0]}),
                       start=(LAM, GAM, 0.0), output=Output(progress=False))
    assert ds.sizes["step"] == 1 and ds.attrs["status"] == "stopped"
    assert ds.attrs["stop_reason"].endswith("is outside its bounds [100.0, 200.0] at the start")


def test_held_steps_shrink_until_the_law_holds_c_within_max_miss(case):
    """HeldSteps on the Euler law alone (no projection): its drift of C grows with the step
    (order ds per unit t). With max_miss a third of what fixed steps of 0.25 end with, the steps
    shrink where the drift would exceed it: the run finishes, every point within max_miss, some
    steps rejected and shorter than 0.25."""
    process = IsoClassificationTransfer("lambda", k=0.5)
    fixed = case.run(process, ODEPredictor("euler"), step=0.25)
    worst = float(np.max(np.abs(fixed["constraint_drift"].values)))
    assert worst > 1e-4  # the law alone drifts: the bound below bites
    held = continue_path(case.problem, process, ODEPredictor("euler"), NewtonCorrector(gtol=1e-12),
                         HeldSteps(initial=0.25, max_step=0.25, min_step=1e-3, max_miss=worst / 3),
                         StopRule(max_steps=200, target={"t": 1.0}), start=(LAM, GAM, 0.0),
                         output=Output(progress=False))
    assert held.attrs["status"] == "finished" and float(held["t"][-1]) == 1.0
    assert np.all(np.abs(held["constraint_drift"].values) <= worst / 3)
    assert int(held["rejected"].sum()) > 0 and float(held["step_size"][1:].min()) < 0.25


def test_held_steps_verdicts():
    """max_miss and max_factor reject, a NaN miss too; rejection halves down to min_step, then
    stops with the reason; acceptance doubles up to max_step; bad options are one line."""
    from continuation.strategies.step_control import StepsExhausted

    ok = type("R", (), {"converged": True, "status": "converged", "grad_norm": 0.0})()
    c = HeldSteps(initial=0.1, max_step=0.1, min_step=0.02, max_miss=0.01, max_factor=1.5)
    assert c.assess(None, ok, True, None, None, miss=0.009, factor=1.4).accepted
    assert "held functional 1.1%" in c.assess(None, ok, True, None, None, miss=0.011, factor=1.0).reason
    assert not c.assess(None, ok, True, None, None, miss=float("nan"), factor=1.0).accepted
    assert "factor 1.6" in c.assess(None, ok, True, None, None, miss=0.0, factor=1.6, ds=0.04).reason
    # at the shortest step (0.03 * 0.5 < min_step) the factor bound yields; the miss does not
    assert c.assess(None, ok, True, None, None, miss=0.0, factor=1.6, ds=0.03).accepted
    assert not c.assess(None, ok, True, None, None, miss=0.02, factor=1.0, ds=0.03).accepted
    assert c.after_rejection(0.1) == pytest.approx(0.05) and c.after_rejection(0.05) == pytest.approx(0.025)
    with pytest.raises(StepsExhausted, match="below min_step 0.02"):
        c.after_rejection(0.025)
    assert c.after_acceptance(0.025, True) == pytest.approx(0.05) and c.after_acceptance(0.08, True) == 0.1
    for bad, why in [({"max_miss": 0}, "max_miss must be > 0"), ({"max_factor": 1.0}, "max_factor must be"),
                     ({"min_step": 0.2}, "0 < min_step <= initial"), ({"grow": 0.5}, "grow >= 1"),
                     ({"initial": "x"}, "initial must be a finite number")]:
        with pytest.raises(ValueError, match=why):
            HeldSteps(**bad)


def test_geodesic_from_kept_multipliers_with_a_probed_jacobian(case):
    """The predictor "none" with move = "clock" advances t alone (lambda, gamma kept); the 2-D
    secant measures its first Jacobian by forward differences of the corrector's response
    (jacobian = "probe"), then Broyden: (lambda, gamma) on the closed form's 2-D root at every
    point, C and D - k R held to the tolerance."""
    from continuation.strategies.predictors import NoPredictor

    k, tol = 0.5, 1e-9
    process = IsoClassificationTransfer(condition="geodesic", k=k, tol=tol)
    ds = case.run(process, NoPredictor(move="clock"), step=0.25,
                  projection=SecantProjection(max_iter=12, jacobian="probe", probe=0.05))
    assert ds.attrs["status"] == "finished" and float(ds["t"][-1]) == 1.0
    f0 = case.closed.functionals(LAM, GAM, 0.0)
    invariant, guess = f0["D"] - k * f0["R"], (LAM, GAM)
    for i in range(1, ds.sizes["step"]):
        t = float(ds["t"][i])
        lam, gam = case.closed.geodesic_multipliers(t, k, f0["C"], invariant, guess)
        guess = (lam, gam)
        assert float(ds["lambda"][i]) == pytest.approx(lam, rel=1e-6)
        assert float(ds["gamma"][i]) == pytest.approx(gam, rel=1e-6)
        assert abs(float(ds["constraint_drift"][i])) <= 1.01 * tol
        assert abs(float(ds["constraint2_drift"][i])) <= 1.01 * tol
    assert abs(float(ds["lambda"][-1]) - LAM) > 0.01


def test_kept_multipliers_move_only_t_and_need_a_process_that_moves_t(case):
    from continuation.strategies.predictors import NoPredictor
    from continuation.strategies.processes import IsoClassification

    x = case.system.flatten(case.problem.init_params(0))
    with pytest.raises(ValueError, match="move must be 'all' or 'clock'"):
        NoPredictor(move="t")
    ds = case.run(QuasiStatic(lambda_rate=0.5, gamma_rate=-0.5, t_rate=1.0), NoPredictor(move="clock"), step=0.25)
    np.testing.assert_allclose(ds["lambda"].values, LAM, rtol=0, atol=0)
    np.testing.assert_allclose(ds["gamma"].values, GAM, rtol=0, atol=0)
    np.testing.assert_allclose(ds["t"].values, [0, 0.25, 0.5, 0.75, 1.0], atol=1e-15)
    # a process that moves only the multipliers (iso-C along lambda) gives nothing to move
    start = type("Start", (), {"x": x, "mu": torch.tensor([LAM, GAM, 0.0], dtype=torch.float64),
                               "velocity": lambda self, p: torch.tensor([1.0, 0.3, 0.0], dtype=torch.float64)})()
    with pytest.raises(ValueError, match="needs a process that moves t; 'iso-classification' moves only"):
        NoPredictor(move="clock").predict(None, start, 0.1, None, IsoClassification(alpha=1.0))
