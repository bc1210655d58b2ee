"""How far each method gets toward grad J = 0 on the smooth deterministic MLP (problems/smooth_network.py),
from one start, in gradient-equivalents: Adam, L-BFGS (strong Wolfe), and from the same L-BFGS
point the damped line-search Newton-CG (`newton`) and trust-region Newton-CG (`trust-newton`).

    python benchmarks/neural_equilibrium.py                       # the small MLP (about 2 min on one core)
    python benchmarks/neural_equilibrium.py --limit 128 --hidden 16 --weight-decay 1e-3 --budget 40000

Prints per method: gradients, HVPs, gradient-equivalents (gradients + HVPs x the HVP/gradient
time ratio measured here), the final |grad J| relative to the start's, the status, and, when the
model has at most --dense parameters, the lowest and highest eigenvalues of the dense Hessian at
the end (a minimum has the lowest > 0). Writes the convergence plot (|grad J| / |grad J_0|
against gradient-equivalents) to --out.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from problems.registry import PROBLEMS
from solvers import NewtonCG
from solvers.trust_region import TrustRegionNewton
from continuation.surface.system import EquilibriumSystem


def hvp_ratio(system, x, mu, repeats: int = 20) -> float:
    """Seconds of one HVP over one gradient at x (rev-rev, as the solvers use)."""
    from solvers.derivatives import gradient, hessian_operator

    v = torch.randn_like(x)
    hvp = hessian_operator(system.objective, x, mu)
    gradient(system.objective, x, mu), hvp(v)  # warm
    t = time.perf_counter()
    for _ in range(repeats):
        gradient(system.objective, x, mu)
    tg = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(repeats):
        hessian_operator(system.objective, x, mu)(v)
    return (time.perf_counter() - t) / tg


def run_adam(system, x0, mu, budget: int, lr: float):
    x = x0.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    curve = []
    for k in range(budget):
        opt.zero_grad()
        system.objective(x, mu).backward()
        if k % max(1, budget // 200) == 0:
            curve.append((k, float(x.grad.norm())))
        opt.step()
    g = float(system.gradient(x.detach(), mu).norm())
    curve.append((budget + 1, g))
    return x.detach(), curve, budget + 1, 0


def run_lbfgs(system, x0, mu, iters: int):
    x = x0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([x], lr=1.0, max_iter=iters, max_eval=int(iters * 1.25) + 10, history_size=30,
                            tolerance_grad=0.0, tolerance_change=0.0, line_search_fn="strong_wolfe")
    curve, evals = [], [0]

    def closure():
        opt.zero_grad()
        J = system.objective(x, mu)
        J.backward()
        evals[0] += 1
        curve.append((evals[0], float(x.grad.norm())))
        return J

    opt.step(closure)
    return x.detach(), curve, evals[0], 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=4)
    ap.add_argument("--latent", type=int, default=2)
    ap.add_argument("--classifier-hidden", type=int, default=4)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--weight-decay", type=float, default=1e-2)
    ap.add_argument("--lam", type=float, default=1.0)
    ap.add_argument("--gamma", type=float, default=2.0)
    ap.add_argument("--lbfgs", type=int, default=300, help="L-BFGS iterations before the Newton methods")
    ap.add_argument("--budget", type=int, default=5000, help="gradient-equivalents for Adam and L-BFGS alone")
    ap.add_argument("--adam-lr", type=float, default=1e-3)
    ap.add_argument("--maxiter", type=int, default=500, help="Newton / trust-region iterations at most")
    ap.add_argument("--rtol", type=float, default=1e-9, help="stop at |grad J| <= rtol |grad J_0|")
    ap.add_argument("--dense", type=int, default=3000, help="dense Hessian spectrum at the end up to this size")
    ap.add_argument("--out", type=Path, default=Path("out/neural_equilibrium.png"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    problem = PROBLEMS["mlp-smooth"](limit=args.limit, val_limit=8, hidden=args.hidden, latent=args.latent,
                                     classifier_hidden=args.classifier_hidden, samples=args.samples,
                                     weight_decay=args.weight_decay)
    system = EquilibriumSystem(problem, problem.init_params(0))
    mu = torch.tensor([args.lam, args.gamma, 0.0], dtype=torch.float64)
    x0 = system.flatten(problem.init_params(0))
    g0 = float(system.gradient(x0, mu).norm())
    ratio = hvp_ratio(system, x0, mu)
    print(f"smooth MLP: {len(problem.train)} samples, N = {x0.numel()} parameters, weight_decay {args.weight_decay:g}, "
          f"lambda {args.lam:g}, gamma {args.gamma:g}; |grad J_0| = {g0:.3e}; one HVP = {ratio:.2f} gradients (measured)")
    rows, curves = [], {}

    def record(name, x, grads, hvps, status, curve):
        g = float(system.gradient(x, mu).norm())
        eq = grads + ratio * hvps
        low = high = float("nan")
        if x.numel() <= args.dense:
            H = torch.func.hessian(lambda v: system.objective(v, mu))(x)
            e = torch.linalg.eigvalsh(0.5 * (H + H.T))
            low, high = float(e[0]), float(e[-1])
        rows.append((name, grads, hvps, eq, g / g0, status, low, high))
        curves[name] = curve

    t = time.perf_counter()
    xa, ca, ga, _ = run_adam(system, x0, mu, args.budget, args.adam_lr)
    record(f"Adam (lr {args.adam_lr:g})", xa, ga, 0, f"{args.budget} updates", [(k, g / g0) for k, g in ca])
    xl, cl, gl, _ = run_lbfgs(system, x0, mu, args.budget)
    record("L-BFGS", xl, gl, 0, f"{gl} evaluations", [(k, g / g0) for k, g in cl])
    xp, cp, gp, _ = run_lbfgs(system, x0, mu, args.lbfgs)
    base = [(k, g / g0) for k, g in cp]
    for name, solver in (("L-BFGS, then damped Newton-CG", NewtonCG(gtol=args.rtol * g0, maxiter=args.maxiter)),
                         ("L-BFGS, then trust-region Newton-CG",
                          TrustRegionNewton(gtol=args.rtol * g0, maxiter=args.maxiter))):
        r = solver.solve(system.objective, xp, mu)
        if r.work:
            curve = base + [(gp + w[0] + ratio * w[1], h[1] / g0) for h, w in zip(r.history, r.work)]
        else:  # damped Newton records no per-iterate work: its iterates spread evenly over what it spent
            n = max(len(r.history) - 1, 1)
            curve = base + [(gp + (r.grads + ratio * r.hvps) * i / n, h[1] / g0) for i, h in enumerate(r.history)]
        record(name, r.x, gp + r.grads, r.hvps, f"{r.status}, {r.iters} iterations", curve)
    print(f"({time.perf_counter() - t:.0f} s)\n")
    print("| method | gradients | HVPs | gradient-equivalents | final |grad J| / |grad J_0| | status | lowest eigenvalue "
          "| highest |\n|---|---|---|---|---|---|---|---|")
    for name, grads, hvps, eq, rel, status, low, high in rows:
        print(f"| {name} | {grads} | {hvps} | {eq:.0f} | {rel:.1e} | {status} | {low:.2e} | {high:.2e} |")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, curve in curves.items():
        ax.semilogy([c[0] for c in curve], [c[1] for c in curve], label=name)
    ax.axhline(args.rtol, color="0.5", ls=":", lw=1)
    ax.set_xlabel("gradient-equivalents")
    ax.set_ylabel("|grad J| / |grad J_0|")
    ax.set_title(f"smooth MLP, N = {x0.numel()}, weight decay {args.weight_decay:g}")
    ax.legend(fontsize=8)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
