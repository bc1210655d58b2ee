"""Command line: `python -m continuation run | sweep | plot | report | list` (also the `continuation` command).

    python -m continuation run                      # the default run (continuation/apps/defaults.py)
    python -m continuation run CONFIG.toml --out PATH.nc [--resume] [--from OLD.nc --from-step K]
    python -m continuation sweep CONFIG.toml --out DIR [--workers N | --scheduler ADDRESS]
    python -m continuation plot PATH.nc [MORE.nc ...] --out FIG.png     (or a sweep folder DIR)
    python -m continuation report --out report/ [--quick] [--only NAME,...]   (continuation/apps/report.py)
    python -m continuation list

Mistakes (an unknown key or name, a bad value, a missing file, a non-finite objective) print
one line, `error: ...`, and exit non-zero: 2 for configuration and files, 1 for a failed run.
A run that stops early (step size below its minimum) exits 1 with the reason. Every input is
checked before any work (continuation/files/config.py, continuation/strategies/checks.py); an unexpected
exception (a bug) is one line too, with `--debug` for its traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path

from problems.data import DataFileError

from continuation.files.config import ConfigError, describe_registry, load_config
from continuation.errors import ContinuationError, FileProblem, Misconfigured, RunInterrupted, first_line
from continuation.apps.scripts import OneLineParser, sigterm_as_interrupt  # noqa: F401 (the scripts' names, here too)


class _UsageError(Exception):
    """A command-line mistake (argparse's): one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse prints the usage and exits; here: one line, exit 2
        raise _UsageError(f"{self.prog}: {message} (see --help)")


def _parser():
    p = _Parser(prog="continuation", description="Continuation on the free-energy equilibrium surface.")
    p.add_argument("--debug", action="store_true", help="show tracebacks (by default every failure is one line)")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    r = sub.add_parser("run", help="run a path from a TOML configuration")
    r.add_argument("config", type=Path, nargs="?", help="TOML configuration (default: the built-in digits run)")
    r.add_argument("--out", type=Path, help="netCDF path file (checkpoints go to OUT.ckpt/); default "
                                            "out/default/path.nc for the default run, out/CONFIG.nc otherwise")
    r.add_argument("--resume", action="store_true", help="continue the run in --out from its last point")
    r.add_argument("--from", dest="start_from", type=Path, help="start from a point of an earlier path")
    r.add_argument("--from-step", type=int, default=None, help="which point of --from (default: the last)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    sw = sub.add_parser("sweep", help="run a family of paths ([sweep] table) on Dask into one dataset along run")
    sw.add_argument("config", type=Path, help="TOML configuration with a [sweep] table (continuation/apps/sweep.py)")
    sw.add_argument("--out", type=Path, required=True, help="the sweep folder: run_NNN.nc per member, sweep.nc "
                                                            "(all members along run), sweep.json (the plan)")
    sw.add_argument("--workers", type=int, default=None, help="worker processes of a local cluster, one torch "
                                                              "thread each (default: the cores)")
    sw.add_argument("--scheduler", default=None, help="address of a running Dask scheduler (tcp://HOST:8786); "
                                                      "its workers must see --out at the same path")
    sw.add_argument("--quiet", action="store_true", help="no progress")
    sw.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    pl = sub.add_parser("plot", help="plot one or more paths, or a sweep's family (its folder or sweep.nc)")
    pl.add_argument("paths", type=Path, nargs="+", help="path files (PATH.nc ...), or one sweep folder DIR (or "
                                                         "DIR/sweep.nc): its members coloured by the swept value")
    pl.add_argument("--out", type=Path, required=True, help="the figure (its extension picks the format)")
    pl.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    rp = sub.add_parser("report", help="run every check of the paper's claims and write OUT/REPORT.md "
                                       "(continuation/apps/report.py)")
    rp.add_argument("--out", type=Path, default=Path("report"), help="the report folder: REPORT.md, its figures, "
                                                                     "report.json and one subfolder per run "
                                                                     "(default: report)")
    rp.add_argument("--quick", action="store_true", help="the smallest sizes that still check each claim (about "
                                                         "5 min on 2 cores) instead of the CPU-sized runs")
    rp.add_argument("--only", default=None, help="comma-separated check names (default: all): "
                                                 "iso-c-constant, rate-distortion, first-law, concavity, transfer, "
                                                 "exact-law-cost")
    rp.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    pd = sub.add_parser("phase-diagram", help="run a path, then follow each fold and bifurcation it locates in a "
                                              "second multiplier ([phase_diagram] table): the curves in OUT.nc, the "
                                              "plane in OUT.png")
    pd.add_argument("config", type=Path, help="TOML configuration with a [phase_diagram] table "
                                              "(continuation/apps/phase_diagram.py)")
    pd.add_argument("--out", type=Path, required=True, help="netCDF file of the critical curves; OUT.png beside it, "
                                                            "and the run's path in OUT.path.nc unless --path")
    pd.add_argument("--path", type=Path, default=None, help="use this path file's located events (with their "
                                                            "checkpoints) instead of running the path")
    pd.add_argument("--quiet", action="store_true", help="no progress bar and no line per curve")
    pd.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    tr = sub.add_parser("tree", help="run a path, then every branch at each bifurcation it locates, to the "
                                     "[tree] depth: the branches in OUT.nc, the tree in OUT.png")
    tr.add_argument("config", type=Path, help="TOML configuration with a [tree] table (continuation/apps/branch_tree.py)")
    tr.add_argument("--out", type=Path, required=True, help="netCDF file of the branches; OUT.png beside it, each "
                                                            "branch's path in OUT.branches/")
    tr.add_argument("--quiet", action="store_true", help="no progress bar and no line per branch")
    tr.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    sub.add_parser("list", help="list problems, processes, predictors, correctors, projections, Krylov solvers "
                                "and step controls, with their options")
    return p


def _writable_target(out: Path, what: str) -> None:
    """`out` can be written: not a directory, its folder creatable and writable (checked before
    any work: a read-only folder was found only after pre-training)."""
    if out.is_dir():
        raise ConfigError(f"{what} {out} is a directory; give a file path")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{what} {out}: cannot create its folder {out.parent}: {e.strerror or e}") from None
    try:  # a real write: os.access says yes to root on a read-only mount
        fd, probe = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".probe", dir=out.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(f"{what} {out}: its folder {out.parent} is not writable ({e.strerror or e})") from None
    if out.exists() and not os.access(out, os.W_OK):
        raise ConfigError(f"{what} {out} exists and is not writable")


def _path_file(path: Path, what: str, step: int | None = None) -> None:
    """`path` is a netCDF path file this program wrote (a 'step' dimension), and `step` one of
    its points (negative: from the end): checked up front, one line naming the file."""
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a directory, not a path file")
    if not path.exists():
        raise FileNotFoundError(f"{what} {path}: path file not found")
    from continuation.errors import PathFileError
    from continuation.files.path import load_path

    try:  # load_path: a killed run's file is read from its journal (continuation/files/writer.py)
        n = load_path(path).sizes["step"]
    except PathFileError as e:
        raise ConfigError(f"{what}: {first_line(e, typed=False)}") from None
    if step is not None and not -n <= step < n:
        raise ConfigError(f"--from-step {step} is out of range: {path} has {n} points (0 to {n - 1}, or -1 to "
                          f"-{n} from the end)")


def _figure_format(out: Path) -> None:
    from matplotlib.figure import Figure

    formats = Figure().canvas.get_supported_filetypes()
    ext = out.suffix.lower().lstrip(".")
    if ext not in formats:
        raise ConfigError(f"plot --out {out}: unknown figure format {out.suffix or '(no extension)'!r}; "
                          f"valid: {', '.join('.' + f for f in sorted(formats))}")


def _ended_program() -> None:
    """The run's file is complete: the program exits with the run's status whatever signal comes
    from here to its exit (a SIGTERM after "wrote ... finished" killed it with status 143, and a
    wrapper read a finished run as interrupted). SIGINT and SIGTERM are ignored from here on."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)


def main(argv=None) -> int:
    debug = "--debug" in (sys.argv[1:] if argv is None else list(argv))
    try:
        args = _parser().parse_args(argv)
        args.program = argv is None  # the process is this program (python -m continuation), not a caller's
        return _main(args)
    except (_UsageError, ConfigError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError,
            DataFileError) as e:
        if debug:
            raise
        _say(e)
        return 2
    except RunInterrupted as e:  # before ContinuationError (it is one): the resume command, exit 130 / 143
        if debug:
            raise
        _say(e.line(sys.argv[1:] if argv is None else list(argv)))
        return e.exit_code
    except (FileProblem, Misconfigured) as e:  # a damaged or foreign path file, a locked or unwritable output, a
        # setup mismatch; a configuration mistake the run found when it could first check it
        if debug:
            raise
        _say(e)
        return 2
    except ContinuationError as e:
        if debug:
            raise
        _say(e)
        return 1
    except BrokenPipeError:  # `continuation list | head`: the reader left; nothing to say
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        if debug:
            raise
        print("error: interrupted before the first point was written; nothing to resume", file=sys.stderr)
        return 130
    except OSError as e:  # an unreadable or damaged file somewhere (netCDF, checkpoints): a file problem
        if debug:
            raise
        name = f"{e.filename}: " if getattr(e, "filename", None) and str(e.filename) not in str(e) else ""
        _say(f"{name}{e.strerror or e}" if e.strerror else f"{name}{e}")
        return 2
    except Exception as e:  # a bug: still one line, the traceback on request
        if debug:
            raise
        _say(f"unexpected {type(e).__name__}: {first_line(e, typed=False)} (a bug; run with --debug for the traceback)")
        return 1


def _phase_diagram(args) -> int:
    from continuation.apps.phase_diagram import run_phase_diagram

    config = load_config(args.config)
    if args.path is not None:
        _path_file(args.path, "--path")
    _writable_target(args.out, "--out")
    _writable_target(args.out.with_suffix(".png"), "--out")
    if args.out.exists():
        raise ConfigError(f"--out {args.out} exists; remove it or choose another --out")
    ds = run_phase_diagram(config, args.out, path=args.path, progress=not args.quiet)
    k = ds.sizes["curve"]
    print(f"wrote {args.out} ({k} critical curve{'s' if k != 1 else ''}) and {args.out.with_suffix('.png')}")
    return 0


def _say(e) -> None:
    print(f"error: {first_line(e, typed=False)}", file=sys.stderr)


def _main(args) -> int:
    if args.command == "list":
        print(describe_registry())
        return 0
    if args.command == "plot":
        from continuation.apps.plot import is_sweep, plot_paths, plot_sweep

        _figure_format(args.out)
        sweeps = [p for p in args.paths if is_sweep(p)]
        if sweeps and len(args.paths) > 1:
            raise ConfigError(f"plot: {sweeps[0]} is a sweep; give one sweep (its folder or sweep.nc) alone, or "
                              f"path files only")
        if sweeps:
            _writable_target(args.out, "plot --out")
            drawn = plot_sweep(sweeps[0], args.out)
            note = f"; skipped, no points: {'; '.join(drawn.skipped.values())}" if drawn.skipped else ""
            k = len(drawn.colors)
            print(f"wrote {drawn.path}: {k} member{'s' if k != 1 else ''}{note}")
            return 0
        for p in args.paths:
            _path_file(p, "plot")
        _writable_target(args.out, "plot --out")
        print(f"wrote {plot_paths(args.paths, args.out)}")
        return 0
    if args.command == "sweep":
        return _sweep(args)
    if args.command == "report":
        return _report(args)
    if args.command == "phase-diagram":
        return _phase_diagram(args)
    if args.command == "tree":
        from continuation.apps.branch_tree import run_tree

        config = load_config(args.config)
        _writable_target(args.out, "--out")
        ds = run_tree(config, args.out, progress=not args.quiet)
        k = ds.sizes["branch"] - 1
        print(f"wrote {args.out} (the root path and {k} branch{'es' if k != 1 else ''}) and "
              f"{args.out.with_suffix('.png')}")
        return 0
    from continuation.apps.run import run_config

    if args.from_step is not None and args.start_from is None:
        raise ConfigError("--from-step needs --from OLD.nc (the path whose point to start from)")
    if args.start_from is not None:
        _path_file(args.start_from, "--from", -1 if args.from_step is None else args.from_step)
    if args.config is None:
        from continuation.apps.defaults import DEFAULT_CONFIG, DEFAULT_OUT

        config, out = DEFAULT_CONFIG, args.out or Path(DEFAULT_OUT)
        print(f"default run: iso-classification on the bundled digits (continuation/apps/defaults.py) -> {out}")
    else:
        config, out = load_config(args.config), args.out or Path("out") / f"{args.config.stem}.nc"
        if "sweep" in config:
            raise ConfigError(f"{args.config} has a [sweep] table: run it with `python -m continuation sweep "
                              f"{args.config} --out DIR`")
    _writable_target(out, "--out")
    if args.resume and out.exists():
        _path_file(out, "--resume --out")
    elif args.resume:
        print(f"note: {out} does not exist yet; --resume starts it anew", file=sys.stderr)
    if args.config is None:
        _writable_target(out.with_suffix(".png"), "--out")
    start_from = (args.start_from, -1 if args.from_step is None else args.from_step) if args.start_from else None
    ds = run_config(config, out, resume=args.resume, start_from=start_from,
                    progress=False if args.quiet else None)
    if args.program:
        _ended_program()
    n = ds.sizes["step"]
    if args.config is None:
        from continuation.apps.plot import plot_paths

        print(f"wrote {plot_paths([out], out.with_suffix('.png'))}")
    print(f"wrote {out} ({n} points, s = {float(ds['s'][-1]):.4g}, lambda = {float(ds['lambda'][-1]):.6g}, "
          f"gamma = {float(ds['gamma'][-1]):.6g}): {ds.attrs['status']}: {ds.attrs['stop_reason']}")
    for j in range(ds.sizes.get("event", 0)):  # what the monitor found (docs/stability.md)
        print(f"  {_event_line(ds, j)}")
    return 0 if ds.attrs["status"] == "finished" else 1


def _event_line(ds, j: int) -> str:
    """One event as printed: where, and whether it was located; an event located to locate_tol reads as
    before, one that was not says so and how (interpolated between points, or a bracket not closed)."""
    kind, method = str(ds["event_type"].values[j]), str(ds["event_method"].values[j])
    located = int(ds["event_located"].values[j]) == 1
    where = (f"lambda = {float(ds['event_lambda'].values[j]):.10g}, gamma = "
             f"{float(ds['event_gamma'].values[j]):.10g}")
    if located or kind in ("branch_switch", "saddle") or method == "none":
        how = ""
    elif method == "interpolate":
        how = " (not located: interpolated between two points)"
    else:
        how = f" (not located to locate_tol: the {method} bracket did not close)"
    return f"event {kind} at {'about ' if how else ''}{where}{how}: {ds['event_detail'].values[j]}"


def _report(args) -> int:
    """`continuation report`: every check, one line as each starts and ends, OUT/REPORT.md; exit 0
    when every claim holds, 1 otherwise (continuation/apps/report.py)."""
    from continuation.apps import report

    out = args.out
    if out.exists() and not out.is_dir():
        raise ConfigError(f"report --out {out} is a file; give a folder")
    try:
        checks = report.select(args.only)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"report --out {out}: cannot create the folder: {e.strerror or e}") from None
    try:  # a real write: os.access says yes to root on a read-only mount
        fd, probe = tempfile.mkstemp(prefix=".report.", suffix=".probe", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(f"report --out {out} is not writable ({e.strerror or e})") from None
    quick = " --quick" if args.quick else ""
    only = f" --only {args.only}" if args.only else ""
    command = f"python -m continuation report --out {out}{quick}{only}"
    print(f"report: {len(checks)} check{'s' if len(checks) != 1 else ''} ({'quick' if args.quick else 'CPU'} size) "
          f"-> {out / 'REPORT.md'}", flush=True)
    try:
        path, results = report.report(out, args.quick, checks, say=lambda line: print(line, flush=True),
                                      command=command)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"error: report interrupted; {out / 'REPORT.md'} was not written (rerun the command)", file=sys.stderr)
        return 130
    held = sum(r["verdict"] == report.HOLDS for r in results)
    print(f"wrote {path}: {held} of {len(results)} claims hold")
    for i, r in enumerate(results, 1):
        print(f"  {i}. {r['name']}: {report.verdict_text(r)}")
    return report.exit_code(results)


def _sweep(args) -> int:
    """`continuation sweep`: every member, a table of how each ended; exit 0 when all finished."""
    from continuation.apps.sweep import run_sweep

    config = load_config(args.config)
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    if args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"sweep --out {args.out} is a file; give a folder")
    try:
        with sigterm_as_interrupt() as got:  # SIGTERM as Ctrl-C: the cluster is closed on the way out
            ds = run_sweep(config, args.out, workers=args.workers, scheduler=args.scheduler, progress=not args.quiet)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"error: sweep interrupted ({got['signal']}); every member keeps the points it wrote: resume with "
              f"python -m continuation sweep {args.config} --out {args.out}", file=sys.stderr)
        return got["code"]
    axes = [k for k in ds.coords if ds[k].dims == ("run",) and k != "run"]
    m = ds.sizes['run']
    print(f"wrote {args.out / 'sweep.nc'} ({m} member{'s' if m != 1 else ''} along run; axes {', '.join(axes)})")
    for i in range(ds.sizes["run"]):
        values = ", ".join(f"{k}={ds[k].values[i]}" for k in axes)
        n = int(ds["length"].values[i])
        end = f", lambda = {float(ds['lambda'].values[i, n - 1]):.6g}" if n else ""
        why = str(ds["stop_reason"].values[i])
        print(f"  {ds['file'].values[i]} ({values}): {ds['status'].values[i]}, {n} points{end}"
              + (f": {why}" if why else ""))
    return 0 if all(str(s) == "finished" for s in ds["status"].values) else 1


if __name__ == "__main__":
    sys.exit(main())
