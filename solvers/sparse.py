"""Sparse Hessians assembled from coloured HVPs, and the direct solver that factors them.

An energy whose Hessian A = Hess_theta J is sparse (a finite-difference PDE energy, a lattice, a
graph) declares the pattern of A's nonzeros, a `HessianPattern`. Its columns are coloured so that
no row has nonzeros in two columns of one colour (a distance-2 colouring of the column
intersection graph: Curtis, Powell & Reid, J. Inst. Math. Appl. 13 (1974); Coleman & More,
SIAM J. Numer. Anal. 20 (1983)). Then with s_c the sum of the unit vectors of colour c,

    (A s_c)_i = A_ij   for the one column j of colour c with A_ij != 0,

so A is read off exactly from as many HVPs as there are colours (tridiagonal: 3; the five-point
stencil: 5; a d-dimensional (2d+1)-point stencil: 2d + 1), whatever N is. Structured patterns
carry their colouring (`banded`, `stencil`); any other pattern is coloured greedily in the natural
order (`from_matrix`, `from_coo`; a valid colouring, not always the fewest colours).

`SparseLU` is a linear solver with the Krylov solvers' interface (`solve(matvec, b)`,
`KrylovResult`) that assembles A at the point of `matvec` (k HVPs, k the colours), factors it
(LAPACK's banded LU, `dgbtrf`, where the pattern's half-bandwidth is at most 8; otherwise scipy's
SuperLU, `scipy.sparse.linalg.splu`, with the minimum-degree ordering of A + A^T) and solves by the
factors, with iterative refinement on the assembled matrix. On top of the same factorisation:

- `solve_bordered`: the bordered system of pseudo-arclength continuation (solvers/bordered.py),
      [A  -b] [y]   [f]
      [c^T d] [q] = [g],
  by the bordering lemma: z1 = A^-1 f, z2 = A^-1 b, q = (g - c.z1) / (d + c.z2), y = z1 + q z2
  (Keller 1977; Govaerts, Numerical Methods for Bifurcations of Dynamical Equilibria (2000),
  section 3.6: the lemma alone loses accuracy as A nears singularity, so it is followed by
  iterative refinement on the whole bordered system, which restores it). Where A is exactly
  singular to SuperLU (a point on a fold), the bordered matrix itself is factored instead.
- `lowest_eigenpairs`: the k lowest eigenpairs of A by block LOBPCG (scipy `lobpcg`, Knyazev
  2001) on the assembled A, preconditioned by the factors of A - sigma I with the shift sigma
  strictly below Gershgorin's lower bound of the spectrum (A - sigma I positive definite: shift
  and invert as the preconditioner, so a few block inverse iterations), the block k + 3 wide so
  that multiple eigenvalues are found whole. Cost: one factorisation of A - sigma I and the
  iterations' triangular solves, no HVPs beyond the assembly and k to check the residuals.

Convergence of a direct solve is judged by the normwise backward error (Higham, Accuracy and
Stability of Numerical Algorithms, 2nd ed., Thm 7.1), with the residual of the true operator
(one HVP, so that a pattern that misses nonzeros is seen, not trusted):

    eta = ||b - A x|| / (||A||_F ||x|| + ||b||) <= rtol,

since a relative residual ||r|| / ||b|| of 1e-12 is below what any float64 solve can reach once
cond(A) > 1e4 (1-D Bratu at N = 10^4 has cond(A) ~ 4e7).

Why our own: the colouring reads of a Hessian from HVPs and the bordering on SuperLU's factors
connect torch.func and scipy; neither library does either (scipy has no graph colouring;
`pyamg`'s colourings are for aggregation, not for distance-2 column groups).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, ClassVar

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as sla
import torch

from .krylov import RTOL, KrylovResult


# -- patterns and colourings -----------------------------------------------------------------------
def greedy_colouring(P: sp.csr_matrix) -> np.ndarray:
    """A distance-2 colouring of the columns of the symmetric pattern P (n x n): columns j, k get
    different colours whenever some row has nonzeros in both (the graph of P^T P). Greedy in the
    natural order, each column the smallest colour unused by its conflicts. Cost O(nnz(P^T P))
    in a Python loop over columns (about 1 s per 10^5 columns)."""
    B = sp.csr_matrix((np.ones(P.nnz), P.indices, P.indptr), shape=P.shape)
    G = (B.T @ B).tocsr()
    n = P.shape[0]
    colours = np.full(n, -1, dtype=np.int64)
    for j in range(n):
        used = colours[G.indices[G.indptr[j]:G.indptr[j + 1]]]
        used = used[used >= 0]
        free = np.ones(used.size + 1, dtype=bool)
        free[used[used <= used.size]] = False
        colours[j] = int(np.argmax(free))
    return colours


@dataclass(frozen=True, eq=False)
class HessianPattern:
    """Where A = Hess_theta J may be nonzero, and a colouring of its columns (module docstring).

    rows, cols: (nnz,) int64 indices into the flat theta (both triangles and the diagonal);
    n: the number of parameters; colours: (n,) int64, a distance-2 colouring. Build it with
    `banded`, `stencil`, `from_matrix` or `from_coo`, which symmetrise, add the diagonal and
    check the colouring (ValueError of one line if two columns of one colour share a row)."""

    rows: np.ndarray
    cols: np.ndarray
    n: int
    colours: np.ndarray

    @property
    def ncolours(self) -> int:
        return int(self.colours.max()) + 1 if self.n else 0

    @property
    def nnz(self) -> int:
        return int(self.rows.size)

    @cached_property
    def bandwidth(self) -> int:
        """max |i - j| over the nonzeros (1 for a tridiagonal; m for the five-point stencil on m x m)."""
        return int(np.abs(self.rows - self.cols).max()) if self.nnz else 0

    # -- constructors ------------------------------------------------------------------------------
    @classmethod
    def from_coo(cls, rows, cols, n: int, colours=None) -> "HessianPattern":
        """The pattern with nonzeros at (rows[i], cols[i]) (and their transposes and the diagonal);
        colours: a distance-2 colouring to use (checked), or None for the greedy one."""
        n = int(n)
        rows, cols = np.asarray(rows, dtype=np.int64).ravel(), np.asarray(cols, dtype=np.int64).ravel()
        if rows.shape != cols.shape:
            raise ValueError(f"sparsity pattern: rows and cols differ in length ({rows.size} and {cols.size})")
        if rows.size and (min(rows.min(), cols.min()) < 0 or max(rows.max(), cols.max()) >= n):
            raise ValueError(f"sparsity pattern: an index is outside [0, {n}) (the number of parameters)")
        diag = np.arange(n, dtype=np.int64)
        P = sp.coo_matrix((np.ones(2 * rows.size + n), (np.concatenate([rows, cols, diag]),
                                                         np.concatenate([cols, rows, diag]))), shape=(n, n)).tocsr()
        P.sum_duplicates()
        P.sort_indices()
        if colours is None:
            colours = greedy_colouring(P)
        colours = np.asarray(colours, dtype=np.int64).ravel()
        if colours.shape != (n,) or (n and colours.min() < 0):
            raise ValueError(f"sparsity pattern: colours must be {n} integers >= 0 (one per parameter), got "
                             f"shape {colours.shape}")
        coo = P.tocoo()
        pattern = cls(coo.row.astype(np.int64), coo.col.astype(np.int64), n, colours)
        pattern.check()
        return pattern

    @classmethod
    def from_matrix(cls, M, colours=None) -> "HessianPattern":
        """The pattern of a scipy sparse (or dense) square matrix's nonzeros."""
        M = sp.coo_matrix(M)
        if M.shape[0] != M.shape[1]:
            raise ValueError(f"sparsity pattern: the matrix must be square, got shape {M.shape}")
        keep = M.data != 0
        return cls.from_coo(M.row[keep], M.col[keep], M.shape[0], colours)

    @classmethod
    def banded(cls, n: int, bandwidth: int = 1) -> "HessianPattern":
        """|i - j| <= bandwidth (tridiagonal: bandwidth 1), coloured j mod (2 bandwidth + 1)."""
        offsets = np.arange(-bandwidth, bandwidth + 1)
        i = np.repeat(np.arange(n), offsets.size)
        j = i + np.tile(offsets, n)
        keep = (j >= 0) & (j < n)
        return cls.from_coo(i[keep], j[keep], n, np.arange(n) % (2 * bandwidth + 1))

    @classmethod
    def stencil(cls, shape: tuple) -> "HessianPattern":
        """The (2d + 1)-point stencil on a d-dimensional grid of `shape` (row-major flat index):
        each point coupled to itself and its 2d axis neighbours. Coloured sum_k (k + 1) x_k mod
        (2d + 1), which gives a point's closed neighbourhood 2d + 1 distinct colours."""
        shape = tuple(int(s) for s in shape)
        d, n = len(shape), int(np.prod(shape))
        idx = np.arange(n).reshape(shape)
        coords = np.indices(shape).reshape(d, n)
        rows, cols = [np.arange(n)], [np.arange(n)]
        for k in range(d):
            a = np.take(idx, np.arange(shape[k] - 1), axis=k).ravel()
            b = np.take(idx, np.arange(1, shape[k]), axis=k).ravel()
            rows.append(a)
            cols.append(b)
        colours = (np.arange(1, d + 1)[:, None] * coords).sum(0) % (2 * d + 1)
        return cls.from_coo(np.concatenate(rows), np.concatenate(cols), n, colours)

    # -- checks and assembly -----------------------------------------------------------------------
    def check(self) -> None:
        """ValueError unless no row has nonzeros in two columns of one colour."""
        k = max(self.ncolours, 1)
        keys = self.rows * k + self.colours[self.cols]
        if np.unique(keys).size != keys.size:
            raise ValueError("sparsity pattern: the colouring is not valid (two columns of one colour share a row; "
                             "leave colours out for the greedy colouring)")

    def seeds(self, dtype=torch.float64, device=None) -> torch.Tensor:
        """(k, n): row c is the sum of the unit vectors of the columns of colour c."""
        S = torch.zeros(self.ncolours, self.n, dtype=dtype, device=device)
        S[torch.as_tensor(self.colours, device=device), torch.arange(self.n, device=device)] = 1.0
        return S

    def assemble(self, products) -> sp.csc_matrix:
        """A from the products (k, n), row c = A s_c: A_ij = products[colour(j), i], symmetrised
        (the two triangles come from different products; their mean is A to rounding)."""
        Y = products.detach().cpu().numpy() if isinstance(products, torch.Tensor) else np.asarray(products)
        vals = Y[self.colours[self.cols], self.rows]
        A = sp.csr_matrix((vals, (self.rows, self.cols)), shape=(self.n, self.n))
        return ((A + A.T) * 0.5).tocsc()

    def hessian(self, matvec: Callable, like: torch.Tensor) -> sp.csc_matrix:
        """A assembled from k products of `matvec` (its `.block` when it has one, as the engine's
        counted Hessian does, else one torch.func.vmap call)."""
        S = self.seeds(like.dtype, like.device)
        block = getattr(matvec, "block", None)
        Y = block(S) if callable(block) else torch.func.vmap(matvec)(S)
        return self.assemble(Y)


def as_pattern(value, n: int, who: str) -> HessianPattern:
    """A problem's declared sparsity as a HessianPattern: one, or a scipy sparse matrix of its
    nonzeros; ValueError of one line naming `who` otherwise or when its size is not n."""
    if isinstance(value, HessianPattern):
        pattern = value
    elif sp.issparse(value):
        pattern = HessianPattern.from_matrix(value)
    else:
        raise ValueError(f"{who} must return a solvers.sparse.HessianPattern or a scipy sparse matrix, got "
                         f"{type(value).__name__}")
    if pattern.n != n:
        raise ValueError(f"{who} describes {pattern.n} parameters; theta has {n}")
    pattern.check()  # a HessianPattern made by its constructor, not by from_coo, is checked here
    return pattern


# -- the direct solver -----------------------------------------------------------------------------
@dataclass
class DirectResult(KrylovResult):
    """A direct solve's KrylovResult; its message names the backward error and, where the solve is
    inaccurate, the likely cause (a declared pattern that misses nonzeros of the Hessian)."""

    backward_error: float = math.nan

    def message(self) -> str:
        text = f"{self.status} (backward error {self.backward_error:.1e}), relative residual {self.rel_residual:.3e}"
        if self.status == "inaccurate":
            text += " (does the declared sparsity pattern cover every nonzero of the Hessian?)"
        return text


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float64, copy=False)


def gershgorin_lower_bound(A: sp.spmatrix) -> float:
    """min_i (A_ii - sum_{j != i} |A_ij|): no eigenvalue of the symmetric A lies below it."""
    diag = A.diagonal()
    return float((diag - (np.asarray(abs(A).sum(axis=1)).ravel() - np.abs(diag))).min())


def below(low: float, A: sp.spmatrix) -> float:
    """A shift strictly below the bound `low` (by 1e-3 of it, or of 1e-8 ||A||_inf where it is 0), so
    that A - shift I is positive definite."""
    return low - 1e-3 * max(abs(low), 1e-8 * sla.norm(A, np.inf), 1e-300)


def _same_point(a, b) -> bool:
    """Two operators at the same (x, mu) (their `point`, solvers/derivatives.py hessian_operator): one
    problem's Hessian there, so one factorisation serves both (the tangent and the monitor at a point)."""
    pa, pb = getattr(a, "point", None), getattr(b, "point", None)
    return (pa is not None and pb is not None and pa[0].shape == pb[0].shape
            and bool(torch.equal(pa[1], pb[1])) and bool(torch.equal(pa[0], pb[0])))


class BandedLU:
    """LAPACK's banded LU with partial pivoting (dgbtrf / dgbtrs, through scipy.linalg.lapack) of a
    square matrix whose nonzeros lie within `k` of the diagonal; `solve(b)` as SuperLU's factors.
    For a narrow band it is 3-5 times faster than SuperLU (1-D Bratu, N = 10^4 ... 10^6), whose
    supernodes and ordering buy nothing there. Raises ValueError where A is exactly singular."""

    def __init__(self, A: sp.spmatrix, k: int):
        from scipy.linalg.lapack import dgbtrf

        coo = sp.coo_matrix(A)
        n = A.shape[0]
        ab = np.zeros((3 * k + 1, n))
        ab[2 * k + coo.row - coo.col, coo.col] = coo.data  # A_ij at row kl + ku + i - j of column j
        self.k, self.lu, self.piv, info = k, *dgbtrf(ab, k, k)
        if info > 0:
            raise ValueError(f"exactly singular (zero pivot at {info - 1})")

    def solve(self, b: np.ndarray) -> np.ndarray:
        from scipy.linalg.lapack import dgbtrs

        x, _ = dgbtrs(self.lu, self.k, self.k, b, self.piv)
        return x


BANDED_MAX = 8  # patterns of half-bandwidth up to this are factored by LAPACK's banded LU


def _factor(A: sp.spmatrix, bandwidth: int | None = None):
    """Factors of A (LAPACK banded for a half-bandwidth <= BANDED_MAX, else SuperLU with the minimum
    degree ordering of A + A^T, A's pattern being symmetric), or None where A is exactly singular."""
    if bandwidth is not None and bandwidth <= BANDED_MAX:
        try:
            return BandedLU(A, bandwidth)
        except ValueError:
            return None
    try:
        return sla.splu(sp.csc_matrix(A), permc_spec="MMD_AT_PLUS_A")
    except RuntimeError as e:  # "Factor is exactly singular"
        if "singular" in str(e):
            return None
        raise


@dataclass
class SparseLU:
    """A = Hess J assembled from coloured HVPs (3 for a tridiagonal A, 5 for the five-point stencil)
    and factored (LAPACK banded, or SuperLU); every solve with A, the bordered systems of
    pseudo-arclength and the monitor's lowest eigenvalues on the factors. For an energy that declares
    its sparsity (docs/energy.md, "Sparse energies").

    rtol: the backward error a solve must reach (eta above); refine: at most this many steps of
    iterative refinement on the assembled matrix. The pattern comes from the problem
    (`Problem.hessian_pattern`) when a run starts (`bind`); a problem without one is refused in
    one line. Cost per new point: k HVPs (k colours) and one factorisation; per solve two
    triangular solves a refinement step and one HVP for the true residual. `factorisations` and
    `assembly_hvps` count what this object has spent."""

    rtol: float = RTOL
    refine: int = 4
    name: ClassVar[str] = "sparse-lu"
    direct: ClassVar[bool] = True
    # state, not options (settings_of skips names with "_"): the work spent, the last operator seen
    # and its assembled matrix and factors (a strong reference to the operator,
    # so that its identity cannot be reused by a new one while cached)
    _op: object = field(default=None, repr=False)
    _A: object = field(default=None, repr=False)
    _lu: object = field(default=None, repr=False)
    _fresh: int = field(default=0, repr=False)
    _norm: float = field(default=0.0, repr=False)  # ||A||_F of the cached A
    _pattern: HessianPattern | None = field(default=None, repr=False)
    _factorisations: int = field(default=0, repr=False)
    _assembly_hvps: int = field(default=0, repr=False)

    @property
    def pattern(self) -> HessianPattern | None:
        """The bound problem's pattern (None before `bind`)."""
        return self._pattern

    @property
    def factorisations(self) -> int:
        """Factorisations made by this object (banded or SuperLU; of A, of A - sigma I, of a bordered
        matrix)."""
        return self._factorisations

    @property
    def assembly_hvps(self) -> int:
        """HVPs spent assembling A (k a new point)."""
        return self._assembly_hvps

    def __post_init__(self):
        if not (isinstance(self.rtol, (int, float)) and 0 < self.rtol < 1):
            raise ValueError(f"sparse-lu rtol must be in (0, 1), got {self.rtol!r}")
        if not isinstance(self.refine, int) or isinstance(self.refine, bool) or self.refine < 0:
            raise ValueError(f"sparse-lu refine must be an integer >= 0, got {self.refine!r}")

    def bind(self, problem, theta: dict) -> "SparseLU":
        """Take the problem's declared pattern; ValueError (one line) when it has none or has a
        gauge (the deflated operator P A P + Q Q^T is not sparse)."""
        n = sum(v.numel() for v in theta.values())
        pattern = problem.hessian_pattern(theta)
        if pattern is None:
            raise ValueError(f"[krylov] name = \"sparse-lu\" needs a problem that declares its Hessian's sparsity "
                             f"(EnergyProblem(sparsity=...), `sparsity = \"module:function\"` in [problem]); "
                             f"{problem.name!r} declares none")
        if problem.gauge_directions(theta):
            raise ValueError(f"[krylov] name = \"sparse-lu\" does not deflate gauge directions; {problem.name!r} has "
                             f"them (use minres)")
        self._pattern = as_pattern(pattern, n, f"the sparsity of {problem.name!r}")
        return self

    # -- the factorisation of the operator at hand -------------------------------------------------
    def matrix(self, matvec: Callable, like: torch.Tensor):
        """(A, factors or None) for this operator: cached while the same operator object is used."""
        if self.pattern is None:
            raise ValueError("sparse-lu has no sparsity pattern: bind(problem, theta) first (the stepper does)")
        if matvec is not self._op and not _same_point(matvec, self._op):
            A = self.pattern.hessian(matvec, like)
            self._assembly_hvps += self.pattern.ncolours
            self._fresh = self.pattern.ncolours
            self._op, self._A, self._norm = matvec, A, float(sla.norm(A))
            self._lu = _factor(A, self.pattern.bandwidth)
            self._factorisations += 1
        return self._A, self._lu

    def _spent(self) -> int:
        out, self._fresh = self._fresh, 0
        return out

    def _result(self, apply, rhs: torch.Tensor, z: np.ndarray, norm_op: float, spent: int) -> KrylovResult:
        """The true residual (one product of `apply`) and the backward-error test (module docstring)."""
        x = torch.as_tensor(z, dtype=rhs.dtype, device=rhs.device)
        r = rhs - apply(x)
        res = float(torch.linalg.vector_norm(r))
        bnorm = float(torch.linalg.vector_norm(rhs))
        eta = res / (norm_op * float(torch.linalg.vector_norm(x)) + bnorm) if res > 0 else 0.0
        ok = bool(np.isfinite(z).all()) and eta <= self.rtol
        return DirectResult(x, spent + 1, res, res / bnorm if bnorm > 0 else res, ok,
                            "converged" if ok else "inaccurate", backward_error=eta)

    def solve(self, matvec: Callable, b: torch.Tensor, x0=None) -> KrylovResult:
        """A x = b (x0 is ignored: the factors need no start)."""
        A, lu = self.matrix(matvec, b)
        spent = self._spent()
        if lu is None:
            return KrylovResult(torch.zeros_like(b), spent, float(b.norm()), 1.0, False, "singular")
        bn = _np(b)
        x = lu.solve(bn)
        tol = 0.1 * self.rtol * (self._norm * np.linalg.norm(x) + np.linalg.norm(bn))
        for _ in range(self.refine):
            r = bn - A @ x
            if np.linalg.norm(r) <= tol:
                break
            x = x + lu.solve(r)
        return self._result(matvec, b, x, self._norm, spent)

    def solve_bordered(self, matvec: Callable, b, c, d: float, f, g: float, deflation=None):
        """[[A, -b], [c^T, d]] [y; q] = [f; g] on A's factors (module docstring): (y, q, KrylovResult)."""
        if deflation is not None:
            raise ValueError("sparse-lu does not deflate gauge directions (use minres)")
        A, lu = self.matrix(matvec, b)
        spent = self._spent()
        n = b.numel()
        bn, cn, fn, d = _np(b), _np(c), _np(f), float(d)

        def apply(z):  # the bordered matrix B times z, on the assembled A
            return np.concatenate([A @ z[:n] - bn * z[n], [cn @ z[:n] + d * z[n]]])

        norm_B = math.sqrt(self._norm ** 2 + bn @ bn + cn @ cn + d * d)  # ||B||_F
        rhs = np.concatenate([fn, [float(g)]])
        if lu is not None:
            z2 = lu.solve(bn)
            den = float(d) + cn @ z2

            def lemma(r):
                z1 = lu.solve(r[:n])
                q = (r[n] - cn @ z1) / den
                return np.concatenate([z1 + q * z2, [q]])
        if lu is None or not np.isfinite(den) or den == 0.0:  # A singular to SuperLU: factor the bordered matrix
            LB = sla.splu(sp.bmat([[A, sp.csc_matrix(-bn[:, None])], [sp.csr_matrix(cn[None, :]), np.array([[d]])]],
                                  format="csc"))
            self._factorisations += 1
            lemma = LB.solve
        z = lemma(rhs)
        tol = 0.1 * self.rtol * (norm_B * np.linalg.norm(z) + np.linalg.norm(rhs))
        for _ in range(self.refine):
            r = rhs - apply(z)
            if np.linalg.norm(r) <= tol:
                break
            z = z + lemma(r)
        full = torch.cat([f, torch.as_tensor([g], dtype=f.dtype, device=f.device)])

        def bordered(w):  # [A y - b q; c . y + d q] with the true A (solvers/bordered.py bordered_operator)
            y, q = w[:n], w[n]
            return torch.cat([matvec(y) - b * q, (torch.dot(c, y) + d * q).reshape(1)])

        res = self._result(bordered, full, z, norm_B, spent)
        return res.x[:n], res.x[n], res

    def lowest_eigenpairs(self, matvec: Callable, like: torch.Tensor, k: int, tol: float = 1e-9,
                          start: np.ndarray | None = None):
        """(values (k,) ascending, vectors (n, k), products spent, converged) of the k lowest
        eigenpairs of A (module docstring): block LOBPCG on the assembled A, preconditioned by the
        factors of A - sigma I with sigma below Gershgorin's bound (shift-and-invert as a
        preconditioner: the iteration is then a block inverse iteration, a few steps), the block k + 3
        wide so that an eigenvalue of multiplicity up to 4 at the k-th is found whole (single-vector
        Lanczos, ARPACK's, finds one copy of a double eigenvalue: 2-D Bratu's second and third).
        start: (n, j) vectors to start from (the previous point's). tol: the residual norms relative
        to ||A||_1. Below 5 (k + 3) unknowns (LOBPCG's limit), numpy's dense eigh."""
        A, _ = self.matrix(matvec, like)
        spent = self._spent()
        n = A.shape[0]
        m = k + 3
        if n < 5 * m:
            vals, V = np.linalg.eigh(A.toarray())
            return vals[:k], V[:, :k], spent, True
        sigma = below(gershgorin_lower_bound(A), A)
        lu = _factor((A - sigma * sp.identity(n, format="csc")).tocsc(), self.pattern.bandwidth)
        self._factorisations += 1
        M = sla.LinearOperator((n, n), matvec=lu.solve, matmat=lu.solve, dtype=np.float64)
        X = np.random.default_rng(0).standard_normal((n, m))  # a fixed start: the same spectrum on a rerun
        if start is not None:
            j = min(start.shape[1], m)
            X[:, :j] = start[:, :j] + 1e-3 * X[:, :j] / math.sqrt(n)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            vals, V = sla.lobpcg(A, X, M=M, tol=tol * sla.norm(A, 1), maxiter=100, largest=False)
        converged = not any("not reach" in str(w.message) or "failed" in str(w.message) for w in caught)
        order = np.argsort(vals)[:k]
        return vals[order], V[:, order], spent, converged
