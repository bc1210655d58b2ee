"""Where a path starts: a fresh start (equilibrated at mu0 by the corrector, `settle` times), a
point of an earlier path (`--from`), or the last point of a killed run's file (`--resume`).
Each returns the stepper's first state (and, for the first two, its row)."""

from __future__ import annotations

import json
import time

import torch


from continuation.errors import ContinuationError, PathFileError, SetupMismatch
from continuation.files.schema import checkpoint_file, dataset_to_rows
from continuation.files.path import load_path, load_point
from continuation.strategies.predictors import Previous
from continuation.engine.state import State, load_slots, named
from continuation.engine.stepper import Stepper


def placed(template) -> dict:
    """dtype and device of the parameters: where x and mu live (a GPU run keeps mu there too)."""
    leaf = torch.utils._pytree.tree_leaves(template)[0]
    return {"dtype": leaf.dtype, "device": leaf.device}


def fresh(stepper: Stepper, x, mu, *, equilibrate: bool, settle: int) -> tuple[State, dict]:
    """Equilibrate (x, mu) by the corrector `settle` times (C0 taken after the last), then the first state.

    A stochastic corrector from a model trained with another schedule moves C for a few runs
    before it settles: on Fashion-MNIST the first run after 15k Adam steps moved train C by 3.7%,
    the next two by 0.7% and 0.2%. `settle` >= 1 (continuation/engine/options.py Start checks it)."""
    t0 = time.perf_counter()
    grad_norm = None
    if equilibrate:
        corrector = stepper.s.corrector
        for _ in range(settle):
            try:
                res = corrector.correct(stepper.system, x, mu)
            except FloatingPointError as e:
                raise ContinuationError(f"start point {named(mu)}: {e}") from e
            if not res.converged:
                budgets = ", ".join(f"{k} = {getattr(corrector, k)}" for k in ("maxiter", "lbfgs_iters", "steps")
                                    if isinstance(getattr(corrector, k, None), int) and getattr(corrector, k))
                advice = ("; raise its budget in [corrector]" + (f" ({budgets})" if budgets else "")
                          + " or start nearer (--from)")
                if str(res.status).startswith("linear_solve_failed"):  # not a budget: the [krylov] solve failed
                    advice = "; the linear solve failed, not the corrector's budget (see [krylov])"
                raise ContinuationError(f"the start point did not equilibrate: corrector {corrector.name} "
                                        f"{res.status} after {res.iters} iterations, |grad| {res.grad_norm:.2e} "
                                        f"at {named(mu)}{advice}")
            x, grad_norm = res.x, res.grad_norm
    return stepper.init(x, mu, grad_norm=grad_norm, seconds=time.perf_counter() - t0)


def _size(template) -> int:
    return sum(leaf.numel() for leaf in torch.utils._pytree.tree_leaves(template))


def from_point(path, step: int, template) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, mu) of point `step` of an earlier path, placed like the parameters; PathFileError (one
    line naming both sizes) when the path was written by a problem of another size."""
    p = load_point(path, step, size=_size(template))
    return p["x"].to(**placed(template)), p["mu"].to(**placed(template))


def same_setup(out, attrs: dict) -> None:
    """Refuse to resume `out` under other settings: one line naming the first difference.

    The strategies' and the problem's settings are compared (not the TOML text: a default
    written out explicitly is the same setting)."""
    old = load_path(out)
    if old.attrs.get("settings") == attrs["settings"]:
        return
    try:
        a, b = json.loads(old.attrs.get("settings", "{}")), json.loads(attrs["settings"])
    except json.JSONDecodeError:
        raise PathFileError(f"{out}: its settings attribute is not readable JSON (the file was edited or "
                            "damaged); it cannot be checked for a resume: use another --out") from None
    raise SetupMismatch(f"{out} was written with another configuration ({_first_difference(a, b)}); "
                        "use another --out to start anew")


def _first_difference(a, b, where="") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k, "<absent>") != b.get(k, "<absent>"):
                return _first_difference(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{where}.{k}" if where else k)
        return where or "?"
    return f"{where}: {a!r} in the file, {b!r} now"


def resume(stepper: Stepper, out, template) -> tuple[State, list[dict]]:
    """The state at the last saved point of `out`, and the rows so far: the state the uninterrupted
    run had there. The strategies' slots are the ones saved with the point's checkpoint
    (continuation/engine/state.py); the point's context and tangent are recomputed on the problem's
    draw of that point (the step's `resample(step)`, or the start's draw at point 0), and the
    secant's previous point is the one before (the writer always keeps the last two checkpoints).

    PathFileError (one line) when the last checkpoint holds no saved state (a file written before
    the state was saved with each point: it cannot be resumed; start anew)."""
    old = load_path(out)
    n = old.sizes["step"]
    rows = dataset_to_rows(old)
    size = _size(template)
    last = load_point(out, -1, size=size)
    if "state" not in last:
        raise PathFileError(f"{out}: its last checkpoint holds no strategies' state (written by a version before "
                            "the state was saved with each point); it cannot be resumed: use another --out")
    slots = load_slots(last["state"], stepper.roles, checkpoint_file(out, n - 1))
    x, mu = last["x"].to(**placed(template)), last["mu"].to(**placed(template))
    previous, reference = None, None
    if n >= 2:
        p = load_point(out, n - 2, size=size)
        previous = Previous(p["x"].to(**placed(template)), p["mu"].to(**placed(template)), float(p["s"]),
                            float(last["s"]))
        # the tangent the run oriented this point's tangent by (a tangent defined up to sign:
        # pseudo-arclength); with it the recomputed tangent is the run's, to the last bit
        reference = p["tangent"].to(**placed(template)) if "tangent" in p else None
    if "reference" in last:  # what the run oriented (and bordered) this point's tangent by where that was not
        reference = last["reference"].to(**placed(template))  # the previous tangent: a switched branch's direction
    if "start_draw" in old.attrs:  # a stochastic problem: the draw the point's tangent was computed on
        stepper.problem.resample(n - 1 if stepper.resample and n > 1 else int(old.attrs["start_draw"]))
    state = stepper.resumed(x, mu, float(last["s"]), previous=previous, step=n - 1, slots=slots,
                            reference=reference)
    stepper.system.ledger.reset()  # the point's row is on file: its recomputation is not the next step's work
    return state, rows
