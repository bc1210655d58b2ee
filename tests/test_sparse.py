"""Sparse Hessians from coloured HVPs and the direct solver on their factors (solvers/sparse.py),
through the fold of the Bratu problem at 10^4 unknowns.

Independent checks: the dense Hessian by torch.func (jacfwd of grad); numpy's dense solves and
eigh; the fold from a numpy/scipy-only Newton on the extended system (benchmarks/energy_scale.py,
`reference_fold`, which imports nothing of this project); the same fold by MINRES/GMRES.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from continuation import Output, continue_path
from continuation.apps.cli import main
from continuation.files.path import load_path
from continuation.singular.monitor import Monitor
from continuation.strategies.arclength import BorderedNewtonCorrector, PseudoArclength, PseudoArclengthPredictor
from continuation.strategies.step_control import AdaptiveSteps, StopRule
from problems import make_mu
from problems.bratu import bratu2d_energy, bratu2d_problem, bratu_energy, bratu_problem
from problems.energy import EnergyProblem
from continuation.singular.stability import lowest_eigenpairs
from continuation.surface.system import EquilibriumSystem
from solvers import GMRES, MINRES, SparseLU, dense_hessian, hessian_operator
from solvers.bordered import bordered_solve
from solvers.preconditioners import AMG
from solvers.sparse import HessianPattern, greedy_colouring

ROOT = Path(__file__).resolve().parents[1]


def _scale_benchmark():
    spec = importlib.util.spec_from_file_location("energy_scale", ROOT / "benchmarks" / "energy_scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- energies with known patterns ---------------------------------------------------------------------
def _banded2(theta, mu):
    u = theta["x"]
    return torch.cosh(u[2:] - u[:-2]).sum() + ((u[1:] - u[:-1]) ** 2 * u[1:] ** 2).sum() + mu[0] * torch.exp(u).sum()


def _stencil3d(theta, mu, shape=(3, 4, 5)):
    u = theta["x"].reshape(shape)
    out = mu[0] * torch.cos(u).sum()
    for k in range(3):
        d = torch.diff(u, dim=k)
        out = out + (d ** 4).sum() + (d ** 2).sum()
    return out


def _random_graph(n=40, m=70, seed=3):
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, n, m), rng.integers(0, n, m)
    keep = i != j
    return i[keep], j[keep], rng.uniform(0.5, 2.0, keep.sum())


def _graph_energy(theta, mu):
    i, j, w = _random_graph()
    u = theta["x"]
    wt = torch.as_tensor(w, dtype=u.dtype)
    return (wt * (u[i] * u[j]) ** 2).sum() / 2 + (wt * torch.sin(u[i] - u[j])).sum() + mu[0] * torch.cosh(u).sum()


def _graph_pattern(n=40):
    i, j, _ = _random_graph(n)
    return HessianPattern.from_coo(i, j, n)


CASES = {
    "banded": (_banded2, 30, lambda n: HessianPattern.banded(n, 2), 5),
    "stencil-2d": (bratu2d_energy, 49, lambda n: HessianPattern.stencil((7, 7)), 5),
    "stencil-3d": (_stencil3d, 60, lambda n: HessianPattern.stencil((3, 4, 5)), 7),
    "random": (_graph_energy, 40, _graph_pattern, None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_coloured_assembly_equals_the_dense_hessian(case):
    """A from k coloured HVPs equals torch.func's dense Hessian to rounding, with k the colours."""
    f, n, make, colours = CASES[case]
    torch.manual_seed(0)
    x = 0.5 * torch.randn(n, dtype=torch.float64)
    mu = make_mu(1.7, 1.0)
    g = lambda y, m: f({"x": y}, m)  # noqa: E731
    H = dense_hessian(g, x, mu).numpy()
    pattern = make(n)
    if colours is not None:
        assert pattern.ncolours == colours
    A = pattern.hessian(hessian_operator(g, x, mu), x).toarray()
    assert np.abs(A - H).max() <= 1e-13 * np.abs(H).max()
    assert np.count_nonzero(H) <= pattern.nnz  # the pattern covers every nonzero


def test_colourings_are_valid_and_an_invalid_one_is_refused():
    """Every pair of columns sharing a row has different colours (checked by brute force); the
    structured colourings use 2d + 1 colours; a wrong colouring is one ValueError line."""
    for pattern in [HessianPattern.banded(50, 1), HessianPattern.stencil((6, 9)), _graph_pattern(),
                    HessianPattern.from_matrix(sp.random(80, 80, density=0.05, random_state=1))]:
        P = sp.csr_matrix((np.ones(pattern.nnz), (pattern.rows, pattern.cols)), shape=(pattern.n, pattern.n))
        for i in range(pattern.n):
            cols = P.indices[P.indptr[i]:P.indptr[i + 1]]
            assert len(set(pattern.colours[cols])) == cols.size
    assert [HessianPattern.stencil(s).ncolours for s in [(20,), (5, 6), (3, 3, 3)]] == [3, 5, 7]
    assert greedy_colouring(sp.identity(5, format="csr")).max() == 0  # a diagonal Hessian: one product
    with pytest.raises(ValueError, match="colouring is not valid"):
        HessianPattern.from_coo([0, 1], [1, 2], 3, colours=[0, 1, 0])  # columns 0 and 2 share row 1


def _bratu_at(n, lam, seed=0):
    torch.manual_seed(seed)
    x = 0.3 * torch.rand(n, dtype=torch.float64)
    f = lambda y, m: bratu_energy({"x": y}, m)  # noqa: E731
    return f, x, make_mu(lam, 1.0)


def test_sparse_lu_solves_agree_with_dense_solves_near_singularity():
    """A x = b and the bordered system [[A, -b], [c, d]] agree with numpy's dense solves to what
    their condition numbers allow, on a Hessian within 1e-6 of singular (lambda tuned so)."""
    n = 60
    f, x, mu = _bratu_at(n, 1.0)
    H = dense_hessian(f, x, mu).numpy()
    # lambda such that the lowest eigenvalue of h (L - lambda diag e^u) is 1e-6 of the largest
    h = 1.0 / (n + 1)
    E = h * np.diag(np.exp(x.numpy()))
    L = H + E  # H at lambda = 1 is h L - E
    vals = np.linalg.eigvals(np.linalg.solve(E, L)).real
    lam = float(np.min(vals[vals > 0])) * (1 - 1e-6)
    mu = make_mu(lam, 1.0)
    H = dense_hessian(f, x, mu).numpy()
    solver = SparseLU().bind(bratu_problem(n), {"x": x})
    op = hessian_operator(f, x, mu)
    b = torch.randn(n, dtype=torch.float64)
    res = solver.solve(op, b)
    ref = np.linalg.solve(H, b.numpy())
    cond = np.linalg.cond(H)
    assert cond > 1e6 and res.converged and res.iters == 4  # 3 colours and the residual check
    assert np.linalg.norm(res.x.numpy() - ref) <= 1e-15 * cond * np.linalg.norm(ref) * 10
    c, bb = torch.randn(n, dtype=torch.float64), torch.randn(n, dtype=torch.float64)
    f_rhs, g, d = torch.randn(n, dtype=torch.float64), 0.7, 0.3
    y, q, r2 = solver.solve_bordered(op, bb, c, d, f_rhs, g)
    B = np.block([[H, -bb.numpy()[:, None]], [c.numpy()[None, :], np.array([[d]])]])
    z = np.linalg.solve(B, np.concatenate([f_rhs.numpy(), [g]]))
    assert r2.converged and r2.iters == 1  # the factors were reused: only the residual check
    zy = np.concatenate([y.numpy(), [float(q)]])
    assert np.linalg.norm(zy - z) <= 1e-15 * np.linalg.cond(B) * np.linalg.norm(z) * 10
    assert solver.factorisations == 1


def test_an_exactly_singular_hessian_is_bordered_by_factoring_the_bordered_matrix():
    """A = the Neumann Laplacian (constants in its kernel, SuperLU meets a zero pivot): A x = b is
    reported singular, not solved; the bordered system, nonsingular, is solved exactly."""
    n = 12

    def neumann(theta, mu):
        u = theta["x"]
        return 0.5 * ((u[1:] - u[:-1]) ** 2).sum()

    problem = EnergyProblem(neumann, {"x": torch.zeros(n, dtype=torch.float64)},
                            sparsity=lambda th: HessianPattern.banded(n, 1))
    x, mu = torch.zeros(n, dtype=torch.float64), make_mu(1.0, 1.0)
    solver = SparseLU().bind(problem, {"x": x})
    op = hessian_operator(lambda y, m: neumann({"x": y}, m), x, mu)
    assert solver.solve(op, torch.ones(n, dtype=torch.float64)).status == "singular"
    b, c = torch.zeros(n, dtype=torch.float64), torch.ones(n, dtype=torch.float64)
    b[0] = 1.0
    f = torch.linspace(-1, 1, n, dtype=torch.float64)
    y, q, res = solver.solve_bordered(op, b, c, 0.0, f, 2.0)
    H = dense_hessian(lambda y, m: neumann({"x": y}, m), x, mu).numpy()
    B = np.block([[H, -b.numpy()[:, None]], [c.numpy()[None, :], np.zeros((1, 1))]])
    z = np.linalg.solve(B, np.concatenate([f.numpy(), [2.0]]))
    assert res.converged and np.abs(np.concatenate([y.numpy(), [float(q)]]) - z).max() <= 1e-12 * np.abs(z).max()


def test_lowest_eigenpairs_by_shift_invert_match_eigh_on_an_indefinite_hessian():
    """The k lowest of an indefinite A (lambda past the lower branch's stability) against numpy's eigh."""
    n = 300
    f, x, mu = _bratu_at(n, 1.0, seed=1)
    x = x + 4.0 * torch.sin(math.pi * torch.arange(1, n + 1, dtype=torch.float64) / (n + 1))  # an upper-branch-like u
    mu = make_mu(3.3, 1.0)
    H = dense_hessian(f, x, mu).numpy()
    ref = np.linalg.eigh(H)[0][:3]
    solver = SparseLU().bind(bratu_problem(n), {"x": x})
    vals, V, spent, converged = solver.lowest_eigenpairs(hessian_operator(f, x, mu), x, 3)
    assert ref[0] < 0 and spent == 3 and converged  # indefinite
    assert np.abs(vals - ref).max() <= 1e-10 * np.abs(H).max()
    assert np.linalg.norm(H @ V - V * vals, axis=0).max() <= 1e-9 * np.abs(H).max()


def test_a_double_eigenvalue_is_found_whole():
    """2-D Bratu on a square: its second and third eigenvalues are equal (the square's symmetry).
    The k = 3 lowest by the factors are those of numpy's eigh, the pair included (single-vector
    Lanczos found one copy and the monitor then wrote a false jump when the next point found both)."""
    m = 12
    torch.manual_seed(0)
    x = torch.zeros(m * m, dtype=torch.float64)
    f = lambda y, mm: bratu2d_energy({"x": y}, mm)  # noqa: E731
    mu = make_mu(6.0, 1.0)
    H = dense_hessian(f, x, mu).numpy()
    ref = np.linalg.eigh(H)[0][:3]
    assert abs(ref[1] - ref[2]) <= 1e-12 * abs(ref[1])  # the pair
    solver = SparseLU().bind(bratu2d_problem(m), {"x": x})
    vals, V, _, converged = solver.lowest_eigenpairs(hessian_operator(f, x, mu), x, 3)
    assert converged and np.abs(vals - ref).max() <= 1e-10 * np.abs(H).max()


def _run_2d(m, solver, monitor):
    problem = bratu2d_problem(m)
    return continue_path(problem, PseudoArclength(parameter="lambda"), PseudoArclengthPredictor(),
                         BorderedNewtonCorrector(), AdaptiveSteps(initial=0.1, max_step=0.5),
                         StopRule(max_steps=30, target={"lambda": 5.9}, away_points=0), start=(6.0, 1.0),
                         solver=solver, monitor=monitor, output=Output(progress=False))


def _check_fold(path, reference: float) -> None:
    """One fold event, at `reference` to 1e-8 relative; the run finished; the monitored points before
    it of Morse index 0, those past it of index 1."""
    folds = [i for i, t in enumerate(path["event_type"].values) if str(t) == "fold"]
    assert len(folds) == 1 and path.attrs["status"] == "finished"
    assert abs(float(path["event_lambda"].values[folds[0]]) - reference) <= 1e-8 * reference
    s, s_fold = path["s"].values, float(path["event_s"].values[folds[0]])
    index = path["morse_index"].values
    assert set(index[s < s_fold]) == {0} and set(index[s > s_fold]) == {1}


def test_the_2d_bratu_fold_by_sparse_lu_against_the_scipy_reference():
    """2-D Bratu 20 x 20 (five-point stencil, 5 colours): the fold to 1e-8 relative of the extended
    system solved by scipy alone, the Morse index 0 on the lower branch and 1 past the fold."""
    _check_fold(_run_2d(20, SparseLU(), Monitor(modes=2)), _scale_benchmark().reference_fold(20, 2))


def test_sparse_lu_and_minres_follow_the_same_branch():
    """The same pseudo-arclength run by the factors and by MINRES/GMRES: the same points to 1e-9."""
    a = _run_2d(8, SparseLU(), None)
    b = _run_2d(8, MINRES(), None)
    assert a.sizes["step"] == b.sizes["step"]
    assert np.abs(a["lambda"].values - b["lambda"].values).max() <= 1e-9


def test_bratu_large_passes_the_fold_from_the_command_line(tmp_path, capsys):
    """The shipped configuration (1-D Bratu, N = 10^4): the fold to 1e-8 relative of the scipy
    reference, one fold event, the points past it of Morse index 1, the run finished."""
    out = tmp_path / "b.nc"
    assert main(["run", str(ROOT / "validation/configs/bratu_large.toml"), "--out", str(out), "--quiet"]) == 0
    _check_fold(load_path(out), _scale_benchmark().reference_fold(10_000, 1))
    assert "fold at lambda = 3.5138307" in capsys.readouterr().out


def test_sparse_lu_without_a_declared_pattern_and_bad_patterns_are_one_line(tmp_path, capsys):
    """sparse-lu on an energy that declares no sparsity, a sparsity of the wrong size, one that
    returns something else, a pattern with an invalid colouring made by the constructor, and a bad
    option: one line each, naming the cause, before any work (exit 2); a pattern that misses
    nonzeros of the Hessian: one line at the first solve (exit 1) that names the likely cause."""
    base = (ROOT / "validation/configs/bratu_fold.toml").read_text() + '\n[krylov]\nname = "sparse-lu"\n'
    cases = {
        "none": (base, "declares none"),
        "size": (base.replace('size = 63', 'size = 63\nsparsity = "tests.test_sparse:wrong_size"'),
                 "describes 10 parameters; theta has 63"),
        "type": (base.replace('size = 63', 'size = 63\nsparsity = "tests.test_sparse:not_a_pattern"'),
                 "must return a solvers.sparse.HessianPattern"),
        "colouring": (base.replace('size = 63', 'size = 63\nsparsity = "tests.test_sparse:bad_colouring"'),
                      "colouring is not valid"),
        "option": (base.replace('name = "sparse-lu"', 'name = "sparse-lu"\nrefine = -1'), "refine"),
        "missing": (base.replace('size = 63', 'size = 63\nsparsity = "tests.test_sparse:diagonal_only"'),
                    "does the declared sparsity pattern cover every nonzero of the Hessian?"),
    }
    for key, (text, expected) in cases.items():
        cfg = tmp_path / f"{key}.toml"
        cfg.write_text(text)
        code = main(["run", str(cfg), "--out", str(tmp_path / f"{key}.nc"), "--quiet"])
        assert code == (1 if key == "missing" else 2), key
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected in err, (key, err)


def wrong_size(theta):
    return HessianPattern.banded(10, 1)


def not_a_pattern(theta):
    return [1, 2, 3]


def bad_colouring(theta):
    n = theta["x"].numel()
    good = HessianPattern.banded(n, 1)
    return HessianPattern(good.rows, good.cols, n, np.zeros(n, dtype=np.int64))  # one colour for a tridiagonal


def diagonal_only(theta):
    return HessianPattern.banded(theta["x"].numel(), 0)


# -- algebraic multigrid as the Krylov solves' preconditioner -------------------------------------------
def test_amg_preconditioned_solves_need_few_products_and_give_the_direct_solution():
    """1-D Bratu's Hessian at N = 2000 (condition ~ 1e6, indefinite Gershgorin bound): MINRES alone
    does not converge in 2000 products; with one AMG V-cycle it does in under 40, to the answer of
    the factors (to cond x rtol). The bordered GMRES likewise, against a dense bordered solve."""
    n = 2000
    f, x, mu = _bratu_at(n, 3.0)
    op = hessian_operator(f, x, mu)
    b = torch.randn(n, dtype=torch.float64)
    direct = SparseLU().bind(bratu_problem(n), {"x": x}).solve(op, b)
    plain = MINRES(maxiter=n).solve(op, b)
    amg = AMG().bind(bratu_problem(n), {"x": x})
    pre = MINRES(preconditioner=amg).solve(op, b)
    assert not plain.converged and pre.converged and pre.iters < 40 and amg.build_products == 3
    assert amg.shift < 0  # A's Gershgorin bound is negative: M^-1 is built from A - shift I
    assert float((pre.x - direct.x).norm() / direct.x.norm()) <= 1e-12 * 1e6
    c, bb = torch.randn(n, dtype=torch.float64), torch.randn(n, dtype=torch.float64)
    y0, q0, r0 = bordered_solve(GMRES(maxiter=n), op, bb, c, 0.3, b, 0.7)
    y1, q1, r1 = bordered_solve(GMRES(preconditioner=amg), op, bb, c, 0.3, b, 0.7)
    assert not r0.converged and r1.converged and r1.iters < 40
    yd, qd, _ = SparseLU().bind(bratu_problem(n), {"x": x}).solve_bordered(op, bb, c, 0.3, b, 0.7)
    assert float((y1 - yd).norm() / yd.norm()) <= 1e-12 * 1e6 and abs(float(q1 - qd)) <= 1e-6 * abs(float(qd))


def test_amg_preconditioned_lobpcg_gives_the_same_lowest_eigenvalues_with_fewer_products():
    """The monitor's LOBPCG (N = 600 > dense_below) with the run's AMG preconditioner: the two lowest
    eigenvalues of 1-D Bratu's Hessian as numpy's eigh gives them, in fewer HVPs than without."""
    n = 600
    problem = bratu_problem(n)
    f, x, mu = _bratu_at(n, 3.0)
    ref = np.linalg.eigh(dense_hessian(f, x, mu).numpy())[0][:2]
    out = {}
    for name in ("plain", "amg"):
        system = EquilibriumSystem(problem, {"x": x})
        system.preconditioner = AMG().bind(problem, {"x": x}) if name == "amg" else None
        out[name] = lowest_eigenpairs(system, x, mu, k=2, tol=1e-10, maxiter=2000)
    assert out["amg"].method == "lobpcg" and out["amg"].converged
    assert np.abs(out["amg"].values.numpy() - ref).max() <= 1e-8 * abs(ref).max()
    assert out["amg"].hvps < 0.5 * out["plain"].hvps


def test_a_run_with_the_amg_preconditioner_locates_the_same_fold(tmp_path, capsys):
    """2-D Bratu 20 x 20 from the command line with [krylov] minres and preconditioner = "amg" (the
    bordered-newton corrector now takes it): the fold to 1e-8 of the scipy reference; on an energy
    without a declared pattern, one line."""
    text = """
[problem]
name = "energy"
objective = "problems.bratu:bratu2d_energy"
sparsity = "problems.bratu:bratu2d_sparsity"
size = 400
[start]
lambda = 6.0
gamma = 1.0
[process]
name = "pseudo-arclength"
[predictor]
name = "pseudo-arclength"
[corrector]
name = "bordered-newton"
[krylov]
name = "minres"
preconditioner = "amg"
[steps]
name = "adaptive"
initial = 0.1
max_step = 0.5
[stop]
max_steps = 30
target = {lambda = 5.9}
away_points = 0
"""
    cfg = tmp_path / "amg.toml"
    cfg.write_text(text)
    assert main(["run", str(cfg), "--out", str(tmp_path / "amg.nc"), "--quiet"]) == 0
    _check_fold(load_path(tmp_path / "amg.nc"), _scale_benchmark().reference_fold(20, 2))
    capsys.readouterr()
    cfg.write_text(text.replace('sparsity = "problems.bratu:bratu2d_sparsity"\n', ""))
    assert main(["run", str(cfg), "--out", str(tmp_path / "amg2.nc"), "--quiet"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'preconditioner = "amg" needs a problem that declares' in err
