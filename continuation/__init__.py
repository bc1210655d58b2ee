"""Continuation on the equilibrium surface grad_theta J(theta; mu) = 0: the system, its
tangents, and total derivatives of functionals along it."""

from .system import EquilibriumSystem
from .tangents import (Tangents, free_energy_hessian, functional_derivatives, maxwell_gap, solve_tangents,
                       total_derivatives)

__all__ = ["EquilibriumSystem", "Tangents", "free_energy_hessian", "functional_derivatives", "maxwell_gap",
           "solve_tangents", "total_derivatives"]
