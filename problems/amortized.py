"""Amortized (variational) encoder: the paper's experiments (DESIGN.md section 1, mode 2).

An encoder e_phi(z|x) = N(mean_phi(x), diag sigma_phi(x)^2) is part of theta, and

    J(theta; lambda, gamma) = E_x [ KL(e_phi(.|x) || m) + lambda E_e(-log d(x|z)) + gamma E_e(-log c(y_x|z)) ]
                            = R + lambda D + gamma C,

estimated with reparameterised samples z = mean + sigma * eps for a fixed noise eps (common
random numbers), so that J is one deterministic function of theta between `resample` calls and
its gradients and HVPs are consistent. R, D, C do not depend on mu here, so b_lambda = -grad D
and b_gamma = -grad C. KL is analytic when the prior is N(0, I), a Monte Carlo estimate otherwise.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.func import functional_call

from .base import Hamiltonian, Problem, StochasticProblem
from .neural import init_module_params


class AmortizedProblem(StochasticProblem):
    name = "amortized"

    def __init__(self, hamiltonian: Hamiltonian, encoder: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                 samples: int = 1, seed: int = 0):
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x and y hold different numbers of samples: {x.shape[0]} and {y.shape[0]}")
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        self.hamiltonian, self.encoder = hamiltonian, encoder
        self.x, self.y = x, y
        self.dtype = x.dtype
        self.samples = samples
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
        mean, log_std = functional_call(self.encoder, theta["encoder"], (self.x,))
        std = torch.exp(log_std)
        z = mean + std * self.eps  # (S, B, k)
        D = -h.log_decoder(theta["model"], self.x[None], z).mean()
        C = -h.log_classifier(theta["model"], self.y[None], z).mean()
        if h.prior_is_standard_normal:
            R = 0.5 * (mean**2 + std**2 - 1.0 - 2.0 * log_std).sum(-1).mean()
        else:
            log_e = (-0.5 * self.eps**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
            R = (log_e - h.log_prior(theta["model"], z)).mean()
        return {"R": R, "D": D, "C": C}
