"""Cost of one Hessian-vector product over one gradient on the paper's MLP (784-256-16).

    python benchmarks/hvp_cost.py [--batches 256 1024 4096] [--repeats 10] [--device cpu]

Prints, per batch size and HVP mode, the median seconds of a gradient and of an HVP (same
batch, Fashion-MNIST images if the Debian package is installed, uniform noise otherwise) and
their ratio. Forward-over-reverse ("fwd-rev") builds the linearisation per product;
reverse-over-reverse ("rev-rev") keeps the gradient graph and pays one backward per product
(its one-off graph build is timed separately as "setup"). Target (issue 4): ratio <= 3.
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
from solvers import hessian_operator


def timed(fn, repeats, sync):
    out = []
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, nargs="+", default=[256, 1024, 4096])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    try:
        data = load_fashion_mnist()
        source = "Fashion-MNIST"
    except FileNotFoundError:
        data = Data(torch.rand(max(args.batches), 1, 28, 28), torch.randint(0, 10, (max(args.batches),)),
                    tuple(range(10)), "noise")
        source = "uniform noise (Fashion-MNIST not installed)"
    print(f"paper MLP 784-256-16 / 16-12-10 on {source}, device {args.device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'batch':>6} {'mode':>8} {'grad s':>9} {'hvp s':>9} {'setup s':>9} {'hvp/grad':>9}")
    for batch in args.batches:
        sub = Data(data.x[:batch], data.y[:batch], data.classes, data.name)
        problem = NeuralProblem(*paper_mlp(), sub, grad_batch=batch, hvp_batch=batch, device=args.device)
        theta = problem.init_params(0)
        system = EquilibriumSystem(problem, theta)
        x = system.flatten(theta)
        mu = make_mu(0.25, 4.0, dtype=x.dtype, device=x.device)
        v = torch.randn_like(x)
        system.gradient(x, mu)  # warm up
        t_grad = timed(lambda: system.gradient(x, mu), args.repeats, sync)
        for mode in ("fwd-rev", "rev-rev"):
            setup = timed(lambda: hessian_operator(system.hessian_objective, x, mu, mode), 3, sync)
            op = hessian_operator(system.hessian_objective, x, mu, mode)
            op(v)
            t_hvp = timed(lambda: op(v), args.repeats, sync)
            print(f"{batch:>6} {mode:>8} {t_grad:>9.4f} {t_hvp:>9.4f} {setup:>9.4f} {t_hvp / t_grad:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
