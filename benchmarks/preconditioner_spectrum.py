"""Why K-FAC does not bring a network's Krylov solve to tens of products: the condition number of
M^-1/2 H M^-1/2 at a minimum of a smooth MLP small enough to hold its Hessian, for M = none,
K-FAC (1 and 64 draws), each layer's exact Gauss-Newton block, each layer's exact Hessian block,
and the whole Gauss-Newton matrix (docs/neural_equilibrium.md, "K-FAC").

    python benchmarks/preconditioner_spectrum.py                       # hidden 16, 200 images (2,782 parameters; 5 min)
    python benchmarks/preconditioner_spectrum.py --hidden 8 --limit 100

The model is `mlp-smooth` on digits (latent 8, classifier hidden 12, weight prior 3e-2, two
noise draws, decoder std 0.3: digits_exact.toml's at a smaller width), solved at (0.25, 4) by
L-BFGS then trust-region Newton to |grad J| <= 1e-10. H is assembled from N HVPs; the
Gauss-Newton matrix by `gauss_newton_matrix` (torch.func's Jacobian of the networks' outputs and
the loss Hessian in closed form). Cost: N HVPs, a Jacobian of (outputs x N), a few N x N eigendecompositions.
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="preconditioner_spectrum.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, default=16, help="the encoder's and decoder's hidden width (default 16)")
    p.add_argument("--limit", type=int, default=200, help="training images (default 200)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    a = p.parse_args(argv)
    if a.hidden < 1 or a.limit < 2:
        p.error("--hidden must be >= 1 and --limit >= 2")
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    import torch

    torch.set_num_threads(a.threads)
    from continuation.strategies.correctors import TrustRegionCorrector
    from continuation.surface.system import EquilibriumSystem
    from problems.registry import PROBLEMS
    from solvers.derivatives import hessian_operator
    from solvers.preconditioners import KFAC

    problem = PROBLEMS["mlp-smooth"](limit=a.limit, hidden=a.hidden, latent=8, classifier_hidden=12,
                                     weight_decay=3e-2, samples=2, decoder_std=0.3)
    system = EquilibriumSystem(problem, problem.init_params(0))
    mu = torch.tensor([0.25, 4.0, 0.0], dtype=torch.float64)
    res = TrustRegionCorrector(gtol=1e-10, maxiter=300, lbfgs_iters=5000, lbfgs_switch=1e-5).correct(
        system, system.flatten(problem.init_params(0)), mu)
    if not res.converged:
        print(f"{p.prog}: error: the minimum was not reached ({res.status}, |grad J| {res.grad_norm:.1e})",
              file=sys.stderr)
        return 1
    x, n = res.x, res.x.numel()
    eye = torch.eye(n, dtype=x.dtype)
    H = torch.cat([torch.func.vmap(hessian_operator(system.objective, x, mu))(eye[i:i + 256])
                   for i in range(0, n, 256)])
    H = 0.5 * (H + H.T)
    GGN = problem.gauss_newton_matrix(system.unflatten(x), mu)
    l_H = torch.linalg.eigvalsh(H)
    print(f"{problem.name}: {n} parameters, minimum at |grad J| = {res.grad_norm:.1e}; H's eigenvalues "
          f"{float(l_H[0]):.2e} ... {float(l_H[-1]):.3g}; |GGN - H| / |H| = {float((GGN - H).norm() / H.norm()):.3f}")

    def condition(M):  # of M^-1/2 H M^-1/2, M symmetric positive definite (given as M, not M^-1)
        L = torch.linalg.cholesky(0.5 * (M + M.T))
        Li = torch.linalg.inv(L)
        ev = torch.linalg.eigvalsh(Li @ H @ Li.T)
        return float(ev[-1] / ev[0]), float(ev[0]), float(ev[-1])

    def kfac_matrix(draws):
        pre = KFAC(draws=draws).bind(problem, problem.init_params(0))
        pre.build(hessian_operator(system.objective, x, mu), x)
        Minv = torch.func.vmap(pre.apply)(eye)
        return torch.linalg.inv(0.5 * (Minv + Minv.T))

    groups = {}
    idx = system.unflatten(torch.arange(n))
    for part, leaves in idx.items():
        for name, ii in leaves.items():
            groups.setdefault((part, name.rsplit(".", 1)[0]), []).append(ii.reshape(-1))

    def blocks(of):
        M = torch.zeros_like(of)
        for parts in groups.values():
            ii = torch.cat(parts)
            M[ii[:, None], ii] = of[ii][:, ii]
        return M

    print(f"{'M':48s} {'condition':>10s} {'lowest':>9s} {'largest':>9s}")
    for name, M in (("none", eye), ("kfac, 1 draw", kfac_matrix(1)), ("kfac, 64 draws", kfac_matrix(64)),
                    ("each layer's exact Gauss-Newton block", blocks(GGN)),
                    ("each layer's exact Hessian block", blocks(H)),
                    ("the whole Gauss-Newton matrix", GGN)):
        c, lo, hi = condition(M)
        print(f"{name:48s} {c:10.3g} {lo:9.2e} {hi:9.3g}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
