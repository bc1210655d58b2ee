"""The paper's transfers at full size, for one GPU in under 10 minutes (section 4, appendix G):
MNIST 0-4 -> 5-9 (the paper's MLP) and CIFAR-10 vehicles -> animals (ResNet-18), each on the
mixture path and on the optimal-transport path, iso-C transfer beside fine-tuning and training
from scratch (validation/fig5_transfer.py, one process per case), and one table.

    python validation/full_transfer.py --mnist-dir DIR --cifar-dir DIR --device cuda --out out/full_transfer
    python validation/full_transfer.py --smoke --out out/full_transfer_smoke     # CPU, generated stand-ins

DIR is the folder torchvision's layout sits in (DIR/MNIST/raw/..., DIR/cifar-10-batches-py/...);
nothing is downloaded. A case whose folder is not given is skipped with the reason.

Sizing to the budget (--budget seconds for all cases, default 540; shares: each MNIST case 15%,
each CIFAR-10 case 35%): the paper's schedule in epochs at n training images per task (batch
500: 120 epochs of pre-training, a corrector run of T = 5 epochs, 20 epochs of fine-tuning,
t in steps of 0.1 that fig5's held step control shortens where the held functional slips). One
case then costs (380 + 5 r) n / 500 Adam updates (pre-training three times: the transfer's
start and two from-scratch runs; fine-tuning; r corrector runs: 3 to settle, the transfer's,
10 quasi-static points; r = 53 on the mixture, 263 on the OT path, from the transfer's
corrector runs measured on the digits: 37 holding C, 206-244 holding C - q h(t)) and r + 2
evaluation passes over the 2 n training pairs with 4 noise samples (a forward pass, counted as
a third of an update per batch). Each data set's Adam update is timed on the
device first (5 warm-up and 20 timed updates); n is the largest multiple of 500 up to the
smaller task's training set (MNIST: 23,523 images of 5-9 after the validation split) for which
that estimate, times 1.3, fits the case's share less 30 s of start-up, and at most --ot-limit
(default 10,000) on the OT path, whose share also pays for the exact emd plan on the CPU (65 s
at n = 10,000 on one core of this project's machines, about n^2.7: benchmarks/ot_scale.py;
computed once per case, problems/task_path.py keeps it). A case that does not fit at n = 500 is skipped
with the reason; one that runs past twice its share is stopped (SIGTERM), and its table row says so.

--smoke: MNIST and CIFAR-10 stand-ins written in torchvision's layout to OUT/stand_ins (the
scikit-learn digits, 8x8 scaled to 28x28 and to 32x32 RGB; CIFAR-10's class k is digit k), whose
CIFAR-10 batches cannot carry the real files' md5 sums, so torchvision's integrity check is
skipped for them in the case processes; every size is tiny (MNIST: n = 100, tens of updates;
CIFAR-10: n = 16, a few updates, the ResNet at width 16; steps of 0.5 in t that accept any miss
of the held functional (max_miss = SMOKE_MAX_MISS), since corrector runs of a few updates hold
nothing, and a run whose point misses the step control's bound stops; Krylov solves of 2-3
iterations). tests/test_full_transfer.py runs it.

Writes OUT/summary.md and OUT/summary.json (one row per case), each case's folder (its netCDF
files, fig5.png, its summary.json and log). Exit status 0 when every case ran (met or not: the
table says) or was skipped (no data folder, or too slow for its share: the table says why), 1
when one failed or was stopped, 2 for a bad argument (one line).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

CASES = ("mnist-mixture", "mnist-ot", "cifar10-mixture", "cifar10-ot")
SHARES = {"mnist-mixture": 0.15, "mnist-ot": 0.15, "cifar10-mixture": 0.35, "cifar10-ot": 0.35}
BATCH = 500
# corrector runs per case (docstring): 3 to settle, the transfer's (measured on the digits with
# fig5's held steps: 37 on the mixture holding C, 206-244 on the OT path holding C - q h(t)), 10
# quasi-static
CORRECTOR_RUNS = {"mixture": 3 + 40 + 10, "ot": 3 + 250 + 10}


def updates_per_image(path: str) -> float:
    """Adam updates per training image per task: 120 epochs of pre-training three times, 20 of
    fine-tuning, 5 per corrector run."""
    return (3 * 120 + 20 + 5 * CORRECTOR_RUNS[path]) / BATCH


def eval_per_image(path: str) -> float:
    """Evaluation passes (one per corrector run and two more) over the 2 n pairs with 4 noise
    samples, a forward pass counted as a third of an update per batch: update-equivalents per image."""
    return (CORRECTOR_RUNS[path] + 2) * 2 * 4 / (3 * BATCH)
SAFETY, STARTUP_S, MIN_N = 1.3, 30.0, 500
EMD_BUDGET = 100_000_000  # emd's iterations: enough at 10,000 points per task (benchmarks/ot_scale.py)


def plan_seconds(n: int) -> float:
    """The emd plan's time at n points per task on one CPU core, from benchmarks/ot_scale.py
    (Fashion-MNIST: 10 s at 5,000, 65 s at 10,000: about n^2.7), computed once per case."""
    return 65.0 * (n / 10_000) ** 2.7


# smoke runs hold nothing (corrector runs of a few updates): their steps accept any miss of the held functional
SMOKE_MAX_MISS = 1e6

SMOKE_SIZES = {"limit": 100, "train_steps": 30, "T": 10, "fine_tune": 10, "hidden": 16, "latent": 3, "batch": 50,
               "step": 0.5, "width": 16, "krylov_maxiter": 3}
# the ResNet on one CPU thread takes seconds per update even at width 16: smaller still
SMOKE_CIFAR = {**SMOKE_SIZES, "limit": 16, "batch": 8, "train_steps": 4, "T": 2, "fine_tune": 2, "krylov_maxiter": 2}


class Refused(Exception):
    """A bad argument: one line, exit 2."""


# -- stand-in data in torchvision's layout -------------------------------------------------------
def _digits_images(size: int):
    """The scikit-learn digits (0-16 grey levels, 8x8) scaled to size x size, as uint8, and labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    img = (d.images / 16.0 * 255.0).astype(np.uint8)
    scale = size // 8
    big = np.kron(img, np.ones((scale, scale), dtype=np.uint8))
    pad = (size - 8 * scale) // 2
    big = np.pad(big, ((0, 0), (pad, size - 8 * scale - pad), (pad, size - 8 * scale - pad)))
    return big, d.target.astype(np.uint8)


def _idx(path: Path, array: np.ndarray) -> None:
    """An IDX file of unsigned bytes (MNIST's format), gzipped."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + np.ascontiguousarray(array).tobytes())


def write_stand_ins(folder: Path) -> dict:
    """MNIST (folder/mnist/MNIST/raw/*.gz) and CIFAR-10 (folder/cifar10/cifar-10-batches-py/) made
    from the scikit-learn digits; returns {"mnist": dir, "cifar10": dir}."""
    images, labels = _digits_images(28)
    raw = folder / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    cut = 1500
    for prefix, sl in (("train", slice(0, cut)), ("t10k", slice(cut, None))):
        _idx(raw / f"{prefix}-images-idx3-ubyte.gz", images[sl])
        _idx(raw / f"{prefix}-labels-idx1-ubyte.gz", labels[sl])
    rgb, labels = _digits_images(32)
    rgb = np.repeat(rgb[:, None], 3, axis=1).reshape(len(rgb), -1)  # (N, 3 * 32 * 32), channel-major as CIFAR's
    batches = folder / "cifar10" / "cifar-10-batches-py"
    batches.mkdir(parents=True, exist_ok=True)
    parts = np.array_split(np.arange(cut), 5)
    for k, idx in enumerate(parts, 1):
        with open(batches / f"data_batch_{k}", "wb") as f:
            pickle.dump({"data": rgb[idx], "labels": labels[idx].tolist()}, f)
    with open(batches / "test_batch", "wb") as f:
        pickle.dump({"data": rgb[cut:], "labels": labels[cut:].tolist()}, f)
    from problems.data import CIFAR10_CLASSES

    with open(batches / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(CIFAR10_CLASSES)}, f)
    return {"mnist": folder / "mnist", "cifar10": folder / "cifar10"}


# -- calibration and sizing ----------------------------------------------------------------------
def calibrate(dataset: str, data_dir: str, device: str, smoke: bool) -> dict:
    """Seconds per Adam update of the data set's transfer model at batch 500 on `device` (5
    warm-up, 20 timed), and the two tasks' training-set sizes."""
    import torch

    from continuation.files.config import build
    from continuation.surface.equilibrate import equilibrate
    from continuation.surface.system import EquilibriumSystem
    from problems import make_mu

    batch = SMOKE_SIZES["batch"] if smoke else BATCH
    opts = {"name": "transfer-resnet" if dataset == "cifar10" else "transfer-mlp", "dataset": dataset,
            "data_dir": data_dir, "path": "mixture", "grad_batch": batch, "hvp_batch": batch, "samples": 1,
            "device": device}
    if dataset == "cifar10":
        opts.update(source="vehicles", target="animals", **({"width": SMOKE_SIZES["width"]} if smoke else {}))
    else:
        opts.update(hidden=SMOKE_SIZES["hidden"] if smoke else 256, latent=SMOKE_SIZES["latent"] if smoke else 16)
    problem = build("problem", opts)
    system = EquilibriumSystem(problem, problem.init_params(0))
    x = system.flatten(problem.init_params(0))
    mu = make_mu(0.25, 8.0, 0.0, dtype=x.dtype, device=x.device)
    x = equilibrate(system, x, mu, steps=5, resample_every=1).x
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    equilibrate(system, x, mu, steps=20, resample_every=1)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return {"update_s": (time.perf_counter() - start) / 20, "n_source": len(problem.train),
            "n_target": len(problem.target)}


def plan(case: str, cal: dict, budget: float, ot_limit: int) -> dict:
    """The case's sizes (n per task and the paper's epochs at n), or {"skip": reason}."""
    share = SHARES[case] * budget
    path = case.split("-")[1]
    per_image = cal["update_s"] * (updates_per_image(path) + eval_per_image(path)) * SAFETY
    n = int((share - STARTUP_S) / per_image) // BATCH * BATCH
    n = min(n, min(cal["n_source"], cal["n_target"]) // BATCH * BATCH)
    ot = case.endswith("-ot")
    if ot:
        n = min(n, ot_limit // BATCH * BATCH)
        while n >= MIN_N and STARTUP_S + plan_seconds(n) * SAFETY + n * per_image > share:
            n -= BATCH
    if n < MIN_N:
        return {"skip": f"does not fit its share of {share:.0f} s at n = {MIN_N} images per task "
                        f"({cal['update_s'] * 1e3:.1f} ms per update)"}
    epochs = n // BATCH
    return {"limit": n, "train_steps": 120 * epochs, "T": 5 * epochs, "fine_tune": 20 * epochs,
            "estimate_s": STARTUP_S + n * per_image / SAFETY + (plan_seconds(n) if ot else 0.0), "share_s": share}


# -- the cases -----------------------------------------------------------------------------------
SKIP_CIFAR_MD5 = ("import sys, runpy; import torchvision.datasets.cifar as cifar; "
                  "cifar.check_integrity = lambda *a, **k: True; sys.argv = sys.argv[1:]; "
                  "runpy.run_path(sys.argv[0], run_name='__main__')")


def run_case(case: str, sizes: dict, data_dir: str, args, folder: Path) -> dict:
    """fig5_transfer.py for one case in its own process; its summary, or the reason it has none."""
    dataset, path = case.split("-")
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [str(ROOT / "validation" / "fig5_transfer.py"), "--dataset", dataset, "--data-dir", data_dir, "--path",
           path, "--device", args.device, "--out", str(folder), "--json", str(folder / "summary.json"),
           "--sizes", json.dumps({k: v for k, v in sizes.items() if k in SMOKE_SIZES})]
    if path == "ot":
        cmd += ["--ot-method", "emd", "--ot-max-iter", str(EMD_BUDGET)]
    if args.smoke:  # a few updates per corrector run hold nothing: steps of a fixed size that accept any miss
        step = sizes.get("step", 0.1)
        cmd += ["--steps", json.dumps({"name": "held", "initial": step, "max_step": step, "min_step": step,
                                       "max_miss": SMOKE_MAX_MISS})]
    cmd = [sys.executable, "-c", SKIP_CIFAR_MD5, *cmd] if args.smoke else [sys.executable, *cmd]
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", PYTHONUNBUFFERED="1")
    start = time.perf_counter()
    limit = None if args.smoke else 2 * sizes["share_s"]
    with open(folder / "log.txt", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        try:
            rc = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait()
            return {"status": "stopped", "why": f"ran past {limit:.0f} s (twice its share)",
                    "seconds": time.perf_counter() - start}
    seconds = time.perf_counter() - start
    if not (folder / "summary.json").exists():
        tail = (folder / "log.txt").read_text().strip().splitlines()[-1:] or ["no output"]
        return {"status": "failed", "why": f"exit {rc}: {tail[0][:200]}", "seconds": seconds}
    summary = json.loads((folder / "summary.json").read_text())
    return {**summary, "transfer_status": summary["status"], "status": "ran", "seconds": seconds}


def table(rows: list[dict]) -> str:
    lines = ["| case | n per task | updates (pre-train, T) | held | max drift % | gamma factor | target acc t=1 % "
             "| from scratch % | fine-tuning % | minutes | targets |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] != "ran":
            lines.append(f"| {r['case']} | | | | | | | | | {r.get('seconds', 0) / 60:.1f} | {r['status']}: {r['why']} |")
            continue
        lines.append(f"| {r['case']} | {r['plan']['limit']} | {r['plan']['train_steps']}, {r['plan']['T']} "
                     f"| {r['held']} | {100 * r['max_held_change']:.3f} | {r['gamma_factor']:.3g} "
                     f"| {100 * r['acc_t1']:.2f} | {100 * r['scratch1']:.2f} | {100 * r['tune_end']:.2f} "
                     f"| {r['seconds'] / 60:.1f} | {'met' if r['met'] else 'missed'} |")
    return "\n".join(lines)


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("out/full_transfer"))
    p.add_argument("--mnist-dir", default="", help="the folder holding MNIST/raw/ (torchvision's layout)")
    p.add_argument("--cifar-dir", default="", help="the folder holding cifar-10-batches-py/")
    p.add_argument("--device", default="cuda", help="cuda (default; refused where there is none) or cpu")
    p.add_argument("--budget", type=float, default=540.0, help="seconds for all cases (default 540)")
    p.add_argument("--ot-limit", type=int, default=10_000, help="images per task on the OT path (default 10,000)")
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {', '.join(CASES)}")
    p.add_argument("--smoke", action="store_true", help="generated stand-ins, tiny sizes (a CPU check)")
    args = p.parse_args(argv)
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    bad = [c for c in args.cases if c not in CASES]
    if bad:
        raise Refused(f"--cases: unknown case {bad[0]!r}; valid: {', '.join(CASES)}")
    if not (math.isfinite(args.budget) and args.budget > 0):
        raise Refused(f"--budget must be a positive number of seconds, got {args.budget}")
    if args.ot_limit < MIN_N:
        raise Refused(f"--ot-limit must be at least {MIN_N}, got {args.ot_limit}")
    if args.device.startswith("cuda") and not args.smoke:
        import torch

        if not torch.cuda.is_available():
            raise Refused("--device cuda: no CUDA device here (use --smoke for the CPU check)")
    return args


def main(argv=None) -> int:
    try:
        args = parse(argv)
    except Refused as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    dirs = {"mnist": args.mnist_dir, "cifar10": args.cifar_dir}
    if args.smoke:
        dirs = {k: str(v) for k, v in write_stand_ins(args.out / "stand_ins").items()}
        print(f"stand-in data in {args.out / 'stand_ins'}", flush=True)
    rows, calibrations = [], {}
    for case in args.cases:
        dataset = case.split("-")[0]
        row = {"case": case}
        if not dirs[dataset]:
            rows.append({**row, "status": "skipped", "why": f"no --{dataset.replace('10', '')}-dir given"})
            print(f"{case}: skipped ({rows[-1]['why']})", flush=True)
            continue
        if args.smoke:
            sizes = dict(SMOKE_CIFAR if dataset == "cifar10" else SMOKE_SIZES)
        else:
            if dataset not in calibrations:
                try:
                    calibrations[dataset] = calibrate(dataset, dirs[dataset], args.device, args.smoke)
                except (OSError, ValueError, RuntimeError) as e:
                    calibrations[dataset] = {"error": str(e).splitlines()[0]}
            cal = calibrations[dataset]
            if "error" in cal:
                rows.append({**row, "status": "failed", "why": cal["error"]})
                print(f"{case}: {cal['error']}", flush=True)
                continue
            sizes = plan(case, cal, args.budget, args.ot_limit)
            if "skip" in sizes:
                rows.append({**row, "status": "skipped", "why": sizes["skip"]})
                print(f"{case}: skipped ({sizes['skip']})", flush=True)
                continue
        print(f"{case}: n = {sizes['limit']} per task, {sizes['train_steps']} pre-training updates, T = {sizes['T']}"
              + (f", estimated {sizes['estimate_s']:.0f} s of {sizes['share_s']:.0f}" if "estimate_s" in sizes else ""),
              flush=True)
        result = run_case(case, sizes, dirs[dataset], args, args.out / case)
        rows.append({**row, **result, "plan": sizes})
        print(f"  {result['status']} in {result['seconds']:.0f} s" + (f": {result['why']}" if "why" in result else ""),
              flush=True)
    text = table(rows)
    (args.out / "summary.md").write_text(f"# Full-size transfers ({args.device})\n\n{text}\n\ncalibration: "
                                         f"{json.dumps(calibrations)}\n")
    (args.out / "summary.json").write_text(json.dumps({"rows": rows, "calibration": calibrations}, indent=1,
                                                      default=float))
    print(text)
    print(f"wrote {args.out / 'summary.md'}")
    return 1 if any(r["status"] in ("failed", "stopped") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
