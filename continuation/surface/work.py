"""Work counters of one step, named for what they count (the path's work variables).

| counter          | what it counts                                                          |
|------------------|-------------------------------------------------------------------------|
| krylov_iters     | Krylov matvecs (HVPs) of the tangent and projection solves              |
| hvps             | every Hessian-vector product: krylov_iters plus the corrector's (Newton-CG) |
| gradients        | gradient evaluations of J by the corrector runs (projection and FD law included) |
| corrector_runs   | corrector calls (the step's own, projection iterates, FD re-equilibrations) |
| <corrector.counts> | iterations of the corrector's own kind: newton_iters, adam_updates,   |
|                  | sgd_updates or lbfgs_iters                                               |
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Work:
    krylov_iters: int = 0
    hvps: int = 0
    gradients: int = 0
    corrector_runs: int = 0
    corrector_iters: int = 0  # recorded under the corrector's own `counts` name

    def add_krylov(self, iters: int) -> None:
        self.krylov_iters += int(iters)
        self.hvps += int(iters)

    def add_corrector(self, result) -> None:
        self.corrector_runs += 1
        self.corrector_iters += int(result.iters)
        self.hvps += int(result.hvps)
        self.gradients += int(result.grads)

    def add(self, other: "Work") -> None:
        for name in ("krylov_iters", "hvps", "gradients", "corrector_runs", "corrector_iters"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def row(self, counts: str) -> dict:
        return {"krylov_iters": self.krylov_iters, "hvps": self.hvps, "gradients": self.gradients,
                "corrector_runs": self.corrector_runs, counts: self.corrector_iters}
