"""Other equilibria at the same multipliers, by deflation: solutions disconnected from a known one.

Deflated Newton (Farrell, Birkisson & Funke 2015, "Deflation techniques for finding distinct
solutions of nonlinear partial differential equations", SIAM J. Sci. Comput. 37(4), A2026):
Newton's method on

    G(x) = m(x) grad_x J(x; mu),     m(x) = prod_i (||x - r_i||^(-p) + sigma),

whose roots are those of grad J other than the known ones r_i (m blows up at each r_i, so Newton
is repelled from them, while sigma > 0 keeps G like grad J far from them). With A = Hess_x J and
d = -A^-1 grad J the undeflated Newton step, the deflated step is d scaled (Sherman-Morrison on
G' = m A + grad J (grad m)^T):

    delta = tau d,   tau = 1 / (1 - (grad m . d) / m),
    grad m / m = sum_i -p ||x - r_i||^(-p-2) (x - r_i) / (||x - r_i||^(-p) + sigma),

so each iteration costs what an undeflated Newton step does: one gradient and one linear solve
with A (dense from N HVPs below `dense_below` unknowns, MINRES otherwise; A may be indefinite:
the other solutions are often saddles), with the gauge orbit deflated as everywhere else. Steps
are backtracked on ||G|| (halving, at most 20 times). A solution is accepted when
||grad J|| <= gtol and it is farther than `distinct` (relative) from every known one.

`find_solutions` repeats this from the given starts, adding each new root to the deflated set,
until no start finds another. Written here: no maintained Python library offers deflation on
a matrix-free operator (Firedrake's `defcon` is tied to its own PDE framework).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from solvers import Dense, MINRES


@dataclass
class DeflatedResult:
    """x: the solution found (or the last iterate); converged: ||grad J|| <= gtol at a new point;
    grad_norm; iterations; status: "converged", "max_iters", "line_search", "linear_solve_failed",
    "known" (converged onto a known solution: deflation too weak)."""

    x: torch.Tensor
    converged: bool
    grad_norm: float
    iterations: int
    status: str


def _deflation_terms(x, known, power, shift):
    """(m, grad m / m) at x."""
    m, gm = 1.0, torch.zeros_like(x)
    for r in known:
        diff = x - r
        dist = float(diff.norm())
        if dist == 0.0:
            return math.inf, gm
        inv = dist ** (-power)
        m *= inv + shift
        gm = gm - power * dist ** (-power - 2) * diff / (inv + shift)
    return m, gm


def deflated_newton(system, x0, mu, known, *, power: float = 2.0, shift: float = 1.0, gtol: float = 1e-10,
                    maxiter: int = 100, distinct: float = 1e-6, dense_below: int = 512) -> DeflatedResult:
    """Deflated Newton on grad_x J(x; mu) = 0 from x0, deflating the solutions in `known` (a list of
    (N,) tensors). Raises ValueError for a bad option."""
    for name, v in (("power", power), ("gtol", gtol), ("distinct", distinct)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ValueError(f"deflation: {name} must be a positive number, got {v!r}")
    if not (isinstance(shift, (int, float)) and math.isfinite(shift) and shift >= 0):
        raise ValueError(f"deflation: shift must be a number >= 0, got {shift!r}")
    if not (isinstance(maxiter, int) and maxiter >= 1):
        raise ValueError(f"deflation: maxiter must be an integer >= 1, got {maxiter!r}")
    solver = Dense() if x0.numel() <= dense_below else MINRES(rtol=1e-10)
    x = x0.detach().clone()

    def residual(y):
        try:
            g = system.gradient(y, mu).detach()
        except FloatingPointError:  # a trial step out of J's domain (e^u overflowing): backtrack
            return None, math.inf, None, math.inf
        m, gm = _deflation_terms(y, known, power, shift)
        return g, m, gm, m * float(g.norm())

    g, _, gm, G = residual(x)
    for it in range(maxiter + 1):
        gn = float(g.norm())
        if gn <= gtol:
            if any(float((x - r).norm()) <= distinct * (1.0 + float(r.norm())) for r in known):
                return DeflatedResult(x, False, gn, it, "known")
            return DeflatedResult(x, True, gn, it, "converged")
        if it == maxiter:
            break
        sol = system.solve_hessian(solver, x, mu, -g)
        d = sol.x
        if not bool(torch.isfinite(d).all()):
            return DeflatedResult(x, False, gn, it, "linear_solve_failed")
        denom = 1.0 - float(gm @ d)
        tau = 1.0 / denom if denom != 0.0 else 1.0
        step, alpha = tau * d, 1.0
        for _ in range(20):
            trial = x + alpha * step
            g_t, _, gm_t, G_t = residual(trial)
            if math.isfinite(G_t) and G_t < G * (1 - 1e-4 * alpha):
                break
            alpha /= 2
        else:
            return DeflatedResult(x, False, gn, it, "line_search")
        x, g, gm, G = trial, g_t, gm_t, G_t
    return DeflatedResult(x, False, float(g.norm()), maxiter, "max_iters")


def soft_mode_starts(system, mu, known, *, modes: int = 2, scales=(0.5, 1.0, 2.0), dense_below: int = 512) -> list:
    """Starts for the search from the known solutions alone: each r_i displaced both ways along its
    `modes` lowest eigenvectors of A (off the gauge orbit: the directions in which J is softest,
    where other solutions lie first), by s sqrt(N) max(1, rms(r_i)) for s in `scales` (so entries move
    by about s in a problem of O(1) entries). Cost: one eigensolve per known solution."""
    from continuation.singular.stability import lowest_eigenpairs

    starts = []
    for r in known:
        n = r.numel()
        d = system.deflation(r)
        k = min(modes, n - (0 if d is None else d.size))
        V = lowest_eigenpairs(system, r, mu, k, dense_below=dense_below).vectors
        size = math.sqrt(n) * max(1.0, float(r.norm()) / math.sqrt(n))
        for s in scales:
            for j in range(V.shape[1]):
                for sign in (1.0, -1.0):
                    starts.append(r + sign * s * size * V[:, j])
    return starts


def find_solutions(system, mu, known, starts=None, *, max_solutions: int = 10, **options) -> list:
    """The equilibria at mu besides `known` (a list of (N,) tensors): deflated Newton from each of
    `starts` in turn (default: `soft_mode_starts` of the known solutions), each new solution
    deflated for the next tries, until no start finds one or max_solutions are found. Returns the
    new solutions (DeflatedResult, converged). Cost: up to len(starts) deflated Newton solves per
    solution found, plus one more round that finds nothing."""
    known, found = [k.detach() for k in known], []
    if not known and starts is None:
        raise ValueError("deflation: give a known solution or starts")
    if starts is None:
        starts = soft_mode_starts(system, mu, known)
    progress = True
    while progress and len(found) < max_solutions:
        progress = False
        for s in starts:
            r = deflated_newton(system, s, mu, known, **options)
            if r.converged:
                found.append(r)
                known.append(r.x)
                progress = True
                break
    return found
