"""What the command lines of the scripts and experiments share (below continuation/apps/cli.py,
which the report imports, so that the experiments the report runs need not import the CLI):
`OneLineParser` (a bad argument is one line and exit 2) and `sigterm_as_interrupt`."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from pathlib import Path


class OneLineParser(argparse.ArgumentParser):
    """For scripts (benchmarks/): a bad argument is one line (prog: error: ...) and exit 2,
    without argparse's usage block."""

    def error(self, message):
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)

    def out_folder(self, out: Path) -> Path:
        """--out as a folder, created if need be; a file there, or one that cannot be made, is one line."""
        if out.exists() and not out.is_dir():
            self.error(f"--out {out}: exists and is not a folder")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            self.error(f"--out {out}: cannot create the folder ({e.strerror})")
        return out



@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM raised as KeyboardInterrupt, SIGINT as Python's default, while inside (main thread
    only; elsewhere the caller's handling stands); yields {"signal": "SIGINT" | "SIGTERM",
    "code": 130 | 143}, the last one seen, for the one line and the exit status. The old handlers
    are restored on the way out."""
    got = {"signal": "SIGINT", "code": 130}
    if threading.current_thread() is not threading.main_thread():
        yield got
        return

    def _term(signum, frame):
        got.update(signal="SIGTERM", code=128 + signum)
        raise KeyboardInterrupt

    old = {signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler),
           signal.SIGTERM: signal.signal(signal.SIGTERM, _term)}
    try:
        yield got
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def run_experiment(argv, run, *, prog: str, doc: str, out: str, quick: str) -> int:
    """The command line of an experiment `run(out, quick=..., json_path=...)` -> exit status:
    `--out` (default `out`), `--quick` (help text `quick`), `--json FILE` (the table as JSON)."""
    parser = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(out))
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--json", type=Path, default=None, help="also write the table to this JSON file")
    args = parser.parse_args(argv)
    return run(args.out, quick=args.quick, json_path=args.json)
