"""Foundation check on the linear-Gaussian problem: every framework number against a closed form.

    python validation/gaussian_foundation.py --out out/foundation

Prints one table (quantity, framework value, independent value, error) and writes
`foundation.png` (F, D, C, the smallest non-gauge Hessian eigenvalue across the critical
multipliers, and the rate-distortion curve) and `foundation.json` (the table) to --out.

`foundation(out, seed, sweep)` is the experiment (the report calls it); `main(argv)` the command
line of validation/gaussian_foundation.py.
"""

from __future__ import annotations

import argparse
import sys
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from continuation import EquilibriumSystem, free_energy_hessian, maxwell_gap, solve_tangents
from continuation.singular.spectrum import non_gauge_eigenvalues
from problems import LinearGaussianClosedForm, LinearGaussianData, LinearGaussianGibbsProblem, make_mu
from solvers import NewtonCG


def flat(system, theta_np):
    return system.flatten({k: torch.tensor(v) for k, v in theta_np.items()})


def gram(system, x):
    t = system.unflatten(x)
    th = torch.cat([t["W"], t["V"]])
    return th @ th.T


def main(argv=None):
    parser = argparse.ArgumentParser(prog="gaussian_foundation.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("out/foundation"), help="folder for the figure and table")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random Gaussian instance")
    parser.add_argument("--sweep", type=int, default=41, help="lambda values in the plotted sweep")
    args = parser.parse_args(argv)
    return foundation(args.out, seed=args.seed, sweep=args.sweep)


def foundation(out: Path, seed: int = 0, sweep: int = 41) -> int:
    """The table and the figure into the folder `out` (foundation.json, foundation.png): the
    random instance of `seed`, `sweep` lambda values in the plotted sweep. Returns the exit status:
    0 when every error is below 1e-5, 1 otherwise."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n_sweep = sweep

    data = LinearGaussianData.random(3, 1, seed=seed)
    problem = LinearGaussianGibbsProblem.from_data(data, latent_dim=2)
    cf = LinearGaussianClosedForm.of(problem)
    system = EquilibriumSystem(problem, problem.init_params(0))
    x0 = system.flatten(problem.init_params(0))
    rows = []

    def row(name, value, reference, error, note=""):
        rows.append({"check": name, "framework": value, "independent": reference, "error": error, "note": note})

    # 1. Newton-CG equilibration against the closed-form free energy
    for lam, gam in [(1.0, 1.0), (0.25, 1.0), (3.0, 0.5)]:
        res = NewtonCG(gtol=1e-12).solve(system.objective, x0, make_mu(lam, gam))
        F = cf.free_energy(lam, gam)
        row(f"F({lam}, {gam}) by Newton-CG", res.value, F, abs(res.value - F) / abs(F),
            f"{res.iters} steps, {res.hvps} HVPs, {res.seconds:.2f} s, |grad| {res.grad_norm:.1e}")

    lam, gam = 1.0, 1.0
    mu = make_mu(lam, gam)
    x = NewtonCG(gtol=1e-13).solve(system.objective, x0, mu).x
    f = problem.functionals(system.unflatten(x), mu)

    # 2. envelope theorem: D = dF/dlambda, C = dF/dgamma (central differences of closed-form F)
    h = 1e-5
    dF_dl = (cf.free_energy(lam + h, gam) - cf.free_energy(lam - h, gam)) / (2 * h)
    dF_dg = (cf.free_energy(lam, gam + h) - cf.free_energy(lam, gam - h)) / (2 * h)
    row("D = dF/dlambda", float(f["D"]), dF_dl, abs(float(f["D"]) - dF_dl) / abs(dF_dl))
    row("C = dF/dgamma", float(f["C"]), dF_dg, abs(float(f["C"]) - dF_dg) / abs(dF_dg))

    # 3. Hess F from tangents against differences of the closed-form D, C
    t0 = time.perf_counter()
    tangents = solve_tangents(system, x, mu)
    H = free_energy_hessian(system, x, mu, tangents).numpy()
    seconds = time.perf_counter() - t0
    h = 1e-4
    fd = np.array([[(cf.functionals(lam + h, gam)[q] - cf.functionals(lam - h, gam)[q]) / (2 * h),
                    (cf.functionals(lam, gam + h)[q] - cf.functionals(lam, gam - h)[q]) / (2 * h)] for q in "DC"])
    row("Hess F (max entry error / max entry)", H.tolist(), fd.tolist(), float(np.abs(H - fd).max() / np.abs(fd).max()),
        f"{tangents.krylov_iters} MINRES matvecs, {seconds:.2f} s; eigenvalues {np.linalg.eigvalsh(H).round(5).tolist()}")
    row("Maxwell gap |D_gamma - C_lambda| / max|Hess F|", maxwell_gap(torch.tensor(H)), 0.0, maxwell_gap(torch.tensor(H)))

    # 4. appendix B: Hess R(D, C) Hess F = -I, R(D, C) by inverting (lambda, gamma) -> (D, C)
    from scipy.optimize import root

    def R_of(D, C):
        sol = root(lambda p: [cf.functionals(*p)["D"] - D, cf.functionals(*p)["C"] - C], [lam, gam],
                   method="hybr", options={"xtol": 1e-15})
        return cf.functionals(*sol.x)["R"]

    f0 = cf.functionals(lam, gam)
    hD, hC = 1e-3, 2e-4
    R = {(i, j): R_of(f0["D"] + i * hD, f0["C"] + j * hC) for i in (-1, 0, 1) for j in (-1, 0, 1)}
    HR = np.array([[(R[1, 0] - 2 * R[0, 0] + R[-1, 0]) / hD**2, (R[1, 1] - R[1, -1] - R[-1, 1] + R[-1, -1]) / (4 * hD * hC)],
                   [0.0, (R[0, 1] - 2 * R[0, 0] + R[0, -1]) / hC**2]])
    HR[1, 0] = HR[0, 1]
    prod = HR @ H
    row("Hess R(D,C) Hess F + I (max entry)", prod.tolist(), (-np.eye(2)).tolist(), float(np.abs(prod + np.eye(2)).max()))

    # 5. theta_lambda against re-equilibrated central differences, gauge invariant
    h = 1e-4
    newton = NewtonCG(gtol=1e-13)
    xp = newton.solve(system.objective, x, make_mu(lam + h, gam)).x
    xm = newton.solve(system.objective, x, make_mu(lam - h, gam)).x
    fd_gram = (gram(system, xp) - gram(system, xm)) / (2 * h)
    th = torch.cat([system.unflatten(x)["W"], system.unflatten(x)["V"]])
    t = system.unflatten(tangents.column("lambda"))
    dth = torch.cat([t["W"], t["V"]])
    exact = dth @ th.T + th @ dth.T
    row("d(Theta Theta^T)/dlambda from theta_lambda", float(exact.abs().max()), float(fd_gram.abs().max()),
        float((exact - fd_gram).abs().max() / fd_gram.abs().max()))

    # 6. critical multiplier: the smallest non-gauge eigenvalue of A crosses zero
    lam_c = cf.critical_lambda(gam, direction=1)
    lams = lam_c * np.array([0.9, 0.99, 0.999, 1.0, 1.001, 1.01, 1.1])
    trivial = [float(non_gauge_eigenvalues(system, flat(system, cf.stationary_point(v, gam, [0])), make_mu(v, gam))[0][0])
               for v in lams]
    minimum = [float(non_gauge_eigenvalues(system, flat(system, cf.theta_star(v, gam)), make_mu(v, gam))[0][0]) for v in lams]
    ell_c = float(cf.spectrum(lam_c, gam)[0][1])
    row(f"critical lambda = {lam_c:.10f} (direction 2 on), gamma = {gam}", lam_c, ell_c, abs(ell_c - 1.0),
        "error: |l_2(lambda_c) - 1|")
    row("min non-gauge eig of A, branch with direction 2 off", [round(e, 8) for e in trivial], None, abs(trivial[3]),
        "lambda/lambda_c = 0.9 ... 1.1: sign change at 1")
    row("min non-gauge eig of A, minimising branch", [round(e, 8) for e in minimum], None, abs(minimum[3]),
        "touches zero at lambda_c (pitchfork)")

    width = max(len(r["check"]) for r in rows)
    print(f"{'check':<{width}}  {'error':>10}  note")
    for r in rows:
        print(f"{r['check']:<{width}}  {r['error']:>10.2e}  {r['note']}")

    # sweep for the figure
    sweep = np.geomspace(0.05, 4.0, n_sweep)
    curves = {k: [] for k in ("F", "D", "C", "R", "F_cf", "D_cf", "C_cf", "R_cf", "eig")}
    for v in tqdm(sweep, desc="lambda sweep", unit="pt"):
        m = make_mu(v, gam)
        # From the random start each time, not warm-started: theta = 0 is stationary for every
        # lambda (gradient exactly zero), so a warm start from the all-off state never leaves that
        # branch once it has become a saddle. Crossing a switch-on needs a branch switch.
        res = newton.solve(system.objective, x0, m)
        fv = problem.functionals(system.unflatten(res.x), m)
        closed = cf.functionals(v, gam)
        curves["F"].append(res.value)
        curves["F_cf"].append(closed["F"])
        for q in "RDC":
            curves[q].append(float(fv[q]))
            curves[q + "_cf"].append(closed[q])
        curves["eig"].append(float(non_gauge_eigenvalues(system, flat(system, cf.theta_star(v, gam)), m)[0][0]))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    crit = [c for c in (cf.critical_lambda(gam, 0), lam_c) if c is not None]
    fig, ax = plt.subplots(2, 2, figsize=(10, 7.5))
    ax[0, 0].plot(sweep, curves["F_cf"], "k-", label="closed form")
    ax[0, 0].plot(sweep, curves["F"], "o", ms=3, label="Newton-CG")
    ax[0, 0].set(xscale="log", xlabel="lambda", ylabel="F", title=f"free energy, gamma = {gam}")
    for q, c in (("D", "C0"), ("C", "C1"), ("R", "C2")):
        ax[0, 1].plot(sweep, curves[q + "_cf"], "-", color=c, label=f"{q} closed form")
        ax[0, 1].plot(sweep, curves[q], "o", ms=3, color=c, label=f"{q} framework")
    ax[0, 1].set(xscale="log", xlabel="lambda", title="R, D, C at equilibrium")
    ax[1, 0].plot(sweep, curves["eig"], "-o", ms=3)
    ax[1, 0].axhline(0, color="k", lw=0.5)
    ax[1, 0].set(xscale="log", xlabel="lambda", ylabel="smallest eigenvalue", title="A off the gauge orbit (minimum branch)")
    ax[1, 1].plot(curves["D_cf"], curves["R_cf"], "k-")
    ax[1, 1].plot(curves["D"], curves["R"], "o", ms=3)
    ax[1, 1].set(xlabel="D", ylabel="R", title="rate-distortion curve")
    for a in (ax[0, 0], ax[0, 1], ax[1, 0]):
        for c in crit:
            a.axvline(c, color="r", ls="--", lw=0.8)
    ax[0, 0].legend()
    ax[0, 1].legend(fontsize=7)
    fig.suptitle("Linear-Gaussian foundation check (dashed: latent directions switch on)")
    fig.tight_layout()
    fig.savefig(out / "foundation.png", dpi=110)
    plt.close(fig)
    (out / "foundation.json").write_text(json.dumps(rows, indent=1, default=float))
    print(f"wrote {out / 'foundation.png'} and {out / 'foundation.json'}")
    worst = max(r["error"] for r in rows)
    return 0 if worst < 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
