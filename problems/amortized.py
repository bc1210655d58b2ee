"""Amortized (variational) encoder: the paper's experiments (DESIGN.md section 1, mode 2).

An encoder e_phi(z|x) = N(mean_phi(x), diag sigma_phi(x)^2) is part of theta, and

    J(theta; lambda, gamma) = E_x [ KL(e_phi(.|x) || m) + lambda E_e(-log d(x|z)) + gamma E_e(-log c(y_x|z)) ]
                            = R + lambda D + gamma C,

estimated with reparameterised samples z = mean + sigma * eps for a fixed noise eps (common
random numbers), so that J is one deterministic function of theta between `resample` calls and
its gradients and HVPs are consistent. R, D, C do not depend on mu here, so b_lambda = -grad D
and b_gamma = -grad C. KL is analytic when the prior is N(0, I), a Monte Carlo estimate otherwise.

`encode` and `gaussian_kl` are the one implementation of the encoder's sample and its rate,
shared with `NeuralProblem` (problems/neural_problem.py).
"""

from __future__ import annotations

import math
from typing import NamedTuple, final

import torch
from torch import nn
from torch.func import functional_call

from .base import Hamiltonian, StochasticProblem
from .neural import init_module_params


def gaussian_kl(mean: torch.Tensor, log_std: torch.Tensor, std: torch.Tensor | None = None) -> torch.Tensor:
    """KL(N(mean, diag sigma^2) || N(0, I)) = 0.5 sum_j (mean_j^2 + sigma_j^2 - 1 - 2 log sigma_j),
    sigma = exp(log_std); (..., k) -> (...). The rate R of one sample x (Kingma and Welling, 2013).
    std: exp(log_std) if already computed (`Posterior.std`); sharing that autograd node keeps
    gradients bit-identical to one formula written out with one exp."""
    std = torch.exp(log_std) if std is None else std
    return 0.5 * (mean**2 + std**2 - 1.0 - 2.0 * log_std).sum(-1)


def gaussian_kl_per_latent(mean: torch.Tensor, log_std: torch.Tensor, std: torch.Tensor | None = None) -> torch.Tensor:
    """The terms of `gaussian_kl` one latent unit at a time: (..., k) -> (..., k), each
    KL(N(mean_j, sigma_j^2) || N(0, 1)) = 0.5 (mean_j^2 + sigma_j^2 - 1 - 2 log sigma_j); summed
    over the last axis they are `gaussian_kl`. A unit with ~0 KL for every x carries no
    information about x (posterior collapse)."""
    std = torch.exp(log_std) if std is None else std
    return 0.5 * (mean**2 + std**2 - 1.0 - 2.0 * log_std)


class Posterior(NamedTuple):
    """e_phi(z|x) = N(mean, diag std^2), std = exp(log_std), each (B, k), and samples z (S, B, k)."""

    mean: torch.Tensor
    log_std: torch.Tensor
    std: torch.Tensor
    z: torch.Tensor

    def kl(self) -> torch.Tensor:
        """KL(e_phi(.|x) || N(0, I)) per sample x, (B,)."""
        return gaussian_kl(self.mean, self.log_std, self.std)


def encode(encoder: nn.Module, params: dict, x: torch.Tensor, eps: torch.Tensor, mask=None) -> Posterior:
    """The encoder's Gaussian at x and the reparameterised samples z = mean + exp(log_std) * eps:
    x (B, ...), eps (S, B, k) -> z (S, B, k). mask: a dropout mask for encoders that take one
    (fixed between resamples), else None. Cost: one encoder pass."""
    extra = {} if mask is None else {"mask": mask}
    mean, log_std = functional_call(encoder, params, (x,), extra)
    std = torch.exp(log_std)
    return Posterior(mean, log_std, std, mean + std * eps)


@final
class AmortizedProblem(StochasticProblem):
    name = "amortized"

    def __init__(self, hamiltonian: Hamiltonian, encoder: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                 samples: int = 1, seed: int = 0, name: str | None = None):
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x and y hold different numbers of samples: {x.shape[0]} and {y.shape[0]}")
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        self.hamiltonian, self.encoder = hamiltonian, encoder
        self.x, self.y = x, y
        self.dtype = x.dtype
        self.samples = samples
        if name is not None:
            self.name = name
        self.resample(seed)

    def resample(self, seed: int) -> None:
        """Draw new reparameterisation noise (between path points, never inside a step)."""
        self.seed = int(seed)
        g = torch.Generator().manual_seed(self.seed)
        k = self.hamiltonian.latent_dim
        self.eps = torch.randn(self.samples, self.x.shape[0], k, generator=g, dtype=self.dtype).to(self.x.device)

    def init_params(self, seed: int = 0) -> dict:
        g = torch.Generator().manual_seed(seed)
        return {"encoder": init_module_params(self.encoder, g, self.dtype),
                "model": self.hamiltonian.init_params(g, self.dtype)}

    def functionals(self, theta, mu):
        h = self.hamiltonian
        e = encode(self.encoder, theta["encoder"], self.x, self.eps)  # z: (S, B, k)
        D = -h.log_decoder(theta["model"], self.x[None], e.z).mean()
        C = -h.log_classifier(theta["model"], self.y[None], e.z).mean()
        if h.prior_is_standard_normal:
            R = e.kl().mean()
        else:
            log_e = (-0.5 * self.eps**2 - e.log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
            R = (log_e - h.log_prior(theta["model"], e.z)).mean()
        return {"R": R, "D": D, "C": C}

    @torch.no_grad()
    def evaluation_metrics(self, theta, mu=None, samples: int = 4, seed: int = 12345) -> dict:
        """train_R, train_D, train_C on all of x with `samples` noise draws from `seed` (the same
        at every call); the problem's own draw is left as it was."""
        own_eps, own_samples = self.eps, self.samples
        try:
            self.samples = samples
            g = torch.Generator().manual_seed(seed)
            k = self.hamiltonian.latent_dim
            self.eps = torch.randn(samples, self.x.shape[0], k, generator=g, dtype=self.dtype).to(self.x.device)
            f = self.functionals(theta, mu)
        finally:
            self.eps, self.samples = own_eps, own_samples
        return {f"train_{k}": float(v) for k, v in f.items()}

    def settings(self) -> dict:
        return {**super().settings(), "samples": self.samples, "seed": self.seed, "size": int(self.x.shape[0]),
                "latent_dim": self.hamiltonian.latent_dim, "dtype": str(self.dtype).removeprefix("torch.")}
