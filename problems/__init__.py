"""Problems declared by their Hamiltonian, and the data they are evaluated on."""

from .amortized import AmortizedProblem
from .base import (FUNCTIONAL_NAMES, MU_NAMES, FunctionalHamiltonian, Hamiltonian, Problem, StochasticProblem, make_mu,
                   mu_index)
from .gibbs_quadrature import GibbsQuadratureProblem, standard_normal_log_prior, trapezoid_grid
from .linear_gaussian import LinearGaussianData, LinearGaussianGibbsProblem, LinearGaussianHamiltonian
from .linear_gaussian_closed_form import LinearGaussianClosedForm, ScalarGaussianClosedForm
from .neural import GaussianEncoder, NeuralHamiltonian, init_module_params, mlp

__all__ = [
    "AmortizedProblem", "FUNCTIONAL_NAMES", "FunctionalHamiltonian", "GaussianEncoder", "GibbsQuadratureProblem",
    "Hamiltonian", "LinearGaussianClosedForm", "LinearGaussianData", "LinearGaussianGibbsProblem",
    "LinearGaussianHamiltonian", "MU_NAMES", "NeuralHamiltonian", "Problem", "ScalarGaussianClosedForm",
    "StochasticProblem",
    "init_module_params", "make_mu", "mlp", "mu_index", "standard_normal_log_prior", "trapezoid_grid",
]
