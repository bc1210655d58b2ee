"""Continuation on the equilibrium surface grad_theta J(theta; mu) = 0: the system, its
tangents, and total derivatives of functionals along it.

The subpackages, each importing only those above it in this list (tests/test_architecture.py):

| subpackage   | holds                                                                          |
|--------------|--------------------------------------------------------------------------------|
| errors       | the exceptions (one line each) and `first_line`                                |
| surface/     | the equilibrium system (gradient, HVPs, mixed partials), a point's cached      |
|              | context, tangents and total derivatives, equilibration, the work counters      |
| strategies/  | the swappable roles: processes, predictors, correctors, projections, step      |
|              | control and stop rule, pseudo-arclength; their option checks; the name tables  |
| singular/    | spectra of Hess J, the stability monitor, event location (crossings, folds)    |
| files/       | the path file: schema, journal, reader, lock, writer; TOML configurations       |
| engine/      | the loop: the stepper (init / step / done), where a run starts, continue_path   |
|              | and its options (Start, Output), the run's signal handling                     |
| apps/        | what a user runs: the command line, config runs, sweeps, the report, plots     |
"""

from continuation.engine.driver import continue_path
from continuation.engine.options import Output, Start
from continuation.engine.stepper import ContinuationError, Stepper, Strategies
from continuation.surface.equilibrate import equilibrate
from continuation.surface.system import EquilibriumSystem
from continuation.surface.tangents import (Tangents, free_energy_hessian, functional_derivatives, maxwell_gap, solve_tangents,
                       total_derivatives)

__all__ = ["ContinuationError", "EquilibriumSystem", "Output", "Start", "Stepper", "Strategies", "continue_path", "equilibrate", "Tangents", "free_energy_hessian", "functional_derivatives", "maxwell_gap",
           "solve_tangents", "total_derivatives"]
