"""The Chafee-Infante problem u'' + lambda (u - u^3) = 0, u = 0 at both ends of (0, 1), as an energy.

Finite differences on N interior points, h = 1 / (N + 1), theta = {"x": u (N,)}:

    J(u; lambda) = h sum_{i=0}^{N} 1/2 ((u_{i+1} - u_i) / h)^2 - lambda h sum_{i=1}^{N} (u_i^2 / 2 - u_i^4 / 4),

so grad J = -h [(u_{i-1} - 2 u_i + u_{i+1}) / h^2 + lambda (u_i - u_i^3)]. u = 0 is a solution for
every lambda, with A = h (L - lambda I), L the Dirichlet Laplacian / h^2 (positive): its
eigenvalues are h (mu_k - lambda), mu_k = 4 (N + 1)^2 sin^2(k pi / (2 (N + 1))), so u = 0 has
Morse index k on (mu_k, mu_{k+1}) and at each mu_k a pitchfork sends out a pair of branches
u ~ +-a sin(k pi x), symmetric under u -> -u (Chafee & Infante 1974). gamma and t do not enter.
The branch tree (`python -m continuation tree`, docs/stability.md) follows them.
"""

from __future__ import annotations

import math

import torch


def chafee_infante_energy(theta: dict, mu: torch.Tensor) -> torch.Tensor:
    """J(u; lambda) above; theta["x"] (N,), mu = (lambda, gamma, t)."""
    u = theta["x"]
    h = 1.0 / (u.numel() + 1)
    zero = u.new_zeros(1)
    du = torch.diff(torch.cat([zero, u, zero])) / h
    return h * (0.5 * (du * du).sum() - mu[0] * (u * u / 2 - u**4 / 4).sum())


def pitchforks(n: int, k: int) -> list:
    """The first k bifurcation values mu_1 < ... < mu_k of u = 0: the Dirichlet Laplacian's eigenvalues."""
    return [4 * (n + 1) ** 2 * math.sin(j * math.pi / (2 * (n + 1))) ** 2 for j in range(1, k + 1)]
