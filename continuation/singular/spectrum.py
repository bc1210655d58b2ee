"""The spectrum of A = Hess_theta J off the gauge orbit, for small problems (dense; N HVPs).

A problem with a continuous symmetry (latent rotations) has exact zero modes along the orbit;
a fold or a latent direction switching on shows up as one more eigenvalue reaching zero. This
dense version is the reference for tests and validation; large models need Lanczos instead.
"""

from __future__ import annotations

import torch

from solvers import dense_hessian

from continuation.surface.system import EquilibriumSystem


def gauge_basis(system: EquilibriumSystem, x: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis (N, g) of the gauge-orbit tangent at x (empty if the problem has none)."""
    d = system.deflation(x)
    return d.Q if d is not None else torch.zeros(x.numel(), 0, dtype=x.dtype, device=x.device)


def non_gauge_eigenvalues(system: EquilibriumSystem, x: torch.Tensor, mu: torch.Tensor):
    """Eigenvalues of A restricted to the complement of the gauge orbit (ascending), and the
    largest |entry| of A on the orbit (zero at a stationary point: the gauge modes are exact)."""
    A = dense_hessian(system.objective, x, mu)
    Q = gauge_basis(system, x)
    on_orbit = float((Q.T @ A @ Q).abs().max()) if Q.shape[1] else 0.0
    P = torch.eye(A.shape[0], dtype=A.dtype, device=A.device) - Q @ Q.T
    U, s, _ = torch.linalg.svd(P)
    B = U[:, s > 0.5]  # orthonormal basis of the complement
    return torch.linalg.eigvalsh(B.T @ A @ B), on_orbit
