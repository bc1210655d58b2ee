"""The one place a process is started: `run_child`, for a run whose peak memory must be its own
(the iso-C routes measure each route's resident memory, continuation/apps/experiments/routes.py).
Everything else (the report, the validation scripts) runs in-process.

The child is `sys.executable ARGS` and imports the same `continuation` as this process: the
folder that holds the imported package goes first on the child's PYTHONPATH (from an install
that is site-packages, already there; from a checkout, the checkout), so an editable install of
another tree, or the working folder, cannot substitute another copy of the library.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import continuation


def child_env(env: dict | None = None) -> dict:
    """`env` (default os.environ) with the folder of this process's `continuation` first on PYTHONPATH."""
    env = dict(os.environ if env is None else env)
    home = str(Path(continuation.__file__).resolve().parents[1])
    rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != home]
    env["PYTHONPATH"] = os.pathsep.join([home, *rest])
    return env


def run_child(args: list[str], env: dict | None = None) -> tuple[int, float, float, str]:
    """Run `python ARGS` (e.g. ["-m", "continuation", "run", ...]) to completion; (exit code, wall
    s, peak RSS MiB of that process alone (os.wait4's rusage), last line of its stderr or stdout).
    Ctrl-C here terminates the child and is raised on."""
    with tempfile.TemporaryFile("w+") as fo, tempfile.TemporaryFile("w+") as fe:
        t = time.perf_counter()
        p = subprocess.Popen([sys.executable, *map(str, args)], env=child_env(env), stdout=fo, stderr=fe)
        try:
            _, status, usage = os.wait4(p.pid, 0)
        except KeyboardInterrupt:
            p.terminate()
            p.wait()
            raise
        p.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t
        fo.seek(0), fe.seek(0)
        lines = fe.read().strip().splitlines() or fo.read().strip().splitlines() or [""]
    return p.returncode, wall, usage.ru_maxrss / 1024, lines[-1]
