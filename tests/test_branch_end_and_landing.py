"""The branch end ahead of a path (continuation/singular/branch_end.py): the lowest non-negative
eigenvalue extrapolated linearly to zero, and the one jump across it after a rejected step."""

from dataclasses import dataclass

import pytest
import torch

from continuation.singular.branch_end import BranchEnd
from continuation.singular.monitor import Monitor
from continuation.strategies.predictors import NoPredictor


@dataclass
class _Spectrum:
    values: torch.Tensor

    def index(self, zero_tol):
        return int((self.values < -zero_tol).sum())


@dataclass
class _Point:
    s: float
    spectrum: _Spectrum


def _point(s, values):
    return _Point(s, _Spectrum(torch.tensor(values, dtype=torch.float64)))


def test_zero_of_the_lowest_nonnegative_eigenvalue_extrapolated_linearly():
    # index 1: the lowest non-negative eigenvalue is the second, 0.3 at s = 2, 0.5 at s = 1:
    # slope -0.2, zero at s = 2 + 0.3 / 0.2 = 3.5
    monitor, p = Monitor(modes=3), _point(2.0, [-0.4, 0.3, 2.0])
    end = BranchEnd.ahead(monitor, p, p, [(1.0, [-0.4, 0.5, 2.0])])
    assert end.s == 2.0 and end.s_star == pytest.approx(3.5, rel=1e-14)


@pytest.mark.parametrize("old, why", [([0.1, 1.0], "rising"), ([0.2, 1.0], "flat")])
def test_no_branch_end_where_the_eigenvalue_is_not_falling(old, why):
    monitor, p = Monitor(modes=2), _point(2.0, [0.2, 1.0])
    assert BranchEnd.ahead(monitor, p, p, [(1.0, old)]) is None, why


def test_no_branch_end_without_a_monitor_history_or_a_monitored_current_point():
    p, q = _point(2.0, [0.2, 1.0]), _point(2.5, [0.1, 1.0])
    assert BranchEnd.ahead(None, p, p, [(1.0, [0.5, 1.0])]) is None
    assert BranchEnd.ahead(Monitor(modes=2), p, p, []) is None
    assert BranchEnd.ahead(Monitor(modes=2), p, q, [(1.0, [0.5, 1.0])]) is None  # current not monitored


@dataclass
class _Result:
    converged: bool


@dataclass
class _Attempt:
    result: _Result


def test_rescue_jumps_once_by_twice_the_distance_with_the_none_predictor():
    end, calls = BranchEnd(s=2.0, s_star=3.5), []

    def attempt(ds, predictor):
        calls.append((ds, type(predictor)))
        return _Attempt(_Result(True))

    assert end.rescue(1.0, attempt) is None  # the step stopped short of the end: no jump
    jump, verdict = end.rescue(1.6, attempt)
    assert calls == [(3.0, NoPredictor)] and verdict.accepted and "branch end" in verdict.reason
    assert end.rescue(1.6, attempt) is None and len(calls) == 1  # once per step


def test_rescue_that_does_not_converge_or_leaves_the_domain_is_none():
    def failed(ds, predictor):
        return _Attempt(_Result(False))

    def domain(ds, predictor):
        raise FloatingPointError("prediction left the domain")

    assert BranchEnd(2.0, 3.5).rescue(2.0, failed) is None
    assert BranchEnd(2.0, 3.5).rescue(2.0, domain) is None


# -- landing on a milestone (StopRule.land) -----------------------------------------------------
@dataclass
class _Prediction:
    mu: torch.Tensor


def test_a_curved_prediction_lands_on_the_milestone_by_secant_steps():
    """lambda(ds) = 0.5 + ds + c ds^2 with c = 0.02 (a predictor bending away from the law's rate 1):
    the milestone lambda = 0.8 is reached at ds* = (-1 + sqrt(1 + 4 c 0.3)) / (2 c); the chord
    iteration ds <- ds 0.3 / (lambda(ds) - 0.5) contracts by about c ds* = 0.006 a step and lands
    within 64 ulp before its 6 steps are spent."""
    from continuation.strategies.step_control import StopRule

    stop, mu0 = StopRule(milestones={"lambda": [0.8]}, max_steps=10), torch.tensor([0.5, 1.0, 0.0], dtype=torch.float64)
    calls = []

    def predict(ds):
        calls.append(ds)
        return _Prediction(mu0 + torch.tensor([ds + 0.02 * ds * ds, 0.0, 0.0], dtype=torch.float64))

    ds, landing = stop.landing(mu0, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64), 0.5)
    assert landing == ("lambda", 0.8) and ds == pytest.approx(0.3, rel=1e-14)  # the law's line
    pred, ds, landing, mu = stop.land(predict, mu0, ds, landing, predict(ds))
    exact = (-1.0 + (1.0 + 4 * 0.02 * 0.3) ** 0.5) / (2 * 0.02)
    assert float(mu[0]) == 0.8 and landing == ("lambda", 0.8)
    assert abs(float(pred.mu[0]) - 0.8) <= 64 * 2.2e-16 and ds == pytest.approx(exact, rel=1e-12)
    assert 2 < len(calls) < 7  # a few chord steps, fewer than the cap of 6 beyond the first


def test_a_prediction_past_a_milestone_the_law_did_not_reach_lands_on_it():
    """A secant-like prediction that moves lambda faster than the law's rate crosses 0.8: `land`
    finds that crossing (StopRule.crossed) and lands on it."""
    from continuation.strategies.step_control import StopRule

    stop, mu0 = StopRule(milestones={"lambda": [0.8]}, max_steps=10), torch.tensor([0.5, 1.0, 0.0], dtype=torch.float64)

    def predict(ds):
        return _Prediction(mu0 + torch.tensor([2.0 * ds, 0.0, 0.0], dtype=torch.float64))

    pred, ds, landing, mu = stop.land(predict, mu0, 0.2, None, predict(0.2))  # lambda would be 0.9
    assert landing == ("lambda", 0.8) and float(mu[0]) == 0.8 and ds == pytest.approx(0.15, rel=1e-14)
    pred, ds, landing, mu = stop.land(predict, mu0, 0.1, None, predict(0.1))  # 0.7: not reached
    assert landing is None and ds == 0.1 and float(mu[0]) == pytest.approx(0.7, rel=1e-15)
