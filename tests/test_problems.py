"""Problem roles: defaults of `Problem`, what a `StochasticProblem` declares, every concrete
problem final, registry problems named by their constructor and recording their options, and
one ELBO: AmortizedProblem and NeuralProblem agree on R, D, C for the same networks and noise."""

import inspect
import json

import pytest
import torch

from problems import AmortizedProblem, NeuralHamiltonian, Problem, StochasticProblem, make_mu
from problems.amortized import gaussian_kl
from problems.data import Data
from problems.gibbs_quadrature import GibbsQuadratureProblem
from problems.linear_gaussian import LinearGaussianGibbs, LinearGaussianGibbsProblem, LinearGaussianTransferProblem
from problems.models import paper_mlp
from problems.neural_problem import NetworkProblem, NeuralProblem
from problems.registry import PROBLEMS
from problems.transfer_problem import TransferProblem


def tiny_data(n=12):
    g = torch.Generator().manual_seed(1)
    return Data(torch.rand(n, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g),
                ("a", "b", "c"), "stand-in")


def test_abstract_bases_are_abstract_and_concrete_problems_final():
    for cls in (Problem, StochasticProblem, NetworkProblem, LinearGaussianGibbs):
        assert inspect.isabstract(cls)
    for cls in (AmortizedProblem, NeuralProblem, TransferProblem, GibbsQuadratureProblem,
                LinearGaussianGibbsProblem, LinearGaussianTransferProblem):
        assert not inspect.isabstract(cls) and getattr(cls, "__final__", False), cls.__name__
    for cls in (AmortizedProblem, NeuralProblem, TransferProblem):
        assert issubclass(cls, StochasticProblem) and cls.resample_between_points is True
    for cls in (GibbsQuadratureProblem, LinearGaussianGibbsProblem, LinearGaussianTransferProblem):
        assert not issubclass(cls, StochasticProblem)


def test_a_deterministic_problem_has_the_plain_defaults(competition):
    p, mu = competition.problem, make_mu(1.0, 2.0)
    theta = p.init_params(0)
    assert torch.equal(p.hessian_objective(theta, mu), p.objective(theta, mu))
    assert p.evaluation_metrics(theta, mu) == {} and p.validation_metrics(theta) == {}
    s = p.settings()
    assert s["name"] == "linear-gaussian" and s["n"] == 3 and json.loads(json.dumps(s)) == s


def test_registry_problems_are_named_by_their_constructor_and_record_their_options():
    lg = PROBLEMS["linear-gaussian"](n=4, seed=2)
    assert lg.settings()["options"] == {**{n: p.default for n, p in
                                           inspect.signature(PROBLEMS["linear-gaussian"]).parameters.items()},
                                        "n": 4, "seed": 2}
    p = PROBLEMS["mlp"](limit=30, val_limit=10, hidden=8, latent=2, hvp_batch=8, classes="0-4")
    assert p.name == "mlp:digits[0-4]"
    assert "resample_between_points" not in vars(p)  # the class says so; nothing patched on
    s = p.settings()
    assert s["options"]["hidden"] == 8 and s["options"]["classes"] == "0-4" and s["hvp_batch"] == 8
    assert set(s["options"]) == set(inspect.signature(PROBLEMS["mlp"]).parameters)
    assert json.loads(json.dumps(s)) == s


def test_amortized_and_neural_problems_share_one_elbo():
    """One encoder, decoder, classifier and noise: the Hamiltonian form (AmortizedProblem with
    the networks' Hamiltonian) and the per-sample form (NeuralProblem) give the same R, D, C."""
    data = tiny_data()
    enc, dec, cls = paper_mlp(input_dim=6, hidden=5, latent=2, classifier_hidden=4, classes=3)
    neural = NeuralProblem(enc, dec, cls, data, samples=3, decoder_std=0.7, dtype=torch.float64)
    amortized = AmortizedProblem(NeuralHamiltonian(dec, cls, 2, decoder_std=0.7), enc, neural.batch.x,
                                 neural.batch.y, samples=3)
    amortized.eps = neural.batch.eps
    theta = neural.init_params(3)
    both = {"encoder": theta["encoder"], "model": {"decoder": theta["decoder"], "classifier": theta["classifier"]}}
    mu = make_mu(0.5, 2.0)
    a, b = amortized.functionals(both, mu), neural.functionals(theta, mu)
    for name in "RDC":
        assert float(a[name]) == pytest.approx(float(b[name]), rel=1e-13, abs=0), name
    assert float(b["R"]) > 0.01  # a non-trivial rate: the KL term is compared, not two zeros


def test_gaussian_kl_is_the_closed_form_kl():
    mean, log_std = torch.tensor([[0.3, -1.2]], dtype=torch.float64), torch.tensor([[0.1, -0.4]], dtype=torch.float64)
    q = torch.distributions.Normal(mean, log_std.exp())
    p = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    assert torch.allclose(gaussian_kl(mean, log_std), torch.distributions.kl_divergence(q, p).sum(-1), rtol=1e-14)


def test_amortized_evaluation_metrics_are_fixed_and_leave_the_draw_alone():
    data = tiny_data()
    enc, dec, cls = paper_mlp(input_dim=6, hidden=5, latent=2, classifier_hidden=4, classes=3)
    p = AmortizedProblem(NeuralHamiltonian(dec, cls, 2), enc, data.x, data.y, seed=4, name="tiny")
    theta, eps = p.init_params(0), p.eps
    m = p.evaluation_metrics(theta)
    assert set(m) == {"train_R", "train_D", "train_C"} and m == p.evaluation_metrics(theta)
    assert p.eps is eps and p.seed == 4 and p.name == "tiny" and p.settings()["name"] == "tiny"
