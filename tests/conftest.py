import os

import numpy as np
import pytest
import torch

# Under pytest-xdist (`-n 2`, as .ci/run runs the suites) each worker takes one thread, and so do
# the subprocesses the tests start, so two workers do not oversubscribe a 2-core machine.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

from continuation import EquilibriumSystem
from problems import LinearGaussianClosedForm, LinearGaussianData, LinearGaussianGibbsProblem, make_mu
from solvers import NewtonCG


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


class GaussianCase:
    """x in R^3, a scalar label, a 2-D latent: both latent directions switch on at known lambda."""

    def __init__(self):
        self.data = LinearGaussianData.random(3, 1, seed=0)
        self.problem = LinearGaussianGibbsProblem.from_data(self.data, latent_dim=2, sigma_d=1.0, sigma_c=1.0)
        self.closed = LinearGaussianClosedForm.of(self.problem)
        self.system = EquilibriumSystem(self.problem, self.problem.init_params(0))

    def equilibrate(self, lam, gam, x0=None, gtol=1e-12):
        x0 = self.system.flatten(self.problem.init_params(0)) if x0 is None else x0
        res = NewtonCG(gtol=gtol).solve(self.system.objective, x0, make_mu(lam, gam))
        assert res.converged, res.message()
        return res

    def theta_star(self, lam, gam):
        t = self.closed.theta_star(lam, gam)
        return self.system.flatten({k: torch.tensor(v) for k, v in t.items()})


@pytest.fixture(scope="session")
def gaussian():
    return GaussianCase()


class CompetitionCase(GaussianCase):
    """One latent direction shared by x and y: raising lambda pulls it toward x and raises C
    (C_lambda > 0), so iso-classification raises both multipliers, as in the paper."""

    def __init__(self):
        self.data = LinearGaussianData(np.diag([3.0, 1.0, 0.6]), np.array([[0.3, 1.0, 0.5]]), 0.1 * np.eye(1))
        self.problem = LinearGaussianGibbsProblem.from_data(self.data, latent_dim=1)
        self.closed = LinearGaussianClosedForm.of(self.problem)
        self.system = EquilibriumSystem(self.problem, self.problem.init_params(0))


@pytest.fixture(scope="session")
def competition():
    return CompetitionCase()
