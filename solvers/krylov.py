"""Krylov solvers for A v = b with A symmetric, given only as a matrix-vector product.

Torch-native (so they run where the model runs, CPU or GPU); checked against scipy in tests.

- `CG`: conjugate gradients. For A positive (semi)definite with b in range(A). Stops with
  status "negative_curvature" the moment it meets p^T A p <= 0, so an indefinite A is reported,
  never silently "solved". Cost: one matvec per iteration.
- `MINRES`: minimum residual (Paige & Saunders 1975). For any symmetric A: indefinite, or
  singular with b in range(A). On a singular A with b outside range(A) there is no solution:
  it stops with status "least_squares" (||A r|| small) or "singular" (the projected system
  became singular to working precision, where plain MINRES would return a huge x), not
  converged, with the true nonzero residual. Cost: one matvec per iteration, plus one to
  measure the true residual at the end.

- `GMRES`: generalised minimum residual (Saad & Schultz 1986), restarted, for a general
  (nonsymmetric) square operator such as the bordered matrices of pseudo-arclength
  continuation (solvers/bordered.py). Modified Gram-Schmidt Arnoldi with one
  reorthogonalisation, Givens rotations on the Hessenberg matrix. Cost: one matvec per
  iteration, one per restart and one for the final residual; memory `restart` vectors.

All start from zero by default, so on a singular but consistent system (the gauge zero modes
of a network Hessian) the iterates stay in range(A) and converge to the minimum-norm solution.
Each returns a `KrylovResult`: a failure is a value with a status, not an exception.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch


# the relative residual every solver stops at unless told otherwise, from Python and from TOML alike:
# float64 tangents of the analytic problems agree with their closed forms to 1e-12 at this tolerance
RTOL = 1e-12


@dataclass
class KrylovResult:
    x: torch.Tensor
    iters: int  # matrix-vector products spent, including the final residual check
    residual: float  # ||b - A x|| (true residual, recomputed at the end)
    rel_residual: float  # residual / ||b||
    converged: bool
    status: str  # "converged", "max_iters", "negative_curvature", "least_squares", "singular", "inaccurate"
    curvature: float = math.nan  # CG: the Rayleigh quotient p^T A p / p^T p where it met negative curvature

    def message(self) -> str:
        return (f"{self.status} after {self.iters} matvecs, "
                f"relative residual {self.rel_residual:.3e}")


def _finish(matvec, b, x, iters, bnorm, rtol, status, curvature=math.nan):
    """Measure the true residual; the status becomes "converged" only if it meets the tolerance.

    A recurrence that claimed convergence but whose true residual exceeds 10 rtol (rounding
    drift) is reported "inaccurate"; other failure statuses are kept.
    """
    r = b - matvec(x)
    res = float(torch.linalg.vector_norm(r))
    rel = res / bnorm if bnorm > 0 else res
    if status != "negative_curvature":
        if rel <= 10 * rtol:
            status = "converged"
        elif status == "converged":
            status = "inaccurate"
    return KrylovResult(x, iters + 1, res, rel, status == "converged", status, curvature)


@dataclass
class CG:
    """Conjugate gradients on (A + damping I) x = b, preconditioned by M^-1 ~ A^-1 when
    `preconditioner` is given (solvers/preconditioners.py; Saad, Iterative Methods, Alg. 9.1).
    Stops on negative curvature. The stopping test is on the true-norm residual recurrence."""

    rtol: float = RTOL
    maxiter: int | None = None  # default: 2 N
    damping: float = 0.0
    preconditioner: object | None = None
    name: ClassVar[str] = "cg"

    def solve(self, matvec: Callable, b: torch.Tensor, x0: torch.Tensor | None = None) -> KrylovResult:
        op = matvec if self.damping == 0 else _with_point(lambda v: matvec(v) + self.damping * v, matvec)
        maxiter = self.maxiter or 2 * b.numel()
        bnorm = float(torch.linalg.vector_norm(b))
        x = torch.zeros_like(b) if x0 is None else x0.clone()
        if bnorm == 0.0:
            return KrylovResult(torch.zeros_like(b), 0, 0.0, 0.0, True, "converged")
        M = _prepared(self.preconditioner, op, b)
        r = b - op(x) if x0 is not None else b.clone()
        z = r if M is None else M.apply(r)
        p = z.clone()
        rz = torch.dot(r, z)
        tol2 = (self.rtol * bnorm) ** 2
        status = "max_iters"
        curvature = math.nan
        it = 0
        for it in range(1, maxiter + 1):
            Ap = op(p)
            pAp = torch.dot(p, Ap)
            if pAp <= 0:
                status = "negative_curvature"
                curvature = float(pAp / torch.dot(p, p))
                break
            alpha = rz / pAp
            x = x + alpha * p
            r = r - alpha * Ap
            if torch.dot(r, r) <= tol2:
                status = "converged"
                break
            z = r if M is None else M.apply(r)
            rz_new = torch.dot(r, z)
            p = z + (rz_new / rz) * p
            rz = rz_new
        return _finish(op, b, x, it, bnorm, self.rtol, status, curvature)


def _mnorm(r, y, M) -> float:
    """sqrt(r . M^-1 r) with y = M^-1 r; without M the Euclidean norm exactly as before (the same
    rounding: a stochastic route amplifies an ulp of its tangents into a different path)."""
    if M is None:
        return float(torch.linalg.vector_norm(r))
    return math.sqrt(max(float(torch.dot(r, y)), 0.0))


def _with_point(op: Callable, matvec: Callable) -> Callable:
    """`op` (A shifted or damped) carrying A's `.point` (x, mu), for a preconditioner built at the
    operator's point (KFAC)."""
    point = getattr(matvec, "point", None)
    if point is not None:
        op.point = point
    return op


def _prepared(preconditioner, op, b):
    """The preconditioner ready for this operator (built or refreshed from its products), or None."""
    return None if preconditioner is None else preconditioner.ready_for(op, b)


@dataclass
class MINRES:
    """MINRES on (A - shift I) x = b for symmetric, possibly indefinite or singular A;
    preconditioned by a symmetric positive definite M^-1 when `preconditioner` is given (as
    scipy.sparse.linalg.minres's M). Preconditioned, the recurrences estimate the residual in the
    M^-1-norm; a solve whose estimate met rtol but whose true residual did not is continued from
    its x with the estimate's target tightened (at most `restarts` times), so "converged" always
    means the true relative residual <= rtol (to the factor 10 of `_finish`)."""

    rtol: float = RTOL
    maxiter: int | None = None  # default: 5 N
    shift: float = 0.0
    preconditioner: object | None = None
    restarts: ClassVar[int] = 3
    name: ClassVar[str] = "minres"

    def solve(self, matvec: Callable, b: torch.Tensor, x0: torch.Tensor | None = None) -> KrylovResult:
        op = matvec if self.shift == 0 else _with_point(lambda v: matvec(v) - self.shift * v, matvec)
        M = _prepared(self.preconditioner, op, b)
        maxiter = self.maxiter or 5 * b.numel()
        bnorm = float(torch.linalg.vector_norm(b))
        if bnorm == 0.0:
            return KrylovResult(torch.zeros_like(b) if x0 is None else x0.clone(), 0, 0.0, 0.0, True, "converged")
        target, spent, x = self.rtol, 0, x0
        for attempt in range(self.restarts + 1 if M is not None else 1):
            # without M the stop test is relative to |b| (x0 or not), as it always was
            x, it, status = self._iterate(op, M, b, x, target, maxiter - spent, bnorm if M is None else None)
            spent += it + (attempt > 0)  # a restart's first residual is a product
            res = _finish(op, b, x, spent, bnorm, self.rtol, status)
            if M is None or res.converged or status != "converged" or spent >= maxiter:
                return res
            spent += 1  # the residual check's product
            # the estimate was optimistic: go on from x to 0.5 rtol |b| in the true norm, relative
            # to the residual it starts from
            target = min(0.5, 0.5 * self.rtol * bnorm / max(res.residual, 1e-300))
        return res

    def _iterate(self, op, M, b, x0, rtol, maxiter, scale=None):
        """Paige & Saunders' recurrences from x0 (None: 0) to the estimated residual rtol times
        `scale` (None: the starting residual's M^-1-norm); returns (x, products, status)."""
        eps = torch.finfo(b.dtype).eps
        x = torch.zeros_like(b) if x0 is None else x0.clone()
        r1 = b - op(x) if x0 is not None else b.clone()
        y = r1 if M is None else M.apply(r1)
        beta1 = _mnorm(r1, y, M)
        bnorm = beta1 if scale is None else scale
        if beta1 == 0.0:
            return x, 0, "converged"
        # Lanczos + QR recurrences, as in Paige & Saunders (and scipy.sparse.linalg.minres).
        oldb, beta, dbar, epsln, phibar = 0.0, beta1, 0.0, 0.0, beta1
        cs, sn = -1.0, 0.0
        tnorm2 = 0.0
        w = torch.zeros_like(b)
        w2 = torch.zeros_like(b)
        r2 = r1
        status = "max_iters"
        it = 0
        for it in range(1, maxiter + 1):
            v = y / beta
            y = op(v)
            if it >= 2:
                y = y - (beta / oldb) * r1
            alfa = float(torch.dot(v, y))
            y = y - (alfa / beta) * r2
            r1, r2 = r2, y
            if M is not None:
                y = M.apply(r2)
            oldb, beta = beta, _mnorm(r2, y, M)
            tnorm2 += alfa**2 + oldb**2 + beta**2
            oldeps = epsln
            delta = cs * dbar + sn * alfa
            gbar = sn * dbar - cs * alfa
            epsln = sn * beta
            dbar = -cs * beta
            root = math.hypot(gbar, dbar)
            gamma = math.hypot(gbar, beta)
            if gamma <= 1e3 * eps * math.sqrt(tnorm2):
                # The projected system is singular to working precision (A singular, b not in
                # its range): the next update would blow x up. Keep x and say so.
                status = "singular"
                break
            cs, sn = gbar / gamma, beta / gamma
            phi = cs * phibar
            phibar = sn * phibar
            w1, w2 = w2, w
            w = (v - oldeps * w1 - delta * w2) / gamma
            x = x + phi * w
            anorm = math.sqrt(tnorm2)
            rnorm = phibar
            arnorm = phibar * root  # ||A r|| estimate: zero at a least-squares solution
            if rnorm <= rtol * bnorm:
                status = "converged"
                break
            if arnorm <= rtol * anorm * max(rnorm, eps * bnorm):  # scale-free: a tiny b (1e-21 at a trivial
                # branch) had met an absolute eps floor and stopped as "least_squares" at rnorm 1e-8 of b
                status = "least_squares"
                break
            if beta <= eps * anorm:  # Lanczos found an invariant subspace: nothing more to gain
                status = "breakdown"
                break
        if status == "breakdown":  # the Krylov space is exhausted: x is its least-squares solution
            status = "least_squares"
        return x, it, status


@dataclass
class GMRES:
    """Restarted GMRES(restart) on A x = b for any square A given as a matvec; right-preconditioned
    by M^-1 ~ A^-1 when `preconditioner` is given (Arnoldi on A M^-1, x = x0 + M^-1 V y: Saad,
    Iterative Methods, section 9.3.2), so that the residual it minimises and tests is the true one."""

    rtol: float = RTOL
    maxiter: int | None = None  # matvecs in all; default: 2 N
    restart: int | None = None  # Krylov dimension per cycle; default: min(N, 200)
    preconditioner: object | None = None
    name: ClassVar[str] = "gmres"

    def solve(self, matvec: Callable, b: torch.Tensor, x0: torch.Tensor | None = None) -> KrylovResult:
        M = _prepared(self.preconditioner, matvec, b)
        precondition = (lambda v: v) if M is None else M.apply  # noqa: E731
        n = b.numel()
        maxiter = self.maxiter or 2 * n
        m = max(1, min(self.restart or 200, n))
        bnorm = float(torch.linalg.vector_norm(b))
        x = torch.zeros_like(b) if x0 is None else x0.clone()
        if bnorm == 0.0 and x0 is None:
            return KrylovResult(x, 0, 0.0, 0.0, True, "converged")
        target = self.rtol * bnorm
        it, status = 0, "max_iters"
        while it < maxiter:
            if it == 0 and x0 is None:
                r = b.clone()
            else:
                r = b - matvec(x)
                it += 1
            beta = float(torch.linalg.vector_norm(r))
            if beta <= target:
                status = "converged"
                break
            V = [r / beta]
            H = [[0.0] * m for _ in range(m + 1)]  # H[i][k]
            cs, sn, g = [0.0] * m, [0.0] * m, [beta] + [0.0] * m
            k_done, breakdown = 0, False
            for k in range(m):
                w = matvec(precondition(V[k]))
                it += 1
                for _ in range(2):  # Gram-Schmidt twice: orthogonality to working precision
                    for j in range(k + 1):
                        h = float(torch.dot(V[j], w))
                        H[j][k] += h
                        w = w - h * V[j]
                hn = float(torch.linalg.vector_norm(w))
                H[k + 1][k] = hn
                for j in range(k):  # previous rotations on the new column
                    a, c = H[j][k], H[j + 1][k]
                    H[j][k], H[j + 1][k] = cs[j] * a + sn[j] * c, -sn[j] * a + cs[j] * c
                a, c = H[k][k], H[k + 1][k]
                d = math.hypot(a, c)
                cs[k], sn[k] = (1.0, 0.0) if d == 0 else (a / d, c / d)
                H[k][k], H[k + 1][k] = d, 0.0
                g[k], g[k + 1] = cs[k] * g[k], -sn[k] * g[k]
                k_done = k + 1
                breakdown = hn <= 1e3 * torch.finfo(b.dtype).eps * beta
                if abs(g[k + 1]) <= target or breakdown or it >= maxiter:
                    break
                V.append(w / hn)
            y = [0.0] * k_done  # back substitution on the rotated (upper triangular) H
            for i in reversed(range(k_done)):
                acc = g[i] - sum(H[i][j] * y[j] for j in range(i + 1, k_done))
                y[i] = acc / H[i][i] if H[i][i] != 0 else 0.0
            if M is None:  # x += V y in this order: the unpreconditioned rounding as it always was
                for j in range(k_done):
                    x = x + y[j] * V[j]
            elif k_done:
                x = x + M.apply(sum(y[j] * V[j] for j in range(k_done)))
            if abs(g[k_done]) <= target:
                status = "converged"
                break
            if breakdown:  # an invariant subspace without the solution: A singular along b
                status = "singular"
                break
        return _finish(matvec, b, x, it, max(bnorm, 1e-300), self.rtol, status)


@dataclass
class Dense:
    """Direct solve of A x = b for small problems, exact to rounding whatever A's conditioning:
    A assembled from N products A e_i (in vmapped blocks of `block` rows when the operator has
    `.block(V)`, as the engine's counted Hessian does), symmetrised, and solved through its
    eigendecomposition, x = sum over |l_i| > rcond max|l| of v_i (v_i . b) / l_i (the
    minimum-norm least-squares solution where A is numerically singular: status
    "least_squares" unless the residual meets rtol). For problems whose Krylov solves do not
    converge in a useful number of products (a small network's Hessian, condition ~1e6);
    Krylov methods with a preconditioner are what scales. Cost: N + 1 HVPs and O(N^3) flops
    per solve; ValueError above max_size parameters."""

    rtol: float = RTOL
    max_size: int = 4000
    block: int = 128
    rcond: float = 1e-14

    def solve(self, matvec: Callable, b: torch.Tensor, x0=None) -> KrylovResult:
        n = b.numel()
        if n > self.max_size:
            raise ValueError(f"the dense solver assembles A from {n} products; that is above its max_size = "
                             f"{self.max_size} (use minres or cg, or raise max_size)")
        eye = torch.eye(n, dtype=b.dtype, device=b.device)
        if callable(getattr(matvec, "block", None)):
            A = torch.cat([matvec.block(eye[i: i + self.block]) for i in range(0, n, self.block)])
        else:
            A = torch.stack([matvec(eye[i]) for i in range(n)])
        l, V = torch.linalg.eigh(0.5 * (A + A.T))
        keep = l.abs() > self.rcond * float(l.abs().max())
        x = V[:, keep] @ ((V[:, keep].T @ b) / l[keep])
        bnorm = float(torch.linalg.vector_norm(b))
        return _finish(matvec, b, x, n, max(bnorm, 1e-300), self.rtol,
                       "converged" if bool(keep.all()) else "least_squares")


KRYLOV_SOLVERS = {"cg": CG, "minres": MINRES, "dense": Dense}  # and "sparse-lu", added by solvers/__init__.py


def make_krylov(name: str, **options):
    """Build a Krylov solver by name (for configs); unknown names list the valid ones."""
    try:
        cls = KRYLOV_SOLVERS[name]
    except KeyError:
        raise ValueError(f"unknown Krylov solver {name!r}; valid: {', '.join(KRYLOV_SOLVERS)}") from None
    return cls(**options)
