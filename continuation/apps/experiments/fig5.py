"""Paper Fig. 5 (and 6): iso-classification transfer from classes 0-4 to 5-9, against
fine-tuning the source model and training on the target from scratch.

    python validation/fig5_transfer.py --out out/fig5                      # CPU mode, Fashion-MNIST
    python validation/fig5_transfer.py --dataset digits --out out/fig5d    # a quick check (~3 min)
    python validation/fig5_transfer.py --dataset mnist --data-dir DIR --full --device cuda
    python validation/fig5_transfer.py --dataset cifar10 --data-dir DIR --full --device cuda  # vehicles -> animals

Runs, all with the same model and corrector:
1. iso-C transfer: Adam from scratch on the source at (lambda0, gamma0, t = 0), `settle` corrector
   runs, then t 0 -> 1 in steps of 0.1 by the law of eq. 38 (lambda' = k, default 0: gamma alone
   moves) or eq. 30 (--condition geodesic, slope k), training C held by the secant projection
   on gamma (measured on one fixed noise draw over the whole training distribution at t);
2. quasi-static transfer: steps of 0.1 at fixed (lambda0, gamma0) (C left free);
3. fine-tuning: the source model (point 0 of run 1) trained by Adam on the target at
   (lambda0, gamma0); its first row is the source model's accuracy on the target;
4. from scratch on the target at the transfer's final (lambda1, gamma1), and at (lambda0, gamma0).

Steps: t in steps of 0.1 that halve where the projection cannot hold the held functional to its
target (`[steps] name = "held"`, --steps to change its options). The geodesic keeps lambda and
gamma at each prediction (predictor "none", move = "clock"), its 2-D secant measuring its first
Jacobian by two probe runs (jacobian = "probe"), and the decoder's std is 0.3 there.

Task path: --path mixture (eq. 23, default) or ot (eq. 37, POT coupling, soft labels). What is
held (--hold): C, or C less the soft labels' entropy floor q h(t) (the mean KL divergence from
the soft label; the default on the OT path, where C itself cannot stay below q h(t):
docs/transfer.md). With --condition geodesic the process also holds D - k R, and the secant
projection moves lambda and gamma together (Broyden's 2-D secant).

Prints a line per point of the transfer as it is written (t, multipliers, the held drift, minutes).
Interrupted (Ctrl-C, SIGTERM), the transfer keeps its points and the script exits 130 / 143 with
the command that continues it (the same with --resume; the baselines are run again).

Prints the table along t (the held functionals' drift, multipliers, accuracy) and the summary
(target validation accuracy at t = 1 against from-scratch, fine-tuning's start), writes one
netCDF per run and fig5.png. Exit status 1 when the transfer misses a target: t = 1 reached; the
held functional within 3% (C with lambda' = k), 1% (geodesic) or 0.5% (C - q h(t)); D - k R
within 2% (geodesic; of its terms' size |D0 - D_floor| + |k| R0, D_floor the decoder's Gaussian
normaliser); gamma within a factor 10 of its start (C - q h(t)); target accuracy within
2 points of from-scratch at (lambda1, gamma1).
`--quick` (digits only): the smallest size that still checks the targets (1,000 training
updates, T = 100, 200 fine-tuning updates, t in steps of 0.25); `--json FILE` writes the table's
numbers and whether the targets were met (`python -m continuation report` reads it).

This module is the experiment; validation/fig5_transfer.py is its command line (`main(argv)`,
which `python -m continuation report` also calls in-process, its output into a folder of the
report).
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from continuation.apps.baselines import fine_tune, from_scratch  # noqa: E402
from continuation.files.config import build, build_run  # noqa: E402
from continuation.errors import ContinuationError, FileProblem, OutputExists, RunInterrupted  # noqa: E402
from continuation.files.path import load_path, load_point  # noqa: E402
from continuation.apps.plot import save_figure  # noqa: E402
from continuation.apps.run import run_config  # noqa: E402
from continuation.files.lock import OutputLock  # noqa: E402
from continuation.surface.system import EquilibriumSystem  # noqa: E402

SIZES = {  # CPU mode: training images per task, training updates, corrector T, fine-tune updates
    "digits": {"limit": 0, "train_steps": 3000, "T": 200, "fine_tune": 600, "hidden": 128, "latent": 8,
               "batch": 200, "ot_T": 1000},
    "digits-quick": {"limit": 0, "train_steps": 1000, "T": 100, "fine_tune": 200, "hidden": 128, "latent": 8,
                     "batch": 200, "step": 0.25},
    "fashion-mnist": {"limit": 10_000, "train_steps": 12_000, "T": 600, "fine_tune": 3000, "hidden": 256,
                      "latent": 16, "batch": 500},
}


SIZE_KEYS = ("limit", "train_steps", "T", "ot_T", "fine_tune", "hidden", "latent", "batch", "step", "width",
             "krylov_maxiter")


def sizes_of(args) -> dict:
    """The run's sizes: the data set's CPU-mode row of SIZES (--quick: digits-quick), or with
    --full the paper's (24,000 training images per task: 120 epochs of pre-training, T = 5
    epochs, 20 of fine-tuning, batch 500), then --sizes's overrides (validation/full_transfer.py
    sizes the full runs to a time budget that way). On the OT path the corrector's T is the row's
    `ot_T` where it has one: holding C - q h(t), the corrector's lag behind the moving task sets how
    far the projection raises gamma (digits, from gamma0 = 8: a peak of 241, 93 and 68 at T = 200,
    600 and 1,000; only the last is within the factor 10 of the issue's target, docs/transfer.md)."""
    size = dict(SIZES["digits-quick"] if getattr(args, "quick", False) else SIZES.get(args.dataset,
                                                                                       SIZES["fashion-mnist"]))
    if args.full:
        n_train, batch = 24_000, size["batch"]
        size.update(limit=0, train_steps=120 * n_train // batch, T=5 * n_train // batch,
                    fine_tune=20 * n_train // batch)
    try:
        extra = json.loads(args.sizes) if getattr(args, "sizes", None) else {}
    except json.JSONDecodeError as e:
        raise ValueError(f"--sizes: not valid JSON ({e})") from None
    if not isinstance(extra, dict):
        raise ValueError(f"--sizes must be a JSON object of sizes, got {args.sizes!r}")
    unknown = sorted(set(extra) - set(SIZE_KEYS))
    if unknown:
        raise ValueError(f"--sizes: unknown key {unknown[0]!r}; valid: {', '.join(SIZE_KEYS)}")
    for key, value in extra.items():  # every size a count (>= 0 for limit: all images), step in (0, 1]
        if key == "step":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1
        else:
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= (0 if key == "limit" else 1)
        if not ok:
            want = "a number in (0, 1]" if key == "step" else "an integer >= 0 (0: every image)" if key == "limit" \
                else "an integer >= 1"
            raise ValueError(f"--sizes: {key} must be {want}, got {value!r}")
    size.update(extra)
    if getattr(args, "path", "mixture") == "ot" and "ot_T" in size and "T" not in extra and not args.full:
        size["T"] = size["ot_T"]
    size.pop("ot_T", None)
    return size


def base_config(args) -> tuple[dict, dict]:
    """The transfer run's configuration, and the baselines' update counts."""
    size = sizes_of(args)
    held = hold(args)
    target = held_target(held, args.condition)
    geodesic = args.condition == "geodesic"
    cifar = args.dataset == "cifar10"
    problem = {"name": "transfer-resnet" if cifar else "transfer-mlp", "dataset": args.dataset, "path": args.path,
               "ot_method": args.ot_method, "grad_batch": size["batch"], "hvp_batch": size["batch"], "samples": 1,
               "device": args.device}
    if cifar:
        problem.update(source="vehicles", target="animals")
        if "width" in size:
            problem["width"] = size["width"]
    else:
        problem.update(hidden=size["hidden"], latent=size["latent"])
    std = decoder_std(args)
    if std != 1.0:
        problem["decoder_std"] = std
    if args.data_dir:
        problem["data_dir"] = args.data_dir
    if args.path == "ot" and getattr(args, "ot_max_iter", 0):
        problem["ot_max_iter"] = args.ot_max_iter
    if size["limit"]:
        problem["limit"] = size["limit"]
    return {
        "problem": problem,
        "start": {"lambda": args.lambda0, "gamma": args.gamma0, "t": 0.0, "train_steps": size["train_steps"],
                  "train_lr": 2e-3, "train_resample_every": 1, "settle": 3, "seed": 0},
        "process": {"name": "iso-classification-transfer", "condition": args.condition, "k": args.k,
                    "tol": min(5e-3, target / 2), "measure": "evaluation", **({"hold": "kl"} if hold(args) == "kl" else {})},
        "projection": {"name": "secant", **({"jacobian": "probe", "max_iter": 8} if geodesic else {})},
        # the law moves a multiplier by at most a factor 2; the geodesic's 2 x 2 law is not trusted
        "predictor": {"name": "none", "factor": 2.0, **({"move": "clock"} if geodesic else {})},
        "corrector": {"name": "adam", "steps": size["T"], "eta_max": 1.5e-3, "resample_every": 1},
        "krylov": {"name": "minres", "rtol": 1e-2, "maxiter": size.get("krylov_maxiter", 30), "shift": -0.1},
        "steps": held_steps(size.get("step", 0.1), target, held),
        "stop": {"max_steps": 100, "target": {"t": 1.0}},
        "output": {"progress": False},
    }, {"train_steps": size["train_steps"], "fine_tune": size["fine_tune"]}


def held_target(held: str, condition: str) -> float:
    """The held functional's target (the largest relative drift allowed): 0.5% for C - q h(t), 1%
    for C with the geodesic, 3% for C with lambda' = k (the issue's done-criteria)."""
    return 0.005 if held == "kl" else 0.01 if condition == "geodesic" else 0.03


def decoder_std(args) -> float:
    """--decoder-std, by default 1 (the paper's digits and Fashion-MNIST runs), 0.3 for the
    geodesic: at 1 the digits' D has a data term of 1.4 nats that lambda barely moves (a 10%
    change of lambda moves D - 0.5 R by 0.001 nats, measured: docs/transfer.md), so D - k R
    cannot be held by lambda; at 0.3 the data term is about 11 times larger (as in the default
    run, continuation/apps/defaults.py)."""
    std = getattr(args, "decoder_std", None)
    return std if std is not None else 0.3 if args.condition == "geodesic" else 1.0


def held_steps(step: float, target: float, held: str) -> dict:
    """Steps of `step` in t that halve (down to step / 64) where the projection cannot bring the
    held functionals within `target` of their starts, and double back after each accepted step
    (continuation/strategies/step_control.py, HeldSteps): near t = 0 the new task's data enter and a finite
    corrector run cannot keep up with a full step. Holding C - q h(t), a step may also move gamma
    by at most a factor 1.5: where the corrector lags the moving task, the projection otherwise
    raises gamma far past the equilibrium's (docs/transfer.md)."""
    return {"name": "held", "initial": step, "max_step": step, "min_step": step / 64, "max_miss": target,
            "grow": 2.0, **({"max_factor": 1.5} if held == "kl" else {})}


def json_options(flag: str, text: str) -> dict:
    """The JSON object of options given to `flag` ({} for none); ValueError (one line) otherwise."""
    if not text:
        return {}
    try:
        options = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{flag}: not valid JSON ({e})") from None
    if not isinstance(options, dict):
        raise ValueError(f"{flag} must be a JSON object of options, got {text!r}")
    return options


def hold(args) -> str:
    """What the transfer holds: --hold, or by default C less its floor on the OT path, C on the mixture."""
    choice = getattr(args, "hold", "auto")
    return ("kl" if args.path == "ot" else "C") if choice == "auto" else choice


def tolerances(s: dict) -> dict:
    """The targets of the issue: the held functional's drift (C - q h(t): 0.5%; geodesic: 1%;
    otherwise 3%), D - k R's (2%, geodesic), gamma's range (a factor 10, C - q h(t))."""
    held = "C" if s["held"] == "C" else "kl"
    return {"held": held_target(held, "geodesic" if s["held2"] else "lambda"), "held2": 0.02,
            "gamma_factor": 10.0 if held == "kl" else None, "accuracy": 0.02}


def point_line(t_start: float):
    """on_point for the transfer: one line per point written (t, the multipliers, the held
    functionals' drift, minutes so far), so that a run of an hour shows how far it is."""
    def show(step, row):
        drift = f"  held {100 * float(row.get('constraint_drift', 0.0)):+.3f}%"
        if "constraint2_drift" in row and np.isfinite(float(row["constraint2_drift"])):
            drift += f", D - kR {100 * float(row['constraint2_drift']):+.3f}%"
        print(f"  point {step:3d}: t = {float(row['t']):.5f}  lambda = {float(row['lambda']):.4g}  "
              f"gamma = {float(row['gamma']):.4g}{drift}  ({(time.perf_counter() - t_start) / 60:.1f} min)", flush=True)
    return show


def quasi_static(cfg: dict) -> dict:
    """The same steps at fixed multipliers, from the transfer's first point exactly (not re-equilibrated)."""
    cfg = copy.deepcopy(cfg)
    cfg["process"] = {"name": "quasi-static", "lambda_rate": 0.0, "t_rate": 1.0}
    cfg["projection"] = {"name": "none"}  # holds nothing
    cfg["start"]["equilibrate"] = False
    return cfg


def summary(transfer, qs, tune, scratch1, scratch0) -> dict:
    c = transfer["train_C"].values
    g = transfer["gamma"].values
    held2 = transfer["constraint2_drift"].values if "constraint2_drift" in transfer else None
    out = {"C0": float(c[0]), "max_C_change": float(np.max(np.abs(c - c[0])) / c[0]),
            "held": transfer.attrs["held"].split(" and ")[0],
            "held2": transfer.attrs["held"].split(" and ")[1] if " and " in transfer.attrs["held"] else "",
            "max_held_change": float(np.max(np.abs(transfer["constraint_drift"].values))),
            "max_held2_change": float(np.max(np.abs(held2))) if held2 is not None else float("nan"),
            "gamma_factor": float(max(g.max() / g[0], g[0] / g.min())),
            "qs_C_change": float((qs["train_C"].values[-1] - qs["train_C"].values[0]) / qs["train_C"].values[0]),
            "lam": (float(transfer["lambda"][0]), float(transfer["lambda"][-1])),
            "gam": (float(transfer["gamma"][0]), float(transfer["gamma"][-1])),
            "acc_t0": float(transfer["val_acc"][0]), "acc_t1": float(transfer["val_acc"][-1]),
            "source_acc_t0": float(transfer["source_val_acc"][0]),
            "source_acc_t1": float(transfer["source_val_acc"][-1]),
            "qs_acc_t1": float(qs["val_acc"][-1]), "tune_start": float(tune["val_acc"][0]),
            "tune_end": float(tune["val_acc"][-1]), "scratch1": float(scratch1["val_acc"][-1]),
            "scratch0": float(scratch0["val_acc"][-1]),
            "scratch1_C": float(scratch1["train_C"][-1]), "points": transfer.sizes["step"],
            "t_end": float(transfer["t"][-1]), "status": transfer.attrs["status"],
            "stop_reason": transfer.attrs["stop_reason"]}
    tol = tolerances(out)
    out.update(C_tolerance=tol["held"], accuracy_tolerance=tol["accuracy"], held2_tolerance=tol["held2"],
               gamma_factor_limit=tol["gamma_factor"])
    return out


def meets(s: dict) -> bool:
    return all(ok for _, ok in target_verdicts(s))


def along_t(transfer, k: float) -> list[str]:
    """The table along t: multipliers, the held functionals and their drift, accuracy."""
    held = transfer.attrs["held"].split(" and ")
    head = f"  {'t':>6} {'lambda':>8} {'gamma':>9} {'train C':>8} {held[0] + ' %':>16}"
    if len(held) > 1:
        head += f" {held[1]:>12} {'drift %':>8}"
    lines = [head + f" {'val acc %':>9}"]
    has2 = "constraint2_drift" in transfer
    for i in range(transfer.sizes["step"]):
        r = transfer.isel(step=i)
        line = (f"  {float(r['t']):>6.3f} {float(r['lambda']):>8.4f} {float(r['gamma']):>9.4f} "
                f"{float(r['train_C']):>8.4f} {100 * float(r['constraint_drift']):>+16.3f}")
        if has2:
            dk = float(r["train_D"]) - k * float(r["train_R"])
            line += f" {dk:>12.4f} {100 * float(r['constraint2_drift']):>+8.3f}"
        lines.append(line + f" {100 * float(r['val_acc']):>9.2f}")
    return lines


def print_table(s: dict, minutes: float):
    if s["status"] != "finished":
        print(f"\niso-C transfer {s['status']} at t = {s['t_end']:.4g}: {s['stop_reason']}")
    print(f"\niso-C transfer: {s['points']} points, t 0 -> {s['t_end']:.4g}; lambda {s['lam'][0]:.3f} -> {s['lam'][1]:.3f}, "
          f"gamma {s['gam'][0]:.3f} -> {s['gam'][1]:.3f}; {minutes:.1f} min in all")
    print(f"  training C: C0 = {s['C0']:.4f}, max |C - C0| / C0 over t = {100 * s['max_C_change']:.2f}% "
          f"(quasi-static transfer at fixed multipliers: {100 * s['qs_C_change']:+.1f}% at t = 1)"
          + ("; not held: C - q h(t) is, C itself rises with the soft labels' floor" if s["held"] != "C" else ""))
    print(f"  held {s['held']}: max relative drift {100 * s['max_held_change']:.3f}%"
          + (f"; {s['held2']}: {100 * s['max_held2_change']:.3f}%" if s["held2"] else "")
          + f"; gamma within a factor {s['gamma_factor']:.3g} of its start")
    print(f"  {'model':<44} {'target val acc %':>16}")
    rows = [("iso-C transfer, t = 0 (source model)", s["acc_t0"]),
            (f"iso-C transfer, t = {s['t_end']:.4g}" + (" (stopped)" if s["t_end"] != 1.0 else ""), s["acc_t1"]),
            ("quasi-static transfer, t = 1", s["qs_acc_t1"]), ("fine-tuning, start (source model)", s["tune_start"]),
            ("fine-tuning, end", s["tune_end"]),
            (f"from scratch at (lambda1, gamma1) = ({s['lam'][1]:.3g}, {s['gam'][1]:.3g})", s["scratch1"]),
            (f"from scratch at (lambda0, gamma0) = ({s['lam'][0]:.3g}, {s['gam'][0]:.3g})", s["scratch0"])]
    for name, acc in rows:
        print(f"  {name:<44} {100 * acc:>16.2f}")
    print(f"  source val acc along the transfer: {100 * s['source_acc_t0']:.2f}% -> {100 * s['source_acc_t1']:.2f}%")
    print(f"  |transfer - from scratch (lambda1, gamma1)| = {100 * abs(s['acc_t1'] - s['scratch1']):.2f} points")
    verdicts = ", ".join(f"{name}: {'met' if ok else 'MISSED'}" for name, ok in target_verdicts(s))
    print(f"  targets: {verdicts}; {'all met' if meets(s) else 'MISSED'}")


def target_verdicts(s: dict) -> list[tuple[str, bool]]:
    """Each target of the issue with whether the run met it."""
    out = [("t = 1 reached", s["t_end"] == 1.0),
           (f"{s['held']} within {100 * s['C_tolerance']:g}%", s["max_held_change"] <= s["C_tolerance"])]
    if s["held2"]:
        out.append((f"{s['held2']} within {100 * s['held2_tolerance']:g}%",
                    s["max_held2_change"] <= s["held2_tolerance"]))
    if s["gamma_factor_limit"] is not None:
        out.append((f"gamma within a factor {s['gamma_factor_limit']:g}", s["gamma_factor"] <= s["gamma_factor_limit"]))
    out.append((f"accuracy within {100 * s['accuracy_tolerance']:g} points", abs(s["acc_t1"] - s["scratch1"])
                <= s["accuracy_tolerance"]))
    return out


def plot(transfer, qs, tune, scratch1, scratch0, out: Path) -> Path:
    fig, ax = plt.subplots(1, 4, figsize=(18, 4))
    ax[0].plot(transfer["train_D"], transfer["train_R"], "o-", ms=3, label="iso-C transfer")
    ax[0].plot(qs["train_D"], qs["train_R"], "s--", ms=3, label="quasi-static transfer")
    ax[0].set(xlabel="training distortion D", ylabel="training rate R", title="(a) rate-distortion during transfer")
    ax[1].plot(transfer["t"], 100 * transfer["val_acc"], "o-", ms=3, label="iso-C transfer (x: t)")
    ax[1].plot(qs["t"], 100 * qs["val_acc"], "s--", ms=3, label="quasi-static transfer (x: t)")
    ax[1].plot(tune["s"], 100 * tune["val_acc"], "^-", ms=3, label="fine-tuning (x: fraction of updates)")
    ax[1].plot([1.0], [100 * float(scratch1["val_acc"][-1])], "*", ms=12, label="from scratch (lambda1, gamma1)")
    ax[1].plot([1.0], [100 * float(scratch0["val_acc"][-1])], "P", ms=9, label="from scratch (lambda0, gamma0)")
    ax[1].set(xlabel="t / progress", ylabel="target validation accuracy %", title="(b) validation accuracy")
    c = transfer["train_C"].values
    ax[2].plot(transfer["t"], 100 * (c / c[0] - 1), "o-", ms=3, label="iso-C transfer: training C")
    held = transfer.attrs["held"].split(" and ")
    if held[0] != "C":
        ax[2].plot(transfer["t"], 100 * transfer["constraint_drift"], "d-", ms=3, label=f"iso-C transfer: {held[0]}")
    if len(held) > 1:
        ax[2].plot(transfer["t"], 100 * transfer["constraint2_drift"], "v-", ms=3, label=f"iso-C transfer: {held[1]}")
    ax[2].plot(qs["t"], 100 * (qs["train_C"].values / qs["train_C"].values[0] - 1), "s--", ms=3,
               label="quasi-static transfer")
    ax[2].axhspan(-3, 3, color="0.9", zorder=0)
    ax[2].set(xlabel="t", ylabel="% change from t = 0", title="held functionals at t (band: +-3%)")
    ax[3].plot(transfer["t"], transfer["gamma"], "o-", ms=3, label="gamma")
    ax[3].plot(transfer["t"], transfer["lambda"], "s-", ms=3, label="lambda")
    ax[3].set(xlabel="t", ylabel="multiplier", title="multipliers along the transfer")
    return save_figure(fig, ax, out)


def main(argv=None):
    """The command line (exit 0: every target met; 1: one missed, or a run failed; 2: a bad option
    or file; 130 / 143: SIGINT / SIGTERM, with the command that continues the run)."""
    from continuation.apps.scripts import sigterm_as_interrupt

    try:
        with sigterm_as_interrupt() as got:  # the driver sets its own handlers inside the transfer
            return _main(argv, got)
    except KeyboardInterrupt:  # while the options are checked (the data loaded): nothing written yet
        print(f"error: {got['signal']}: interrupted before the transfer started; nothing to resume", file=sys.stderr)
        return got["code"]


def _main(argv, got: dict) -> int:
    from continuation.apps.scripts import OneLineParser

    parser = OneLineParser(prog="fig5_transfer.py", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("out/fig5"))
    parser.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "digits", "mnist", "cifar10"])
    parser.add_argument("--data-dir", default="", help="folder of the data set (mnist, cifar10)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--full", action="store_true", help="the paper's sizes (for one GPU)")
    parser.add_argument("--path", default="mixture", choices=["mixture", "ot"])
    parser.add_argument("--ot-method", default="emd", choices=["emd", "sinkhorn", "assignment"],
                        help="the OT plan: emd (POT, exact, dense; the fastest measured, 65 s at 10,000 points per "
                             "task), sinkhorn (entropic, biased), assignment (exact for equal task sizes, sparse: half "
                             "emd's memory, 6x its time at 10,000; docs/transfer.md)")
    parser.add_argument("--condition", default="lambda", choices=["lambda", "geodesic"])
    parser.add_argument("--k", type=float, default=0.0, help="lambda' (condition lambda) or dD/dR (geodesic)")
    parser.add_argument("--hold", default="auto", choices=["auto", "C", "kl"],
                        help="hold C, or C less the soft labels' entropy floor q h(t) (kl); auto: kl on the OT path")
    parser.add_argument("--lambda0", type=float, default=0.25)
    parser.add_argument("--gamma0", type=float, default=8.0)
    parser.add_argument("--quick", action="store_true", help="digits only: the smallest size (1,000 training updates)")
    parser.add_argument("--resume", action="store_true",
                        help="continue OUT/transfer.nc from its last point (after an interrupt: the same command "
                             "with --resume); the baselines are run again")
    parser.add_argument("--json", type=Path, default=None, help="also write the summary to this JSON file")
    parser.add_argument("--ot-max-iter", type=int, default=100_000_000,
                        help="emd's iteration budget (default 1e8: enough at 10,000 points per task, "
                             "benchmarks/ot_scale.py; emd stops at the optimum before it)")
    parser.add_argument("--sizes", default="", help=f"JSON overrides of the sizes ({', '.join(SIZE_KEYS)})")
    parser.add_argument("--projection", default="", help='JSON options of the secant projection, e.g. '
                                                         '\'{"max_iter": 10, "reuse_response": true}\'')
    parser.add_argument("--predictor", default="", help='JSON options of the predictor "none" (factor, move), '
                                                        'e.g. \'{"move": "clock"}\'')
    parser.add_argument("--steps", default="", help='JSON options of the step control: "held" (C and C - q h(t) '
                        'holds; initial = max_step = the step, min_step = step / 64, max_miss = the held target, '
                        'grow 2, shrink 0.5, max_factor 1.5 for C - q h(t)) or another by name, e.g. '
                        '\'{"name": "fixed", "size": 0.05}\'')
    parser.add_argument("--decoder-std", type=float, default=None,
                        help="the decoder's standard deviation (default 1, 0.3 for the geodesic; D's data term "
                             "scales as 1 / std^2, its constant d/2 log(2 pi std^2) moves with it)")
    args = parser.parse_args(argv)
    if args.quick and (args.dataset != "digits" or args.full):
        parser.error("--quick is the digits' smallest size: give --dataset digits, without --full")
    if args.json is not None and not args.json.resolve().parent.is_dir():
        parser.error(f"--json {args.json}: no folder {args.json.parent} to write it in")
    t_start = time.perf_counter()
    try:
        cfg, sizes = base_config(args)
        cfg["projection"].update(json_options("--projection", args.projection))
        cfg["predictor"].update(json_options("--predictor", args.predictor))
        steps = json_options("--steps", args.steps)
        # another step control by name: its own options only (not the held control's defaults)
        cfg["steps"] = steps if steps.get("name", cfg["steps"]["name"]) != cfg["steps"]["name"] else {**cfg["steps"], **steps}
        build_run(cfg)  # every option checked (and the data found) before any run: one line, not a traceback
    except (ValueError, OSError) as e:  # --sizes, --projection, a bad option (ConfigError), missing data
        parser.error(str(e).splitlines()[0] if str(e) else type(e).__name__)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        parser.error(f"--out {args.out}: {e.strerror or e}")
    files = {name: args.out / f"{name}.nc" for name in ("transfer", "quasi_static", "fine_tune", "scratch1",
                                                         "scratch0")}
    command = [a for a in (sys.argv[1:] if argv is None else [str(a) for a in argv]) if a != "--resume"]
    command = shlex.join(["python", "validation/fig5_transfer.py", *command, "--resume"])
    try:
        with OutputLock(files["transfer"]):  # before anything is deleted: a second run on OUT is refused
            return run_all(args, cfg, sizes, files, t_start, command)
    except RunInterrupted as e:  # inside a run (the transfer, or the quasi-static transfer after it)
        print(f"error: {e.signal_name}: {interrupted_at(files['transfer'], command)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:  # pre-training, or the baselines after the transfer
        print(f"error: {got['signal']}: {interrupted_at(files['transfer'], command)}", file=sys.stderr)
        return got["code"]
    except ContinuationError as e:  # another run on OUT, a file of another configuration, a solver that failed
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2 if isinstance(e, FileProblem) else 1


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def interrupted_at(transfer: Path, command: str) -> str:
    """Where an interrupt outside the transfer's steps left the run, and what continues it."""
    if not transfer.exists():
        return "interrupted before the transfer's first point; nothing to resume"
    try:
        status, points = transfer_state(transfer)
    except FileProblem as e:
        return str(e)
    if status == "running":
        return f"{transfer} keeps {plural(points, 'point')}; continue it with: {command}"
    return f"interrupted after the transfer ({transfer}: {status}, kept); the baselines run again with: {command}"


def transfer_state(transfer: Path) -> tuple[str, int]:
    """(status, points) of a transfer path file (`load_path`: from its journal while one is left);
    FileProblem (one line) when it cannot be read."""
    try:
        ds = load_path(transfer)  # the journal's points where the file was being written
    except (OSError, ContinuationError) as e:
        raise FileProblem(f"{str(e).splitlines()[0]}; delete it or use another --out") from None
    return str(ds.attrs.get("status", "?")), int(ds.sizes.get("step", 0))


def run_all(args, cfg: dict, sizes: dict, files: dict, t_start: float, command: str) -> int:
    """The transfer, the quasi-static transfer and the baselines, the table and the plot (OUT locked)."""
    transfer_file = files["transfer"]
    status = None
    if transfer_file.exists():
        status, points = transfer_state(transfer_file)
        if status == "running" and not args.resume:
            raise OutputExists(f"{transfer_file} holds an interrupted transfer ({plural(points, 'point')}): continue "
                               f"it with {command}, or use another --out")
    resume = args.resume and status is not None
    for name, f in files.items():
        if f.exists() and not (resume and name == "transfer"):
            f.unlink()
    note = "" if not resume else " (resumed)" if status == "running" else f" (kept: {status} already)"
    print(f"iso-C transfer -> {transfer_file}{note}", flush=True)
    transfer = run_config(cfg, transfer_file, resume=resume, on_point=point_line(t_start))
    if transfer.attrs["status"] != "finished":
        print(f"  transfer {transfer.attrs['status']}: {transfer.attrs['stop_reason']}")
    print(f"quasi-static transfer -> {files['quasi_static']}", flush=True)
    qs = run_config(quasi_static(cfg), files["quasi_static"], start_from=(files["transfer"], 0))

    problem = build("problem", cfg["problem"])  # the same data and model, for the baselines
    theta_source = EquilibriumSystem(problem, problem.init_params(0)).unflatten(load_point(files["transfer"], 0)["x"])
    lam0, gam0 = args.lambda0, args.gamma0
    lam1, gam1 = float(transfer["lambda"][-1]), float(transfer["gamma"][-1])
    common = {"lr": 1e-3, "resample_every": 1, "progress": False}
    print(f"fine-tuning ({sizes['fine_tune']} updates) -> {files['fine_tune']}", flush=True)
    tune, _ = fine_tune(problem, theta_source, lam0, gam0, steps=sizes["fine_tune"], out=files["fine_tune"], **common)
    print(f"from scratch ({sizes['train_steps']} updates, twice) -> {files['scratch1']}, {files['scratch0']}",
          flush=True)
    scratch_lr = dict(common, lr=2e-3)
    scratch1, _ = from_scratch(problem, lam1, gam1, steps=sizes["train_steps"], out=files["scratch1"], **scratch_lr)
    scratch0, _ = from_scratch(problem, lam0, gam0, steps=sizes["train_steps"], out=files["scratch0"], **scratch_lr)

    s = summary(transfer, qs, tune, scratch1, scratch0)
    print("\nalong the transfer:")
    print("\n".join(along_t(transfer, args.k)))
    print_table(s, (time.perf_counter() - t_start) / 60)
    fig = plot(transfer, qs, tune, scratch1, scratch0, args.out / "fig5.png")
    print(f"wrote {fig}")
    if args.json is not None:
        text = json.dumps({**s, "met": meets(s), "sizes": sizes, "minutes": (time.perf_counter() - t_start) / 60},
                          indent=1, default=float)
        try:
            args.json.write_text(text)
        except OSError as e:
            raise FileProblem(f"--json {args.json}: {e.strerror or e} (the runs' files in {args.out} are kept)") from None
        print(f"wrote {args.json}")
    return 0 if meets(s) else 1


if __name__ == "__main__":
    sys.exit(main())
