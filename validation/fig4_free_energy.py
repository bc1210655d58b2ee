"""Paper Fig. 4: the free energy F during equilibration after a small change of (lambda, gamma),
and along an iso-classification run.

    python validation/fig4_free_energy.py --out out/fig4                 # CPU mode, Fashion-MNIST
    python validation/fig4_free_energy.py --path out/fig2/run_000.nc     # (b) from a Fig. 2 sweep's member (gamma0 = 4)
    python validation/fig4_free_energy.py --device cuda --full

(a) Adam from scratch at (0.5, 1) (the Fig. 2 CPU or full setup), `settle` corrector runs there,
then one corrector run (the paper's schedule) at (0.51, 1.04); J = R + lambda D + gamma C is
recorded every 10 updates on one fixed noise draw over the whole training set. J is linear in
mu, so right after the change J = F0 + D dlambda + C dgamma exactly; equilibration then lowers
it by the second-order term -dmu^T Hess F dmu / 2 >= 0 (F is concave, Lemma 3). Printed: F
before and after, and that drop relative to |F1 - F0| (small: the model lands back on the
surface close to where the first-order picture puts it; the paper's "about the same").
(b) F = train_R + lambda train_D + gamma train_C at each point of an iso-C path (the Fig. 2 run
from gamma0 = 4 unless --path is given; run here in CPU mode when absent).

Prints both and writes fig4.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from continuation.files.config import build_run  # noqa: E402
from continuation.surface.equilibrate import equilibrate  # noqa: E402
from continuation.files.path import load_path  # noqa: E402
from continuation.surface.system import EquilibriumSystem  # noqa: E402

import fig2_iso_c  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("out/fig4"))
    parser.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "mnist", "digits"],
                        help="digits: sklearn's bundled 8x8 set, a quick check of the pipeline")
    parser.add_argument("--data-dir", default="")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--path", type=Path, default=None, help="an iso-C path for panel (b)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    cfg = fig2_iso_c.base_config(args.dataset, args.data_dir, args.device, args.full)
    cfg["start"].update({"lambda": 0.5, "gamma": 1.0})
    run = build_run(cfg)
    problem, corrector, start = run["problem"], run["corrector"], run["start"]
    theta0 = problem.init_params(start["seed"])
    system = EquilibriumSystem(problem, theta0)
    x = system.flatten(theta0)
    mu0 = torch.tensor([0.5, 1.0, 0.0], dtype=x.dtype, device=x.device)
    mu1 = torch.tensor([0.51, 1.04, 0.0], dtype=x.dtype, device=x.device)
    print(f"(a) training at (0.5, 1): {start['train_steps']} Adam updates", flush=True)
    x = equilibrate(system, x, mu0, steps=start["train_steps"], lr=start["train_lr"],
                    schedule=start["train_schedule"], resample_every=1, seed=start["seed"]).x

    def metrics(y):
        return problem.evaluation_metrics(system.unflatten(y))

    def free_energy(m, mu):
        return m["train_R"] + float(mu[0]) * m["train_D"] + float(mu[1]) * m["train_C"]

    settle = []
    for _ in range(start["settle"]):
        x = corrector.correct(system, x, mu0).x
        settle.append(free_energy(metrics(x), mu0))
    before = metrics(x)
    trace = []
    corrector.monitor = lambda k, y, mu: trace.append((k, free_energy(metrics(y), mu)))
    corrector.monitor_every = 10
    x1 = corrector.correct(system, x, mu1).x
    after = metrics(x1)
    F0, F1 = free_energy(before, mu0), free_energy(after, mu1)
    first_order = F0 + 0.01 * before["train_D"] + 0.04 * before["train_C"]
    print(f"    F at (0.5, 1) after each settling run: {', '.join(f'{f:.4f}' for f in settle)}")
    print(f"    F(0.5, 1) = {F0:.4f}; J at (0.51, 1.04) right after the change = {trace[0][1]:.4f}; "
          f"after equilibration F(0.51, 1.04) = {F1:.4f}")
    print(f"    F0 + D dlambda + C dgamma = {first_order:.4f} (J is linear in mu: equal to J right after the "
          f"change); the drop in equilibration, {first_order - F1:.4f}, is {(first_order - F1) / abs(F1 - F0):.2e} "
          f"of |F1 - F0|")

    path = args.path or args.out / "iso_c_gamma4.nc"
    if not path.exists():
        print(f"(b) running an iso-C path from (0.25, 4) -> {path}", flush=True)
        from continuation.apps.run import run_config
        run_config(fig2_iso_c.base_config(args.dataset, args.data_dir, args.device, args.full), path)
    ds = load_path(path)
    F_path = (ds["train_R"] + ds["lambda"] * ds["train_D"] + ds["gamma"] * ds["train_C"]).values
    print(f"(b) F along {path}: " + ", ".join(f"{f:.3f}" for f in F_path))

    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    ax[0].plot([k for k, _ in trace], [f for _, f in trace], "-", label="J at (0.51, 1.04) during equilibration")
    ax[0].axhline(F0, color="k", ls=":", label="F(0.5, 1) before the change")
    ax[0].axhline(first_order, color="r", ls="--", label="F0 + D dlambda + C dgamma")
    ax[0].set(xlabel="Adam updates since the change", ylabel="F (fixed-noise training set)",
              title="(a) equilibration (0.5, 1) -> (0.51, 1.04)")
    ax[1].plot(range(len(F_path)), F_path, "o-", ms=3)
    ax[1].set(xlabel="iso-C step", ylabel="F", title=f"(b) along iso-C from ({float(ds['lambda'][0]):g}, "
              f"{float(ds['gamma'][0]):g}) to ({float(ds['lambda'][-1]):.3g}, {float(ds['gamma'][-1]):.3g})")
    ax[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out / "fig4.png", dpi=110)
    print(f"wrote {args.out / 'fig4.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
