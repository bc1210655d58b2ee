"""The Bratu problem Delta u + lambda e^u = 0, u = 0 on the boundary, as an energy, in 1-D and 2-D.

1-D, finite differences on N interior points of (0, 1), h = 1 / (N + 1), theta = {"x": u (N,)}:

    J(u; lambda) = h sum_{i=0}^{N} 1/2 ((u_{i+1} - u_i) / h)^2 - lambda h sum_{i=1}^{N} e^{u_i},

so grad J = -h [(u_{i-1} - 2 u_i + u_{i+1}) / h^2 + lambda e^{u_i}] vanishes exactly on the
discrete Bratu equation. A = Hess J = h (L - lambda diag(e^u)), L the Dirichlet Laplacian / h^2.
The lower branch is a minimum of J; past the fold (lambda* = 3.513830719 for the continuum,
Bratu 1914; the discrete fold converges to it as O(h^2)) the upper branch is a saddle of Morse
index 1. gamma and t do not enter (C = 0 by the envelope rule of problems/energy.py).

2-D, the unit square with m x m interior points (theta = {"x": u (m^2,)}, row-major, m the
integer square root of the size), h = 1 / (m + 1), the five-point Laplacian:

    J(u; lambda) = h^2 sum over grid edges 1/2 ((u_p - u_q) / h)^2 - lambda h^2 sum_p e^{u_p},

grad J = -h^2 [Delta_h u + lambda e^u]; the continuum fold is lambda* = 6.808124 (e.g. Mittelmann
1986; the discrete fold converges to it as O(h^2)).

Sparsity (solvers/sparse.py): A is tridiagonal in 1-D (3 colours) and the five-point stencil in
2-D (5 colours), declared by `bratu_sparsity` and `bratu2d_sparsity` (`sparsity = ...` in the
energy's [problem] table), so `[krylov] name = "sparse-lu"` assembles A from 3 or 5 HVPs.
"""

from __future__ import annotations

import math

import torch

FOLD_CONTINUUM = 3.513830719  # the continuum fold: lambda = 2 th^2 / cosh(th/4)^2 at its maximum over th
FOLD_CONTINUUM_2D = 6.808124  # the unit square


def bratu_energy(theta: dict, mu: torch.Tensor) -> torch.Tensor:
    """J(u; lambda) above; theta["x"] (N,), mu = (lambda, gamma, t)."""
    u = theta["x"]
    h = 1.0 / (u.numel() + 1)
    zero = u.new_zeros(1)
    du = torch.diff(torch.cat([zero, u, zero])) / h
    return h * (0.5 * (du * du).sum() - mu[0] * torch.exp(u).sum())


def bratu_forced_energy(theta: dict, mu: torch.Tensor) -> torch.Tensor:
    """The 1-D Bratu energy with a uniform load gamma: J(u; lambda) - gamma h sum_i u_i, so that
    grad J = 0 is u'' + lambda e^u + gamma = 0 (u = 0 on the boundary). gamma is a second
    multiplier: the fold lambda*(gamma) falls as the load grows (`docs/stability.md`, the phase
    diagram). theta["x"] (N,), mu = (lambda, gamma, t)."""
    u = theta["x"]
    return bratu_energy(theta, mu) - mu[1] * u.sum() / (u.numel() + 1)


def bratu_sparsity(theta: dict):
    """The 1-D Hessian's pattern: tridiagonal, coloured j mod 3."""
    from solvers.sparse import HessianPattern

    return HessianPattern.banded(theta["x"].numel(), 1)


def _side(n: int) -> int:
    m = math.isqrt(n)
    if m * m != n:
        raise ValueError(f"the 2-D Bratu energy needs size = m^2 (an m x m grid), got {n}")
    return m


def bratu2d_energy(theta: dict, mu: torch.Tensor) -> torch.Tensor:
    """J(u; lambda) on the m x m grid above; theta["x"] (m^2,), mu = (lambda, gamma, t)."""
    x = theta["x"]
    m = _side(x.numel())
    h = 1.0 / (m + 1)
    u = torch.nn.functional.pad(x.reshape(m, m), (1, 1, 1, 1))
    dx = torch.diff(u[1:-1, :], dim=1) / h  # (m, m + 1): edges along rows, boundary edges included
    dy = torch.diff(u[:, 1:-1], dim=0) / h
    return h * h * (0.5 * ((dx * dx).sum() + (dy * dy).sum()) - mu[0] * torch.exp(x).sum())


def bratu2d_sparsity(theta: dict):
    """The 2-D Hessian's pattern: the five-point stencil, coloured (i + 2 j) mod 5."""
    from solvers.sparse import HessianPattern

    m = _side(theta["x"].numel())
    return HessianPattern.stencil((m, m))


def bratu_problem(n: int = 63, sparse: bool = True):
    from .energy import EnergyProblem

    return EnergyProblem(objective=bratu_energy, theta0={"x": torch.zeros(n, dtype=torch.float64)},
                         sparsity=bratu_sparsity if sparse else None, name=f"bratu-{n}")


def bratu2d_problem(m: int = 30, sparse: bool = True):
    from .energy import EnergyProblem

    return EnergyProblem(objective=bratu2d_energy, theta0={"x": torch.zeros(m * m, dtype=torch.float64)},
                         sparsity=bratu2d_sparsity if sparse else None, name=f"bratu2d-{m}x{m}")
