"""The 1-D Bratu problem u'' + lambda e^u = 0 on (0, 1), u(0) = u(1) = 0, as an energy.

Finite differences on N interior points, h = 1 / (N + 1), theta = {"x": u (N,)}:

    J(u; lambda) = h sum_{i=0}^{N} 1/2 ((u_{i+1} - u_i) / h)^2 - lambda h sum_{i=1}^{N} e^{u_i},

so grad J = -h [(u_{i-1} - 2 u_i + u_{i+1}) / h^2 + lambda e^{u_i}] vanishes exactly on the
discrete Bratu equation. A = Hess J = h (L - lambda diag(e^u)), L the Dirichlet Laplacian / h^2.
The lower branch is a minimum of J; past the fold (lambda* = 3.513830719 for the continuum,
Bratu 1914; the discrete fold converges to it as O(h^2)) the upper branch is a saddle of Morse
index 1. gamma and t do not enter (C = 0 by the envelope rule of problems/energy.py).
"""

from __future__ import annotations

import torch

FOLD_CONTINUUM = 3.513830719  # the continuum fold: lambda = 2 th^2 / cosh(th/4)^2 at its maximum over th


def bratu_energy(theta: dict, mu: torch.Tensor) -> torch.Tensor:
    """J(u; lambda) above; theta["x"] (N,), mu = (lambda, gamma, t)."""
    u = theta["x"]
    h = 1.0 / (u.numel() + 1)
    zero = u.new_zeros(1)
    du = torch.diff(torch.cat([zero, u, zero])) / h
    return h * (0.5 * (du * du).sum() - mu[0] * torch.exp(u).sum())


def bratu_problem(n: int = 63):
    from .energy import EnergyProblem

    return EnergyProblem(objective=bratu_energy, theta0={"x": torch.zeros(n, dtype=torch.float64)}, name=f"bratu-{n}")
