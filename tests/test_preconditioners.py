"""The spectral preconditioner (solvers/preconditioners.py) against an ill-conditioned matrix
whose spectrum has a few large outliers above a bulk, as a network Hessian has: each
preconditioned solve (CG, MINRES, GMRES, trust-region CG) needs fewer products and gives the same
answer to the solve's tolerance (checked against a dense solve)."""

import pytest
import torch

from solvers.krylov import CG, GMRES, MINRES
from solvers.preconditioners import Spectral, make_preconditioner
from solvers.trust_region import TrustRegionNewton


def outlier_matrix(n=300, outliers=10, seed=0, indefinite=False):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    bulk = torch.logspace(-2, 0, n - outliers, dtype=torch.float64)
    if indefinite:
        bulk[:5] = -bulk[:5] - 0.5
    top = torch.logspace(2, 4, outliers, dtype=torch.float64)  # condition 1e6; 1e4 once the outliers are gone
    l = torch.cat([bulk, top])
    return (Q * l) @ Q.T, torch.randn(n, generator=g, dtype=torch.float64)


def test_spectral_preconditioner_is_the_inverse_on_the_kept_eigenvectors():
    A, _ = outlier_matrix()
    M = Spectral(rank=10, tol=1e-10)
    M.ready_for(lambda v: A @ v, torch.zeros(300, dtype=torch.float64))
    l, V = torch.linalg.eigh(A)
    top = V[:, -10:]
    assert torch.allclose(M.apply(A @ top), top, atol=1e-8)  # M^-1 A v = v on the kept eigenvectors
    assert abs(M.sigma - float(l[-10])) < 1e-8 * float(l[-1])
    P = torch.stack([M.apply(e) for e in torch.eye(300, dtype=torch.float64)])
    assert torch.allclose(P, P.T, atol=1e-12) and float(torch.linalg.eigvalsh(P)[0]) > 0  # symmetric positive definite
    assert 0 < M.build_products < 200


@pytest.mark.parametrize("solver", ["cg", "minres", "gmres"])
def test_preconditioned_krylov_needs_fewer_products_and_gives_the_same_solution(solver):
    A, b = outlier_matrix()
    exact = torch.linalg.solve(A, b)
    mv = lambda v: A @ v  # noqa: E731
    # GMRES restarted every 20 (unrestarted GMRES, optimal over the whole Krylov space, steps over a
    # few outliers by itself)
    cls = {"cg": CG, "minres": MINRES, "gmres": lambda **kw: GMRES(restart=20, **kw)}[solver]
    plain = cls(rtol=1e-8, maxiter=20000).solve(mv, b)
    M = Spectral(rank=10, refresh=0)
    pre = cls(rtol=1e-8, maxiter=20000, preconditioner=M).solve(mv, b)
    assert plain.converged and pre.converged
    assert pre.rel_residual <= 1e-7  # the true residual, not the preconditioned estimate
    for r in (plain, pre):  # the error bound: relative residual times cond(A) = 1e6
        assert float((r.x - exact).norm() / exact.norm()) < 1e-7 * 1e6
    # even counting the Lanczos products: half for CG and MINRES; for GMRES(20), fewer (267 -> 135 + 22)
    assert pre.iters + M.build_products < (1.0 if solver == "gmres" else 0.5) * plain.iters
    # preconditioned, the solve reaches 1e-10 in the true residual
    tight = cls(rtol=1e-10, maxiter=20000, preconditioner=M).solve(mv, b)
    assert tight.converged and tight.rel_residual <= 1e-9
    assert float((tight.x - exact).norm() / exact.norm()) < 1e-9 * 1e6


def test_preconditioned_minres_on_an_indefinite_matrix():
    A, b = outlier_matrix(indefinite=True)
    exact = torch.linalg.solve(A, b)
    plain = MINRES(rtol=1e-8, maxiter=20000).solve(lambda v: A @ v, b)
    pre = MINRES(rtol=1e-8, maxiter=20000, preconditioner=Spectral(rank=10)).solve(lambda v: A @ v, b)
    assert plain.converged and pre.converged and pre.rel_residual <= 1e-7 and pre.iters < plain.iters
    assert float((pre.x - exact).norm() / exact.norm()) < 1e-2


def test_preconditioned_trust_region_reaches_the_same_minimum_with_fewer_products():
    A, b = outlier_matrix(n=200)
    c = torch.linspace(-1, 1, 200, dtype=torch.float64)

    def f(x, mu):  # a convex quartic: the minimum is unique
        return 0.5 * x @ (A @ x) - b @ x + 0.25 * ((x - c) ** 4).sum()

    x0 = torch.zeros(200, dtype=torch.float64)
    mu = torch.zeros(3, dtype=torch.float64)
    plain = TrustRegionNewton(gtol=1e-10, maxiter=200).solve(f, x0, mu)
    pre = TrustRegionNewton(gtol=1e-10, maxiter=200, preconditioner=Spectral(rank=10, refresh=0)).solve(f, x0, mu)
    assert plain.converged and pre.converged
    assert float((pre.x - plain.x).norm() / plain.x.norm()) < 1e-8
    assert pre.hvps < plain.hvps


def test_bad_preconditioner_options_are_one_line():
    with pytest.raises(ValueError, match="unknown preconditioner 'ekfac'; valid: spectral, amg, kfac"):
        make_preconditioner("ekfac")
    with pytest.raises(ValueError, match="rank must be an integer >= 1"):
        Spectral(rank=0)
    with pytest.raises(ValueError, match=r"tol must be in \(0, 1\)"):
        Spectral(tol=2.0)
