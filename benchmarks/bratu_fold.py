"""Bratu fold by pseudo-arclength: the located fold against the scipy reference, HVPs per step
and per fold location, for several N. `PYTHONPATH=. python benchmarks/bratu_fold.py [N ...]`."""

from __future__ import annotations

import sys
import time

import numpy as np

from continuation.strategies.arclength import BorderedNewtonCorrector, PseudoArclength, PseudoArclengthPredictor
from continuation.singular.fold import fold_events
from continuation.strategies.step_control import AdaptiveSteps, StopRule
from continuation.engine.stepper import Stepper, Strategies
from problems import make_mu
from problems.bratu import FOLD_CONTINUUM, bratu_problem
from solvers import MINRES


def run(n: int, max_steps: int = 9) -> dict:
    from tests.test_energy_fold import reference_fold

    problem = bratu_problem(n)
    strategies = Strategies(PseudoArclength(), PseudoArclengthPredictor(), BorderedNewtonCorrector(),
                            AdaptiveSteps(initial=0.1, max_step=0.5), StopRule(max_steps=max_steps))
    stepper = Stepper(problem, strategies, solver=MINRES(), template=problem.init_params(0))
    mu = make_mu(1.0, 1.0)
    t0 = time.perf_counter()
    res = strategies.corrector.correct(stepper.system, stepper.system.flatten(problem.init_params(0)), mu)
    state, _ = stepper.init(res.x, mu)
    points, hvps = [state.current], []
    while not stepper.done(state):
        state, row = stepper.step(state)
        if row is None:
            break
        points.append(state.current)
        hvps.append(row["hvps"])
    t1 = time.perf_counter()
    fold = fold_events(stepper, points)[0]
    t2 = time.perf_counter()
    ref = reference_fold(n)
    return {"N": n, "fold": fold["lambda"], "reference": ref, "rel_error": abs(fold["lambda"] - ref) / ref,
            "vs_continuum": FOLD_CONTINUUM - ref, "hvps_per_step": float(np.mean(hvps)), "steps": len(hvps),
            "fold_hvps": fold["hvps"], "fold_evaluations": fold["evaluations"], "eig": fold["eig"],
            "run_s": t1 - t0, "locate_s": t2 - t1}


if __name__ == "__main__":
    for n in [int(a) for a in sys.argv[1:]] or [31, 63, 127, 255]:
        r = run(n)
        print(f"N={r['N']:4d} fold {r['fold']:.12f} ref {r['reference']:.12f} rel.err {r['rel_error']:.1e} "
              f"(continuum - ref {r['vs_continuum']:.2e}) | {r['steps']} steps, {r['hvps_per_step']:.0f} HVPs/step, "
              f"{r['run_s']:.1f} s | fold: {r['fold_evaluations']} evals, {r['fold_hvps']} HVPs, {r['locate_s']:.2f} s, "
              f"eig {r['eig']:.1e}")
