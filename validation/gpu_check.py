"""One GPU check in under 8 minutes (issue 14, item 5): three measurements on one GPU, a markdown
summary and figures in --out.

On this project's machines (the device tool lends one H200; it copies the working tree and the
`carry` paths, and has neither Fashion-MNIST nor dask, distributed and netCDF4), first, HERE:

    python validation/gpu_check.py --stage-data

which copies the four Fashion-MNIST .gz files from /usr/share/datasets/fashion-mnist/ into
data/fashion-mnist/ and downloads the wheels the device image lacks (Python 3.12, x86-64) into
data/wheels/ (data/ is git-ignored). Then the device run, with carry ["data"] and timeout_s 600:

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site data/wheels/*.whl && PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 python3 validation/gpu_check.py --out $OUT/gpu --work /tmp/gpu_work

(--work keeps the sweep's and the routes' files off $OUT, of which only 8 files come back; --out
gets at most 7: summary.md, summary.json, gpu_check.log, hvp_cost.png, routes.png, fig2.png and
fig2_sweep.toml.) On a CPU, the same pipeline at a tiny size (about a minute; tests/test_gpu_check.py):

    python validation/gpu_check.py --device cpu --smoke --out out/gpu_check_smoke

The parts, one after another, each timed against its own share of --budget (default 480 s: 22%,
33%, 45%; time a part leaves unused goes to the next); a part that would not fit is skipped with
the reason, a part that fails is one line in the summary and the others go on, and a part that
runs over its share is stopped there:

(a) hvp: the cost of one Hessian-vector product over one gradient on the paper's MLP
    (784-256-16) at batch sizes --batches (1024 and 4096), as benchmarks/hvp_cost.py measures it
    (eager forward-over-reverse and reverse-over-reverse; its functions), then the same with the
    gradient and the HVP functions compiled by torch.compile (fwd-rev: jvp of the gradient;
    rev-rev: vjp of the gradient, the graph built inside every product), compile time (the first
    call) apart, and each compiled result's relative difference from the eager one. A compile
    that fails is its one-line reason. This part also times one Adam update of the full-size Fig. 2
    problem (the calibration that sizes (b) and (c)) and the start-up of a process.
(b) routes: benchmarks/iso_c_routes.py --full (the Fig. 2 full-size problem,
    validation/configs/fig2_mnist_full.toml on --dataset) from one start: the routes and the number
    of points (at most 3 lambda steps of 0.075) chosen, in the order adam75-secant (the default
    run's route), paper, law-adam150, adam150-secant, adam600-secant, ode-euler-adam600, so that the estimate (start-up,
    pre-training, corrector runs: secant 3 per point, the paper's finite-difference law 5 per point
    and 4 at the start) fits the share.
(c) fig2: Fig. 2 at full size for gamma0 in {4, 15}: a sweep of fig2_mnist_full.toml on --dataset
    (the derived TOML is written to OUT/fig2_sweep.toml), `python -m continuation sweep ... --workers 1`,
    then `python validation/fig2_iso_c.py SWEEPDIR` for the table and the figure. When the 13
    lambda steps of 0.25 (0.25 -> 3.5) do not fit the share, the target is lambda0 + 0.25 P for the
    P that does (the table's `ok` column then says NO: lambda did not grow by 4).

Estimates use the calibration of (a) (or, when (a) was not run or failed, 3 ms per update on
a GPU and 20 ms on a CPU, and 10 s per process start). --smoke shrinks everything (200 images,
hidden 32, tens of updates, 1 point, one route, torch.compile's aot_eager backend on the CPU).

Exit status: 0 when every part ran or was skipped for time, 1 when one failed, 2 for a bad
argument, no CUDA device, or a missing data folder (one line: `error: ...`).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PARTS = ("hvp", "routes", "fig2")
SHARES = {"hvp": 0.22, "routes": 0.33, "fig2": 0.45}
TITLES = {"hvp": "(a) HVP / gradient cost on the paper's MLP",
          "routes": "(b) iso-C routes on the full-size MLP (benchmarks/iso_c_routes.py --full)",
          "fig2": "(c) Fig. 2 at full size, gamma0 in {4, 15}"}
GAMMAS = [4.0, 15.0]
SYSTEM_FASHION = Path("/usr/share/datasets/fashion-mnist")
LOCAL_FASHION = ROOT / "data" / "fashion-mnist"
WHEELS = ROOT / "data" / "wheels"
FASHION_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz")
# what the device image lacks of the project's dependencies (its package list: .library/device/KINDS.md)
DEVICE_WHEELS = ("dask", "distributed", "partd", "locket", "tblib", "tornado", "zict", "netCDF4", "cftime")
FULL_CONFIG = ROOT / "validation" / "configs" / "fig2_mnist_full.toml"
# the routes of (b) in the order they are added while the estimate fits
ROUTE_ORDER = ("adam75-secant", "paper", "law-adam150", "adam150-secant", "adam600-secant", "ode-euler-adam600")
SAFETY = 1.3  # estimates are multiplied by this before they are compared with a share
ASSUMED = {"cuda": {"update_s": 3e-3, "startup_s": 10.0}, "cpu": {"update_s": 2e-2, "startup_s": 10.0}}
SMOKE = {"problem": {"limit": 200, "val_limit": 50, "hidden": 32, "latent": 4, "grad_batch": 50, "hvp_batch": 50},
         "start": {"train_steps": 40, "settle": 1},
         "corrector": {"steps": 20},
         "krylov": {"maxiter": 10}}


class Refused(Exception):
    """A bad argument or a missing data folder: one line, exit 2."""


# -- arguments ---------------------------------------------------------------------------------

def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("out/gpu_check"), help="summary and figures (default out/gpu_check)")
    p.add_argument("--work", type=Path, default=None, help="the routes' and the sweep's files (default OUT/work)")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --smoke)")
    p.add_argument("--smoke", action="store_true", help="every part at a tiny size (the CPU check of the pipeline)")
    p.add_argument("--budget", type=float, default=None, help="seconds for the three parts together (default 480; "
                                                              "180 with --smoke)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, from {', '.join(PARTS)} (default all)")
    p.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "mnist"])
    p.add_argument("--data-dir", type=Path, default=None,
                   help=f"Fashion-MNIST's IDX files (default {SYSTEM_FASHION} if it exists, else data/fashion-mnist); "
                        "for --dataset mnist the folder holding MNIST/raw/ (torchvision's layout), required")
    p.add_argument("--batches", type=int, nargs="+", default=None, help="(a)'s batch sizes (default 1024 4096)")
    p.add_argument("--compile-backend", default=None, help="torch.compile backend (default inductor; aot_eager "
                                                            "with --smoke)")
    p.add_argument("--stage-data", action="store_true", help="copy Fashion-MNIST into data/fashion-mnist and download "
                                                             "the device's missing wheels into data/wheels, then exit")
    p.add_argument("--_part", default=None, help=argparse.SUPPRESS)  # a part run in its own process
    p.add_argument("--_spawned", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--_budget", type=float, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.batches = args.batches or ([64] if args.smoke else [1024, 4096])
    args.budget = args.budget if args.budget is not None else (180.0 if args.smoke else 480.0)
    args.compile_backend = args.compile_backend or ("aot_eager" if args.smoke else "inductor")
    args.work = args.work or args.out / "work"
    return args


def default_data_dir(dataset: str) -> Path | None:
    if dataset == "mnist":
        return None
    return SYSTEM_FASHION if SYSTEM_FASHION.is_dir() else LOCAL_FASHION


def check(args) -> None:
    """Raise Refused (one line) for a bad argument, a device that is not there or missing data."""
    if not re.fullmatch(r"cpu|cuda(:\d+)?", args.device):
        raise Refused(f"bad --device {args.device!r}: use cuda (the GPU) or cpu (with --smoke)")
    if not (math.isfinite(args.budget) and args.budget > 0):
        raise Refused(f"--budget must be a positive number of seconds, got {args.budget}")
    parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    bad = [x for x in parts if x not in PARTS]
    if bad or not parts:
        raise Refused(f"--parts: unknown part {bad[0] if bad else '(none given)'!r}; choose from {', '.join(PARTS)}")
    args.part_list = [x for x in PARTS if x in parts]
    if any(b < 2 for b in args.batches):
        raise Refused(f"--batches must be >= 2 (batch norm), got {args.batches}")
    if args.device == "cpu" and not args.smoke:
        raise Refused("--device cpu runs only with --smoke (the full-size parts are sized for one GPU)")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise Refused("no CUDA device; use --device cpu --smoke for the CPU smoke run")
    if args.dataset == "mnist" and args.data_dir is None:
        raise Refused("--dataset mnist needs --data-dir (the folder holding MNIST/raw/ in torchvision's layout)")
    args.data_dir = (args.data_dir or default_data_dir(args.dataset)).resolve()
    if args.dataset == "fashion-mnist":
        for kind in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
            if not any((args.data_dir / f"{kind}{ext}").is_file() for ext in (".gz", "")):
                raise Refused(f"Fashion-MNIST not found in {args.data_dir}: expected {kind}.gz (run `python "
                              f"validation/gpu_check.py --stage-data` where it is installed and carry data/, or give "
                              f"--data-dir)")
    else:
        raw = args.data_dir / "MNIST" / "raw"
        if not any((raw / f"train-images-idx3-ubyte{ext}").is_file() for ext in (".gz", "")):
            raise Refused(f"MNIST not found in {args.data_dir}: expected {raw}/train-images-idx3-ubyte[.gz]")


# -- staging (on the machine that has the data and a package index) ---------------------------

def stage_data() -> int:
    if not all((SYSTEM_FASHION / f).is_file() for f in FASHION_FILES):
        print(f"error: {SYSTEM_FASHION} does not hold {', '.join(FASHION_FILES)} (apt-get install "
              f"dataset-fashion-mnist)", file=sys.stderr)
        return 2
    LOCAL_FASHION.mkdir(parents=True, exist_ok=True)
    for f in FASHION_FILES:
        shutil.copyfile(SYSTEM_FASHION / f, LOCAL_FASHION / f)
    print(f"copied {len(FASHION_FILES)} files to {LOCAL_FASHION}")
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for name in DEVICE_WHEELS:
        try:
            pins.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            pins.append(name)
    shutil.rmtree(WHEELS, ignore_errors=True)
    WHEELS.mkdir(parents=True)
    platforms = [f"--platform={p}" for p in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
                                             "manylinux2014_x86_64", "manylinux1_x86_64")]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
           "--implementation", "cp", *platforms, "-d", str(WHEELS), *pins]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        lines = (r.stderr or r.stdout).strip().splitlines() or ["(no output)"]
        print(f"error: pip download of the device's wheels failed: {lines[-1]}", file=sys.stderr)
        return 1
    size = sum(f.stat().st_size for f in (ROOT / "data").rglob("*") if f.is_file()) / 2**20
    print(f"downloaded {len(list(WHEELS.glob('*.whl')))} wheels ({', '.join(pins)}) to {WHEELS}; data/ is {size:.0f} MiB "
          f"(the device tool carries at most 64 MiB with the working tree)")
    print("device run (carry [\"data\"], timeout_s 600):\n  " + DEVICE_COMMAND)
    return 0


DEVICE_COMMAND = ("python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site data/wheels/*.whl && "
                  "PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 python3 validation/gpu_check.py --out $OUT/gpu "
                  "--work /tmp/gpu_work")


# -- configurations ------------------------------------------------------------------------------

def full_config(args) -> dict:
    """fig2_mnist_full.toml without [sweep], on --dataset, --data-dir and --device (tiny with --smoke)."""
    with open(FULL_CONFIG, "rb") as f:
        c = tomllib.load(f)
    c.pop("sweep", None)
    c["problem"].update(dataset=args.dataset, data_dir=str(args.data_dir), device=args.device)
    c["output"] = {"progress": False}
    if args.smoke:
        for section, table in SMOKE.items():
            c.setdefault(section, {}).update(table)
    return c


def fig2_points(c: dict) -> int:
    """The full run's lambda steps: (target - lambda0) / step (13 for 0.25 -> 3.5 by 0.25)."""
    return int(round((float(c["stop"]["target"]["lambda"]) - float(c["start"]["lambda"])) / float(c["steps"]["size"])))


def write_sweep_toml(c: dict, path: Path) -> None:
    from continuation.files.config import write_toml

    write_toml(c, path)
    gammas = ", ".join(repr(float(g)) for g in GAMMAS)
    with open(path, "a") as f:
        f.write(f'\n[sweep]\nmode = "product"\nstart.gamma = [{gammas}]\n')


# -- running children ----------------------------------------------------------------------------

def child_env() -> dict:
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT)] + ([path] if path else [])), "PYTHONUNBUFFERED": "1"}


def stop_group(p: subprocess.Popen) -> None:
    """SIGTERM to the child's process group, SIGKILL 15 s later if it is still there."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 30)):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            return
        try:
            p.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _terminated(signum, frame):
    raise SystemExit(128 + signum)  # unwinds through run_limited, which stops the running child's group


def run_limited(cmd: list, timeout: float, log: Path) -> tuple[int | None, float, str]:
    """Run `cmd` in its own process group, output appended to `log`; past `timeout` seconds the
    group gets SIGTERM, then SIGKILL 15 s later. (exit code or None when stopped, wall s, last line)."""
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(map(str, cmd))}\n")
        f.flush()
        start = len(log.read_bytes())
        t = time.perf_counter()
        p = subprocess.Popen([str(c) for c in cmd], cwd=ROOT, env=child_env(), stdout=f, stderr=subprocess.STDOUT,
                             start_new_session=True)
        try:
            rc = p.wait(timeout=max(timeout, 1.0))
        except subprocess.TimeoutExpired:
            rc = None
            stop_group(p)
        except BaseException:  # Ctrl-C, or SIGTERM turned into SystemExit by main: the group goes too
            stop_group(p)
            raise
        wall = time.perf_counter() - t
    text = log.read_bytes()[start:].decode(errors="replace").strip().splitlines()
    last = next((ln for ln in reversed(text) if ln.strip()), "")
    return rc, wall, last.strip()


# -- (a) HVP cost: run in its own process (`--_part hvp`) ---------------------------------------

def hvp_child(args) -> int:
    """Measure (a) and write WORK/hvp.json after every item (a stopped child leaves what it had)."""
    out_file = args.work / "hvp.json"
    res: dict = {"eager": [], "compiled": [], "notes": []}
    t0 = time.perf_counter()
    budget = args._budget or 1e9

    def save():
        out_file.write_text(json.dumps(res, indent=1, default=float) + "\n")

    import torch

    from continuation.apps.experiments import hvp_cost
    from continuation.files.config import build_run
    from continuation.surface.equilibrate import equilibrate
    from continuation.surface.system import EquilibriumSystem
    from problems import make_mu

    res["torch"] = torch.__version__
    res["device_name"] = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"
    sync = hvp_cost.synchronizer(args.device)
    # calibration: Adam updates of the full-size Fig. 2 problem, as its pre-training does them
    cfg = full_config(args)
    problem = build_run(copy.deepcopy(cfg), check_start=False)["problem"]
    system = EquilibriumSystem(problem, problem.init_params(0))
    x0 = system.flatten(problem.init_params(0))
    mu = make_mu(float(cfg["start"]["lambda"]), float(cfg["start"]["gamma"]), dtype=x0.dtype, device=x0.device)
    sync()
    res["startup_s"] = time.time() - args._spawned if args._spawned else float("nan")
    warm = equilibrate(system, x0, mu, steps=10, resample_every=1, log_every=0)
    k = 20 if args.smoke else 300
    sync()
    t = time.perf_counter()
    equilibrate(system, warm.x, mu, steps=k, resample_every=1, log_every=0)
    sync()
    res["calibration"] = {"update_s": (time.perf_counter() - t) / k, "updates": k,
                          "grad_batch": int(cfg["problem"]["grad_batch"]), "train_images": int(len(problem.train.x))
                          if hasattr(problem, "train") else None}
    del problem, system
    save()
    # eager, as benchmarks/hvp_cost.py measures it
    data, source = hvp_cost.load_images(max(args.batches), args.data_dir if args.dataset == "fashion-mnist" else None)
    res["source"] = source
    repeats = 3 if args.smoke else 20
    setups = {}
    for batch in args.batches:
        setups[batch] = hvp_cost.setup(data, batch, args.device)
        m = hvp_cost.measure(*setups[batch], repeats, sync)
        res["eager"].append({"batch": batch, **m})
        save()
    # compiled: the gradient and the two HVP functions, a fresh compile per batch size
    from torch.func import grad, jvp, vjp

    from solvers import gradient, hessian_operator

    longest = 0.0
    for batch in args.batches:
        row = {"batch": batch, "backend": args.compile_backend}
        res["compiled"].append(row)
        system, x, mu, v = setups[batch]
        f = system.hessian_objective
        torch._dynamo.reset()
        fns = {"grad": (lambda x, mu: gradient(system.objective, x, mu), (x, mu)),
               "fwd-rev": (lambda x, mu, v: jvp(grad(lambda y: f(y, mu)), (x,), (v,))[1], (x, mu, v)),
               "rev-rev": (lambda x, mu, v: vjp(grad(lambda y: f(y, mu)), x)[1](v)[0], (x, mu, v))}
        refs = {"grad": lambda: system.gradient(x, mu),
                "fwd-rev": lambda: hessian_operator(f, x, mu, "fwd-rev")(v),
                "rev-rev": lambda: hessian_operator(f, x, mu, "rev-rev")(v)}
        for name, (fn, fargs) in fns.items():
            left = budget - (time.perf_counter() - t0)
            if left < 1.5 * longest + 5:
                row[name] = {"skipped": f"{left:.0f} s of (a)'s budget left, the longest compile so far took "
                                        f"{longest:.0f} s"}
                save()
                continue
            try:
                compiled = torch.compile(fn, backend=args.compile_backend)
                sync()
                t = time.perf_counter()
                y = compiled(*fargs)
                sync()
                compile_s = time.perf_counter() - t
                longest = max(longest, compile_s)
                s = hvp_cost.timed(lambda: compiled(*fargs), repeats, sync)
                ref = refs[name]()
                err = float((y - ref).norm() / ref.norm().clamp_min(1e-30))
                row[name] = {"compile_s": compile_s, "s": s, "rel_diff": err}
            except Exception as e:  # noqa: BLE001 - a compile that fails is its reason, one line
                lines = str(e).strip().splitlines()
                row[name] = {"error": f"{type(e).__name__}: {lines[0][:300] if lines else ''}"}
            save()
        g = row.get("grad", {}).get("s")
        for mode in ("fwd-rev", "rev-rev"):
            if "s" in row.get(mode, {}):
                base = g if g else next(r["grad_s"] for r in res["eager"] if r["batch"] == batch)
                row[mode]["ratio"] = row[mode]["s"] / base
        save()
    if args.device.startswith("cuda"):
        res["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    res["seconds"] = time.perf_counter() - t0
    save()
    return 0


def part_hvp(args, budget: float, log: Path) -> dict:
    out_file = args.work / "hvp.json"
    out_file.unlink(missing_ok=True)
    cmd = [sys.executable, Path(__file__).resolve(), "--_part", "hvp", "--_spawned", repr(time.time()),
           "--_budget", repr(budget - 5), "--out", args.out, "--work", args.work, "--device", args.device,
           "--dataset", args.dataset, "--data-dir", args.data_dir, "--compile-backend", args.compile_backend,
           "--batches", *args.batches] + (["--smoke"] if args.smoke else [])
    rc, wall, last = run_limited(cmd, budget, log)
    res = json.loads(out_file.read_text()) if out_file.exists() else {}
    why = f"stopped after {wall:.0f} s (its share)" if rc is None else f"exit {rc}: {last}"
    if not res.get("eager"):
        res.update(status="failed", reason=why if rc != 0 else "no measurement written")
    else:
        res["status"] = "ok"
        if rc != 0:
            res.setdefault("notes", []).append(f"{why}; the rows below are those it had measured")
    return res


def hvp_markdown(r: dict) -> list[str]:
    lines = []
    if "calibration" in r:
        c = r["calibration"]
        lines.append(f"Calibration: one Adam update of the Fig. 2 full-size problem (batch {c['grad_batch']}, "
                     f"{c['train_images']} training images) {c['update_s'] * 1e3:.2f} ms (mean of {c['updates']}); "
                     f"process start-up with the data {r.get('startup_s', float('nan')):.1f} s.")
    if r.get("eager"):
        lines += ["", f"Data: {r.get('source', '?')}; {r.get('device_name', '')}, torch {r.get('torch', '?')}.", "",
                  "| batch | variant | grad ms | hvp ms | hvp/grad | setup or compile s | rel. diff from eager |",
                  "|---|---|---|---|---|---|---|"]
        for e in r["eager"]:
            for mode in ("fwd-rev", "rev-rev"):
                m = e[mode]
                lines.append(f"| {e['batch']} | eager {mode} | {e['grad_s'] * 1e3:.3f} | {m['hvp_s'] * 1e3:.3f} | "
                             f"{m['ratio']:.2f} | {m['setup_s']:.4f} (setup) | |")
        for c in r.get("compiled", []):
            g = c.get("grad", {})
            gtxt = f"{g['s'] * 1e3:.3f}" if "s" in g else "-"
            if "s" in g:
                lines.append(f"| {c['batch']} | compiled gradient ({c['backend']}) | {gtxt} | | | {g['compile_s']:.1f} | "
                             f"{g['rel_diff']:.1e} |")
            else:
                lines.append(f"| {c['batch']} | compiled gradient ({c['backend']}) | | | | | "
                             f"{g.get('error') or g.get('skipped', '')} |")
            for mode in ("fwd-rev", "rev-rev"):
                m = c.get(mode, {})
                if "s" in m:
                    lines.append(f"| {c['batch']} | compiled {mode} | {gtxt} | {m['s'] * 1e3:.3f} | {m['ratio']:.2f} | "
                                 f"{m['compile_s']:.1f} | {m['rel_diff']:.1e} |")
                else:
                    lines.append(f"| {c['batch']} | compiled {mode} | | | | | {m.get('error') or m.get('skipped', '')} |")
        lines += ["", "Compiled rev-rev builds the gradient graph inside every product (eager rev-rev builds it once, "
                      "its setup column); compiled ratios are over the compiled gradient. The eager gradient includes "
                      "the project's finiteness check (one reduction and a sync)."]
    if "peak_gpu_mib" in r:
        lines.append(f"Peak GPU memory of (a): {r['peak_gpu_mib']:.0f} MiB.")
    lines += [f"- {n}" for n in r.get("notes", [])]
    return lines


def hvp_figure(r: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = {}
    for e in r.get("eager", []):
        for mode in ("fwd-rev", "rev-rev"):
            bars.setdefault(f"eager {mode}", {})[e["batch"]] = e[mode]["ratio"]
    for c in r.get("compiled", []):
        for mode in ("fwd-rev", "rev-rev"):
            if "ratio" in c.get(mode, {}):
                bars.setdefault(f"compiled {mode}", {})[c["batch"]] = c[mode]["ratio"]
    if not bars:
        return
    batches = sorted({b for v in bars.values() for b in v})
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(bars)
    for i, (name, vals) in enumerate(bars.items()):
        ax.bar([j + i * width for j, b in enumerate(batches)], [vals.get(b, float("nan")) for b in batches], width,
               label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(batches))], [str(b) for b in batches])
    ax.axhline(3, color="grey", ls=":")
    ax.set(xlabel="batch", ylabel="HVP / gradient time", title=f"paper MLP, {r.get('device_name', '')}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- (b) routes ----------------------------------------------------------------------------------

def route_runs(name: str, points: int) -> int:
    """Corrector runs of a route over `points` steps (the estimate): the FD law 4 per law evaluation
    (one at the start too) and the step's own, the secant about 3, otherwise 1."""
    if name == "paper":
        return 5 * points + 4
    return 3 * points if name.endswith("secant") else points


def plan_routes(cfg: dict, calib: dict, budget: float, smoke: bool):
    """(points, routes, estimated s, why nothing fits) for (b) within `budget` seconds."""
    from continuation.apps.experiments.routes import ROUTES

    u, s0 = calib["update_s"], calib["startup_s"]
    start = 2 * s0 + (cfg["start"]["train_steps"] + cfg["start"]["settle"] * cfg["corrector"]["steps"]) * u
    weight = s0
    fixed = SAFETY * (start + weight)
    for points in ([1] if smoke else [3, 2, 1]):
        chosen, total = [], fixed
        for name in (["adam75-secant"] if smoke else ROUTE_ORDER):
            cost = SAFETY * (s0 + route_runs(name, points) * ROUTES[name]["steps"] * u)
            if total + cost <= budget:
                chosen.append(name)
                total += cost
        if len(chosen) >= min(2, len(ROUTE_ORDER)) or (chosen and (points == 1 or smoke)):
            return points, chosen, total, ""
    return 0, [], fixed, (f"the start alone (pre-training {cfg['start']['train_steps']} updates at "
                          f"{u * 1e3:.1f} ms, process start-ups) needs about {fixed:.0f} s of the {budget:.0f} s left")


def part_routes(args, budget: float, log: Path, calib: dict) -> dict:
    cfg = full_config(args)
    points, routes, estimate, why = plan_routes(cfg, calib, budget, args.smoke)
    res = {"plan": {"points": points, "routes": routes, "estimate_s": estimate, "budget_s": budget}}
    if not routes:
        res.update(status="skipped", reason=why)
        return res
    rdir = args.work / "routes"
    shutil.rmtree(rdir, ignore_errors=True)
    argv = ["--dataset", args.dataset, "--full", "--device", args.device, "--points", str(points), "--routes",
            ",".join(routes), "--out", str(rdir), "--data-dir", str(args.data_dir), "--repeats", "3" if args.smoke else "20"]
    if args.smoke:
        for section in ("problem", "start", "corrector", "krylov"):
            argv += [a for k, v in SMOKE[section].items() for a in ("--set", f"{section}.{k}={json.dumps(v)}")]
    res["command"] = "python benchmarks/iso_c_routes.py " + " ".join(argv)
    rc, wall, last = run_limited([sys.executable, ROOT / "benchmarks" / "iso_c_routes.py", *argv], budget, log)
    if (rdir / "routes.md").exists():
        res["table"] = (rdir / "routes.md").read_text().strip()
    if (rdir / "routes.csv").exists():
        import csv

        with open(rdir / "routes.csv") as f:
            res["rows"] = [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]
    if (rdir / "routes.png").exists():
        shutil.copyfile(rdir / "routes.png", args.out / "routes.png")
    if rc == 0:
        res["status"] = "ok"
    else:
        res.update(status="failed", reason=f"stopped after {wall:.0f} s (its share)" if rc is None else
                   f"iso_c_routes.py exit {rc}: {last}")
    return res


def _number(v: str):
    try:
        return float(v)
    except ValueError:
        return v


# -- (c) Fig. 2 ----------------------------------------------------------------------------------

def plan_fig2(cfg: dict, calib: dict, budget: float, most: int | None = None):
    """(points, estimated s) for the two members within `budget` seconds, at most `most` (default:
    the full run's); points 0 when none fits."""
    u, s0 = calib["update_s"], calib["startup_s"]
    steps = cfg["corrector"]["steps"]
    fixed = 3 * s0 + len(GAMMAS) * (cfg["start"]["train_steps"] + cfg["start"]["settle"] * steps) * u
    per_point = len(GAMMAS) * (3 * steps + 2 * int(cfg["krylov"].get("maxiter", 30))) * u
    for points in range(most or fig2_points(cfg), 0, -1):
        estimate = SAFETY * (fixed + points * per_point)
        if estimate <= budget:
            return points, estimate
    return 0, SAFETY * (fixed + per_point)


def part_fig2(args, budget: float, log: Path, calib: dict) -> dict:
    cfg = full_config(args)
    full = fig2_points(cfg)
    if args.smoke:
        cfg["stop"]["max_steps"] = 5
    points, estimate = plan_fig2(cfg, calib, budget, most=1 if args.smoke else None)
    res = {"plan": {"points": points, "of": full, "estimate_s": estimate, "budget_s": budget}}
    if points == 0:
        res.update(status="skipped", reason=f"one point of each member needs about {estimate:.0f} s (pre-training "
                                            f"{cfg['start']['train_steps']} updates at {calib['update_s'] * 1e3:.1f} "
                                            f"ms each) of the {budget:.0f} s left")
        return res
    lam0, step = float(cfg["start"]["lambda"]), float(cfg["steps"]["size"])
    if points < full:
        cfg["stop"]["target"] = {"lambda": round(lam0 + points * step, 12)}
    res["plan"]["target_lambda"] = cfg["stop"]["target"]["lambda"]
    toml = args.out / "fig2_sweep.toml"
    write_sweep_toml(cfg, toml)
    sdir = args.work / "fig2"
    shutil.rmtree(sdir, ignore_errors=True)
    t0 = time.perf_counter()
    script_s = calib["startup_s"] + 10
    rc, wall, last = run_limited([sys.executable, "-m", "continuation", "sweep", toml, "--out", sdir, "--workers", "1"],
                                 budget - script_s, log)
    res["sweep_s"] = wall
    notes = []
    if rc is None:
        notes.append(f"the sweep was stopped at its share ({wall:.0f} s); sweep.nc combined from the members' files")
        r2, _, last2 = run_limited([sys.executable, "-c", "import sys; from continuation.files.config import load_config; "
                                    "from continuation.apps.sweep import combine, expand; c = load_config(sys.argv[1]); "
                                    "combine(sys.argv[2], expand(c), config=c)", toml, sdir], 60, log)
        if r2 != 0:
            notes.append(f"combining failed: {last2}")
    elif rc != 0:
        notes.append(f"sweep exit {rc}: {last}")
    if not (sdir / "sweep.nc").exists():
        res.update(status="failed", reason="; ".join(notes) or f"no sweep.nc (sweep exit {rc}: {last})")
        return res
    left = budget - (time.perf_counter() - t0)
    with open(log, "a") as f:
        f.write("\n[fig2_iso_c.py]\n")
    start = len(log.read_bytes())
    r3, _, last3 = run_limited([sys.executable, ROOT / "validation" / "fig2_iso_c.py", sdir], max(left, 30), log)
    text = log.read_bytes()[start:].decode(errors="replace")
    table = [ln for ln in text.splitlines() if not ln.startswith("$ ")]
    res["table"] = "\n".join(ln.rstrip() for ln in table if ln.strip() and not ln.startswith("wrote ")).strip()
    if (sdir / "fig2.png").exists():
        shutil.copyfile(sdir / "fig2.png", args.out / "fig2.png")
    if r3 not in (0, 1):
        notes.append(f"fig2_iso_c.py exit {r3}: {last3}")
    elif r3 == 1:
        notes.append("fig2_iso_c.py exit 1: a member misses the issue's targets (see `ok`)")
    try:
        res["members"] = fig2_members(sdir)
    except Exception as e:  # noqa: BLE001 - the numbers only
        notes.append(f"reading the sweep: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    res["notes"] = notes
    failed = rc not in (0, 1) or r3 not in (0, 1) or not res.get("members")
    res["status"] = "failed" if failed else "ok"
    if failed:
        res["reason"] = "; ".join(notes) or "no member read back"
    return res


def fig2_members(sdir: Path) -> dict:
    from fig2_iso_c import members, summary  # validation/ is on sys.path: the script runs from it

    out = {}
    for name, (ds, status, why) in members(sdir).items():
        row = {"status": status, "stop_reason": why}
        if ds is not None:
            s = summary(ds)
            row.update(points=s["points"], lambda_end=float(ds["lambda"].values[-1]), gamma_end=s["gamma"][1],
                       C0=s["C0"], max_C_change_pct=100 * s["max_C_change"], acc_min=s["acc"][0], acc_max=s["acc"][1],
                       R=list(s["R"]), D=list(s["D"]), seconds_per_point=s["seconds_per_point"],
                       minutes=s["minutes"])
        out[name] = row
    return out


# -- the summary ---------------------------------------------------------------------------------

def summary_markdown(args, results: dict, total_s: float, calib: dict) -> str:
    lines = [f"# GPU check: {results.get('hvp', {}).get('device_name') or args.device}"
             + (" (smoke: tiny sizes)" if args.smoke else ""), "",
             f"Budget {args.budget:.0f} s, used {total_s:.0f} s; dataset {args.dataset} ({args.data_dir}); "
             f"estimates from {calib['update_s'] * 1e3:.2f} ms per Adam update and {calib['startup_s']:.1f} s per "
             f"process start ({calib['source']}).", ""]
    for part in args.part_list:
        r = results.get(part)
        lines.append(f"## {TITLES[part]}")
        lines.append("")
        if r is None:
            lines += ["not run", ""]
            continue
        state = r["status"] + (f": {r['reason']}" if r.get("reason") else "")
        lines += [f"Status: {state}. Time {r['seconds']:.0f} s of a {r['budget_s']:.0f} s share.", ""]
        if part == "hvp":
            lines += hvp_markdown(r)
        elif part == "routes":
            p = r.get("plan", {})
            if p.get("routes"):
                lines += [f"Plan: {p['points']} point(s), routes {', '.join(p['routes'])} (estimate {p['estimate_s']:.0f} s).",
                          f"Command: `{r.get('command', '')}`", ""]
            if r.get("table"):
                lines.append(r["table"])
        else:
            p = r.get("plan", {})
            if p.get("points"):
                lines += [f"Plan: {p['points']} of {p['of']} lambda steps per member (target lambda "
                          f"{p.get('target_lambda')}), estimate {p['estimate_s']:.0f} s; configuration "
                          f"fig2_sweep.toml; sweep {r.get('sweep_s', float('nan')):.0f} s.", ""]
            if r.get("table"):
                lines += ["```", r["table"], "```"]
            for n in r.get("notes", []):
                lines.append(f"- {n}")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse(argv)
    if args.stage_data:
        return stage_data()
    if args._part == "hvp":
        return hvp_child(args)
    signal.signal(signal.SIGTERM, _terminated)
    try:
        check(args)
    except Refused as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        args.work.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"error: cannot create {args.out} or {args.work}: {e.strerror or e}", file=sys.stderr)
        return 2
    args.out, args.work = args.out.resolve(), args.work.resolve()
    log = args.out / "gpu_check.log"
    log.write_text(f"gpu_check {' '.join(sys.argv[1:] if argv is None else map(str, argv))}\n")
    kind = "cuda" if args.device.startswith("cuda") else "cpu"
    calib = {**ASSUMED[kind], "source": "assumed: (a) not run"}
    results: dict = {}
    t_all = time.perf_counter()
    shares = {p: SHARES[p] for p in args.part_list}
    for i, part in enumerate(args.part_list):
        used = time.perf_counter() - t_all
        rest = sum(shares[q] for q in args.part_list[i:])
        budget = (args.budget - used) * shares[part] / rest
        print(f"[{part}] {TITLES[part]}: share {budget:.0f} s", flush=True)
        t = time.perf_counter()
        try:
            if budget < 5:
                r = {"status": "skipped", "reason": f"{budget:.0f} s left"}
            elif part == "hvp":
                r = part_hvp(args, budget, log)
            elif part == "routes":
                r = part_routes(args, budget, log, calib)
            else:
                r = part_fig2(args, budget, log, calib)
        except Exception as e:  # noqa: BLE001 - a part that breaks is one line; the others go on
            r = {"status": "failed", "reason": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
        r["seconds"], r["budget_s"] = time.perf_counter() - t, budget
        results[part] = r
        if part == "hvp" and "calibration" in r and math.isfinite(r.get("startup_s", float("nan"))):
            calib = {"update_s": r["calibration"]["update_s"], "startup_s": max(r["startup_s"], 1.0),
                     "source": "measured in (a)"}
        if part == "hvp":
            try:
                hvp_figure(r, args.out / "hvp_cost.png")
            except Exception as e:  # noqa: BLE001
                r.setdefault("notes", []).append(f"figure: {type(e).__name__}: {e}")
        print(f"[{part}] {r['status']}" + (f": {r['reason']}" if r.get("reason") else "")
              + f" ({r['seconds']:.0f} s)", flush=True)
        total = time.perf_counter() - t_all
        (args.out / "summary.md").write_text(summary_markdown(args, results, total, calib) + "\n")
        (args.out / "summary.json").write_text(json.dumps(
            {"device": args.device, "smoke": args.smoke, "budget_s": args.budget, "seconds": total,
             "calibration": calib, "parts": results}, indent=1, default=str) + "\n")
    text = (args.out / "summary.md").read_text()
    print("\n" + text)
    print(f"wrote {args.out / 'summary.md'} (and summary.json, gpu_check.log, the figures)")
    return 1 if any(r["status"] == "failed" for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
