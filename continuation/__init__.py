"""Continuation on the equilibrium surface grad_theta J(theta; mu) = 0: the system, its
tangents, and total derivatives of functionals along it."""

from .driver import continue_path
from .stepper import ContinuationError, Stepper, Strategies
from .equilibrate import equilibrate
from .system import EquilibriumSystem
from .tangents import (Tangents, free_energy_hessian, functional_derivatives, maxwell_gap, solve_tangents,
                       total_derivatives)

__all__ = ["ContinuationError", "EquilibriumSystem", "Stepper", "Strategies", "continue_path", "equilibrate", "Tangents", "free_energy_hessian", "functional_derivatives", "maxwell_gap",
           "solve_tangents", "total_derivatives"]
