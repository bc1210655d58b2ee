"""Exact (Gibbs) encoder by numerical quadrature over a latent of dimension 1 or 2.

    e(z|x) = exp(-H(z; x, y_x)) / Z_x,   J(theta; mu) = -E_x log Z_x          (paper eq. 9-10)

with Z_x = sum_g w_g exp(-H(z_g)) on a tensor-product trapezoid grid. The trapezoid rule on a
box wide enough that the integrand has decayed is spectrally accurate for smooth integrands,
so the default grid (half-width 8, 201 points a side) is exact to rounding for posteriors of
width >~ 0.2 centred within the box. Any Hamiltonian works; nothing is assumed Gaussian.
"""

from __future__ import annotations

import math
from typing import final

import torch

from .base import Hamiltonian, Problem


def trapezoid_grid(latent_dim: int, half_width: float = 8.0, points: int = 201, dtype=torch.float64):
    """Nodes (G, latent_dim) and log-weights (G,) of the trapezoid rule on [-h, h]^latent_dim."""
    if latent_dim not in (1, 2):
        raise ValueError(f"quadrature supports a latent of dimension 1 or 2, got {latent_dim}")
    nodes = torch.linspace(-half_width, half_width, points, dtype=dtype)
    w = torch.full((points,), 2 * half_width / (points - 1), dtype=dtype)
    w[0] = w[-1] = w[0] / 2
    if latent_dim == 1:
        return nodes[:, None], w.log()
    zz = torch.cartesian_prod(nodes, nodes)
    return zz, (w[:, None] * w[None, :]).reshape(-1).log()


@final
class GibbsQuadratureProblem(Problem):
    """J = -mean_i log Z_{x_i}, with R, D, C the expectations under the Gibbs encoder."""

    name = "gibbs-quadrature"

    def __init__(self, hamiltonian: Hamiltonian, x: torch.Tensor, y: torch.Tensor, *,
                 half_width: float = 8.0, points: int = 201, name: str | None = None):
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x and y hold different numbers of samples: {x.shape[0]} and {y.shape[0]}")
        if name is not None:
            self.name = name
        self.hamiltonian = hamiltonian
        self.half_width, self.points = half_width, points
        self.x, self.y = x, y
        self.dtype = x.dtype
        self.z, self.log_w = trapezoid_grid(hamiltonian.latent_dim, half_width, points, x.dtype)

    def init_params(self, seed: int = 0) -> dict:
        return self.hamiltonian.init_params(torch.Generator().manual_seed(seed), self.dtype)

    def settings(self) -> dict:
        return {**super().settings(), "latent_dim": self.hamiltonian.latent_dim, "size": int(self.x.shape[0]),
                "half_width": self.half_width, "points": self.points}

    def _terms(self, theta, mu):
        """log m, log d, log c on the (sample, node) grid, shape (B, G) each."""
        h = self.hamiltonian
        z = self.z[None]
        log_m = h.log_prior(theta, z).expand(self.x.shape[0], -1)
        log_d = h.log_decoder(theta, self.x[:, None], z)
        log_c = h.log_classifier(theta, self.y[:, None], z)
        return log_m, log_d, log_c

    def _log_z(self, theta, mu):
        log_m, log_d, log_c = self._terms(theta, mu)
        neg_h = log_m + mu[0] * log_d + mu[1] * log_c
        return torch.logsumexp(neg_h + self.log_w, dim=1), (log_m, log_d, log_c, neg_h)

    def objective(self, theta, mu):
        log_z, _ = self._log_z(theta, mu)
        return -log_z.mean()

    def functionals(self, theta, mu):
        log_z, (log_m, log_d, log_c, neg_h) = self._log_z(theta, mu)
        p = torch.softmax(neg_h + self.log_w, dim=1)  # posterior mass at each node
        D = -(p * log_d).sum(1).mean()
        C = -(p * log_c).sum(1).mean()
        log_e = neg_h - log_z[:, None]  # log density of the Gibbs encoder at the nodes
        R = (p * (log_e - log_m)).sum(1).mean()
        return {"R": R, "D": D, "C": C}



def standard_normal_log_prior(theta, z):
    """log N(z; 0, I), the parameter-free prior of the paper's models."""
    return -0.5 * (z**2).sum(-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)
