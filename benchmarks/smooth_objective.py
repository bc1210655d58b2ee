"""The smooth deterministic objective against the paper's model at the default width, by weight prior.

What the smooth model (problems/smooth_network.py) changes against the paper's model, and what
its weight prior costs and buys (docs/neural_equilibrium.md, issue 25 item 1).

    python benchmarks/smooth_objective.py                                 # w = 0.1 and 0.03: about 10 minutes on one core
    python benchmarks/smooth_objective.py --weight-decays 1e-2 --lbfgs 3000 --maxiter 20   # w = 1e-2 (not solved)

On the bundled digits (1,438 training images) with the default run's model (64-128-8 / 8-12-10,
decoder standard deviation 0.3, two noise draws per image) at the default run's start
(lambda, gamma) = (0.25, 4):
- the paper's model (ReLU, batch norm, the stochastic J) trained as the default run's start is
  (Adam, `--paper-steps` updates, lr 3e-3 cosine, a new batch and noise at every update);
- for each weight prior w in `--weight-decays`, the smooth model (problems/smooth_network.py:
  SiLU, no batch norm, the whole set with fixed noise, float64) solved from the same
  initialisation seed: L-BFGS with a strong-Wolfe line search until |grad J| <= `--switch` times
  its initial value or `--lbfgs` evaluations, then trust-region Newton-CG
  (solvers/trust_region.py) to `--rtol` times the initial |grad J|.

Prints per model: R, D, C on the training set (nats per sample; the paper's model: one fixed
noise draw, its evaluation metrics; the smooth model: its own J's K fixed draws per image), the
prior's value, train and validation accuracy (the classifier at the encoder mean), |grad J|
relative to its initial value, gradients and HVPs spent, seconds. R, D, C are those of the
objective each model minimises; the smooth model's J adds the prior.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from problems.registry import PROBLEMS
from continuation.surface.equilibrate import equilibrate
from continuation.surface.system import EquilibriumSystem
from solvers.trust_region import TrustRegionNewton


def lbfgs(system, x0, mu, evals: int, gtol: float):
    """torch.optim.LBFGS (strong Wolfe) until |grad J| <= gtol or `evals` evaluations."""
    x = x0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([x], lr=1.0, max_iter=evals, max_eval=evals, history_size=30,
                            tolerance_grad=gtol / math.sqrt(x.numel()), tolerance_change=0.0,
                            line_search_fn="strong_wolfe")
    count = [0]

    def closure():
        opt.zero_grad()
        J = system.objective(x, mu)
        J.backward()
        count[0] += 1
        return J

    opt.step(closure)
    return x.detach(), count[0]


def metrics(problem, theta) -> dict:
    out = {}
    if hasattr(problem, "prior"):  # the smooth model: its J's own R, D, C (the whole set, fixed noise)
        with torch.no_grad():
            f = problem._on(theta, problem.batch)
        out.update({k: float(v) for k, v in f.items()}, prior=float(problem.prior(theta)))
    else:
        e = problem.evaluation_metrics(theta)
        out.update(R=e["train_R"], D=e["train_D"], C=e["train_C"], prior=math.nan)
    with torch.no_grad():
        out["train_acc"] = problem._classify(theta, problem.train, prefix="train")["train_acc"]
        out["val_acc"] = problem.validation_metrics(theta)["val_acc"]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weight-decays", default="1e-1,3e-2", help="comma-separated weight priors w of the smooth model")
    ap.add_argument("--lam", type=float, default=0.25, help="lambda")
    ap.add_argument("--gamma", type=float, default=4.0, help="gamma")
    ap.add_argument("--decoder-std", type=float, default=0.3, help="the Gaussian decoder's standard deviation")
    ap.add_argument("--samples", type=int, default=2, help="noise draws per image")
    ap.add_argument("--paper-steps", type=int, default=5000, help="Adam updates for the paper's model (0: skip it)")
    ap.add_argument("--lbfgs", type=int, default=6000, help="L-BFGS evaluations at most, before the trust region")
    ap.add_argument("--switch", type=float, default=1e-6, help="L-BFGS stops at this |grad J| / |grad J_0|")
    ap.add_argument("--maxiter", type=int, default=300, help="trust-region iterations at most")
    ap.add_argument("--rtol", type=float, default=1e-8, help="the trust region stops at this |grad J| / |grad J_0|")
    ap.add_argument("--seed", type=int, default=0, help="initialisation seed (both models)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    mu = torch.tensor([args.lam, args.gamma, 0.0], dtype=torch.float64)
    rows = []
    if args.paper_steps:
        p = PROBLEMS["mlp"](decoder_std=args.decoder_std, samples=args.samples)
        s = EquilibriumSystem(p, p.init_params(args.seed))
        t = time.perf_counter()
        r = equilibrate(s, s.flatten(p.init_params(args.seed)), mu.to(p.dtype), steps=args.paper_steps, lr=3e-3,
                        resample_every=1, seed=args.seed)
        rows.append(("paper (ReLU, batch norm; Adam)", s.unflatten(r.x), p, math.nan, args.paper_steps + 1, 0,
                     time.perf_counter() - t, f"{args.paper_steps} updates"))
    for w in [float(v) for v in args.weight_decays.split(",") if v]:
        p = PROBLEMS["mlp-smooth"](decoder_std=args.decoder_std, samples=args.samples, weight_decay=w)
        s = EquilibriumSystem(p, p.init_params(args.seed))
        x0 = s.flatten(p.init_params(args.seed))
        g0 = float(s.gradient(x0, mu).norm())
        t = time.perf_counter()
        x, n = lbfgs(s, x0, mu, args.lbfgs, args.switch * g0)
        res = TrustRegionNewton(gtol=args.rtol * g0, maxiter=args.maxiter).solve(s.objective, x, mu)
        rows.append((f"smooth, w = {w:g}", s.unflatten(res.x), p, res.grad_norm / g0, n + res.grads, res.hvps,
                     time.perf_counter() - t, f"L-BFGS {n}, trust region {res.status} in {res.iters}"))
        print(f"w = {w:g}: {rows[-1][-1]}, |grad J| / |grad J_0| = {res.grad_norm / g0:.1e} "
              f"({rows[-1][-2]:.0f} s)", flush=True)
    print(f"\nlambda = {args.lam:g}, gamma = {args.gamma:g}, decoder std {args.decoder_std:g}, {args.samples} noise "
          f"draws per image\n")
    print("| model | R | D | C | prior | train acc | val acc | |grad J| rel. | gradients | HVPs | seconds | how |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, theta, p, rel, grads, hvps, sec, how in rows:
        m = metrics(p, theta)
        print(f"| {name} | {m['R']:.3f} | {m['D']:.3f} | {m['C']:.4f} | {m['prior']:.3f} | {m['train_acc']:.3f} | "
              f"{m['val_acc']:.3f} | {rel:.1e} | {grads} | {hvps} | {sec:.0f} | {how} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
