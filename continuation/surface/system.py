"""The equilibrium system of a problem: grad_theta J(theta; mu) = 0, on the flat vector of theta.

`EquilibriumSystem` is the one source of truth for what is zero (as jaxopt's implicit differentiation does): the corrector
drives its `gradient` to zero and the tangents differentiate that same gradient.

It is also where work is counted (continuation/surface/work.py, `Ledger`): every gradient, HVP,
mixed-partial column and Krylov solve that goes through it, and every evaluation pass made by its
counted value methods (`values`, `objective_value`, `evaluation_metrics`, `validation_metrics`). `objective` and `functionals` themselves are the plain functions that derivatives
differentiate and count nothing.
"""

from __future__ import annotations

import torch

from problems.base import FUNCTIONAL_NAMES, Problem
from solvers import Deflation, FlatView, check_finite, gradient, hessian_operator, mixed_partials, orthonormal_basis

from continuation.surface.work import Ledger


def _checked_mu(mu):
    """mu as the problems take it: a tensor of shape (3,) = (lambda, gamma, t); ValueError otherwise
    (a list or a (1, 3) tensor gave an IndexError or TypeError deep inside a problem)."""
    if not isinstance(mu, torch.Tensor) or mu.shape != (3,):
        got = f"a tensor of shape {tuple(mu.shape)}" if isinstance(mu, torch.Tensor) else type(mu).__name__
        raise ValueError(f"mu must be a tensor of shape (3,) = (lambda, gamma, t), e.g. problems.make_mu(1.0, 1.0); "
                         f"got {got}")
    return mu


class EquilibriumSystem:
    def __init__(self, problem: Problem, theta_example: dict, hvp_mode: str = "rev-rev"):
        self.problem = problem
        self.view = FlatView(theta_example)
        self.hvp_mode = hvp_mode
        self.ledger = Ledger()  # the work spent through this system since the stepper last took it
        # the run's preconditioner (solvers/preconditioners.py; the [krylov] solver's), shared by the
        # tangent solves and a corrector's Krylov solves: they solve with the same Hessian
        self.preconditioner = None
        # the run's direct solver (solvers/sparse.py SparseLU) where [krylov] names one: then every
        # linear solve with A (Newton, bordered, tangents) and the monitor's eigenpairs use its factors
        self.direct = None

    # -- flat functions of (x, mu) -----------------------------------------------------------
    def objective(self, x: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
        """J(theta; mu) with theta = unflatten(x); mu a tensor of shape (3,) (problems.make_mu)."""
        return self.problem.objective(self.view.unflatten(x), _checked_mu(mu))

    def functionals(self, x: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
        """(R, D, C) stacked into one vector."""
        f = self.problem.functionals(self.view.unflatten(x), _checked_mu(mu))
        return torch.stack([f[name] for name in FUNCTIONAL_NAMES])

    # -- evaluation passes (each counted as one evaluation) -----------------------------------------
    def values(self, x, mu) -> torch.Tensor:
        """(R, D, C) at (x, mu), detached: one evaluation."""
        self.ledger.count(evaluations=1)
        return self.functionals(x, mu).detach()

    def objective_value(self, x, mu) -> torch.Tensor:
        """J at (x, mu), detached: one evaluation."""
        self.ledger.count(evaluations=1)
        return self.objective(x, mu).detach()

    def evaluation_metrics(self, x, mu) -> dict:
        """The problem's fixed-noise training metrics (one evaluation; none counted where it has none)."""
        out = self.problem.evaluation_metrics(self.view.unflatten(x), mu)
        if out:
            self.ledger.count(evaluations=1)
        return out

    def validation_metrics(self, x) -> dict:
        """The problem's held-out metrics (one evaluation; none counted where it has none)."""
        out = self.problem.validation_metrics(self.view.unflatten(x))
        if out:
            self.ledger.count(evaluations=1)
        return out

    # -- derivatives ---------------------------------------------------------------------------
    def gradient(self, x, mu):
        """grad_theta J: one gradient."""
        self.ledger.count(gradients=1)
        return check_finite(gradient(self.objective, x, mu), "gradient of J")

    def force_scale(self, x, mu) -> float:
        """|grad R| + lambda |grad D| + gamma |grad C| + |grad (J - R - lambda D - gamma C)|: the size
        of the forces that cancel at an equilibrium, so that |grad J| / force_scale is how well they
        cancel (the path's grad_norm_rel; the last term is a weight prior, a task mixture, ...).
        Cost: four gradients (of R, D, C and J)."""
        parts = [gradient(lambda v, m, i=i: self.functionals(v, m)[i], x, mu) for i in range(3)]
        g = gradient(self.objective, x, mu)
        self.ledger.count(gradients=4)
        terms = [parts[0], mu[0] * parts[1], mu[1] * parts[2]]
        terms.append(g - sum(terms))
        return float(sum(torch.linalg.vector_norm(t) for t in terms))

    def hessian(self, x, mu):
        """v -> A v with A = Hess_theta J(theta; mu); on the problem's HVP batch if it has one
        (`Problem.hessian_objective`: a subsampled Hessian beside a full gradient). Each product
        is one HVP in the ledger (the operator's build, about one gradient in "rev-rev", is not
        counted apart: benchmarks spread it over the products); `.block(V)` applies it to the
        rows of V (k, N) in one vmapped call, k HVPs."""
        return CountedHessian(hessian_operator(self.hessian_objective, x, mu, self.hvp_mode), self.ledger)

    def hessian_objective(self, x, mu):
        """The problem's `hessian_objective` (J itself unless it has a separate HVP batch)."""
        return self.problem.hessian_objective(self.view.unflatten(x), mu)

    def deflation(self, x) -> Deflation | None:
        """The complement of the gauge orbit at x (the problem's `gauge_directions`), or None.

        None also where every direction is below 1e-8 max(1, |x|): a fixed point of the symmetry, whose
        orbit is a point. Cost: the problem's gauge directions and one thin QR (N x g)."""
        dirs = [self.view.flatten(d) for d in self.problem.gauge_directions(self.view.unflatten(x))]
        if not dirs:
            return None
        # at a fixed point of the symmetry (a trivial branch: x = 0 up to rounding, 1e-20) the orbit is
        # a point and its "directions" are rounding; A d = (generator) grad J is then not small against
        # |d|, so they are not zero modes, and deflating them hid two of three negative eigenvalues
        if max(float(torch.linalg.vector_norm(d)) for d in dirs) <= 1e-8 * max(1.0, float(torch.linalg.vector_norm(x))):
            return None
        Q = orthonormal_basis(dirs)
        return Deflation(Q) if Q.shape[1] else None

    def solve_hessian(self, solver, x, mu, b):
        """A y = b by `solver` (a Krylov solver with `.solve(matvec, b)`), with the gauge zero modes
        deflated (solvers/deflation.py): y is the minimum-norm solution off the gauge orbit.
        b: (N,) -> one KrylovResult, or (N, p) -> a list of p, the operator and the gauge basis
        built once for all columns. Cost: the solver's matvecs (one HVP each)."""
        A = self.hessian(x, mu)
        d = self.deflation(x)
        solve = (lambda c: solver.solve(A, c)) if d is None else (lambda c: d.solve(solver, A, c))
        out = solve(b) if b.dim() == 1 else [solve(b[:, j]) for j in range(b.shape[1])]
        self.ledger.count(krylov_iters=sum(r.iters for r in (out if isinstance(out, list) else [out])))
        return out

    def mixed_partials(self, x, mu, directions=None):
        """b = -d/dmu grad_theta J, one column per direction (rows of `directions`); one mixed partial each."""
        self.ledger.count(mixed_partials=mu.numel() if directions is None else len(directions))
        return check_finite(mixed_partials(self.objective, x, mu, directions), "mixed partials b_mu")

    def flatten(self, theta: dict) -> torch.Tensor:
        return self.view.flatten(theta)

    def unflatten(self, x: torch.Tensor) -> dict:
        return self.view.unflatten(x)


class CountedHessian:
    """v -> A v, each product counted as one HVP in `ledger`; `block(V)`: the rows of V (k, N)
    in one torch.func.vmap call, counted as k HVPs (a vmapped call of the counted product would
    count the block once)."""

    def __init__(self, matvec, ledger):
        self._matvec, self._ledger = matvec, ledger
        self.point = getattr(matvec, "point", None)  # (x, mu) of the operator (solvers/derivatives.py)

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        self._ledger.count(hvps=1)
        return self._matvec(v)

    def block(self, V: torch.Tensor) -> torch.Tensor:
        out = torch.func.vmap(self._matvec)(V)
        self._ledger.count(hvps=V.shape[0])  # after: a block that fails (no batching rule) spent nothing counted
        return out
