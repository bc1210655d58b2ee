"""Deflation of known zero modes from a symmetric operator given as a matvec.

A problem with a continuous symmetry (latent rotations theta -> theta Q) has J constant along the
orbit, so A = Hess J has exact zero modes along the orbit's tangent at a stationary point, and
b_mu and grad J are orthogonal to it. Off the surface (a Runge-Kutta stage, a Newton iterate)
those eigenvalues are merely small (1e-11 where 0 is expected), and a Krylov solve to 1e-12 can
stall on them (MINRES "inaccurate" at relative residual 2-5e-11 on a 3-d latent). With Q an
orthonormal basis of the orbit tangent and P = I - Q Q^T, the solve is done on

    (P A P) y = P b,    y in range(P),

the minimum-norm solution of the consistent system, i.e. the one MINRES from zero converges to
in exact arithmetic, without the near-null directions. Cost: 2 g dot products per matvec (g the
number of gauge directions), nothing else. Written here because scipy/torch Krylov solvers take
no deflation space (scipy's `minres` has no projector argument).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


def orthonormal_basis(vectors: list[torch.Tensor], rtol: float = 1e-10) -> torch.Tensor:
    """(N, g) orthonormal basis of span(vectors), dropping directions below rtol of the largest."""
    if not vectors:
        raise ValueError("orthonormal_basis needs at least one vector")
    Q, r = torch.linalg.qr(torch.stack(vectors, dim=1))
    d = torch.diagonal(r).abs()
    keep = d > rtol * float(d.max()) if float(d.max()) > 0 else torch.zeros_like(d, dtype=torch.bool)
    return Q[:, keep]


@dataclass(frozen=True)
class Deflation:
    """P = I - Q Q^T for an orthonormal Q (N, g): the complement of g known zero modes."""

    Q: torch.Tensor

    @property
    def size(self) -> int:
        return self.Q.shape[1]

    def project(self, v: torch.Tensor) -> torch.Tensor:
        return v - self.Q @ (self.Q.T @ v)

    def operator(self, matvec: Callable) -> Callable:
        """v -> P A P v."""
        return lambda v: self.project(matvec(self.project(v)))

    def solve(self, solver, matvec: Callable, b: torch.Tensor, x0: torch.Tensor | None = None):
        """The Krylov solve of (P A P) y = P b (the result's residual is that of the deflated system)."""
        return solver.solve(self.operator(matvec), self.project(b), None if x0 is None else self.project(x0))
