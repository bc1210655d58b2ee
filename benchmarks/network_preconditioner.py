"""What a curvature preconditioner buys on a network's Krylov solves (issue 26, item 4): the
tangent solves and the trust-region Newton corrector of the smooth deterministic MLP, with no
preconditioner, the spectral one (20 largest eigenpairs) and K-FAC (one Monte Carlo draw, and
the exact factors), side by side in one run, at one equilibrium.

    python benchmarks/network_preconditioner.py
    python benchmarks/network_preconditioner.py --config validation/configs/digits_exact.toml --cache out/np_start.pt
    python benchmarks/network_preconditioner.py --set problem.hidden=32 --set problem.limit=300

At the configuration's start (lambda0, gamma0), solved by its corrector to its gtol (or read from
--cache, written there the first time):
1. Tangent solves: A theta_mu = b_mu for mu = lambda, gamma (A the Hessian, b the mixed partials,
   eq. 17), MINRES to --rtol, each preconditioner built at the point. Printed: iterations, HVPs
   (iterations + products spent building), wall time, the true relative residual |A x - b| / |b|
   (one more product, not counted), the solution's relative distance from the unpreconditioned
   one, and MINRES's status ("converged" means the true residual is within 10 rtol, the
   tolerance every solver here applies: solvers/krylov.py).
2. Newton: the Euler prediction x0 + step theta_lambda at mu = (lambda0 + step, gamma0),
   corrected to gtol by the configuration's step corrector (trust-region Newton-CG, Steihaug)
   with each preconditioner: HVPs, gradients, iterations, wall time, the final |grad J| and the
   distance between the minima found.

Figures are one thread, on whatever else runs on the machine: compare the rows of one run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def parse(argv):
    p = argparse.ArgumentParser(prog="network_preconditioner.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", default="validation/configs/digits_exact.toml", help="a trust-newton configuration")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a configuration value (repeatable)")
    p.add_argument("--cache", default="", help="a file for the solved start (read if present, else written)")
    p.add_argument("--rtol", type=float, default=1e-10, help="MINRES's relative residual")
    p.add_argument("--step", type=float, default=0.01, help="the lambda step of the Newton comparison")
    p.add_argument("--maxiter", type=int, default=20000, help="MINRES iterations at most")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--no-exact", action="store_true",
                   help="skip K-FAC's exact factors (2k + S(d + classes) backward passes)")
    a = p.parse_args(argv)
    if not 0 < a.rtol < 1:
        p.error(f"--rtol must be in (0, 1), got {a.rtol}")
    if a.maxiter < 1 or a.threads < 1:
        p.error("--maxiter and --threads must be >= 1")
    if not a.step > 0:
        p.error(f"--step must be > 0, got {a.step}")
    return a, p


def main(argv=None) -> int:
    a, p = parse(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    import torch

    torch.set_num_threads(a.threads)
    from continuation.apps.experiments.routes import override
    from continuation.errors import ContinuationError
    from continuation.files.config import build_run, load_config
    from continuation.surface.system import EquilibriumSystem
    from problems.base import StochasticProblem
    from solvers.derivatives import hessian_operator
    from solvers.krylov import MINRES
    from solvers.preconditioners import KFAC, Spectral

    try:
        config = load_config(a.config)
    except (ContinuationError, OSError, ValueError) as e:
        p.error(f"--config {a.config}: {str(e).splitlines()[0]}")
    try:
        config = override(config, a.set)
    except (ContinuationError, ValueError) as e:
        p.error(str(e).splitlines()[0])
    try:
        r = build_run(config)
    except (ContinuationError, OSError, ValueError) as e:
        p.error(f"--config {a.config}{' with --set' if a.set else ''}: {str(e).splitlines()[0]}")
    problem = r["problem"]
    if isinstance(problem, StochasticProblem) or not getattr(problem, "kfac", False):
        p.error(f"--config {a.config}: the problem ({problem.name}) has no K-FAC factors (mlp-smooth has)")
    corrector = r["corrector"]
    template = problem.init_params(r["start"]["seed"])
    system = EquilibriumSystem(problem, template)
    mu0 = torch.tensor([r["start"]["lambda"], r["start"]["gamma"], 0.0], dtype=problem.dtype)
    print(f"{problem.name}: {system.view.numel} parameters, (lambda, gamma) = ({float(mu0[0])}, {float(mu0[1])}), "
          f"corrector {type(corrector).__name__} to |grad J| <= {corrector.gtol:g}", flush=True)

    cache = Path(a.cache) if a.cache else None
    if cache is not None and cache.exists():
        x = torch.load(cache).to(problem.dtype)
        print(f"start: read from {cache}", flush=True)
    else:
        t = time.perf_counter()
        res = corrector.correct(system, system.flatten(template), mu0)
        if not res.converged:
            print(f"{p.prog}: error: the start did not converge ({res.status}, |grad J| {res.grad_norm:.2e})",
                  file=sys.stderr)
            return 1
        x = res.x
        print(f"start: solved in {time.perf_counter() - t:.0f} s", flush=True)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            torch.save(x, cache)
    f = system.objective
    g0 = float(torch.linalg.vector_norm(system.gradient(x, mu0)))
    print(f"  |grad J| at the start: {g0:.2e}", flush=True)

    def preconditioners():
        out = [("none", None), ("spectral (rank 20)", Spectral(rank=20)), ("kfac (1 draw)", KFAC(draws=1))]
        if not a.no_exact:
            out.append(("kfac (exact factors)", KFAC(draws=0)))
        for _, pre in out:
            if pre is not None and hasattr(pre, "bind"):
                pre.bind(problem, template)
        return out

    A = hessian_operator(f, x, mu0)
    B = system.mixed_partials(x, mu0, torch.eye(3, dtype=x.dtype)[:2])  # (N, 2): -d(grad J)/dlambda, dgamma
    print(f"\n1. tangent solves, MINRES to {a.rtol:g} (HVPs = iterations + build products)")
    print(f"{'preconditioner':24s} {'rhs':7s} {'iters':>7s} {'HVPs':>7s} {'wall s':>8s} {'residual':>9s} "
          f"{'vs none':>9s} status")
    reference = {}
    for name, pre in preconditioners():
        for j, rhs_name in enumerate(("lambda", "gamma")):
            b = B[:, j]
            t = time.perf_counter()
            before = getattr(pre, "build_products", 0)
            res = MINRES(rtol=a.rtol, maxiter=a.maxiter, preconditioner=pre).solve(A, b)
            wall = time.perf_counter() - t
            built = getattr(pre, "build_products", 0) - before
            resid = float(torch.linalg.vector_norm(A(res.x) - b) / torch.linalg.vector_norm(b))
            if pre is None:
                reference[j] = res.x
            diff = float(torch.linalg.vector_norm(res.x - reference[j]) / torch.linalg.vector_norm(reference[j]))
            print(f"{name:24s} {rhs_name:7s} {res.iters:7d} {res.iters + built:7d} {wall:8.1f} {resid:9.1e} "
                  f"{diff:9.1e} {res.status}", flush=True)

    step = torch.zeros_like(mu0)
    step[0] = a.step
    x_pred = x + a.step * reference[0]
    mu1 = mu0 + step
    print(f"\n2. Newton: from the Euler prediction at lambda = {float(mu1[0])} to |grad J| <= {corrector.gtol:g} "
          f"({type(corrector.for_steps()).__name__}, its steps' settings)")
    print(f"{'preconditioner':24s} {'iters':>6s} {'HVPs':>7s} {'grads':>6s} {'wall s':>8s} {'|grad J|':>9s} "
          f"{'vs none':>9s} status")
    first = None
    c = corrector.for_steps()
    for name, pre in preconditioners():
        system.preconditioner = pre  # the trust region's CG takes the system's (as a run's [krylov] sets it)
        t = time.perf_counter()
        res = c.correct(system, x_pred, mu1)
        wall = time.perf_counter() - t
        first = res.x if first is None else first
        diff = float(torch.linalg.vector_norm(res.x - first) / torch.linalg.vector_norm(first))
        print(f"{name:24s} {res.iters:6d} {res.hvps:7d} {res.grads:6d} {wall:8.1f} {res.grad_norm:9.1e} {diff:9.1e} "
              f"{res.status}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
