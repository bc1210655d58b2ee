"""Hamiltonians and encoders built from torch modules, evaluated functionally (torch.func).

theta holds the modules' parameters as dicts; the modules themselves are only templates, so
that J is a pure function of theta and torch.func transforms (grad, jvp, vmap) apply.
"""

from __future__ import annotations

import copy
import math
from typing import final

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .base import Hamiltonian
from .gibbs_quadrature import standard_normal_log_prior


def init_module_params(module: nn.Module, generator: torch.Generator, dtype=torch.float64) -> dict:
    """Fresh parameters for `module` (its own default initialisation) drawn from `generator`."""
    fresh = copy.deepcopy(module)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for sub in fresh.modules():
            if hasattr(sub, "reset_parameters"):
                sub.reset_parameters()
    return {name: p.detach().to(dtype).clone() for name, p in fresh.named_parameters()}


def mlp(sizes, activation=nn.Tanh) -> nn.Sequential:
    """Linear layers of the given sizes with `activation` between them (none after the last)."""
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


@final
class NeuralHamiltonian(Hamiltonian):
    """Prior N(0, I), decoder N(x; dec(z), decoder_std^2 I), classifier softmax(cls(z)) or Gaussian.

    label="categorical": y holds integer class labels, log c = log softmax(cls(z))[y];
    label="gaussian": y holds real targets, log c = log N(y; cls(z), classifier_std^2 I).
    """

    prior_is_standard_normal = True

    def __init__(self, decoder: nn.Module, classifier: nn.Module, latent_dim: int, *,
                 decoder_std: float = 1.0, label: str = "categorical", classifier_std: float = 1.0):
        if label not in ("categorical", "gaussian"):
            raise ValueError(f"label must be 'categorical' or 'gaussian', got {label!r}")
        self.decoder, self.classifier = decoder, classifier
        self.latent_dim = latent_dim
        self.decoder_std, self.label, self.classifier_std = decoder_std, label, classifier_std

    def init_params(self, generator, dtype=torch.float64):
        return {"decoder": init_module_params(self.decoder, generator, dtype),
                "classifier": init_module_params(self.classifier, generator, dtype)}

    def log_prior(self, theta, z):
        return standard_normal_log_prior(theta, z)

    def log_decoder(self, theta, x, z):
        mean = functional_call(self.decoder, theta["decoder"], (z,))
        d = x.shape[-1]
        s = self.decoder_std
        return -0.5 * ((x - mean) ** 2).sum(-1) / s**2 - 0.5 * d * math.log(2 * math.pi * s**2)

    def log_classifier(self, theta, y, z):
        out = functional_call(self.classifier, theta["classifier"], (z,))
        if self.label == "categorical":
            logp = F.log_softmax(out, dim=-1)
            shape = torch.broadcast_shapes(y.shape, logp.shape[:-1])
            return torch.gather(logp.expand(*shape, -1), -1, y.long().expand(shape)[..., None])[..., 0]
        s = self.classifier_std
        return -0.5 * ((y - out) ** 2).sum(-1) / s**2 - 0.5 * out.shape[-1] * math.log(2 * math.pi * s**2)


class GaussianEncoder(nn.Module):
    """e(z|x) = N(mean(x), diag(exp(log_std(x)))^2): one network whose output splits in two."""

    def __init__(self, net: nn.Module, latent_dim: int):
        super().__init__()
        self.net = net
        self.latent_dim = latent_dim

    def forward(self, x):
        out = self.net(x)
        return out[..., : self.latent_dim], out[..., self.latent_dim:]
