"""Where a path starts: a fresh start (equilibrated at mu0 by the corrector, `settle` times), a
point of an earlier path (`--from`), or the last point of a killed run's file (`--resume`).
Each returns the stepper's first state (and, for the first two, its row)."""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace

import torch

from problems.base import MU_NAMES

from continuation.errors import ContinuationError, PathFileError, SetupMismatch
from continuation.files.schema import dataset_to_rows
from continuation.files.path import load_path, load_point
from continuation.strategies.predictors import Previous
from continuation.engine.stepper import State, Stepper, named
from continuation.surface.work import Work


def placed(template) -> dict:
    """dtype and device of the parameters: where x and mu live (a GPU run keeps mu there too)."""
    leaf = torch.utils._pytree.tree_leaves(template)[0]
    return {"dtype": leaf.dtype, "device": leaf.device}


def fresh(stepper: Stepper, x, mu, *, equilibrate: bool, settle: int) -> tuple[State, dict]:
    """Equilibrate (x, mu) by the corrector `settle` times (C0 taken after the last), then the first state.

    A stochastic corrector from a model trained with another schedule moves C for a few runs
    before it settles: on Fashion-MNIST the first run after 15k Adam steps moved train C by 3.7%,
    the next two by 0.7% and 0.2%."""
    if settle < 1:
        raise ValueError(f"settle must be >= 1, got {settle}")
    t0 = time.perf_counter()
    work, grad_norm = Work(), None
    if equilibrate:
        corrector = stepper.s.corrector
        for _ in range(settle):
            try:
                res = corrector.correct(stepper.system, x, mu)
            except FloatingPointError as e:
                raise ContinuationError(f"start point {named(mu)}: {e}") from e
            work.add_corrector(res)
            if not res.converged:
                raise ContinuationError(f"the start point did not equilibrate: corrector {res.status}, "
                                        f"|grad| {res.grad_norm:.2e} at {named(mu)}")
            x, grad_norm = res.x, res.grad_norm
    return stepper.init(x, mu, work=work, grad_norm=grad_norm, seconds=time.perf_counter() - t0)


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
    run had there. Its tangent is recomputed on the problem's draw of that point (the step's
    `resample(step)`, or the start's draw at point 0), the secant's previous point is the one
    before (the writer always keeps the last two checkpoints), and the stop rule's recent points
    come from the file."""
    old = load_path(out)
    n = old.sizes["step"]
    rows = dataset_to_rows(old)
    size = _size(template)
    last = load_point(out, -1, size=size)
    x, mu = last["x"].to(**placed(template)), last["mu"].to(**placed(template))
    try:
        C0 = float(old.attrs["C0"])
        G0 = old.attrs.get("G0")
        G0 = None if G0 in (None, "none") else float(G0)
        H0 = old.attrs.get("H0")
        H0 = None if H0 in (None, "none") else float(H0)
        H_scale = old.attrs.get("H_scale")
        H_scale = None if H_scale in (None, "none") else float(H_scale)
    except (KeyError, TypeError, ValueError) as e:
        raise PathFileError(f"{out} lacks its held values C0, G0 (attributes): not a file a run wrote") from e
    drift = float(rows[-1]["constraint_drift"]) if G0 is not None else 0.0
    previous = None
    if n >= 2:
        p = load_point(out, n - 2, size=size)
        previous = Previous(p["x"].to(**placed(template)), p["mu"].to(**placed(template)), float(p["s"]),
                            float(last["s"]))
    problem = stepper.problem
    if "start_draw" in old.attrs:  # a stochastic problem: the draw the point's tangent was computed on
        problem.resample(n - 1 if stepper.resample and n > 1 else int(old.attrs["start_draw"]))
    recent = [(float(r["step_size"]), {name: float(r[name]) for name in MU_NAMES}) for r in rows]
    response = float(rows[-1].get("secant_response", math.nan))  # the secant's learned response (reuse_response)
    state = stepper.resumed(x, mu, float(last["s"]), previous=previous, ds_next=float(rows[-1]["next_step"]),
                            step=n - 1, C0=C0, G0=G0, drift=drift, recent=recent,
                            response=response if math.isfinite(response) else None, H0=H0, H_scale=H_scale)
    if getattr(stepper.s.process, "arclength", False) and previous is not None:
        # a tangent defined up to sign (pseudo-arclength) is oriented along the secant from the
        # point before, as the uninterrupted run had it along its previous tangent (past a fold
        # the start's `direction` would turn the path back)
        p = state.current
        ctx = stepper.context(p.x, p.mu)
        ctx.reference = torch.cat([p.x - previous.x, p.mu - previous.mu]) / (previous.s_now - previous.s_prev)
        state = replace(state, current=replace(p, ctx=ctx, tangent=stepper.tangent_at(ctx)))
    if stepper.monitor is not None:
        state = replace(state, monitored=state.current, eig_history=eig_history(rows))
    stepper.system.ledger.reset()  # the point's row is on file: its recomputation is not the next step's work
    return state, rows


def eig_history(rows: list[dict]) -> tuple:
    """The stepper's eig_history after the last row, rebuilt from the rows as Stepper.step built it:
    (s, eigenvalues) of the monitored points before the last one, at most two, emptied at a row
    whose events changed branch (anything but a crossing)."""
    history, previous = (), None
    for r in rows:
        eig = r.get("eig")
        if eig is None or int(r.get("morse_index", -1)) < 0:
            continue  # not monitored
        if previous is not None:
            if any(e.get("type") != "crossing" for e in r.get("events", ())):
                history = ()
            else:
                history = (history + ((float(previous["s"]), [float(v) for v in previous["eig"]]),))[-2:]
        previous = r
    return history
