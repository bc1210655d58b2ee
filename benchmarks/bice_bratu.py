"""Reference run of the Bratu fold with the continuation library bice (PyPI `bice`, 0.4.6).

Run it with bice's own venv:
    OMP_NUM_THREADS=1 /work/bice_venv/bin/python benchmarks/bice_bratu.py --n N --dim {1,2} [--lam0 L0] [--lam_end LE]

Discretisation (the same as problems/bratu.py, with the sign used here): u on the N (dim 1) or
N x N (dim 2) interior points of [0, 1]^dim, h = 1/(N+1), zero Dirichlet values,
    F(u) = L u + lam exp(u),   J(u) = L + lam diag(exp(u))   (scipy.sparse CSR),
L the 3-point (dim 1) or 5-point (dim 2) Laplacian / h^2. J is negative definite on the lower branch
and one eigenvalue turns positive at the fold, so bice's stability count goes 0 -> 1 there.

Defaults: dim 1 lam0 = 3.0, lam_end = 2.9 (fold ~3.5138); dim 2 lam0 = 5.0, lam_end = 4.9 (fold ~6.808).

Steps: (1) the lower-branch solution at lam0 by a plain Newton (scipy spsolve) from u = 0;
(2) bice pseudo-arclength continuation (Problem.continuation_step) in lam from there, lam increasing,
through the fold, until the first point with lam < lam_end (upper branch). Each step bice computes
the `neigs` (default 5) eigenvalues of J nearest 0 (ARPACK shift-invert, sigma = 0); a change of the
count of positive ones flags a "bifurcation" (bice does not tell folds from branch points; neigs = 1
is not enough: in dim 2 the positive eigenvalue drifts out of the nearest-one window past the fold
and bice flags a spurious "-" point), and with settings.always_locate_bifurcations it bisects the
last step along the arclength until |eigenvalue| < 1e-5 or the bracket is < 1e-4 of the step (both
hard-coded in Problem.locate_bifurcation). fold_lambda is lam of that located point; if bice
located none, it is the largest lam among the continuation points, and fold_method says so.

Step size: bice measures arclength in the plain Euclidean norm of (u, lam), so ||u|| grows like
sqrt(unknowns); ds and ds_max are scaled by sqrt(unknowns) to keep the number of steps independent
of the grid (initial ds = 0.05 sqrt(M), ds_max = 0.5 sqrt(M), M = unknowns). The corrector
tolerance (on ||Newton update||_2) is 1e-8 sqrt(M) for the same reason.

Timing: wall_s covers step (2) only, i.e. every continuation step with its eigenvalue solve and the
fold bisection, from the lower-branch solution at lam0 to the first point with lam < lam_end;
imports, assembly of L and the initial Newton (reported as newton_s) are excluded.
Output: the last stdout line is one JSON object (bice itself may print warnings before it) with
tool, version, dim, n, unknowns, fold_lambda, fold_method, wall_s, points (accepted continuation
steps, bisection steps not counted) and extras newton_s, lam0, lam_end, neigs, flagged (bice's
bifurcation types on the branch), located (return values of bice's locate_bifurcation).
"""

import argparse
import json
import time
from importlib.metadata import version

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from bice import Equation, Problem


def laplacian(n: int, dim: int) -> sp.csr_matrix:
    h = 1.0 / (n + 1)
    l1 = sp.diags([np.ones(n - 1), -2.0 * np.ones(n), np.ones(n - 1)], [-1, 0, 1]) / h**2
    if dim == 1:
        return sp.csr_matrix(l1)
    eye = sp.identity(n)
    return sp.csr_matrix(sp.kron(l1, eye) + sp.kron(eye, l1))


class BratuEquation(Equation):
    def __init__(self, n: int, dim: int, lam: float):
        super().__init__(shape=(n**dim,))
        self.L = laplacian(n, dim)
        self.lam = lam

    def rhs(self, u):
        return self.L @ u + self.lam * np.exp(u)

    def jacobian(self, u):
        return sp.csr_matrix(self.L + sp.diags(self.lam * np.exp(u)))


class Bratu(Problem):
    def __init__(self, n: int, dim: int, lam: float):
        super().__init__()
        self.bratu = BratuEquation(n, dim, lam)
        self.add_equation(self.bratu)
        self.continuation_parameter = (self.bratu, "lam")


def newton(problem: Problem, tol: float = 1e-12, maxit: int = 30) -> None:
    """Plain Newton for F(u) = 0 at fixed lam, on problem.u."""
    u = problem.u.copy()
    for _ in range(maxit):
        du = spla.spsolve(sp.csc_matrix(problem.jacobian(u)), problem.rhs(u))
        u -= du
        if np.abs(du).max() < tol * max(1.0, np.abs(u).max()):
            break
    else:
        raise RuntimeError("initial Newton did not converge")
    problem.u = u


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--dim", type=int, choices=(1, 2), default=1)
    ap.add_argument("--lam0", type=float, default=None)
    ap.add_argument("--lam_end", type=float, default=None)
    ap.add_argument("--neigs", type=int, default=5, help="eigenvalues nearest 0 per step (bice default 20)")
    ap.add_argument("--max_steps", type=int, default=5000)
    a = ap.parse_args()
    lam0 = a.lam0 if a.lam0 is not None else (3.0 if a.dim == 1 else 5.0)
    lam_end = a.lam_end if a.lam_end is not None else lam0 - 0.1
    assert lam_end < lam0, "lam_end must lie below lam0"

    problem = Bratu(a.n, a.dim, lam0)
    m = problem.ndofs
    t0 = time.perf_counter()
    newton(problem)
    t1 = time.perf_counter()

    problem.settings.neigs = a.neigs
    problem.settings.always_locate_bifurcations = True
    cs = problem.continuation_stepper
    cs.ds, cs.ds_max = 0.05 * np.sqrt(m), 0.5 * np.sqrt(m)
    cs.convergence_tolerance = 1e-8 * np.sqrt(m)

    located = []  # record what bice's locate_bifurcation returns (it only prints a warning on failure)
    locate = problem.locate_bifurcation

    def recording_locate(*args, **kwargs):
        located.append(locate(*args, **kwargs))
        return located[-1]

    problem.locate_bifurcation = recording_locate

    t2 = time.perf_counter()
    steps = 0
    while steps < a.max_steps:  # lam rises from lam0 > lam_end, so lam < lam_end means past the fold
        problem.continuation_step()
        steps += 1
        if problem.get_continuation_parameter() < lam_end:
            break
    wall = time.perf_counter() - t2

    branch = problem.bifurcation_diagram.active_branch
    folds = [s for s in branch.bifurcations() if s.bifurcation_type() == "+"]  # 0 -> 1 unstable
    lams = branch.parameter_vals()
    if folds and located[0]:
        fold_lambda, method = folds[0].p, ("bice locate_bifurcation: bisection of the arclength step on the "
                                           "eigenvalue of J nearest 0 (|ev| < 1e-5 or bracket < 1e-4 ds)")
    else:  # no located fold: fall back to the largest lam on the computed points
        fold_lambda, method = float(lams.max()), "max lam over continuation points (bice located no fold)"
    print(json.dumps({"tool": "bice", "version": version("bice"), "dim": a.dim, "n": a.n, "unknowns": m,
                      "fold_lambda": float(fold_lambda), "fold_method": method, "wall_s": round(wall, 4),
                      "points": steps, "newton_s": round(t1 - t0, 4), "lam0": lam0, "lam_end": lam_end,
                      "neigs": a.neigs, "flagged": [s.bifurcation_type() for s in branch.bifurcations()],
                      "located": located}))


if __name__ == "__main__":
    main()
