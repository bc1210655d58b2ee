"""Deflation (issue 27, item 3): the solutions disconnected from a known one, at fixed multipliers.

1-D Bratu at lambda = 2 has exactly two solutions (a minimum and an index-1 saddle). From the
lower one alone, deflated Newton must find the upper one, equal to scipy's fsolve from a start on
the upper branch to 1e-8, and no third; the upper one then continues, by pseudo-arclength, over
the fold (located at the fold of scipy's extended system) and down onto the lower branch.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy.optimize import fsolve

from continuation.engine.driver import Output, Start, continue_path
from continuation.singular.deflated_newton import deflated_newton, find_solutions, soft_mode_starts
from continuation.strategies.arclength import BorderedNewtonCorrector, PseudoArclength, PseudoArclengthPredictor
from continuation.strategies.step_control import AdaptiveSteps, StopRule
from continuation.surface.system import EquilibriumSystem
from problems import make_mu
from problems.bratu import bratu_problem

N, LAM = 31, 2.0


def laplacian(n):
    h = 1.0 / (n + 1)
    return (np.eye(n, k=1) + np.eye(n, k=-1) - 2 * np.eye(n)) / h**2


def scipy_solution(n, lam, guess):
    L = laplacian(n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        u = fsolve(lambda u: L @ u + lam * np.exp(u), guess, fprime=lambda u: L + lam * np.diag(np.exp(u)),
                   xtol=1e-14)
    assert np.abs(L @ u + lam * np.exp(u)).max() < 1e-8
    return u


def morse_index(n, lam, u):
    h = 1.0 / (n + 1)
    return int((np.linalg.eigvalsh(-h * (laplacian(n) + lam * np.diag(np.exp(u)))) < 0).sum())


@pytest.fixture(scope="module")
def bratu():
    problem = bratu_problem(N, sparse=False)
    system = EquilibriumSystem(problem, problem.init_params(0))
    mu = make_mu(LAM, 1.0)
    lower = deflated_newton(system, torch.zeros(N, dtype=torch.float64), mu, [])  # nothing deflated: Newton
    assert lower.converged
    return problem, system, mu, lower.x


def test_deflation_finds_the_other_solution_from_one_of_them(bratu):
    problem, system, mu, lower = bratu
    s = np.sin(np.pi * np.arange(1, N + 1) / (N + 1))
    ref_lower, ref_upper = scipy_solution(N, LAM, 0 * s), scipy_solution(N, LAM, 3 * s)
    assert np.abs(ref_upper - ref_lower).max() > 2.0  # two distinct solutions
    np.testing.assert_allclose(lower.numpy(), ref_lower, rtol=0, atol=1e-8)
    found = find_solutions(system, mu, [lower])
    assert len(found) == 1, [float(f.x.max()) for f in found]  # the other one, and no third
    upper = found[0].x.numpy()
    np.testing.assert_allclose(upper, ref_upper, rtol=0, atol=1e-8)
    assert found[0].grad_norm <= 1e-10
    assert morse_index(N, LAM, ref_lower) == 0 and morse_index(N, LAM, upper) == 1
    # without deflation, Newton from the start that found it falls back to the known solution or fails
    starts = soft_mode_starts(system, mu, [lower])
    plain = [deflated_newton(system, x, mu, []) for x in starts]
    assert any(r.converged and float((r.x - lower).norm()) < 1e-8 for r in plain)


def test_the_found_solution_continues_over_the_fold(bratu):
    problem, system, mu, lower = bratu
    upper = find_solutions(system, mu, [lower])[0].x
    ds = continue_path(problem, PseudoArclength(direction=1.0), PseudoArclengthPredictor(), BorderedNewtonCorrector(),
                       AdaptiveSteps(initial=0.1, max_step=0.5), StopRule(max_steps=30, target={"lambda": 1.9},
                                                                                 away_points=0),
                       start=Start(mu=(LAM, 1.0), theta0={"x": upper}), output=Output(progress=False))
    lam = ds["lambda"].values
    assert ds.attrs["status"] == "finished"
    assert lam.max() > 3.5 and ds.morse_index.values[0] == 1 and ds.morse_index.values[-1] == 0
    folds = [j for j in range(ds.sizes.get("event", 0)) if ds.event_type.values[j] == "fold"]
    assert len(folds) == 1
    from tests.test_energy_fold import reference_fold

    assert float(ds.event_lambda.values[folds[0]]) == pytest.approx(reference_fold(N), rel=1e-8, abs=0)
    # landed at lambda = 1.9 on the lower branch: scipy's solution from zero there
    ref = scipy_solution(N, 1.9, np.zeros(N))
    assert float(ds["lambda"].values[-1]) == pytest.approx(1.9, abs=1e-12)
    np.testing.assert_allclose(ds.F.values[-1], float(system.objective(torch.tensor(ref), make_mu(1.9, 1.0))),
                               rtol=0, atol=1e-9)


def test_bad_options_are_one_line(bratu):
    _, system, mu, lower = bratu
    for kwargs, match in ((dict(power=0), "power must be"), (dict(shift=-1.0), "shift must be"),
                          (dict(maxiter=0), "maxiter must be")):
        with pytest.raises(ValueError, match=match):
            deflated_newton(system, lower, mu, [lower], **kwargs)
    with pytest.raises(ValueError, match="give a known solution or starts"):
        find_solutions(system, mu, [])
