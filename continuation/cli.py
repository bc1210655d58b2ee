"""Command line: `python -m continuation run | plot | list` (also the `continuation` command).

    python -m continuation run                      # the default run (continuation/defaults.py)
    python -m continuation run CONFIG.toml --out PATH.nc [--resume] [--from OLD.nc --from-step K]
    python -m continuation plot PATH.nc [MORE.nc ...] --out FIG.png
    python -m continuation list

Mistakes (an unknown key or name, a bad value, a missing file, a non-finite objective) print
one line, `error: ...`, and exit non-zero: 2 for configuration and files, 1 for a failed run.
A run that stops early (step size below its minimum) exits 1 with the reason.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import ConfigError, describe_registry, load_config
from .stepper import ContinuationError


def _parser():
    p = argparse.ArgumentParser(prog="continuation", description="Continuation on the free-energy equilibrium surface.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a path from a TOML configuration")
    r.add_argument("config", type=Path, nargs="?", help="TOML configuration (default: the built-in digits run)")
    r.add_argument("--out", type=Path, help="netCDF path file (checkpoints go to OUT.ckpt/); default "
                                            "out/default/path.nc for the default run, out/CONFIG.nc otherwise")
    r.add_argument("--resume", action="store_true", help="continue the run in --out from its last point")
    r.add_argument("--from", dest="start_from", type=Path, help="start from a point of an earlier path")
    r.add_argument("--from-step", type=int, default=-1, help="which point of --from (default: the last)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    pl = sub.add_parser("plot", help="plot one or more paths")
    pl.add_argument("paths", type=Path, nargs="+")
    pl.add_argument("--out", type=Path, required=True)
    sub.add_parser("list", help="list problems, processes, predictors, correctors, Krylov solvers")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            print(describe_registry())
            return 0
        if args.command == "plot":
            from .plot import plot_paths

            print(f"wrote {plot_paths(args.paths, args.out)}")
            return 0
        from .run import run_config

        if args.config is None:
            from .defaults import DEFAULT_CONFIG, DEFAULT_OUT

            config, out = DEFAULT_CONFIG, args.out or Path(DEFAULT_OUT)
            print(f"default run: iso-classification on the bundled digits (continuation/defaults.py) -> {out}")
        else:
            config, out = load_config(args.config), args.out or Path("out") / f"{args.config.stem}.nc"
        out.parent.mkdir(parents=True, exist_ok=True)
        start_from = (args.start_from, args.from_step) if args.start_from else None
        ds = run_config(config, out, resume=args.resume, start_from=start_from,
                        progress=False if args.quiet else None)
        n = ds.sizes["step"]
        if args.config is None:
            from .plot import plot_paths

            print(f"wrote {plot_paths([out], out.with_suffix('.png'))}")
        print(f"wrote {out} ({n} points, s = {float(ds['s'][-1]):.4g}, lambda = {float(ds['lambda'][-1]):.6g}, "
              f"gamma = {float(ds['gamma'][-1]):.6g}): {ds.attrs['status']}: {ds.attrs['stop_reason']}")
        return 0 if ds.attrs["status"] == "finished" else 1
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ContinuationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
