"""The branches through a simple bifurcation point, along its null vector (Lyapunov-Schmidt).

Used by the bifurcation tree (`continuation/apps/branch_tree.py`) and by a pseudo-arclength run
that switches branch at a located bifurcation (`[monitor] branch = "switch"`,
`continuation/engine/stepper.py`).
"""

from __future__ import annotations

from scipy.optimize import brentq

from problems.base import mu_index


def switch_branch(system, x, mu, v, free: str, *, offset: float, gtol: float = 1e-10, sides=(1, -1),
                  first: bool = False) -> list:
    """The branches through the bifurcation point (x, mu) along its null vector v: a list of
    (x_s, mu_s, side, sign) for each side of the free multiplier (side = +-1: p* (1 + side offset))
    and each sign of a where the reduced equation has a root. `sides` orders the sides tried;
    `first` stops at the first branch found. Cost per side and sign: the bracket's gradients (one
    each), brentq's, and one Newton solve."""
    from solvers.bordered import BorderedNewton

    i = mu_index(free)
    v = v / v.norm()
    newton = BorderedNewton(gtol=gtol, maxiter=40, stall_iters=4)
    out = []
    for side in sides:
        mu_s = mu.clone()
        mu_s[i] = mu[i] * (1 + side * offset) if mu[i] != 0 else side * offset
        g = lambda a: float(v @ system.gradient(x + a * v, mu_s))  # noqa: E731
        for sign in (1, -1):
            a0 = sign * 1e-4 * (1.0 + float(x.norm()))
            g0, a, root = g(a0), a0, None
            for _ in range(60):
                b = 2 * a
                try:
                    gb = g(b)
                except FloatingPointError:
                    break
                if g0 * gb < 0:
                    root = brentq(g, a, b, xtol=1e-14 * abs(b), rtol=1e-12)
                    break
                a, g0 = b, gb
            if root is None:
                continue
            r = newton.solve(system.objective, x + root * v, mu_s, None, system.deflation)
            far = float((r.x - x).norm()) > 1e-6 * (1.0 + float(x.norm()))
            if r.converged and far and float(v @ (r.x - x)) * sign > 0:
                out.append((r.x.detach(), mu_s, side, sign))
                if first:  # the caller wants one branch: the first side and sign in order that has one
                    return out
    return out
