"""Transfer between two linear-Gaussian tasks against closed forms (docs/transfer.md).

    python validation/gaussian_transfer.py --out out/gaussian_transfer

Source x ~ N(0, Sigma_s), target x ~ N(0, Sigma_t) (another covariance, the same labelling
rule y = B x + noise), 1-D latent, start (lambda, gamma) = (1, 1). For each task path (mixture,
eq. 23; the W2-optimal coupling of the Gaussians with soft labels, eq. 37) and each process
(quasi-static transfer; iso-C with lambda' = k, eq. 38; geodesic with dD/dR = k, eq. 30) the
law alone is integrated by dopri5 with a Newton corrector, t 0 -> 1 in steps of 0.25, and every
point is compared with the closed form:
R, D, C at the path's own (lambda, gamma, t), and the multipliers against the closed-form
multiplier path (brentq / a 2-D root solve of the closed form). Prints the largest errors and
writes a plot of gamma(t) and lambda(t). Exit status 1 when an error exceeds 1e-6.
`--quick`: the mixture path and the iso-C process with lambda' = k alone (about 20 s);
`--json FILE`: the table also as JSON (one object per run; `python -m continuation report`).

`gaussian_transfer(out, quick, json_path)` is the experiment (the report calls it; it runs in
float64 and restores torch's default dtype after); `main(argv)` the command line of
validation/gaussian_transfer.py.
"""

from __future__ import annotations

import sys
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from continuation.apps.scripts import run_experiment  # noqa: E402
from continuation import Output, continue_path  # noqa: E402
from continuation.strategies.correctors import NewtonCorrector  # noqa: E402
from continuation.strategies.predictors import ODEPredictor  # noqa: E402
from continuation.strategies.processes import QuasiStatic  # noqa: E402
from continuation.strategies.transfer_processes import IsoClassificationTransfer  # noqa: E402
from continuation.apps.plot import save_figure  # noqa: E402
from continuation.strategies.step_control import AdaptiveSteps, StopRule  # noqa: E402
from problems import LinearGaussianData, LinearGaussianHamiltonian  # noqa: E402
from problems.linear_gaussian import LinearGaussianTransferProblem  # noqa: E402
from problems.linear_gaussian_closed_form import TransferClosedForm  # noqa: E402
from problems.task_path import CoupledMoments, MixtureMoments, gaussian_ot_joint  # noqa: E402

LAM, GAM, K_LAMBDA, K_GEODESIC = 1.0, 1.0, 0.5, 0.5


def tasks():
    source = LinearGaussianData.random(3, 1, seed=0, spectrum=[3.0, 1.2, 0.5])
    other = LinearGaussianData.random(3, 1, seed=1, spectrum=[2.0, 1.5, 0.4])
    return source, LinearGaussianData(other.Sigma, source.B, source.noise)


def build(path: str):
    source, target = tasks()
    h = LinearGaussianHamiltonian(3, 1, latent_dim=1)
    if path == "mixture":
        S_s, S_t = source.second_moment(), target.second_moment()
        return (LinearGaussianTransferProblem(h, MixtureMoments(S_s, S_t, 3, 1)),
                TransferClosedForm.mixture(S_s, S_t, 3, 1, 1))
    joint = gaussian_ot_joint(source, target)
    return LinearGaussianTransferProblem(h, CoupledMoments(joint, 3, 1)), TransferClosedForm.coupled(joint, 3, 1, 1)


def run(problem, process):
    return continue_path(problem, process, ODEPredictor("dopri5", rtol=1e-9, atol=1e-10), NewtonCorrector(gtol=1e-12),
                         AdaptiveSteps(initial=0.25, max_step=0.25, grow=1.0, max_drift=None, max_angle_deg=180),
                         StopRule(max_steps=50, target={"t": 1.0}), start=(LAM, GAM, 0.0),
                         output=Output(progress=False))


def errors(closed, ds, kind) -> dict:
    """Largest |R, D, C - closed form at the path's own mu| and |mu - the closed-form multiplier path|."""
    f0 = closed.functionals(LAM, GAM, 0.0)
    out = {"R": 0.0, "D": 0.0, "C": 0.0, "multipliers": 0.0, "gamma_range": (np.inf, -np.inf)}
    guess = (LAM, GAM)
    for i in range(ds.sizes["step"]):
        t, lam, gam = float(ds["t"][i]), float(ds["lambda"][i]), float(ds["gamma"][i])
        ref = closed.functionals(lam, gam, t)
        for name in "RDC":
            out[name] = max(out[name], abs(float(ds[name][i]) - ref[name]))
        if kind == "lambda":
            out["multipliers"] = max(out["multipliers"], abs(gam - closed.iso_c_gamma(LAM + K_LAMBDA * t, t, f0["C"])))
        elif kind == "geodesic" and i > 0:
            guess = closed.geodesic_multipliers(t, K_GEODESIC, f0["C"], f0["D"] - K_GEODESIC * f0["R"], guess)
            out["multipliers"] = max(out["multipliers"], abs(lam - guess[0]), abs(gam - guess[1]))
        out["gamma_range"] = (min(out["gamma_range"][0], gam), max(out["gamma_range"][1], gam))
    return out


def main(argv=None):
    return run_experiment(argv, gaussian_transfer, prog="gaussian_transfer.py", doc=__doc__,
                          out="out/gaussian_transfer", quick="the mixture path and the lambda' = k process only")


def gaussian_transfer(out: Path, quick: bool = False, json_path: Path | None = None) -> int:
    """Every run into the folder `out` (PATH_PROCESS.nc, gaussian_transfer.png) and the table as
    JSON at `json_path`; `quick`: the mixture path and the lambda' = k process only. Returns the
    exit status: 0 when every error is within 1e-6, 1 otherwise."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return _gaussian_transfer(out, quick, json_path)
    finally:
        torch.set_default_dtype(dtype)


def _gaussian_transfer(out: Path, quick: bool, json_path: Path | None) -> int:
    processes = {"quasi-static": lambda: QuasiStatic(lambda_rate=0.0, t_rate=1.0),
                 "lambda": lambda: IsoClassificationTransfer("lambda", k=K_LAMBDA),
                 "geodesic": lambda: IsoClassificationTransfer("geodesic", k=K_GEODESIC)}
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    worst, records = 0.0, []
    print(f"{'path':<8} {'process':<13} {'pts':>3} {'|RDC - closed|':>13} {'|mu - closed|':>14} {'gamma at points':>15} "
          f"{'s':>5}")
    if quick:
        processes = {"lambda": processes["lambda"]}
    for path in ("mixture",) if quick else ("mixture", "ot"):
        problem, closed = build(path)
        for kind, make in processes.items():
            t0 = time.perf_counter()
            ds = run(problem, make())
            e = errors(closed, ds, kind)
            worst = max(worst, e["R"], e["D"], e["C"], e["multipliers"])
            print(f"{path:<8} {kind:<13} {ds.sizes['step']:>3d} {max(e['R'], e['D'], e['C']):>13.2e} {e['multipliers']:>14.2e} "
                  f"{e['gamma_range'][0]:>7.3f}-{e['gamma_range'][1]:<7.3f} {time.perf_counter() - t0:>5.1f}")
            ds.to_netcdf(out / f"{path}_{kind}.nc")
            f1 = closed.functionals(float(ds["lambda"][-1]), float(ds["gamma"][-1]), float(ds["t"][-1]))
            records.append({"path": path, "process": kind, "points": ds.sizes["step"], "t_end": float(ds["t"][-1]),
                            "status": ds.attrs["status"], "max_RDC_error": max(e["R"], e["D"], e["C"]),
                            "max_multiplier_error": e["multipliers"], "C0": float(ds["C"][0]),
                            "C_end": float(ds["C"][-1]), "C_end_closed_form": f1["C"],
                            "lambda_end": float(ds["lambda"][-1]), "gamma_end": float(ds["gamma"][-1]),
                            "file": f"{path}_{kind}.nc"})
            if kind != "quasi-static":
                ts = np.linspace(0, 1, 41)
                label = f"{path}, {kind}"
                c = ax[0].plot(ds["t"], ds["gamma"], "o", label=f"{label} (path)")[0].get_color()
                ax[1].plot(ds["t"], ds["lambda"], "o", color=c, label=f"{label} (path)")
                f0 = closed.functionals(LAM, GAM, 0.0)
                if kind == "lambda":
                    ax[0].plot(ts, [closed.iso_c_gamma(LAM + K_LAMBDA * t, t, f0["C"]) for t in ts], "-", color=c)
                    ax[1].plot(ts, LAM + K_LAMBDA * ts, "-", color=c)
                else:
                    guess, curve = (LAM, GAM), [(LAM, GAM)]
                    for t in ts[1:]:
                        guess = closed.geodesic_multipliers(t, K_GEODESIC, f0["C"], f0["D"] - K_GEODESIC * f0["R"],
                                                            guess)
                        curve.append(guess)
                    ax[0].plot(ts, [g for _, g in curve], "-", color=c)
                    ax[1].plot(ts, [lam for lam, _ in curve], "-", color=c)
    ax[0].set(xlabel="t", ylabel="gamma", title="iso-C transfer: gamma(t) (lines: closed form)")
    ax[1].set(xlabel="t", ylabel="lambda", title="lambda(t)")
    save_figure(fig, ax, out / "gaussian_transfer.png")
    print(f"largest error {worst:.2e} (target 1e-6); wrote {out / 'gaussian_transfer.png'}")
    if json_path is not None:
        Path(json_path).write_text(json.dumps({"tolerance": 1e-6, "largest_error": worst, "runs": records}, indent=1,
                                        default=float))
        print(f"wrote {json_path}")
    return 0 if worst <= 1e-6 else 1


if __name__ == "__main__":
    sys.exit(main())
