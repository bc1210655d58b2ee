"""Names to strategy classes, one table per role, at the edge (as torchdiffeq's SOLVERS table): configuration files
and the command line choose by name; the library takes instances.

Adding a strategy is one file (a final dataclass subclassing its role's base, with a `name`)
and one line: `register("predictor", MyPredictor)` (from a script or a test module too). An
unknown name in a configuration is a one-line error listing the valid ones.
"""

from __future__ import annotations

from problems.registry import PROBLEMS
from solvers.krylov import KRYLOV_SOLVERS

from continuation.strategies.arclength import BorderedNewtonCorrector, PseudoArclength, PseudoArclengthPredictor
from continuation.strategies.correctors import CORRECTORS, TrustRegionCorrector
from continuation.strategies.predictors import NoPredictor, ODEPredictor, SecantPredictor
from continuation.strategies.processes import IsoClassification, IsoClassificationFD, IsoCPlusROverBeta, QuasiStatic
from continuation.strategies.projections import NewtonProjection, NoProjection, SecantProjection
from continuation.strategies.step_control import AdaptiveSteps, FixedSteps, HeldSteps
from continuation.strategies.transfer_processes import IsoClassificationTransfer


def _table(*classes) -> dict:
    return {cls.name: cls for cls in classes}


PROCESSES = _table(QuasiStatic, IsoClassification, IsoClassificationFD, IsoCPlusROverBeta, IsoClassificationTransfer,
                   PseudoArclength)
PREDICTORS = _table(ODEPredictor, SecantPredictor, NoPredictor, PseudoArclengthPredictor)
CORRECTOR_TABLE = {**CORRECTORS, **_table(TrustRegionCorrector, BorderedNewtonCorrector)}
PROJECTIONS = _table(NoProjection, NewtonProjection, SecantProjection)
STEP_CONTROLS = _table(AdaptiveSteps, FixedSteps, HeldSteps)

REGISTRY = {"problem": PROBLEMS, "process": PROCESSES, "predictor": PREDICTORS, "corrector": CORRECTOR_TABLE,
            "projection": PROJECTIONS, "krylov": KRYLOV_SOLVERS, "steps": STEP_CONTROLS}


def register(role: str, factory, name: str | None = None) -> None:
    """Make `factory` (a strategy class, or for problems a function of keyword options) available
    as `[role] name = "..."` in configuration files; `name` defaults to `factory.name`."""
    if role not in REGISTRY:
        raise ValueError(f"unknown role {role!r}; valid: {', '.join(REGISTRY)}")
    name = name or getattr(factory, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"register({role!r}, ...) needs a name (the factory has no `name`)")
    REGISTRY[role][name] = factory
