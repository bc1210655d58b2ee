"""Preconditioners for the Krylov solves of a symmetric operator A given only by products A v.

A preconditioner here is a symmetric positive definite M^-1 ~ A^-1 (applied as `apply(r)`),
built from A's products by `build(matvec, like)`; the Krylov solvers take one as their
`preconditioner` field (solvers/krylov.py: CG and MINRES run their preconditioned forms;
solvers/trust_region.py measures its trust region in the M-norm, Nocedal & Wright section 7.2).
A solve with a preconditioner converges to the same x (the residual test is on the true
residual b - A x); only the number of products changes.

- `Spectral(rank)`: the limited-memory spectral preconditioner (Giraud & Gratton, SIAM J. Sci.
  Comput. 27 (2006); Tshimanga et al., Q. J. R. Meteorol. Soc. 134 (2008)). From the `rank`
  largest eigenpairs (l_i, v_i) of A, by Lanczos (scipy.sparse.linalg.eigsh, ARPACK, on a
  LinearOperator):

      M^-1 = V diag(1 / l_i) V^T + (I - V V^T) / sigma,        sigma = l_rank (the smallest kept)

  The preconditioned operator has the kept eigenvalues at 1 and the rest divided by sigma, so
  its condition number is l_rank / l_min against l_max / l_min: the gain is l_max / l_rank. It
  pays where the spectrum has a few large outliers above a bulk, as a network Hessian has
  (Sagun et al. 2017; Papyan 2019: about one outlier per class). M^-1 stays symmetric positive
  definite whatever A is, so it can be kept while A changes slowly (along a path); a stale one
  costs iterations, never accuracy. Cost to build: the Lanczos products (about 2-4 rank,
  reported as `build_products`); per application O(N rank) flops, no products.

- `AMG()`: algebraic multigrid for an energy with a sparse Hessian (a declared pattern,
  solvers/sparse.py): A assembled from its coloured HVPs, shifted to positive definite where
  Gershgorin's bound of its spectrum is below zero (A - sigma I with sigma a little below the
  bound: the preconditioner must be definite for MINRES, CG and LOBPCG, A need not be), then one
  V-cycle of pyamg's smoothed aggregation solver (Vanek, Mandel & Brezina 1996; pyamg,
  `smoothed_aggregation_solver(...).aspreconditioner()`) as M^-1. For a PDE energy the
  iterations then stop growing with N (h-independent); where the LU factors of `sparse-lu` fit
  in memory they are faster, AMG is for what does not fit. Cost to build: k HVPs (the colours)
  and the multigrid setup (O(nnz)); per application, one V-cycle (O(nnz) flops), no products.

Why our own: the eigenpairs are scipy's; what is ours is the 10 lines that turn them into
M^-1 on torch tensors (curvlinops' K-FAC needs a model and one of torch's loss modules, which
the rate-distortion-classification J is not).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, ClassVar

import numpy as np
import torch


def _check_refresh(refresh) -> None:
    if not isinstance(refresh, int) or isinstance(refresh, bool) or refresh < 0:
        raise ValueError(f"preconditioner refresh must be an integer >= 0, got {refresh!r}")


@dataclass
class Spectral:
    """M^-1 from the `rank` largest eigenpairs of A: for a spectrum with a few large outliers
    above a bulk (a network's Hessian).

    `tol`: ARPACK's relative
    accuracy of the eigenpairs (a preconditioner needs few digits). `refresh`: rebuild after
    this many solves (0: built once, at the first solve, and kept: M^-1 stays positive definite
    while A changes, so a stale one costs iterations, never accuracy; but a run resumed from a
    checkpoint builds anew there, so only refresh = 1, the default and what configuration files
    use, makes a resumed run repeat the uninterrupted one exactly)."""

    rank: int = 20
    tol: float = 1e-3
    refresh: int = 1
    name: ClassVar[str] = "spectral"
    eigensolver: ClassVar[bool] = False  # the bulk, where the lowest eigenvalues are, is only scaled
    # state, not options (settings_of skips names with "_"): the eigenpairs, sigma, the products
    # spent on builds so far, the solves since the last build
    _V: torch.Tensor | None = field(default=None, repr=False)
    _l: torch.Tensor | None = field(default=None, repr=False)
    _sigma: float = math.nan
    _products: int = 0
    _uses: int = 0

    @property
    def sigma(self) -> float:
        """l_rank, the scale the rest of the spectrum is divided by (nan before the first build)."""
        return self._sigma

    @property
    def build_products(self) -> int:
        """Products with A spent on builds since this object was made."""
        return self._products

    def __post_init__(self):
        if not isinstance(self.rank, int) or isinstance(self.rank, bool) or self.rank < 1:
            raise ValueError(f"preconditioner rank must be an integer >= 1, got {self.rank!r}")
        if not (isinstance(self.tol, (int, float)) and 0 < self.tol < 1):
            raise ValueError(f"preconditioner tol must be in (0, 1), got {self.tol!r}")
        _check_refresh(self.refresh)

    def ready_for(self, matvec: Callable, like: torch.Tensor) -> "Spectral":
        """Build from `matvec` if never built, the size changed, or `refresh` solves have used it."""
        stale = self._V is None or self._V.shape[0] != like.numel() or (self.refresh and self._uses >= self.refresh)
        if stale:
            self.build(matvec, like)
        self._uses += 1
        return self

    def build(self, matvec: Callable, like: torch.Tensor) -> None:
        """Lanczos (ARPACK) for the rank largest algebraic eigenpairs of the operator. Where fewer
        than rank are positive, only the positive ones are kept (M^-1 must stay definite); with
        none, M^-1 = I."""
        import scipy.sparse.linalg as sla

        n = like.numel()
        k = min(self.rank, n - 1)
        count = [0]

        def mv(v):
            count[0] += 1
            t = torch.as_tensor(np.ascontiguousarray(v).ravel(), dtype=like.dtype, device=like.device)
            return matvec(t).detach().cpu().numpy().astype(np.float64)

        op = sla.LinearOperator((n, n), matvec=mv, dtype=np.float64)
        if k < 1:
            l, V = np.ones(0), np.zeros((n, 0))
        else:
            v0 = np.random.default_rng(0).standard_normal(n)  # a fixed start: builds are reproducible
            l, V = sla.eigsh(op, k=k, which="LA", tol=self.tol, v0=v0, maxiter=max(1000, 20 * k))
        keep = l > 0
        l, V = l[keep], V[:, keep]
        self._products += count[0]
        self._l = torch.as_tensor(l, dtype=like.dtype, device=like.device)
        self._V = torch.as_tensor(V, dtype=like.dtype, device=like.device)
        self._sigma = float(l.min()) if l.size else 1.0
        self._uses = 0

    def apply(self, r: torch.Tensor) -> torch.Tensor:
        """M^-1 r (no products)."""
        c = self._V.T @ r
        return self._V @ (c / self._l) + (r - self._V @ c) / self._sigma


@dataclass
class AMG:
    """One algebraic-multigrid V-cycle (pyamg's smoothed aggregation) on A, assembled from coloured
    HVPs and shifted definite: for an energy that declares its sparsity (docs/energy.md), where the
    factors of sparse-lu would not fit.

    Needs the problem's sparsity pattern (`bind`, done by the stepper). `refresh`: rebuild after
    this many solves (1, the default: built for each solve from its own Hessian)."""

    refresh: int = 1
    name: ClassVar[str] = "amg"
    eigensolver: ClassVar[bool] = True  # an approximate inverse of A - shift I: preconditions LOBPCG too
    _pattern: object = field(default=None, repr=False)
    _M: object = field(default=None, repr=False)
    _shift: float = 0.0
    _products: int = 0
    _uses: int = 0

    def __post_init__(self):
        _check_refresh(self.refresh)

    @property
    def build_products(self) -> int:
        """Products with A (HVPs) spent on builds since this object was made."""
        return self._products

    @property
    def shift(self) -> float:
        """sigma of the last build (0 where A's Gershgorin bound was positive)."""
        return self._shift

    def bind(self, problem, theta: dict) -> "AMG":
        """Take the problem's sparsity pattern; ValueError (one line) when it declares none."""
        from solvers.sparse import as_pattern

        pattern = problem.hessian_pattern(theta)
        if pattern is None:
            raise ValueError(f"[krylov] preconditioner = \"amg\" needs a problem that declares its Hessian's "
                             f"sparsity (`sparsity = \"module:function\"` in [problem]); {problem.name!r} declares none")
        self._pattern = as_pattern(pattern, sum(v.numel() for v in theta.values()), f"the sparsity of {problem.name!r}")
        return self

    def ready_for(self, matvec: Callable, like: torch.Tensor) -> "AMG":
        stale = self._M is None or (self.refresh and self._uses >= self.refresh)
        if stale:
            self.build(matvec, like)
        self._uses += 1
        return self

    def build(self, matvec: Callable, like: torch.Tensor) -> None:
        import pyamg
        import scipy.sparse as sp

        from solvers.sparse import below, gershgorin_lower_bound

        if self._pattern is None:
            raise ValueError("the amg preconditioner has no sparsity pattern: bind(problem, theta) first (the "
                             "stepper does)")
        if self._pattern.n != like.numel():
            raise ValueError(f"the amg preconditioner's pattern has {self._pattern.n} parameters, the operator "
                             f"{like.numel()} (a deflated or bordered operator is not the declared Hessian)")
        A = self._pattern.hessian(matvec, like)
        self._products += self._pattern.ncolours
        low = gershgorin_lower_bound(A)
        self._shift = below(low, A) if low <= 0 else 0.0
        if self._shift:
            A = (A - self._shift * sp.identity(A.shape[0], format="csr")).tocsr()
        self._M = pyamg.smoothed_aggregation_solver(sp.csr_matrix(A), symmetry="symmetric").aspreconditioner(
            cycle="V")
        self._dtype, self._device = like.dtype, like.device
        self._uses = 0

    def apply(self, r: torch.Tensor) -> torch.Tensor:
        """M^-1 r: one V-cycle (no products)."""
        out = self._M @ r.detach().cpu().numpy().astype(np.float64)
        return torch.as_tensor(out, dtype=r.dtype, device=r.device)


@dataclass
class KFAC:
    """Kronecker-factored curvature (K-FAC) of a network's J: for the smooth deterministic MLP
    (`mlp-smooth`), whose Hessian has no sparsity to exploit and a spectrum spread over many
    decades (the layers' scales differ), so that a Krylov solve needs thousands of products
    unpreconditioned.

        M = blockdiag_l (A_l (x) G_l) + (w + damping) I,     M^-1 applied exactly

    with A_l, G_l the problem's K-FAC factors of its Gauss-Newton matrix at the operator's point
    (problems/smooth_network.py `curvature_factors`: Martens & Grosse 2015, Botev et al. 2017) and
    w the weight prior's exact Hessian (`curvature_shift`). From the eigendecompositions
    A = U_A diag(a) U_A^T, G = U_G diag(g) U_G^T, a layer's block [W | b] (out, in+1) maps to

        M^-1 : V -> U_G [ (U_G^T V U_A) / (g_j a_i + w + damping) ] U_A^T

    exactly the inverse of the damped Kronecker product (the eigenbasis form of George et al.
    2018, EKFAC, without its rescaling), symmetric positive definite whenever w + damping > 0.
    Parameters in no linear layer are scaled by 1 / (w + damping).

    Needs the problem (`bind`, done by the stepper) and an operator that knows its point
    (solvers/derivatives.py hessian_operator's `.point`). `draws`: 0 (the default) for the exact
    G factors, one backward pass per column of a square root of the loss Hessian in the outputs
    (2k + S (d + classes): 164 on the digits MLP), else that many Monte Carlo draws (one backward
    pass each; noisy where the training set is small: on a 32-image model one draw made the
    solves slower than none, docs/neural_equilibrium.md). Cost to build: one forward and those
    backward passes over the training set (no HVPs; `build_products` stays 0) and the
    eigendecompositions of the factors (O(in^3 + out^3) a layer); per application two small
    matrix products a layer (no products with A). `refresh`: rebuild after this many solves
    (1, the default and what configurations use: each solve at its own point).

    Why our own: curvlinops' KFACLinearOperator needs the model to end in one of torch's loss
    modules (MSELoss, CrossEntropyLoss); J's rate term and the reparameterised encoder that feeds
    both heads are not, and its GGN needs the three networks' outputs treated together."""

    damping: float = 0.0
    draws: int = 0
    refresh: int = 1
    name: ClassVar[str] = "kfac"
    eigensolver: ClassVar[bool] = False  # approximates the Gauss-Newton part, not the lowest eigenvalues
    _problem: object = field(default=None, repr=False)
    _index: object = field(default=None, repr=False)
    _blocks: list = field(default_factory=list, repr=False)
    _rest: object = field(default=None, repr=False)
    _shift: float = math.nan
    _uses: int = 0
    _builds: int = 0

    def __post_init__(self):
        if not (isinstance(self.damping, (int, float)) and not isinstance(self.damping, bool)
                and math.isfinite(self.damping) and self.damping >= 0):
            raise ValueError(f"preconditioner damping must be a finite number >= 0, got {self.damping!r}")
        if not isinstance(self.draws, int) or isinstance(self.draws, bool) or self.draws < 0:
            raise ValueError(f"preconditioner draws must be an integer >= 0 (0: exact factors), got {self.draws!r}")
        _check_refresh(self.refresh)

    @property
    def build_products(self) -> int:
        """Products with A spent on builds: none (the factors come from forward and backward passes)."""
        return 0

    @property
    def builds(self) -> int:
        """Factorisations built since this object was made."""
        return self._builds

    @property
    def shift(self) -> float:
        """w + damping, the diagonal added to the Kronecker blocks (nan before the first build)."""
        return self._shift

    def bind(self, problem, theta: dict) -> "KFAC":
        """Take the problem (its curvature factors) and the parameters' layout; ValueError (one line)
        for a problem without K-FAC factors or where w + damping is not > 0."""
        from solvers.flat import FlatView

        if not getattr(problem, "kfac", False) or not callable(getattr(problem, "curvature_factors", None)):
            why = getattr(problem, "kfac_refusal", "")
            raise ValueError(f"[krylov] preconditioner = \"kfac\" needs a network problem with K-FAC factors "
                             f"(mlp-smooth); {problem.name!r} has none{': ' + why if why else ''}")
        shift = float(getattr(problem, "curvature_shift", 0.0)) + self.damping
        if not shift > 0:
            raise ValueError(f"[krylov] preconditioner = \"kfac\" needs weight_decay + preconditioner_damping > 0 "
                             f"(M must be definite); got {shift}")
        view = FlatView(theta)
        self._problem, self._view, self._shift = problem, view, shift
        self._index = view.unflatten(torch.arange(view.numel, device=view.device))
        return self

    def ready_for(self, matvec: Callable, like: torch.Tensor) -> "KFAC":
        stale = not self._blocks or (self.refresh and self._uses >= self.refresh)
        if stale:
            self.build(matvec, like)
        self._uses += 1
        return self

    def build(self, matvec: Callable, like: torch.Tensor) -> None:
        if self._problem is None:
            raise ValueError("the kfac preconditioner has no problem: bind(problem, theta) first (the stepper does)")
        point = getattr(matvec, "point", None)
        if point is None:
            raise ValueError("the kfac preconditioner needs the operator's point (a hessian_operator's `.point`)")
        x, mu = point
        if x.numel() != like.numel() or x.numel() != self._view.numel:
            raise ValueError(f"the kfac preconditioner's problem has {self._view.numel} parameters, the operator "
                             f"{like.numel()} (a deflated or bordered operator is not J's Hessian)")
        theta = self._view.unflatten(x.detach())
        blocks, covered = [], torch.zeros(x.numel(), dtype=torch.bool, device=x.device)
        for part, wname, bname, A, G in self._problem.curvature_factors(theta, mu, draws=self.draws):
            a, UA = torch.linalg.eigh(0.5 * (A + A.T))
            g, UG = torch.linalg.eigh(0.5 * (G + G.T))
            scale = g.clamp_min(0.0)[:, None] * a.clamp_min(0.0)[None, :]  # PSD to rounding
            wi = self._index[part][wname]
            bi = None if bname is None else self._index[part][bname]
            blocks.append((wi, bi, UA, UG, 1.0 / (scale + self._shift)))
            covered[wi.reshape(-1)] = True
            if bi is not None:
                covered[bi] = True
        self._blocks, self._rest = blocks, ~covered
        self._uses, self._builds = 0, self._builds + 1

    def apply(self, r: torch.Tensor) -> torch.Tensor:
        """M^-1 r (no products)."""
        out = torch.empty_like(r)
        out[self._rest] = r[self._rest] / self._shift
        for wi, bi, UA, UG, scale in self._blocks:
            V = r[wi]
            if bi is not None:
                V = torch.cat([V, r[bi][:, None]], 1)
            V = UG @ (((UG.T @ V @ UA) * scale) @ UA.T)
            if bi is not None:
                out[wi], out[bi] = V[:, :-1], V[:, -1]
            else:
                out[wi] = V
        return out


PRECONDITIONERS = {"spectral": Spectral, "amg": AMG, "kfac": KFAC}


def make_preconditioner(name: str, **options):
    """A preconditioner by name (`[krylov] preconditioner = ...`); unknown names list the valid ones."""
    try:
        cls = PRECONDITIONERS[name]
    except KeyError:
        raise ValueError(f"unknown preconditioner {name!r}; valid: {', '.join(PRECONDITIONERS)}") from None
    try:
        return cls(**options)
    except TypeError:
        raise ValueError(f"preconditioner {name!r} takes no options {', '.join(sorted(options))}") from None
