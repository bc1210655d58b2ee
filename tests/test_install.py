"""`continuation report` from a non-editable install: the repository copied (its packages, no
validation/ or benchmarks/), `pip install --no-deps --no-build-isolation` into a fresh venv, and
the report run from a folder outside any checkout. The dependencies (torch and the rest) come
from this environment's site-packages on PYTHONPATH (a fresh venv cannot install torch offline);
the repository is on no path, so the report must find everything it runs inside the installed
package (it once ran the repository's scripts by their paths)."""

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKS = "concavity,first-law"  # the foundation and the linear-Gaussian iso-C experiments (~25 s on one core)


@pytest.mark.slow
def test_report_runs_from_a_non_editable_install(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("continuation", "problems", "solvers"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(ROOT / name, src / name)
    own = _own_install(tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    # this environment's pip installs into the venv (--prefix: the venv's own site-packages).
    # --ignore-installed: without it pip first uninstalls this environment's own (editable)
    # install of the package, and every later step of CI fails to import it.
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                    "--ignore-installed", "--prefix", str(venv), "--quiet", str(src)], check=True, cwd=tmp_path)
    assert _own_install(tmp_path) == own  # this environment's install untouched (CI's later steps need it)
    shutil.rmtree(src)  # nothing of the copy is left but what was installed
    deps = [p for p in site.getsitepackages() if Path(p).is_dir()]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(PYTHONPATH=os.pathsep.join(deps), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")
    work = tmp_path / "elsewhere"
    work.mkdir()

    where = subprocess.run([str(python), "-c", "import continuation, problems; print(continuation.__file__); "
                            "print(problems.__file__)"], cwd=work, env=env, capture_output=True, text=True, check=True)
    for line in where.stdout.split():
        assert Path(line).resolve().is_relative_to(venv.resolve()), where.stdout  # the installed copy, not a checkout

    out = work / "rep"
    r = subprocess.run([str(python), "-m", "continuation", "report", "--quick", "--only", CHECKS, "--out", str(out)],
                       cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    text = (out / "REPORT.md").read_text()
    assert "2 of 2 claims hold." in text and "not measured" not in text
    assert (out / "foundation" / "foundation.json").exists() and (out / "gaussian-iso-c" / "results.json").exists()
    assert (out / "gaussian-iso-c" / "gaussian_iso_c.log").read_text().strip()  # the experiment's own log



def _own_install(cwd) -> str:
    """Where this environment imports the package from (outside the checkout, so not by its path)."""
    r = subprocess.run([sys.executable, "-c", "import continuation; print(continuation.__file__)"],
                       cwd=cwd, capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else "not importable: " + r.stderr.strip().splitlines()[-1]
