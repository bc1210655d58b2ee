"""Krylov solvers against dense linear algebra (numpy / scipy) on matrices with known structure."""

import numpy as np
import pytest
import scipy.sparse.linalg as spla
import torch

from solvers import CG, MINRES, make_krylov


def sym(eigs, seed=0):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((len(eigs), len(eigs))))
    return Q @ np.diag(eigs) @ Q.T, Q


def op(A):
    At = torch.tensor(A)
    return lambda v: At @ v


def test_cg_solves_spd_system():
    A, _ = sym(np.linspace(0.1, 10, 30))
    b = np.random.default_rng(1).standard_normal(30)
    res = CG(rtol=1e-12).solve(op(A), torch.tensor(b))
    assert res.converged and res.status == "converged"
    np.testing.assert_allclose(res.x.numpy(), np.linalg.solve(A, b), rtol=0, atol=1e-10)
    assert res.rel_residual <= 1e-11
    assert res.iters <= 2 * 30 + 1  # n steps in exact arithmetic; rounding costs a few more


def test_cg_reports_negative_curvature_on_indefinite_matrix():
    A, _ = sym(np.r_[np.linspace(0.5, 3, 9), -1.0])
    b = np.ones(10)
    res = CG().solve(op(A), torch.tensor(b))
    assert not res.converged and res.status == "negative_curvature"
    assert res.residual > 1e-3


def test_cg_damping_shifts_the_operator():
    A, _ = sym(np.linspace(-0.5, 3, 12))
    b = np.random.default_rng(2).standard_normal(12)
    res = CG(rtol=1e-12, damping=1.0).solve(op(A), torch.tensor(b))
    assert res.converged
    np.testing.assert_allclose(res.x.numpy(), np.linalg.solve(A + np.eye(12), b), atol=1e-10)


def test_minres_solves_indefinite_system_like_scipy():
    A, _ = sym(np.r_[np.linspace(-4, -0.3, 10), np.linspace(0.2, 5, 15)])
    b = np.random.default_rng(3).standard_normal(25)
    res = MINRES(rtol=1e-12).solve(op(A), torch.tensor(b))
    assert res.converged, res.message()
    exact = np.linalg.solve(A, b)
    np.testing.assert_allclose(res.x.numpy(), exact, atol=1e-9)
    ref, info = spla.minres(A, b, rtol=1e-12)
    assert info == 0
    np.testing.assert_allclose(res.x.numpy(), ref, atol=1e-8)


def test_minres_singular_consistent_gives_minimum_norm_solution():
    eigs = np.r_[0.0, 0.0, np.linspace(-2, 3, 10)]
    A, Q = sym(eigs)
    b = Q[:, 2:] @ np.random.default_rng(4).standard_normal(10)  # in range(A)
    res = MINRES(rtol=1e-12).solve(op(A), torch.tensor(b))
    assert res.converged
    np.testing.assert_allclose(res.x.numpy(), np.linalg.pinv(A) @ b, atol=1e-9)


def test_minres_singular_inconsistent_says_so():
    eigs = np.r_[0.0, np.linspace(-2, 3, 11)]
    A, Q = sym(eigs)
    b = Q @ np.r_[0.7, np.random.default_rng(5).standard_normal(11)]  # 0.7 along the null vector
    res = MINRES(rtol=1e-10).solve(op(A), torch.tensor(b))
    assert not res.converged and res.status in ("least_squares", "singular"), res.message()
    # the reported residual is the true one of the returned x, and at least the part of b
    # (0.7, along the null vector) that no x can reach
    assert res.residual == pytest.approx(np.linalg.norm(b - A @ res.x.numpy()), rel=1e-12)
    assert res.residual >= 0.7 * (1 - 1e-10)
    # x stays of the size of the least-squares solution; plain MINRES returns |x| ~ 1e12 here
    assert np.linalg.norm(res.x.numpy()) < 10 * np.linalg.norm(np.linalg.pinv(A) @ b)


def test_minres_reports_max_iters():
    A, _ = sym(np.linspace(1e-4, 1, 40))
    res = MINRES(rtol=1e-14, maxiter=3).solve(op(A), torch.ones(40, dtype=torch.float64))
    assert not res.converged and res.status == "max_iters"
    assert res.iters == 4


def test_zero_right_hand_side():
    A, _ = sym(np.linspace(1, 2, 5))
    for solver in (CG(), MINRES()):
        res = solver.solve(op(A), torch.zeros(5, dtype=torch.float64))
        assert res.converged and float(res.x.abs().max()) == 0.0


def test_make_krylov_names_valid_solvers():
    assert isinstance(make_krylov("minres", rtol=1e-3), MINRES)
    with pytest.raises(ValueError, match="valid: cg, minres"):
        make_krylov("gmres")


def test_minres_converges_on_a_tiny_right_hand_side():
    """The least-squares test is relative to ||b||: b of size 1e-21 (a tangent on a trivial branch at
    theta ~ 1e-20) converges like b itself; an absolute floor had stopped it as "least_squares" at a
    relative residual of 1e-8. The solution scales with b."""
    A, _ = sym(np.r_[np.linspace(-2, -0.1, 6), np.linspace(0.05, 3, 15)])
    b = np.random.default_rng(7).standard_normal(21)
    one = MINRES(rtol=1e-12).solve(op(A), torch.tensor(b))
    tiny = MINRES(rtol=1e-12).solve(op(A), torch.tensor(1e-21 * b))
    assert one.converged and tiny.converged, tiny.message()
    assert tiny.rel_residual <= 1e-11
    np.testing.assert_allclose(tiny.x.numpy() * 1e21, np.linalg.solve(A, b), rtol=0, atol=1e-9)
