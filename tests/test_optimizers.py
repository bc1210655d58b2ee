"""The one optimisation loop and the first-order correctors: SGD with momentum reaches the closed-form
equilibrium, the shared loop repeats a hand-written Adam loop bit for bit (seeds included), the
gtol conventions, and work counters that match what a counting wrapper of the system sees."""

import pytest
import torch

from continuation import EquilibriumSystem
from continuation.strategies.correctors import (CORRECTORS, AdamCorrector, Corrector, LBFGSCorrector, NewtonCorrector,
                                     SGDCorrector, paper_schedule)
from continuation.surface.equilibrate import equilibrate, learning_rate
from problems import make_mu
from problems.data import Data
from problems.models import paper_mlp
from problems.neural_problem import NeuralProblem


def tiny_network():
    g = torch.Generator().manual_seed(0)
    data = Data(torch.rand(24, 1, 3, 3, generator=g, dtype=torch.float64), torch.randint(0, 3, (24,), generator=g),
                ("a", "b", "c"), "stand-in")
    problem = NeuralProblem(*paper_mlp(input_dim=9, hidden=5, latent=2, classifier_hidden=4, classes=3), data,
                            samples=2, grad_batch=12, hvp_batch=6, dtype=torch.float64)
    system = EquilibriumSystem(problem, problem.init_params(0))
    return problem, system, system.flatten(problem.init_params(0))


def off_by_sign(x, y):
    """Distance up to the gauge (the sign of the one latent direction)."""
    return min(float((x - y).norm()), float((x + y).norm()))


@pytest.mark.parametrize("lam, gam", [(1.0, 1.0), (2.0, 3.0)])
def test_sgd_corrector_reaches_the_closed_form_equilibrium(competition, lam, gam):
    mu = make_mu(lam, gam)
    x0 = competition.system.flatten(competition.problem.init_params(0))
    res = SGDCorrector(steps=300, eta_max=0.5, gtol=1e-4).correct(competition.system, x0, mu)
    assert res.converged and res.status == "converged" and res.grad_norm <= 1e-4
    assert off_by_sign(res.x, competition.theta_star(lam, gam)) < 1e-4  # from |x0 - theta*| ~ 1
    F = float(competition.system.objective(res.x, mu))
    assert abs(F - competition.closed.free_energy(lam, gam)) < 1e-9
    newton = NewtonCorrector(gtol=1e-12).correct(competition.system, res.x, mu)
    assert newton.converged and float((newton.x - res.x).norm()) < 1e-4


def test_sgd_without_momentum_is_plain_gradient_descent_on_the_schedule(competition):
    mu = make_mu(1.0, 1.0)
    x = competition.system.flatten(competition.problem.init_params(0))
    res = SGDCorrector(steps=5, eta_max=0.2, momentum=0.0).correct(competition.system, x, mu)
    for k in range(1, 6):
        x = x - paper_schedule(k, 6, 0.2) * competition.system.gradient(x, mu)
    assert torch.allclose(res.x, x, rtol=0, atol=1e-15)


def reference_adam_corrector(system, x, mu, steps, eta_max, resample_every):
    """The Adam corrector's loop as it was written before the shared loop."""
    y = x.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([y], lr=0.0)
    problem = system.problem
    own_seed = problem.seed
    for k in range(1, steps + 1):
        if resample_every and (k - 1) % resample_every == 0:
            problem.resample(1_000_003 * (own_seed + 1) + k)
        for group in opt.param_groups:
            group["lr"] = paper_schedule(k, steps + 1, eta_max)
        opt.zero_grad()
        system.objective(y, mu).backward()
        opt.step()
    problem.resample(own_seed)
    return y.detach()


def reference_equilibrate(system, x0, mu, steps, lr, seed, resample_every):
    """`equilibrate`'s loop as it was written before the shared loop (cosine schedule)."""
    x = x0.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    for k in range(steps):
        if k % resample_every == 0:
            system.problem.resample(seed + k)
        for group in opt.param_groups:
            group["lr"] = learning_rate(k, steps, lr, "cosine")
        opt.zero_grad()
        system.objective(x, mu).backward()
        opt.step()
    system.problem.resample(seed)
    return x.detach()


def test_shared_loop_repeats_the_hand_written_adam_loops_bit_for_bit():
    problem, system, x = tiny_network()
    mu = make_mu(0.5, 2.0)
    problem.resample(5)
    ref = reference_adam_corrector(system, x, mu, steps=7, eta_max=1e-2, resample_every=2)
    res = AdamCorrector(steps=7, eta_max=1e-2, resample_every=2).correct(system, x, mu)
    assert torch.equal(res.x, ref) and problem.seed == 5 and not torch.equal(res.x, x)
    ref = reference_equilibrate(system, x, mu, steps=6, lr=3e-3, seed=11, resample_every=2)
    eq = equilibrate(system, x, mu, steps=6, lr=3e-3, seed=11, resample_every=2)
    assert torch.equal(eq.x, ref) and problem.seed == 11


def test_gtol_none_is_a_fixed_budget_and_a_number_decides(competition):
    system, mu = competition.system, make_mu(1.0, 1.0)
    x = system.flatten(competition.problem.init_params(0))
    for cls in (AdamCorrector, SGDCorrector):
        spent = cls(steps=3).correct(system, x, mu)
        assert spent.converged and spent.status == "budget_spent" and spent.iters == 3
        assert cls(steps=3, gtol=float("inf")).correct(system, x, mu).status == "converged"
        above = cls(steps=3, gtol=1e-12).correct(system, x, mu)
        assert not above.converged and above.status == "gradient_above_gtol"
        assert cls.easy_iters is None and cls.max_iters is None
    with pytest.raises(ValueError, match="momentum"):
        SGDCorrector(momentum=1.0)
    with pytest.raises(ValueError, match="gtol"):
        AdamCorrector(gtol=-1.0)


class CountingSystem:
    """Delegates to a system and counts objective evaluations (each one differentiated by the
    optimisers) and gradient calls made on it."""

    def __init__(self, system):
        self.inner, self.problem, self.calls = system, system.problem, 0

    def objective(self, x, mu):
        self.calls += 1
        return self.inner.objective(x, mu)

    def gradient(self, x, mu):
        self.calls += 1
        return self.inner.gradient(x, mu)


@pytest.mark.parametrize("corrector", [AdamCorrector(steps=9), SGDCorrector(steps=9, eta_max=0.1),
                                       LBFGSCorrector(gtol=1e-10)], ids=lambda c: c.name)
def test_gradient_counts_are_what_the_system_saw(competition, corrector):
    counting = CountingSystem(competition.system)
    x = competition.system.flatten(competition.problem.init_params(0))
    res = corrector.correct(counting, x, make_mu(1.0, 1.0))
    assert res.grads == counting.calls and res.hvps == 0
    if not isinstance(corrector, LBFGSCorrector):
        assert res.grads == 9 + 1  # T updates and the final check


def test_corrector_roles_are_declared():
    assert set(CORRECTORS) == {"newton", "adam", "sgd", "lbfgs"}
    counts = {name: cls.counts for name, cls in CORRECTORS.items()}
    assert counts == {"newton": "newton_iters", "adam": "adam_updates", "sgd": "sgd_updates",
                      "lbfgs": "lbfgs_iters"}
    for cls in CORRECTORS.values():
        assert issubclass(cls, Corrector) and getattr(cls, "__final__", False)
    with pytest.raises(TypeError):
        Corrector()
