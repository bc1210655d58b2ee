"""Work counters of one step, named for what they count (the path's work variables), and the
ledger that counts them where the work happens.

| counter          | what it counts                                                          |
|------------------|-------------------------------------------------------------------------|
| krylov_iters     | Krylov matvecs (HVPs) of the tangent and projection solves              |
| hvps             | every Hessian-vector product: krylov_iters plus the corrector's (Newton-CG) |
| gradients        | gradient evaluations of J (corrector updates and checks, the start's check) |
| mixed_partials   | columns of b_mu = -d/dmu grad_theta J (one forward-over-reverse pass each) |
| evaluations      | forward passes of J or R, D, C outside a derivative: values, line-search |
|                  | trials, the training-set and validation metrics, and the forward-mode    |
|                  | rates of R, D, C along the tangents (one per column)                     |
| corrector_runs   | corrector calls (the step's own, projection iterates, FD re-equilibrations) |
| <corrector.counts> | iterations of the corrector's own kind: newton_iters, adam_updates,   |
|                  | sgd_updates or lbfgs_iters                                               |

`Ledger`: every gradient, HVP, mixed partial, Krylov solve, evaluation and corrector run is
counted once, where it is spent (continuation/surface/system.py, the correctors), into the
ledger of the `EquilibriumSystem` it goes through; the stepper takes (reads and resets) the
ledger into each point's row. Nothing is added by hand by the callers, so work a strategy or a
rebuilt point context spends cannot be left out. The stability monitor's work is its own
(`monitor_hvps`), and each event's location cost (the event's `hvps`): counted aside
(`Ledger.aside`), not into the point's row.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, fields

COUNTERS = ("krylov_iters", "hvps", "gradients", "mixed_partials", "evaluations", "corrector_runs", "corrector_iters")


@dataclass
class Work:
    krylov_iters: int = 0
    hvps: int = 0
    gradients: int = 0
    corrector_runs: int = 0
    corrector_iters: int = 0  # recorded under the corrector's own `counts` name
    mixed_partials: int = 0
    evaluations: int = 0

    def row(self, counts: str) -> dict:
        return {"krylov_iters": self.krylov_iters, "hvps": self.hvps, "gradients": self.gradients,
                "mixed_partials": self.mixed_partials, "evaluations": self.evaluations,
                "corrector_runs": self.corrector_runs, counts: self.corrector_iters}


class Ledger:
    """The work spent through one `EquilibriumSystem` since it was last taken.

    `count(gradients=1, ...)` adds; `take()` returns the counts as a `Work` and resets them;
    `aside()` is a context whose work is counted apart (into the `Work` it yields)."""

    def __init__(self):
        self._work = Work()
        self._asides: list[Work] = []

    def count(self, **amounts) -> None:
        for name, value in amounts.items():
            if name not in COUNTERS:
                raise KeyError(f"unknown work counter {name!r}; valid: {', '.join(COUNTERS)}")
            for tally in self._asides:
                setattr(tally, name, getattr(tally, name) + int(value))
            if not self._asides:
                setattr(self._work, name, getattr(self._work, name) + int(value))

    def count_corrector(self, result) -> None:
        """One corrector run and its iterations (its gradients, HVPs and evaluations are counted where spent)."""
        self.count(corrector_runs=1, corrector_iters=result.iters)

    def peek(self) -> Work:
        return Work(**{f.name: getattr(self._work, f.name) for f in fields(Work)})

    def take(self) -> Work:
        out, self._work = self._work, Work()
        return out

    def reset(self) -> None:
        self._work = Work()

    @contextlib.contextmanager
    def aside(self):
        """Work kept apart from the row's tally: what is spent inside is counted into the `Work`
        this yields (and into every enclosing aside), not into the ledger's own tally. The
        stability monitor's work (`monitor_hvps`) and each event's location cost (its `hvps`)."""
        spent = Work()
        self._asides.append(spent)
        try:
            yield spent
        finally:
            self._asides.remove(spent)


def ledger_of(system) -> Ledger | None:
    """The ledger of `system` (an EquilibriumSystem), or None for an object without one."""
    return getattr(system, "ledger", None)


def count(system, **amounts) -> None:
    """Count `amounts` into the ledger of `system`, if it has one."""
    ledger = ledger_of(system)
    if ledger is not None:
        ledger.count(**amounts)
