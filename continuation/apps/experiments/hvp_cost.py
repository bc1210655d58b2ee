"""Cost of one Hessian-vector product over one gradient on the paper's MLP (784-256-16).

    python benchmarks/hvp_cost.py [--batches 256 1024 4096] [--repeats 10] [--device cpu] [--data-dir DIR]

Prints, per batch size and HVP mode, the median seconds of a gradient and of an HVP (same
batch, Fashion-MNIST images if the Debian package is installed, uniform noise otherwise) and
their ratio. Forward-over-reverse ("fwd-rev") builds the linearisation per product;
reverse-over-reverse ("rev-rev") keeps the gradient graph and pays one backward per product
(its one-off graph build is timed separately as "setup"). Target (issue 4): ratio <= 3.

`load_images`, `setup` and `measure` are the pieces; validation/gpu_check.py reuses them (and adds
a torch.compile'd variant on the GPU), the iso-C routes (continuation/apps/experiments/routes.py)
`timed`. benchmarks/hvp_cost.py is the command line over `main`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from continuation import EquilibriumSystem
from problems import make_mu
from problems.data import Data, load_fashion_mnist
from problems.models import paper_mlp
from problems.neural_problem import NeuralProblem
from solvers import HVP_MODES, hessian_operator


def timed(fn, repeats, sync):
    out = []
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def synchronizer(device: str):
    """The device's synchronisation (a no-op on the CPU), called around every timed call."""
    return torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)


def load_images(n: int, data_dir=None) -> tuple[Data, str]:
    """The first `n` Fashion-MNIST training images and where they came from: `data_dir` (its
    errors propagate), else the Debian package's folder, else uniform noise."""
    if data_dir:
        data = load_fashion_mnist(data_dir)
        return Data(data.x[:n], data.y[:n], data.classes, data.name), f"Fashion-MNIST ({data_dir})"
    try:
        data = load_fashion_mnist()
        return Data(data.x[:n], data.y[:n], data.classes, data.name), "Fashion-MNIST"
    except FileNotFoundError:
        return (Data(torch.rand(n, 1, 28, 28), torch.randint(0, 10, (n,)), tuple(range(10)), "noise"),
                "uniform noise (Fashion-MNIST not installed)")


def setup(data: Data, batch: int, device: str):
    """The paper's MLP on the first `batch` images (gradient and HVP batch both `batch`) at
    (lambda, gamma) = (0.25, 4): (system, x, mu, v) with x the initial parameters and v a
    random direction."""
    sub = Data(data.x[:batch], data.y[:batch], data.classes, data.name)
    problem = NeuralProblem(*paper_mlp(), sub, grad_batch=batch, hvp_batch=batch, device=device)
    theta = problem.init_params(0)
    system = EquilibriumSystem(problem, theta)
    x = system.flatten(theta)
    mu = make_mu(0.25, 4.0, dtype=x.dtype, device=x.device)
    return system, x, mu, torch.randn_like(x)


def measure(system, x, mu, v, repeats: int, sync, modes=HVP_MODES) -> dict:
    """Median seconds of one gradient (`grad_s`) and, per HVP mode, of one product (`hvp_s`), of
    building the operator (`setup_s`) and their ratio (`ratio`: hvp_s / grad_s)."""
    system.gradient(x, mu)  # warm up
    out = {"grad_s": timed(lambda: system.gradient(x, mu), repeats, sync)}
    for mode in modes:
        setup_s = timed(lambda: hessian_operator(system.hessian_objective, x, mu, mode), 3, sync)
        op = hessian_operator(system.hessian_objective, x, mu, mode)
        op(v)
        t_hvp = timed(lambda: op(v), repeats, sync)
        out[mode] = {"hvp_s": t_hvp, "setup_s": setup_s, "ratio": t_hvp / out["grad_s"]}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, nargs="+", default=[256, 1024, 4096])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-dir", default="", help="folder of the Fashion-MNIST IDX files (default: the Debian "
                                                   "package's, else uniform noise)")
    args = p.parse_args(argv)
    sync = synchronizer(args.device)
    data, source = load_images(max(args.batches), args.data_dir or None)
    print(f"paper MLP 784-256-16 / 16-12-10 on {source}, device {args.device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'batch':>6} {'mode':>8} {'grad s':>9} {'hvp s':>9} {'setup s':>9} {'hvp/grad':>9}")
    for batch in args.batches:
        m = measure(*setup(data, batch, args.device), args.repeats, sync)
        for mode in HVP_MODES:
            r = m[mode]
            print(f"{batch:>6} {mode:>8} {m['grad_s']:>9.4f} {r['hvp_s']:>9.4f} {r['setup_s']:>9.4f} {r['ratio']:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
