"""What stability monitoring and event location cost, in HVPs (and wall seconds), side by side.

Runs (linear-Gaussian 5-d input, 2-d label, 3-d latent, float64; N = 21 parameters):
- a quasi-static path in lambda from 1 to 3 at gamma = 1.7 (two switch-ons), with the dense
  eigensolver and with LOBPCG (dense_below = 0), and without monitoring;
- Bratu (N = 63) by pseudo-arclength over the fold.
Prints per run: points, the path's HVPs (predictor, corrector, projection), the monitor's HVPs per
point (eigenvalues only) and per event (location or switch), and wall time.

    python benchmarks/monitor_cost.py
"""

from __future__ import annotations

import time

import numpy as np
import torch

from continuation import Output, Start, continue_path
from continuation.strategies.arclength import BorderedNewtonCorrector, PseudoArclength, PseudoArclengthPredictor
from continuation.strategies.correctors import NewtonCorrector
from continuation.singular.monitor import Monitor
from continuation.strategies.predictors import ODEPredictor
from continuation.strategies.processes import QuasiStatic
from continuation.strategies.step_control import AdaptiveSteps, StopRule
from problems import LinearGaussianData, LinearGaussianGibbsProblem
from problems.bratu import bratu_problem
from problems.linear_gaussian_closed_form import LinearGaussianClosedForm


def summary(name, path, seconds):
    n = path.sizes["step"]
    ev = path.sizes.get("event", 0)
    line = f"{name:<34} {n:>6} {int(path.hvps.sum()):>10}"
    if "monitor_hvps" in path:
        types = [str(t) for t in path.event_type.values]
        event_hvps = [int(h) for h in path.event_hvps.values]
        eig_hvps = int(path.monitor_hvps.sum()) - sum(event_hvps)
        located = [h for t, h in zip(types, event_hvps) if t in ("bifurcation", "fold")]
        line += (f" {eig_hvps / n:>12.1f} {ev:>7} {np.mean(located) if located else float('nan'):>14.0f}"
                 f" {', '.join(sorted(set(types))) or '-':>28}")
    else:
        line += f" {'-':>12} {'-':>7} {'-':>14} {'-':>28}"
    print(f"{line} {seconds:>8.2f}")


def main():
    torch.set_num_threads(1)
    data = LinearGaussianData.random(5, 2, seed=0, noise=0.4)
    problem = LinearGaussianGibbsProblem.from_data(data, latent_dim=3, sigma_d=2.0, sigma_c=1.0)
    cf = LinearGaussianClosedForm.of(problem)
    theta0 = {k: torch.as_tensor(v) for k, v in cf.theta_star(1.0, 1.7).items()}
    print(f"{'run':<34} {'points':>6} {'path HVPs':>10} {'eig HVPs/pt':>12} {'events':>7} "
          f"{'HVPs/located':>14} {'event types':>28} {'seconds':>8}")
    for name, monitor in [("LG quasi-static, no monitor", None), ("LG quasi-static, dense", Monitor()),
                          ("LG quasi-static, LOBPCG", Monitor(dense_below=0))]:
        t0 = time.perf_counter()
        path = continue_path(problem, QuasiStatic(), ODEPredictor("rk4"), NewtonCorrector(gtol=1e-11),
                             AdaptiveSteps(initial=0.1, max_step=0.5), StopRule(target={"lambda": 3.0}),
                             start=Start(mu=(1.0, 1.7), theta0=theta0), output=Output(progress=False), monitor=monitor)
        summary(name, path, time.perf_counter() - t0)
    t0 = time.perf_counter()
    path = continue_path(bratu_problem(63), PseudoArclength(), PseudoArclengthPredictor(), BorderedNewtonCorrector(),
                         AdaptiveSteps(initial=0.1, max_step=0.5),
                         StopRule(max_steps=14, target={"lambda": 2.0}, away_points=0), start=(3.0, 1.0),
                         output=Output(progress=False))
    summary("Bratu N=63 pseudo-arclength, dense", path, time.perf_counter() - t0)


if __name__ == "__main__":
    main()
