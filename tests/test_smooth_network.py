"""The smooth deterministic network objective (problems/smooth_network.py): one function of theta
(the same at every call, no draws between points), J = R + lambda D + gamma C + (w/2)|theta|^2
exactly, smooth (central differences of its gradient converge at second order), and a
Problem the engine treats as deterministic (monitor on, Newton projection allowed)."""

from __future__ import annotations

import math

import pytest
import torch

from problems.base import StochasticProblem
from problems.registry import PROBLEMS
from continuation.surface.system import EquilibriumSystem


@pytest.fixture(scope="module")
def small():
    problem = PROBLEMS["mlp-smooth"](limit=48, val_limit=16, hidden=6, latent=2, classifier_hidden=5,
                                     weight_decay=1e-2, samples=2)
    return problem, EquilibriumSystem(problem, problem.init_params(0))


def test_it_is_deterministic_and_float64(small):
    problem, system = small
    assert not isinstance(problem, StochasticProblem)
    theta = problem.init_params(0)
    mu = torch.tensor([0.7, 3.0, 0.0], dtype=torch.float64)
    a, b = problem.objective(theta, mu), problem.objective(theta, mu)
    assert a.dtype == torch.float64 and float(a) == float(b)
    x = system.flatten(theta)
    assert torch.equal(system.gradient(x, mu), system.gradient(x, mu))


def test_j_is_the_functionals_plus_the_weight_prior(small):
    problem, _ = small
    theta = problem.init_params(3)
    mu = torch.tensor([0.7, 3.0, 0.0], dtype=torch.float64)
    f = problem.functionals(theta, mu)
    squares = sum(float((v.double() ** 2).sum()) for part in theta.values() for v in part.values())
    prior = 0.5 * 1e-2 * squares
    assert float(problem.objective(theta, mu)) == pytest.approx(
        float(f["R"] + mu[0] * f["D"] + mu[1] * f["C"]) + prior, rel=1e-14)
    assert problem.evaluation_metrics(theta)["prior"] == pytest.approx(prior, rel=1e-14)
    kl = [v for k, v in problem.evaluation_metrics(theta).items() if k.startswith("kl_z")]
    assert len(kl) == 2 and sum(kl) == pytest.approx(float(f["R"]), rel=1e-12)  # the units' rates sum to R
    # the prior does not depend on mu: dJ/dlambda = D and dJ/dgamma = C at fixed theta (the envelope theorem's premise)
    dmu = torch.func.grad(lambda m: problem.objective(theta, m))(mu)
    assert float(dmu[0]) == pytest.approx(float(f["D"]), rel=1e-13)
    assert float(dmu[1]) == pytest.approx(float(f["C"]), rel=1e-13)


def test_the_gradient_is_smooth_central_differences_converge_at_second_order(small):
    """With ReLU, a difference across a kink does not converge; with SiLU the error of the
    central difference of J along v falls as h^2 (ratio 4 per halving) until round-off."""
    problem, system = small
    mu = torch.tensor([0.7, 3.0, 0.0], dtype=torch.float64)
    x = system.flatten(problem.init_params(1))
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    v /= v.norm()
    exact = float(system.gradient(x, mu) @ v)
    errors = []
    for h in (1e-2, 5e-3, 2.5e-3):
        fd = (float(system.objective(x + h * v, mu)) - float(system.objective(x - h * v, mu))) / (2 * h)
        errors.append(abs(fd - exact))
    assert all(3.5 < errors[i] / errors[i + 1] < 4.5 for i in range(2)), errors


def test_options_are_checked_in_one_line():
    with pytest.raises(ValueError, match="weight_decay must be a finite number >= 0, got -1"):
        PROBLEMS["mlp-smooth"](limit=8, hidden=3, latent=2, weight_decay=-1.0)
    with pytest.raises(ValueError, match="activation must be one of relu, silu, softplus, tanh, got 'gelu'"):
        PROBLEMS["mlp-smooth"](limit=8, hidden=3, latent=2, activation="gelu")
    with pytest.raises(ValueError, match="weight_decay must be a finite number >= 0"):
        PROBLEMS["mlp-smooth"](limit=8, hidden=3, latent=2, weight_decay=math.nan)


def test_the_exact_route_configuration_builds_what_the_docs_say():
    """validation/configs/smooth_mlp_exact.toml (README, docs/neural_equilibrium.md): the smooth MLP of
    674 parameters, trust-newton with the exact subproblem, the dense solver, the Newton projection."""
    from pathlib import Path

    from continuation.files.config import build_run, load_config

    run = build_run(load_config(Path(__file__).resolve().parents[1] / "validation" / "configs" / "smooth_mlp_exact.toml"))
    problem = run["problem"]
    assert not isinstance(problem, StochasticProblem)
    assert sum(v.numel() for part in problem.init_params(0).values() for v in part.values()) == 674
    assert (run["corrector"].name, run["corrector"].subproblem, run["krylov"].__class__.__name__,
            run["projection"].name) == ("trust-newton", "dense", "Dense", "newton")


def test_force_scale_is_the_sum_of_the_terms_gradient_norms(small):
    """grad_norm_rel's denominator (EquilibriumSystem.force_scale) against each term's gradient
    taken apart: R, D, C by torch.func.grad of each functional alone, the prior's in closed form
    (w theta)."""
    problem, system = small
    theta = problem.init_params(5)
    x = system.flatten(theta)
    mu = torch.tensor([0.7, 3.0, 0.0], dtype=torch.float64)
    norms = []
    for i, name in enumerate(("R", "D", "C")):
        g = torch.func.grad(lambda v: problem.functionals(system.unflatten(v), mu)[name])(x)
        norms.append([1.0, 0.7, 3.0][i] * float(g.norm()))
    norms.append(problem.weight_decay * float(x.norm()))  # grad of (w/2)|theta|^2
    assert system.force_scale(x, mu) == pytest.approx(sum(norms), rel=1e-12)


def test_the_stochastic_variant_is_an_unbiased_draw_of_the_exact_objective():
    """`stochastic = true` (the cheap route's objective, issue 25 item 5): each draw takes one of
    every image's K fixed draws, so the mean of J over all K^n choices is the exact J (to
    round-off); `resample` repeats itself for a seed; draw_seed gives another sequence; the
    evaluation metrics are the exact J's terms."""
    import itertools

    from problems.neural_problem import _Batch

    kw = dict(limit=4, val_limit=4, hidden=4, latent=2, classifier_hidden=4, weight_decay=1e-2, samples=2)
    exact = PROBLEMS["mlp-smooth"](**kw)
    cheap = PROBLEMS["mlp-smooth"](stochastic=True, **kw)
    assert isinstance(cheap, StochasticProblem) and not isinstance(exact, StochasticProblem)
    theta = exact.init_params(0)
    mu = torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64)
    full, n = cheap.full, 4
    values = []
    for picks in itertools.product(range(2), repeat=n):
        pick = torch.tensor(picks)
        cheap.batch = _Batch(full.x, full.y, full.eps[pick, torch.arange(n)].unsqueeze(0), full.mask)
        values.append(float(cheap.objective(theta, mu)))
    J = float(exact.objective(theta, mu))
    assert abs(sum(values) / len(values) - J) <= 1e-12 * abs(J)
    assert max(values) - min(values) > 1e-6 * abs(J)  # the draws differ: a real estimate, not the exact J
    cheap.resample(3)
    a = float(cheap.objective(theta, mu))
    assert a in values
    cheap.resample(4)
    cheap.resample(3)
    assert float(cheap.objective(theta, mu)) == a
    other = PROBLEMS["mlp-smooth"](stochastic=True, draw_seed=1, **kw)
    seq = lambda p: [(p.resample(s), float(p.objective(theta, mu)))[1] for s in range(6)]  # noqa: E731
    assert seq(other) != seq(cheap)
    m = cheap.evaluation_metrics(theta)
    f = exact.functionals(theta, mu)
    for k in ("R", "D", "C"):
        assert m[f"train_{k}"] == pytest.approx(float(f[k]), rel=1e-14)


def test_the_stochastic_variants_options_are_checked_in_one_line():
    for kw, says in ((dict(draw_seed=1), "needs stochastic = true"), (dict(stochastic=True, draw_seed=-1), "draw_seed"),
                     (dict(stochastic=1), "stochastic must be true or false")):
        with pytest.raises(ValueError, match=says):
            PROBLEMS["mlp-smooth"](limit=8, **kw)


def test_the_default_width_exact_route_rejects_branch_jumps_and_keeps_lbfgs_for_its_start():
    """validation/configs/digits_exact.toml: adaptive steps of at most 0.01 that reject a tangent
    turning by more than 30 degrees (its fixed-step run jumped branches at lambda 0.32, turning 52
    degrees: docs/neural_equilibrium.md), a trust-newton corrector whose steps skip L-BFGS, and the
    K-FAC preconditioner bound to the problem's layers."""
    from pathlib import Path

    from continuation.files.config import build_run, load_config

    r = build_run(load_config(Path(__file__).resolve().parents[1] / "validation/configs/digits_exact.toml"))
    steps, corrector = r["steps"], r["corrector"]
    assert steps.name == "adaptive" and steps.max_step == steps.initial == 0.01 and steps.max_angle_deg == 30.0
    assert corrector.name == "trust-newton" and corrector.lbfgs_iters > 0 and corrector.for_steps().lbfgs_iters == 0
    pre = r["krylov"].preconditioner
    assert pre.name == "kfac" and pre.draws == 1 and pre.shift == 3e-2  # the weight prior's w, no extra damping


def test_the_small_collapse_configuration_builds_as_documented():
    """validation/configs/smooth_collapse_small.toml: the 1,248-parameter smooth MLP, quasi-static in
    lambda downwards, adaptive steps, the dense monitor with each unit's rate crossing 0.01."""
    from pathlib import Path

    from continuation.files.config import build_run, load_config

    r = build_run(load_config(Path(__file__).resolve().parents[1] / "validation/configs/smooth_collapse_small.toml"))
    size = sum(v.numel() for part in r["problem"].init_params(0).values() for v in part.values())
    assert size == 1248 and r["steps"].name == "adaptive" and r["corrector"].for_steps().lbfgs_iters == 0
    assert set(r["monitor"].crossings) == {"kl_z0", "kl_z1", "kl_z2"} and r["monitor"].dense_below >= size
