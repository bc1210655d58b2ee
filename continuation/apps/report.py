"""Validation report: every claim of the paper checked by one command.

    python -m continuation report --out report/ [--quick] [--only NAME,...]

Gao & Chaudhari, *A Free-Energy Principle for Representation Learning*
(University of Pennsylvania). Each check (`CHECKS`) is one claim; it runs the
experiments it needs (continuation/apps/experiments/: the functions the validation scripts and
benchmarks call, here called in this process, each writing into a subfolder of --out with its
output in NAME.log and NAME.err there), reads their files (JSON, CSV, netCDF), compares the
numbers with tolerances, and returns a result: the measured rows, a verdict and figures. Nothing
is read from the repository: the report runs from any install of the package. `write_markdown` turns the results
into `OUT/REPORT.md` (the figures copied beside it, `OUT/report.json` the same numbers).

The claims:

1. `iso-c-constant`: C is constant along the iso-classification process (Remark 7, eq. 22:
   lambda' = -alpha dC/dgamma, gamma' = alpha dC/dlambda). Linear-Gaussian: the iso-C run of
   validation/gaussian_iso_c.py against the closed-form curve C(lambda, gamma) = C0; digits: the
   default run (continuation/apps/defaults.py), training C within 0.5% of its start.
2. `rate-distortion`: along iso-C the rate rises and the distortion falls (eq. 29: D' =
   -alpha det Hess F < 0, R' = -lambda D'). Linear-Gaussian: monotone R, D, equal to the closed
   form, and dR = -lambda dD step by step; digits: R up >= 20%, D - (d/2) log(2 pi sigma^2) down
   >= 10% (d = 64 pixels, sigma the decoder's standard deviation).
3. `first-law`: dR = -lambda dD - gamma dC (Remark 1, eq. 7 with sigma = 0), summed along the
   linear-Gaussian path by the trapezoid rule; the residual must be small and fall as h^2 (it is
   quadrature error, not a violation).
4. `concavity`: F(lambda, gamma) is concave and Hess R(D, C) Hess F = -I (Lemma 3, appendix B),
   from validation/gaussian_foundation.py (foundation.json).
5. `transfer`: iso-classification transfer reaches the accuracy of training from scratch
   (section 4, Fig. 5): validation/fig5_transfer.py --dataset digits; and the linear-Gaussian
   transfer (validation/gaussian_transfer.py), where "from scratch" is the closed-form
   equilibrium at the transfer's own multipliers.
6. `exact-law-cost`: the exact law (eq. 22, tangents by Hessian-vector products) costs fewer
   gradient-equivalents per unit of lambda than the paper's finite-difference procedure (eq. 31)
   at a training-C drift within 0.5%: benchmarks/iso_c_routes.py, routes paper, adam600-secant
   (the same corrector budget: the law's own saving) and adam75-secant (the default route),
   from the default run's start point.

`--quick` runs the smallest sizes that still check each claim (a shorter pre-training and larger
lambda steps for the default run, the routes for one step, the digits transfer at its quick size,
the linear-Gaussian scripts' short forms): about 5 minutes on 2 cores. Without it the CPU-sized
runs: the full default run, validation/fig5_transfer.py --dataset digits, the routes for 4 steps
(about 15 minutes, estimated from the runs' times).

Verdicts: "holds" (every measured number within its tolerance), "does not hold" (one is not),
"not measured (reason)" (a run failed: its one-line reason; the other checks go on). The exit
status is 0 when every check holds, 1 otherwise; bad input (e.g. --out is a file) is 2.
"""

from __future__ import annotations

from continuation.errors import first_line

import contextlib
import copy
import json
import math
import os
import platform
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from continuation.files.config import write_toml

HOLDS, FAILS, NOT_MEASURED = "holds", "does not hold", "not measured"

# digits: 8x8 images; the default run's thresholds (issue 14)
DIGITS_PIXELS = 64
DIGITS_C_DRIFT = 0.005
DIGITS_R_RISE = 0.20
DIGITS_D_FALL = 0.10
# the quick default run: fewer pre-training updates, lambda 0.25 -> 1 in 3 steps (measured: 68 s on one core,
# training C within 0.23%, R +51%, D - const -32%)
QUICK_DEFAULT = {"start": {"train_steps": 2000}, "steps": {"size": 0.25}}


class ExperimentFailed(Exception):
    """An experiment (a script or run) produced no result: one line, its reason."""


# --------------------------------------------------------------------------------------------
# results


@dataclass
class Result:
    """What one check measured: rows (part, quantity, value, tolerance, ok), figures, notes, and
    the parts that could not be measured (errors, one line each)."""

    rows: list = field(default_factory=list)
    figures: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    errors: list = field(default_factory=list)

    def measure(self, part: str, quantity: str, value, op: str | None = None, limit=None, fmt: str = ".3g",
                ok: bool | None = None, tolerance: str | None = None) -> bool:
        """One measured number; `op` ('<=', '<', '>=', '>', '==') against `limit` gives ok, or pass ok
        (and a tolerance text) directly. Non-finite numbers are never ok."""
        if ok is None:
            if op is None:
                raise ValueError("measure needs op and limit, or ok")
            ok = _compare(value, op, limit)
        limit_fmt = fmt if fmt.endswith("%") else ".3g"
        text = tolerance if tolerance is not None else (f"{op} {_fmt(limit, limit_fmt)}" if op is not None else "")
        self.rows.append({"part": part, "quantity": quantity, "value": value, "text": _fmt(value, fmt),
                          "tolerance": text, "ok": bool(ok)})
        return bool(ok)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def figure(self, path, caption: str) -> None:
        self.figures.append({"path": str(path), "caption": caption})

    def part(self, name: str, fn: Callable[[], None]) -> None:
        """Run fn (which measures); an exception becomes an error of this part, the others go on."""
        try:
            fn()
        except Exception as e:
            self.errors.append(f"{name}: {first_line(e, typed=False)}")

    def as_dict(self) -> dict:
        verdict, reason = decide(self.rows, self.errors)
        return {"verdict": verdict, "reason": reason, "rows": self.rows, "figures": self.figures,
                "notes": self.notes, "errors": self.errors}


def _compare(value, op: str, limit) -> bool:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return value == limit if op == "==" else False
    if op == "==":
        return v == float(limit)
    if not math.isfinite(v):
        return False
    return {"<=": v <= limit, "<": v < limit, ">=": v >= limit, ">": v > limit}[op]


def _fmt(value, fmt: str = ".3g") -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return format(float(value), fmt)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v, fmt) for v in value) + "]"
    return str(value)


def decide(rows: list, errors: list) -> tuple[str, str]:
    """The verdict of a check from its rows and errors: "does not hold" when a measured number
    misses its tolerance (whatever else failed), "not measured" when a part failed or nothing was
    measured, "holds" otherwise. Returns (verdict, reason)."""
    missed = [r for r in rows if not r["ok"]]
    if missed:
        reason = "; ".join(f"{r['part']}: {r['quantity']} = {r['text']} (needs {r['tolerance']})" for r in missed)
        if errors:
            reason += "; also not measured: " + "; ".join(errors)
        return FAILS, reason
    if errors:
        return NOT_MEASURED, "; ".join(errors)
    if not rows:
        return NOT_MEASURED, "nothing was measured"
    return HOLDS, ""


def verdict_text(result: dict) -> str:
    """"holds", "does not hold" or "not measured (reason)"."""
    if result["verdict"] == NOT_MEASURED:
        return f"{NOT_MEASURED} ({result['reason']})"
    return result["verdict"]


def exit_code(results: list[dict]) -> int:
    """0 when every check holds; 1 when one does not hold or could not be measured."""
    return 0 if results and all(r["verdict"] == HOLDS for r in results) else 1


# --------------------------------------------------------------------------------------------
# experiments: scripts and runs, each once per report, shared by the checks that read them


@contextlib.contextmanager
def _kept_state():
    """What an experiment may change in this process, put back after it: torch's default dtype
    and thread count, OMP_NUM_THREADS / MKL_NUM_THREADS, the working folder, matplotlib's figures."""
    import torch

    dtype, threads, cwd = torch.get_default_dtype(), torch.get_num_threads(), os.getcwd()
    env = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    try:
        yield
    finally:
        torch.set_default_dtype(dtype)
        torch.set_num_threads(threads)
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        os.chdir(cwd)
        import matplotlib.pyplot as plt

        plt.close("all")


def run_in_process(fn: Callable[[], int | None], folder: Path, name: str) -> tuple[int, str]:
    """Call `fn()` (an experiment's function or command line) in this process, its stdout to
    FOLDER/NAME.log and its stderr to FOLDER/NAME.err. Returns (exit status: fn's return value,
    a SystemExit's code, or 1 for an exception; the exception's one line, else the last informative
    line of stderr or stdout). State that an experiment may change is put back (`_kept_state`)."""
    folder.mkdir(parents=True, exist_ok=True)
    log, err = folder / f"{name}.log", folder / f"{name}.err"
    reason = ""
    with open(log, "w") as fo, open(err, "w") as fe, _kept_state():
        try:
            with contextlib.redirect_stdout(fo), contextlib.redirect_stderr(fe):
                rc = fn()
        except SystemExit as e:  # argparse's errors, a script's sys.exit
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if not isinstance(e.code, (int, type(None))):
                reason = str(e.code)
        except Exception as e:
            rc, reason = 1, first_line(e, typed=False)
            print(f"error: {reason}", file=fe)
    rc = 0 if rc is None else int(rc)
    return rc, reason or _last_line(err) or _last_line(log)


def _last_line(path: Path) -> str:
    lines = [ln.strip() for ln in path.read_text(errors="replace").replace("\r", "\n").splitlines()]
    lines = [ln for ln in lines if ln and "%|" not in ln]  # tqdm's bars
    errors = [ln for ln in lines if ln.startswith("error:") or "Error" in ln]
    return (errors or lines or [""])[-1]


def _command(program: str, args: list[str]) -> str:
    """The command line that repeats an experiment (shown in the report): `program`, a command as
    typed (e.g. "python -m continuation.apps.experiments.foundation"), then the arguments quoted."""
    return f"{program} {shlex.join(args)}" if args else program


class Experiments:
    """The report's experiments, each run at most once (its result, or its failure, kept), each in
    this process (continuation/apps/experiments/), writing into its own subfolder of `out`."""

    def __init__(self, out: Path, quick: bool, say: Callable[[str], None] = print):
        self.out, self.quick, self.say = Path(out).resolve(), quick, say
        self.done: dict = {}

    def get(self, name: str) -> dict:
        if name not in self.done:
            folder = self.out / name
            if folder.exists():
                shutil.rmtree(folder)  # this report's own subfolder: no stale file is read
            folder.mkdir(parents=True)
            t0 = time.perf_counter()
            self.say(f"    {name}: started")
            try:
                self.done[name] = getattr(self, "_" + name.replace("-", "_"))(folder)
                self.done[name]["seconds"] = time.perf_counter() - t0
                self.say(f"    {name}: done ({time.perf_counter() - t0:.0f} s)")
            except Exception as e:
                self.done[name] = ExperimentFailed(f"{name}: {first_line(e, typed=False)}")
                self.say(f"    {name}: failed ({time.perf_counter() - t0:.0f} s): {first_line(e, typed=False)}")
        got = self.done[name]
        if isinstance(got, Exception):
            raise got
        return got

    def _run(self, folder: Path, name: str, fn: Callable[[], int | None], command: str,
             expect: Path) -> tuple[int, str, str]:
        """`fn()` in-process (logs FOLDER/NAME.log, .err); ExperimentFailed (one line) when it wrote
        no `expect`. Returns (exit status, last line, the command shown in the report)."""
        rc, last = run_in_process(fn, folder, name)
        if not expect.exists():
            raise ExperimentFailed(f"`{command}` exited {rc} without writing {expect.name}: {last or 'no message'}")
        return rc, last, command

    def _gaussian_iso_c(self, folder: Path) -> dict:
        from continuation.apps.experiments.gaussian_iso_c import gaussian_iso_c
        from continuation.files.path import load_path

        runs, results = folder / "runs", folder / "results.json"
        cmd = _command("python -m continuation.apps.experiments.gaussian_iso_c",
                       ["--out", str(runs), "--json", str(results)] + (["--quick"] if self.quick else []))
        rc, _, cmd = self._run(folder, "gaussian_iso_c", lambda: gaussian_iso_c(runs, quick=self.quick, json_path=results),
                               cmd, results)
        return {"json": json.loads(results.read_text()), "path": load_path(runs / "iso_c.nc"),
                "figure": runs / "iso_c.png", "rc": rc, "command": cmd}

    def _default_run(self, folder: Path) -> dict:
        from continuation.apps.defaults import DEFAULT_CONFIG
        from continuation.apps.plot import plot_paths
        from continuation.apps.run import run_config
        from continuation.files.path import load_path

        out = folder / "path.nc"
        config = copy.deepcopy(DEFAULT_CONFIG)
        if self.quick:
            for section, values in QUICK_DEFAULT.items():
                config[section] = {**config[section], **values}
            write_toml(config, folder / "quick.toml")
            cmd = _command("python -m continuation", ["run", str(folder / "quick.toml"), "--out", str(out), "--quiet"])
        else:
            cmd = _command("python -m continuation", ["run", "--out", str(out), "--quiet"])

        def run() -> int:  # what `continuation run` does with the configuration
            ds = run_config(config, out, progress=False)
            print(f"wrote {out} ({ds.sizes['step']} points): {ds.attrs['status']}: {ds.attrs['stop_reason']}")
            print(f"wrote {plot_paths([out], folder / 'path.png')}")
            return 0 if ds.attrs["status"] == "finished" else 1

        rc, last = run_in_process(run, folder, "run")
        if not out.exists():
            raise ExperimentFailed(f"`{cmd}` exited {rc} without a path: {last or 'no message'}")
        return {"path": load_path(out), "file": out, "config": config, "figure": folder / "path.png", "rc": rc,
                "command": cmd, "last": last}

    def _foundation(self, folder: Path) -> dict:
        from continuation.apps.experiments.foundation import foundation

        sweep = 9 if self.quick else 41
        cmd = _command("python -m continuation.apps.experiments.foundation",
                       ["--out", str(folder)] + (["--sweep", "9"] if self.quick else []))
        rc, _, cmd = self._run(folder, "gaussian_foundation", lambda: foundation(folder, sweep=sweep), cmd,
                               folder / "foundation.json")
        rows = json.loads((folder / "foundation.json").read_text())
        return {"rows": {r["check"]: r for r in rows}, "figure": folder / "foundation.png", "rc": rc, "command": cmd}

    def _gaussian_transfer(self, folder: Path) -> dict:
        from continuation.apps.experiments.gaussian_transfer import gaussian_transfer

        results = folder / "results.json"
        cmd = _command("python -m continuation.apps.experiments.gaussian_transfer",
                       ["--out", str(folder), "--json", str(results)] + (["--quick"] if self.quick else []))
        rc, _, cmd = self._run(folder, "gaussian_transfer",
                               lambda: gaussian_transfer(folder, quick=self.quick, json_path=results), cmd, results)
        return {"json": json.loads(results.read_text()), "figure": folder / "gaussian_transfer.png",
                "rc": rc, "command": cmd}

    def _fig5_digits(self, folder: Path) -> dict:
        from continuation.apps.experiments import fig5

        args = ["--dataset", "digits", "--out", str(folder), "--json", str(folder / "summary.json")]
        args += ["--quick"] if self.quick else []
        rc, _, cmd = self._run(folder, "fig5_transfer", lambda: fig5.main(args),
                               _command("python -m continuation.apps.experiments.fig5", args), folder / "summary.json")
        return {"json": json.loads((folder / "summary.json").read_text()), "figure": folder / "fig5.png", "rc": rc,
                "command": cmd}

    def _routes(self, folder: Path) -> dict:
        import csv

        from continuation.apps.experiments import routes

        args = ["--routes", "paper,adam600-secant,adam75-secant", "--points", "1" if self.quick else "4", "--out", str(folder)]
        args += ["--repeats", "5"] if self.quick else []
        start = "its own pre-training (5,000 Adam updates)"
        try:  # the default run's first point is the routes' start: the same problem, pre-training and settling
            default = self.get("default-run")
            args += ["--from", str(default["file"]), "--from-step", "0"]
            start = "point 0 of the default run"
        except ExperimentFailed:
            pass
        rc, last, cmd = self._run(folder, "iso_c_routes", lambda: routes.main(args),
                                  _command("python -m continuation.apps.experiments.routes", args), folder / "routes.csv")
        with open(folder / "routes.csv", newline="") as f:
            rows = {r["route"]: r for r in csv.DictReader(f)}
        return {"rows": rows, "figure": folder / "routes.png", "rc": rc, "last": last, "command": cmd,
                "start": start}


# --------------------------------------------------------------------------------------------
# the checks


@dataclass(frozen=True)
class Check:
    """One claim of the paper: `name` (for --only), `title` (with the paper's reference), `claim`
    (the statement) and `measure(result, experiments)`, which fills a Result."""

    name: str
    title: str
    claim: str
    measure: Callable[[Result, Experiments], None]

    def run(self, out_dir, quick: bool, experiments: Experiments | None = None) -> dict:
        """Measure the claim; the result dict (verdict, reason, rows, figures, notes, errors). A part
        that fails is recorded as not measured; the other parts still run."""
        experiments = experiments or Experiments(Path(out_dir), quick)
        result = Result()
        self.measure(result, experiments)
        return result.as_dict()


def _gaussian_closed_form():
    from problems import LinearGaussianClosedForm

    from continuation.apps.experiments.gaussian_iso_c import CONFIG
    from continuation.files.config import build_run, load_config

    return LinearGaussianClosedForm.of(build_run(load_config(CONFIG))["problem"])


def _digits_constant(config: dict) -> float:
    sigma = float(config["problem"]["decoder_std"])
    return DIGITS_PIXELS / 2 * math.log(2 * math.pi * sigma**2)


def _measure_iso_c(res: Result, ex: Experiments) -> None:
    def gaussian():
        g = ex.get("gaussian-iso-c")
        run = g["json"]["runs"][0]
        part = "linear-Gaussian"
        res.measure(part, "status, lambda 1 -> 4", f"{run['status']}, lambda_end = {run['lambda_end']:.6g}",
                    ok=run["status"] == "finished" and abs(run["lambda_end"] - 4.0) < 1e-9,
                    tolerance="finished at lambda = 4")
        res.measure(part, "max |C - C0| / |C0| along the path", run["max_abs_C_drift"], "<=", 1e-10, ".2e")
        res.measure(part, "max |gamma - gamma_cf| / gamma_cf (closed-form iso-C curve C(lambda, gamma) = C0)",
                    run["max_gamma_err"], "<=", g["json"]["gamma_err_tolerance"], ".2e")
        res.note(f"linear-Gaussian: {run['points']} points, `{g['command']}` (exact law, rk4 predictor, Newton "
                 f"corrector, Newton projection; {run['krylov_per_point']:.0f} MINRES iterations per point)")
        res.figure(g["figure"], "linear-Gaussian iso-C path (gaussian_iso_c)")

    def digits():
        d = ex.get("default-run")
        ds, part = d["path"], "digits (default run)"
        lam = ds["lambda"].values
        res.measure(part, "status, lambda", f"{ds.attrs['status']}, {lam[0]:.4g} -> {lam[-1]:.4g}",
                    ok=ds.attrs["status"] == "finished" and lam[-1] >= 1.0 - 1e-9,
                    tolerance="finished at lambda = 1")
        c = ds["train_C"].values
        res.measure(part, "max |train C / C0 - 1| (one fixed noise draw, whole training set)",
                    float(np.abs(c / c[0] - 1).max()), "<=", DIGITS_C_DRIFT, ".2%")
        g = ds["gamma"].values
        res.note(f"digits: {ds.sizes['step']} points, training C0 = {c[0]:.4f}, gamma {g[0]:.3g} -> {g[-1]:.3g}; "
                 f"`{d['command']}`")
        res.figure(d["figure"], "digits default run: R, D, C and the multipliers along iso-C")

    res.part("linear-Gaussian", gaussian)
    res.part("digits", digits)


def _measure_rate_distortion(res: Result, ex: Experiments) -> None:
    def gaussian():
        g = ex.get("gaussian-iso-c")
        ds, part = g["path"], "linear-Gaussian"
        R, D, lam = ds["R"].values, ds["D"].values, ds["lambda"].values
        dR, dD = np.diff(R), np.diff(D)
        res.measure(part, f"smallest step dR (R {R[0]:.4f} -> {R[-1]:.4f})", float(dR.min()), ">", 0.0, ".2e")
        res.measure(part, f"largest step dD (D {D[0]:.4f} -> {D[-1]:.4f})", float(dD.max()), "<", 0.0, ".2e")
        ratio = -dR / (0.5 * (lam[1:] + lam[:-1]) * dD)
        res.measure(part, "max over steps |dR / (-lambda_mid dD) - 1| (eq. 29, trapezoid)",
                    float(np.abs(ratio - 1).max()), "<=", 1e-2, ".2e")
        closed = _gaussian_closed_form()
        err = max(max(abs(r - f["R"]), abs(d - f["D"])) for r, d, f in
                  zip(R, D, (closed.functionals(a, b) for a, b in zip(lam, ds["gamma"].values))))
        res.measure(part, "max |R, D - closed form at the path's (lambda, gamma)| (nats)", err, "<=", 1e-8, ".2e")

    def digits():
        d = ex.get("default-run")
        ds, part = d["path"], "digits (default run)"
        r = ds["train_R"].values
        res.measure(part, f"train R end / start - 1 (R {r[0]:.3f} -> {r[-1]:.3f})", float(r[-1] / r[0] - 1), ">=",
                    DIGITS_R_RISE, ".1%")
        res.measure(part, "largest fall of train R between points / its range", float(
            max(0.0, -np.diff(r).min()) / (r.max() - r.min())), "<=", 0.01, ".2%")
        const = _digits_constant(d["config"])
        dd = ds["train_D"].values - const
        fall = float(1 - dd[-1] / dd[0]) if dd[0] > 0 else float("nan")
        res.measure(part, f"1 - (D - c) end / start, c = (d/2) log(2 pi sigma^2) = {const:.3f} "
                          f"(D - c {dd[0]:.3f} -> {dd[-1]:.3f})", fall, ">=", DIGITS_D_FALL, ".1%")
        res.note(f"digits: d = {DIGITS_PIXELS} pixels, sigma = {d['config']['problem']['decoder_std']} (decoder "
                 f"standard deviation); validation accuracy {ds['val_acc'].values.min():.3f} at its lowest")

    res.part("linear-Gaussian", gaussian)
    res.part("digits", digits)


def first_law_residual(ds, every: int = 1) -> float:
    """|sum of dR + lambda_mid dD + gamma_mid dC| / sum |dR| over every `every`-th point of a path
    (the trapezoid rule on Remark 1's dR = -lambda dD - gamma dC)."""
    R, D, C, lam, gam = (ds[k].values[::every] for k in ("R", "D", "C", "lambda", "gamma"))
    s = np.sum(np.diff(R) + 0.5 * (lam[1:] + lam[:-1]) * np.diff(D) + 0.5 * (gam[1:] + gam[:-1]) * np.diff(C))
    return float(abs(s) / np.sum(np.abs(np.diff(R))))


def _measure_first_law(res: Result, ex: Experiments) -> None:
    def gaussian():
        g = ex.get("gaussian-iso-c")
        run, ds, part = g["json"]["runs"][0], g["path"], "linear-Gaussian"
        fine = run["first_law"]
        res.measure(part, "|sum (dR + lambda dD + gamma dC)| / sum |dR| (gaussian_iso_c's 'first law')", fine,
                    "<=", 5e-3, ".2e")
        coarse = first_law_residual(ds, every=2)
        res.measure(part, f"the same over every other point ({coarse:.2e}) / all points: h^2 convergence",
                    coarse / fine if fine > 0 else float("inf"), ">=", 3.0, ".2f")
        res.note(f"linear-Gaussian: {run['points']} points, lambda 1 -> 4; the residual recomputed here from the "
                 f"path file is {first_law_residual(ds):.3e} (the script's: {fine:.3e}). The trapezoid rule's error "
                 f"is O(h^2): halving the points multiplies it by about 4, so it is quadrature error and the law "
                 f"itself holds to the path's accuracy.")
        for other in g["json"]["runs"][1:]:
            res.note(f"variant '{other['run']}' ({other['points']} points to lambda = {other['lambda_end']:.3g}): "
                     f"first-law residual {other['first_law']:.2e}")

    res.part("linear-Gaussian", gaussian)


def _measure_concavity(res: Result, ex: Experiments) -> None:
    def gaussian():
        f = ex.get("foundation")
        rows, part = f["rows"], "linear-Gaussian (lambda, gamma) = (1, 1)"
        hess = rows["Hess F (max entry error / max entry)"]
        H = np.array(hess["framework"], dtype=float)
        eig = np.linalg.eigvalsh(0.5 * (H + H.T))
        res.measure(part, "Hess F by tangents (MINRES) vs differences of the closed-form D, C (relative)",
                    hess["error"], "<=", 1e-6, ".2e")
        res.measure(part, f"largest eigenvalue of Hess F (eigenvalues {eig[0]:.4g}, {eig[1]:.4g}): concave",
                    float(eig.max()), "<", 0.0, ".4g")
        gap = rows["Maxwell gap |D_gamma - C_lambda| / max|Hess F|"]
        res.measure(part, "|D_gamma - C_lambda| / max |Hess F| (Hess F symmetric)", gap["error"], "<=", 1e-8, ".2e")
        prod = rows["Hess R(D,C) Hess F + I (max entry)"]
        res.measure(part, "max |Hess R(D, C) Hess F + I| (appendix B)", prod["error"], "<=", 1e-5, ".2e")
        for name in ("D = dF/dlambda", "C = dF/dgamma"):
            res.measure(part, f"{name} (envelope theorem; relative)", rows[name]["error"], "<=", 1e-8, ".2e")
        res.note(f"Hess F = {_fmt(np.round(H, 6).tolist(), '.6g')} (framework, [[D_lambda, D_gamma], [C_lambda, "
                 f"C_gamma]]); Hess R(D, C) by second differences of the closed-form R on the inverted map "
                 f"(lambda, gamma) -> (D, C). `{f['command']}`")
        res.figure(f["figure"], "linear-Gaussian foundation: F, R, D, C and the rate-distortion curve")

    res.part("linear-Gaussian", gaussian)


def _measure_transfer(res: Result, ex: Experiments) -> None:
    def gaussian():
        g = ex.get("gaussian-transfer")
        part = "linear-Gaussian"
        j = g["json"]
        res.measure(part, "largest |R, D, C - closed form| and |multipliers - closed-form path| over every run",
                    j["largest_error"], "<=", j["tolerance"], ".2e")
        for run in j["runs"]:
            if run["process"] == "quasi-static":
                continue
            name = f"{run['path']}, {run['process']}"
            res.measure(part, f"{name}: t reached ({run['status']})", run["t_end"], "==", 1.0, ".4g")
            res.measure(part, f"{name}: |C(t = 1) - C0| / C0 (C at t = 1 = from-scratch equilibrium there)",
                        abs(run["C_end"] - run["C0"]) / abs(run["C0"]), "<=", 1e-6, ".2e")
        res.note(f"linear-Gaussian: training from scratch reaches the closed-form equilibrium, so R, D, C at t = 1 "
                 f"equal to the closed form at the transfer's own (lambda, gamma) is the from-scratch result. "
                 f"`{g['command']}`")
        res.figure(g["figure"], "linear-Gaussian transfer: gamma(t), lambda(t) against the closed form")

    def digits():
        f = ex.get("fig5-digits")
        s, part = f["json"], "digits 0-4 -> 5-9 (fig5_transfer)"
        res.measure(part, f"t reached ({s['status']})", s["t_end"], "==", 1.0, ".4g")
        res.measure(part, "max |train C - C0| / C0 over t", s["max_C_change"], "<=", s["C_tolerance"], ".2%")
        res.measure(part, f"|val acc transfer (t = 1) - from scratch at (lambda1, gamma1)| ({100 * s['acc_t1']:.2f}% "
                          f"vs {100 * s['scratch1']:.2f}%)", abs(s["acc_t1"] - s["scratch1"]), "<=",
                    s["accuracy_tolerance"], ".2%")
        res.note(f"digits: source model on the target {100 * s['acc_t0']:.2f}%, fine-tuning {100 * s['tune_end']:.2f}%, "
                 f"quasi-static transfer {100 * s['qs_acc_t1']:.2f}% (its C moved {100 * s['qs_C_change']:+.1f}%), "
                 f"from scratch at (lambda0, gamma0) {100 * s['scratch0']:.2f}%; gamma {s['gam'][0]:.3g} -> "
                 f"{s['gam'][1]:.3g}; sizes {s['sizes']}. `{f['command']}`")
        res.figure(f["figure"], "digits transfer (Fig. 5): R-D, validation accuracy, training C, multipliers")

    res.part("linear-Gaussian", gaussian)
    res.part("digits", digits)


def _measure_cost(res: Result, ex: Experiments) -> None:
    def digits():
        r = ex.get("routes")
        rows, part = r["rows"], "digits (iso_c_routes)"
        missing = [n for n in ("paper", "adam600-secant", "adam75-secant") if n not in rows]
        if missing:
            raise ExperimentFailed(f"route {missing[0]} wrote no row: {r['last']}")
        paper, same, default = rows["paper"], rows["adam600-secant"], rows["adam75-secant"]
        for name, row in (("paper", paper), ("adam600-secant", same), ("adam75-secant", default)):
            res.measure(part, f"{name}: status", row["status"], ok=row["status"] == "finished", tolerance="finished")
        pe = float(paper["grad_equiv_per_lambda"])
        se, de = float(same["grad_equiv_per_lambda"]), float(default["grad_equiv_per_lambda"])
        res.measure(part, f"gradient-equivalents per unit lambda at the paper's budget (Adam 600), exact law + "
                          f"secant / FD law ({se:.0f} / {pe:.0f})", se / pe, "<", 1.0, ".3f")
        res.measure(part, "exact law (Adam 600, secant): max training-C drift (%)", float(same["max_C_drift_pct"]),
                    "<=", 0.5, ".3f")
        res.measure(part, f"the default route (exact law, Adam 75, secant) / FD law ({de:.0f} / {pe:.0f})",
                    de / pe, "<", 1.0, ".3f")
        res.measure(part, "the default route: max training-C drift (%)", float(default["max_C_drift_pct"]),
                    "<=", 0.5, ".3f")
        res.note(f"the paper's FD law (h = 0.02, Adam 600, no projection) drifted {float(paper['max_C_drift_pct']):.3f}% "
                 f"in training C. The first ratio is the law's own saving (the same corrector budget; the FD law "
                 f"pays four extra corrector runs per point); the second adds the smaller budget, which lags "
                 f"(dR {float(default['dR']):+.3f} against {float(same['dR']):+.3f} nats at Adam 600; "
                 f"docs/neural_routes.md). Wall seconds per unit lambda: FD {float(paper['wall_s_per_lambda']):.1f}, "
                 f"exact at Adam 600 {float(same['wall_s_per_lambda']):.1f}, default "
                 f"{float(default['wall_s_per_lambda']):.1f}; {paper['points']} point(s) of 0.075 each, from "
                 f"{r['start']}. `{r['command']}`")
        res.figure(r["figure"], "iso-C routes: training C drift and the R-D trade-off")

    res.part("digits", digits)


CHECKS = [
    Check("iso-c-constant", "C is constant along iso-classification (Remark 7, eq. 22)",
          "The iso-classification process, lambda' = -alpha dC/dgamma and gamma' = alpha dC/dlambda (eq. 22), "
          "keeps the classification loss C at its start value C0 while the multipliers move.",
          _measure_iso_c),
    Check("rate-distortion", "Along iso-C the rate rises and the distortion falls (eq. 29)",
          "With C held, D' = -alpha det Hess F < 0 and R' = -lambda D' > 0 (eq. 29, Remark 10): raising lambda "
          "trades distortion for rate.",
          _measure_rate_distortion),
    Check("first-law", "The first law dR = -lambda dD - gamma dC (Remark 1, eq. 7)",
          "On the equilibrium surface (sigma = 0) the functionals obey dR = -lambda dD - gamma dC.",
          _measure_first_law),
    Check("concavity", "F is concave and Hess R(D, C) Hess F = -I (Lemma 3, appendix B)",
          "The free energy F(lambda, gamma) is concave (Hess F negative definite), the Hessian of R(D, C) is its "
          "negative inverse, so the RDC constraint surface is convex.",
          _measure_concavity),
    Check("transfer", "Iso-C transfer reaches the accuracy of training from scratch (section 4, Fig. 5)",
          "Iso-classification transfer from the source task (t = 0) to the target task (t = 1), C held, ends "
          "with the accuracy of a model trained on the target from scratch.",
          _measure_transfer),
    Check("exact-law-cost", "The exact law is cheaper than the finite-difference law (eq. 22 vs eq. 31)",
          "Integrating eq. 22 with exact tangents (Hessian-vector products, MINRES) holds C at less cost per "
          "unit of lambda than the paper's procedure, eq. 31 with finite-difference derivatives of C.",
          _measure_cost),
]


# --------------------------------------------------------------------------------------------
# running and writing


def run_checks(checks: list[Check], out: Path, quick: bool, say: Callable[[str], None] = print) -> list[dict]:
    """Every check in turn, one progress line as each starts and ends; a check that raises is
    recorded as not measured with its one-line reason and the next one runs."""
    out = Path(out)
    experiments = Experiments(out, quick, say)
    results = []
    for i, check in enumerate(checks, 1):
        say(f"[{i}/{len(checks)}] {check.name}: {check.title} ...")
        t0 = time.perf_counter()
        try:
            result = check.run(out, quick, experiments)
        except Exception as e:
            result = {"verdict": NOT_MEASURED, "reason": f"error: {first_line(e, typed=False)}", "rows": [], "figures": [],
                      "notes": [], "errors": [first_line(e, typed=False)]}
        result.update(name=check.name, title=check.title, claim=check.claim, seconds=time.perf_counter() - t0)
        say(f"[{i}/{len(checks)}] {check.name}: {verdict_text(result)} ({result['seconds']:.0f} s)")
        results.append(result)
    return results


def _md(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def write_markdown(results: list[dict], out: Path, *, quick: bool, seconds: float, command: str = "") -> Path:
    """OUT/REPORT.md: a summary table, then one section per claim (the claim, the measured numbers
    with their tolerances, the verdict, notes, figures); the figures are copied into OUT, and
    OUT/report.json holds the same results."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from continuation.files.schema import package_version

    try:
        import torch
        torch_version = torch.__version__
    except ImportError:  # pragma: no cover
        torch_version = "?"
    lines = ["# Validation report: A Free-Energy Principle for Representation Learning", "",
             f"`{command or 'python -m continuation report'}`: {'quick size' if quick else 'CPU size'}, "
             f"{time.strftime('%Y-%m-%d %H:%M')}, {seconds:.0f} s; continuation {package_version()}, torch "
             f"{torch_version}, Python {platform.python_version()}, {os.cpu_count()} CPU(s), OMP_NUM_THREADS = "
             f"{os.environ.get('OMP_NUM_THREADS', 'unset')}. Paper: Gao & Chaudhari "
             "(*A Free-Energy Principle for Representation Learning*). Each section states the claim, what was "
             "measured (with its tolerance) and the verdict; the runs' files are in the subfolders.", "",
             "| # | claim | verdict | seconds |", "|---|---|---|---|"]
    for i, r in enumerate(results, 1):
        lines.append(f"| {i} | [{_md(r['title'])}](#{i}) | **{_md(verdict_text(r))}** | {r['seconds']:.0f} |")
    held = sum(r["verdict"] == HOLDS for r in results)
    lines += ["", f"{held} of {len(results)} claims hold.", ""]
    for i, r in enumerate(results, 1):
        lines += [f'<a id="{i}"></a>', "", f"## {i}. {r['title']}", "", f"**Claim.** {r['claim']}", "",
                  "**Measured.**", ""]
        if r["rows"]:
            lines += ["| part | quantity | value | tolerance | within |", "|---|---|---|---|---|"]
            for row in r["rows"]:
                lines.append(f"| {_md(row['part'])} | {_md(row['quantity'])} | {_md(row['text'])} | "
                             f"{_md(row['tolerance'])} | {'yes' if row['ok'] else '**no**'} |")
        else:
            lines.append("Nothing was measured.")
        for e in r["errors"]:
            lines += ["", f"Not measured: {e}"]
        lines += ["", f"**Verdict: {verdict_text(r)}**" if r["verdict"] != FAILS else
                  f"**Verdict: {FAILS}** ({r['reason']})", ""]
        for note in r["notes"]:
            lines.append(f"- {note}")
        if r["notes"]:
            lines.append("")
        for k, fig in enumerate(r["figures"]):
            src = Path(fig["path"])
            if not src.exists():
                lines += [f"(figure {src.name} was not written)", ""]
                continue
            name = f"{i}_{r['name']}_{k}{src.suffix}"
            if src.resolve() != (out / name).resolve():
                shutil.copyfile(src, out / name)
            lines += [f"![{_md(fig['caption'])}]({name})", "", f"*{fig['caption']}* (from `{_rel_to(src, out)}`)", ""]
    path = out / "REPORT.md"
    path.write_text("\n".join(lines).rstrip() + "\n")
    (out / "report.json").write_text(json.dumps({"quick": quick, "seconds": seconds, "exit_code": exit_code(results),
                                                 "checks": results}, indent=1, default=_json_default))
    return path


def _rel_to(path: Path, out: Path) -> str:
    try:
        return str(path.resolve().relative_to(out.resolve()))
    except ValueError:
        return str(path)


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def select(only: str | None) -> list[Check]:
    """The checks named in a comma-separated list (all when None); ValueError naming an unknown one."""
    if only is None:
        return list(CHECKS)
    names = [n.strip() for n in only.split(",") if n.strip()]
    known = {c.name: c for c in CHECKS}
    for n in names:
        if n not in known:
            raise ValueError(f"--only: unknown check {n!r}; choose from {', '.join(known)}")
    if not names:
        raise ValueError(f"--only: no check named; choose from {', '.join(known)}")
    return [known[n] for n in names]


def report(out: Path, quick: bool = False, checks: list[Check] | None = None, say: Callable[[str], None] = print,
           command: str = "") -> tuple[Path, list[dict]]:
    """Run the checks into `out` and write OUT/REPORT.md; (its path, the results)."""
    t0 = time.perf_counter()
    results = run_checks(CHECKS if checks is None else checks, out, quick, say)
    path = write_markdown(results, out, quick=quick, seconds=time.perf_counter() - t0, command=command)
    return path, results
