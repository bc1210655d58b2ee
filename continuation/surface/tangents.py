"""Tangents of the equilibrium surface and total derivatives of functionals along it.

Differentiating grad_theta J(theta*(mu); mu) = 0 in mu (paper eq. 16-18, 25):

    A theta_mu = b_mu,   A = Hess_theta J,   b_mu = -d/dmu grad_theta J,

solved by a Krylov method with Hessian-vector products (A is never formed). A functional
G(theta; mu) then changes along the surface at the rate

    dG/dmu = grad_theta G . theta_mu + partial_mu G,

one forward-mode JVP of G in the direction (theta_mu, e_mu). By the envelope theorem
D = dF/dlambda and C = dF/dgamma, so

    Hess F = [[dD/dlambda, dD/dgamma], [dC/dlambda, dC/dgamma]],

whose off-diagonal entries must agree (a Maxwell relation; `maxwell_gap` reports the misfit).
Cost: one Krylov solve (its iterations in HVPs) per direction, one JVP per direction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.func import jvp

from problems.base import FUNCTIONAL_NAMES, mu_index
from solvers import MINRES, KrylovResult

from continuation.surface.system import EquilibriumSystem


@dataclass
class Tangents:
    names: tuple  # continuation parameters, e.g. ("lambda", "gamma")
    theta_mu: torch.Tensor  # (N, p): column j is d theta / d mu_j
    b_mu: torch.Tensor  # (N, p): right-hand sides
    solves: list  # one KrylovResult per column

    @property
    def converged(self) -> bool:
        return all(s.converged for s in self.solves)

    @property
    def krylov_iters(self) -> int:
        return sum(s.iters for s in self.solves)

    def column(self, name: str) -> torch.Tensor:
        return self.theta_mu[:, self.names.index(name)]

    def report(self) -> str:
        return "; ".join(f"theta_{n}: {s.message()}" for n, s in zip(self.names, self.solves))


def _unit_directions(names, mu):
    eye = torch.eye(mu.numel(), dtype=mu.dtype, device=mu.device)
    return eye[[mu_index(n) for n in names]]


def solve_tangents(system: EquilibriumSystem, x: torch.Tensor, mu: torch.Tensor,
                   wrt=("lambda", "gamma"), solver=None) -> Tangents:
    """theta_mu = A^{-1} b_mu for each continuation parameter named in `wrt`.

    `solver` is any Krylov solver with `.solve(matvec, b)` (default MINRES, which copes with
    the indefiniteness of network Hessians and reports what it could not do); the problem's gauge
    zero modes are deflated (`EquilibriumSystem.solve_hessian`), so theta_mu is orthogonal to the
    gauge orbit.
    """
    solver = solver or MINRES()
    names = tuple(wrt)
    b = system.mixed_partials(x, mu, _unit_directions(names, mu))
    solves: list[KrylovResult] = system.solve_hessian(solver, x, mu, b)
    theta_mu = torch.stack([s.x for s in solves], dim=1)
    return Tangents(names, theta_mu, b, solves)


def total_derivatives(fn, x: torch.Tensor, mu: torch.Tensor, tangents: Tangents) -> torch.Tensor:
    """d fn(theta*(mu); mu) / d mu_j for each tangent direction j: shape (*fn_shape, p)."""
    directions = _unit_directions(tangents.names, mu)
    cols = [jvp(fn, (x, mu), (tangents.theta_mu[:, j], directions[j]))[1] for j in range(len(tangents.names))]
    return torch.stack(cols, dim=-1)


def functional_derivatives(system: EquilibriumSystem, x, mu, tangents: Tangents) -> dict:
    """{"R": (dR/dmu_j)_j, "D": ..., "C": ...} along the surface."""
    d = total_derivatives(system.functionals, x, mu, tangents)
    return {name: d[i] for i, name in enumerate(FUNCTIONAL_NAMES)}


def free_energy_hessian(system: EquilibriumSystem, x, mu, tangents: Tangents) -> torch.Tensor:
    """Hess F = [[D_lambda, D_gamma], [C_lambda, C_gamma]] (needs tangents in lambda and gamma)."""
    if tangents.names[:2] != ("lambda", "gamma"):
        raise ValueError(f"free_energy_hessian needs tangents wrt ('lambda', 'gamma', ...), got {tangents.names}")
    d = functional_derivatives(system, x, mu, tangents)
    return torch.stack([d["D"][:2], d["C"][:2]])


def maxwell_gap(hess_f: torch.Tensor) -> float:
    """|D_gamma - C_lambda| / max|Hess F|: zero on the exact surface, a check on the tangents."""
    return float((hess_f[0, 1] - hess_f[1, 0]).abs() / hess_f.abs().max())
