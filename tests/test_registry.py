"""Adding a strategy is one file and one registry line: a predictor defined here, registered,
and chosen by name from a TOML configuration, checked against the closed form."""

from dataclasses import dataclass
from typing import ClassVar, final

import pytest

from continuation.apps.cli import main
from continuation.files.path import load_path
from continuation.strategies.predictors import Prediction, Predictor
from continuation.strategies.registry import REGISTRY, register
from problems import LinearGaussianClosedForm
from problems.registry import PROBLEMS


@final
@dataclass
class HeunPredictor(Predictor):
    """Heun's method (explicit trapezoid) on d(theta, mu)/ds = (theta_mu . mu', mu'): two RHS evaluations."""

    name: ClassVar[str] = "heun"

    def predict(self, make_context, start, ds, previous, process):
        mu1 = start.velocity(process)
        x1 = start.theta_dot(mu1)
        end = make_context(start.x + ds * x1, start.mu + ds * mu1)
        mu2 = end.velocity(process)
        x2 = end.theta_dot(mu2)
        return Prediction(start.x + 0.5 * ds * (x1 + x2), start.mu + 0.5 * ds * (mu1 + mu2), 2,
                          start.solves_converged and end.solves_converged, end.solve_report())


CONFIG = """
[problem]
name = "linear-gaussian"
sigma_diag = [3.0, 1.0, 0.6]
B = [[0.3, 1.0, 0.5]]
noise = 0.316227766016838
[start]
lambda = 1.0
gamma = 1.0
[process]
name = "quasi-static"
lambda_rate = 1.0
gamma_rate = 0.5
[predictor]
name = "heun"
[corrector]
name = "newton"
gtol = 1e-11
[steps]
name = "fixed"
size = 0.25
[stop]
target = {lambda = 2.0}
"""


@pytest.fixture
def heun_registered(monkeypatch):
    monkeypatch.setitem(REGISTRY["predictor"], "heun", None)  # undone after the test
    register("predictor", HeunPredictor)
    yield


def test_a_predictor_defined_in_a_test_module_runs_by_name_from_toml(tmp_path, capsys, heun_registered):
    cfg = tmp_path / "heun.toml"
    cfg.write_text(CONFIG)
    out = tmp_path / "heun.nc"
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 0
    ds = load_path(out)
    assert ds.attrs["predictor"] == "heun" and ds.sizes["step"] == 5
    closed = LinearGaussianClosedForm.of(PROBLEMS["linear-gaussian"](sigma_diag=[3.0, 1.0, 0.6], B=[[0.3, 1.0, 0.5]],
                                                                      noise=0.316227766016838))
    for k in range(ds.sizes["step"]):
        lam, gam = float(ds["lambda"][k]), float(ds["gamma"][k])
        assert gam == pytest.approx(1.0 + 0.5 * (lam - 1.0), rel=1e-12)
        assert float(ds["R"][k]) == pytest.approx(closed.functionals(lam, gam)["R"], rel=1e-9)
    # Heun spends one extra stage context per step: 1 Krylov solve (quasi-static) beyond the law at the start
    assert (ds["krylov_iters"].values[1:] > 0).all()
    # and the name lists and errors know it
    assert main(["list"]) == 0 and "heun" in capsys.readouterr().out


def test_register_refuses_a_nameless_factory_or_an_unknown_role():
    with pytest.raises(ValueError, match="unknown role 'predictors'"):
        register("predictors", HeunPredictor)
    with pytest.raises(ValueError, match="needs a name"):
        register("predictor", lambda: None)


def test_heun_is_second_order_on_the_tangent_ode(heun_registered):
    """Error of one Heun prediction (no corrector) against the closed-form surface: slope 3 in ds
    (local error of a second-order method), a check that the registered strategy is a real one."""
    from continuation.surface.context import PointContext
    from continuation.strategies.processes import QuasiStatic
    from continuation.surface.system import EquilibriumSystem
    from problems import make_mu
    from solvers import MINRES, NewtonCG

    problem = PROBLEMS["linear-gaussian"](sigma_diag=[3.0, 1.0, 0.6], B=[[0.3, 1.0, 0.5]], noise=0.316227766016838)
    system = EquilibriumSystem(problem, problem.init_params(0))
    mu = make_mu(1.0, 1.0)
    x = NewtonCG(gtol=1e-13).solve(system.objective, system.flatten(problem.init_params(0)), mu).x
    make = lambda x, mu: PointContext(system, x, mu, MINRES(rtol=1e-14))  # noqa: E731
    closed = LinearGaussianClosedForm.of(problem)
    errors = []
    for ds in (0.2, 0.1):
        p = HeunPredictor().predict(make, make(x, mu), ds, None, QuasiStatic(1.0, 0.0))
        f = problem.functionals(system.unflatten(p.x), p.mu)
        errors.append(abs(float(f["R"]) - closed.functionals(float(p.mu[0]), float(p.mu[1]))["R"]))
    assert 6.0 < errors[0] / errors[1] < 10.0, errors
