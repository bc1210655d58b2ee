"""Derivatives of a scalar objective f(x, mu) in a flat parameter vector x and a vector mu.

- gradient:        g(x) = grad_x f(x, mu)
- Hessian-vector:  A v = Hess_x f(x, mu) v, never forming A
- mixed partials:  b_mu = -d/dmu grad_x f(x, mu), exact, by forward-mode in mu

HVP modes (DESIGN.md, "Measured facts"): which is faster depends on the model and device, so
it is a choice:
- "rev-rev" (default): reverse-over-reverse (double backward). The gradient graph is built once
  per `hessian_operator` call (about one gradient) and each product is one backward pass through
  it: 1.4-2.0 gradients per product on the paper's MLP on 2 CPU cores, batch 256-4096
  (benchmarks/hvp_cost.py), 7x cheaper than "fwd-rev" on tiny problems where per-call
  overhead dominates.
- "fwd-rev": forward-over-reverse, jvp(grad f): 2.4-3.4 gradients per product on the same MLP;
  no graph kept between products (less memory).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.func import grad, jacfwd, jvp, vjp

HVP_MODES = ("fwd-rev", "rev-rev")


def check_finite(value: torch.Tensor, what: str) -> torch.Tensor:
    """Raise a one-line error if `value` has NaN or inf (cheap: one reduction, one sync)."""
    if not bool(torch.isfinite(value).all()):
        raise FloatingPointError(f"{what} is not finite (NaN or inf)")
    return value


def gradient(f: Callable, x: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """grad_x f(x, mu). Cost: one gradient."""
    return grad(f, argnums=0)(x, mu)


def hessian_operator(f: Callable, x: torch.Tensor, mu: torch.Tensor, mode: str = "rev-rev") -> Callable:
    """Return v -> Hess_x f(x, mu) v, a symmetric linear operator on vectors like x; its `point`
    attribute is (x, mu) (a direct solver keeps one factorisation a point: solvers/sparse.py)."""
    matvec = _hessian_operator(f, x, mu, mode)
    matvec.point = (x, mu)
    return matvec


def _hessian_operator(f: Callable, x: torch.Tensor, mu: torch.Tensor, mode: str) -> Callable:
    if mode == "fwd-rev":
        g = grad(lambda y: f(y, mu))

        def matvec(v: torch.Tensor) -> torch.Tensor:
            return jvp(g, (x,), (v,))[1]

        return matvec
    if mode == "rev-rev":
        _, pullback = vjp(grad(lambda y: f(y, mu)), x)

        def matvec(v: torch.Tensor) -> torch.Tensor:
            # some ops (cross-entropy among them) leave the pullback's output attached to a
            # graph; products are never differentiated again, so cut it
            return pullback(v)[0].detach()

        return matvec
    raise ValueError(f"unknown HVP mode {mode!r}; valid modes: {', '.join(HVP_MODES)}")


def mixed_partials(f: Callable, x: torch.Tensor, mu: torch.Tensor, directions=None) -> torch.Tensor:
    """b = -d/dmu grad_x f(x, mu) as an (N, p) matrix, one column per direction of mu.

    `directions` is a (p, len(mu)) matrix whose rows are directions in mu-space (default: the
    unit vectors, so column j is b_{mu_j}). Cost: one forward-mode pass per direction, batched.
    """
    if directions is None:
        directions = torch.eye(mu.numel(), dtype=mu.dtype, device=mu.device)
    g = lambda m: grad(f, argnums=0)(x, m)  # noqa: E731
    columns = [jvp(g, (mu,), (d,))[1] for d in directions]
    return -torch.stack(columns, dim=1)


def mixed_partial_column(f: Callable, x: torch.Tensor, mu: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """One column b = -d/dmu grad_x f(x, mu) . direction, by reverse-over-reverse:
    -grad_x (grad_mu f(x, mu) . direction). The same derivative as `mixed_partials` (to rounding);
    cheaper for one direction: 3.7 ms against forward mode's 13.4 ms on 1-D Bratu at N = 10^4.
    Cost: one double backward (about two gradients)."""
    return -grad(lambda y: torch.dot(grad(f, argnums=1)(y, mu), direction))(x)


def dense_hessian(f: Callable, x: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """The full N x N Hessian, for tests and small problems only (cost: N HVPs)."""
    return jacfwd(grad(lambda y: f(y, mu)))(x)
