"""Faults (issue 12): kills during writes and at checkpoints resume to the uninterrupted result
(the Gaussian and a small stochastic MLP), one writer per output, SIGINT / SIGTERM, a full disk
and a read-only folder, damaged path files and checkpoints, and statuses that tell the truth.

The kills are placed by the test hook CONTINUATION_TEST_KILL_AT (continuation/files/writer.py)."""

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from continuation.apps import cli
from continuation.strategies.correctors import NewtonCorrector
from continuation.engine.driver import Output, Start, continue_path
from continuation.errors import (CheckpointMissing, ContinuationError, OutputLocked, OutputNotWritable,
                                 PathFileError, RunInterrupted)
from continuation.files.writer import PathWriter
from continuation.files.schema import checkpoint_file, lock_file, tmp_file
from continuation.files.path import load_path, load_point
from continuation.strategies.predictors import NoPredictor, ODEPredictor
from continuation.strategies.processes import QuasiStatic, iso_classification
from continuation.strategies.projections import NewtonProjection
from continuation.strategies.step_control import AdaptiveSteps, FixedSteps, StopRule

ROOT = Path(__file__).parents[1]
BASE = (ROOT / "continuation" / "apps" / "experiments" / "gaussian_iso_c.toml").read_text()

# the Gaussian run of RELIABILITY.md C: the secant predictor, checkpoint_every = 3 (so that a
# pruned checkpoint is in play at every second point); 20 points
GAUSSIAN = (BASE.replace("initial = 0.25", "initial = 0.1").replace("max_step = 1.0", "max_step = 0.1")
            .replace("target = {lambda = 4.0}", "target = {lambda = 1.5}").replace("milestones = {lambda = [2.0, 3.0]}", "")
            .replace('name = "ode"\nmethod = "rk4"', 'name = "secant"') + "\n[output]\ncheckpoint_every = 3\n")
# a small stochastic run: a new draw at every point, Adam on a fixed budget, the secant predictor; 9 points
MLP = """
[problem]
name = "mlp"
dataset = "digits"
limit = 120
hidden = 16
latent = 3
hvp_batch = 32
samples = 1

[start]
lambda = 0.5
gamma = 2.0
train_steps = 50

[process]
name = "iso-classification"
alpha = 1.0
clock = "lambda"

[predictor]
name = "secant"

[corrector]
name = "adam"
steps = 10
eta_max = 1e-3
resample_every = 5

[krylov]
name = "minres"
rtol = 1e-2
maxiter = 10
shift = -0.1

[steps]
name = "fixed"
size = 0.05

[stop]
max_steps = 20
target = {lambda = 0.9}

[output]
checkpoint_every = 3
"""
# the same with training C held by the secant projection that reuses the last step's measured
# response (continuation/strategies/projections.py), the paper's none predictor: a resume must read that
# response back from the file
MLP_SECANT = (MLP.replace('clock = "lambda"', 'clock = "lambda"\ntol = 0.001\nmeasure = "evaluation"')
              .replace('[predictor]\nname = "secant"', '[predictor]\nname = "none"')
              + '\n[projection]\nname = "secant"\nreuse_response = true\n')
CONFIGS = {"gaussian": GAUSSIAN, "mlp": MLP, "mlp-secant": MLP_SECANT}


def env(**extra):
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(torch.get_num_threads()), **extra)


def cli_cmd(cfg, out, *more):
    return [sys.executable, "-m", "continuation", "run", str(cfg), "--quiet", "--out", str(out), *more]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """name -> (config file, the uninterrupted path), each run once."""
    folder = tmp_path_factory.mktemp("full")
    done = {}

    def get(name):
        if name not in done:
            cfg = folder / f"{name}.toml"
            cfg.write_text(CONFIGS[name])
            out = folder / f"{name}.nc"
            assert cli.main(["run", str(cfg), "--quiet", "--out", str(out)]) == 0
            done[name] = (cfg, out)
        return done[name]

    return get


def assert_same_path(full, part):
    a, b = load_path(full), load_path(part)
    for ds in (a, b):
        del ds.attrs["checkpoint_dir"]  # names the file's own checkpoint folder
        del ds.attrs["history"]  # the sessions that wrote the file: a resume adds one
    xr.testing.assert_identical(a.drop_vars("seconds"), b.drop_vars("seconds"))
    assert torch.equal(load_point(full)["x"], load_point(part)["x"])


def assert_every_named_checkpoint_exists(out):
    ds = load_path(out)
    for k in ds["checkpoint"].values:
        if k >= 0:
            assert checkpoint_file(out, int(k)).exists(), f"the file names checkpoint {k}, which is gone"


@pytest.mark.parametrize("name,kill_at", [("gaussian", "write:6"), ("gaussian", "checkpoint:7"),
                                          ("mlp", "write:4"), ("mlp", "checkpoint:3"), ("mlp-secant", "write:5")])
def test_killed_during_a_write_or_at_a_checkpoint_resumes_to_the_uninterrupted_path(
        tmp_path, uninterrupted, capsys, name, kill_at):
    cfg, full = uninterrupted(name)
    part = tmp_path / "part.nc"
    run = subprocess.run(cli_cmd(cfg, part), env=env(CONTINUATION_TEST_KILL_AT=kill_at), capture_output=True)
    assert run.returncode == -signal.SIGKILL, run.stderr.decode()[-2000:]
    step = int(kill_at.split(":")[1])
    killed = load_path(part)
    assert killed.attrs["status"] == "running" and killed.sizes["step"] == step  # point `step` never made it
    assert_every_named_checkpoint_exists(part)  # write:6 prunes checkpoint 4, which the file still names
    assert lock_file(part).exists()  # a SIGKILL leaves its lock: the resume takes it over
    capsys.readouterr()
    assert cli.main(["run", str(cfg), "--quiet", "--out", str(part), "--resume"]) == 0
    assert "taking over the lock" in capsys.readouterr().err
    assert not lock_file(part).exists() and not tmp_file(part).exists()
    assert_same_path(full, part)


def test_the_secant_response_is_measured_and_written(uninterrupted):
    """The reuse engaged in the run the resume test compares against: finite responses after the
    first projected step, positive, within the clip [0.02, 50]."""
    ds = load_path(uninterrupted("mlp-secant")[1])
    k = ds["secant_response"].values
    assert np.isnan(k[0]) and np.isfinite(k[2:]).all() and ((k[2:] >= 0.02) & (k[2:] <= 50)).all()
    assert ds["secant_response"].attrs["units"] == "1"


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_sigint_and_sigterm_keep_the_file_and_say_how_to_resume(tmp_path, uninterrupted, sig, code):
    cfg, full = uninterrupted("gaussian")
    part = tmp_path / "part.nc"
    proc = subprocess.Popen(cli_cmd(cfg, part), env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        try:
            if load_path(part).sizes["step"] >= 4:
                break
        except (FileNotFoundError, ContinuationError):
            pass
        time.sleep(0.02)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    killed = load_path(part)
    assert killed.attrs["status"] == "running" and 4 <= killed.sizes["step"] < load_path(full).sizes["step"]
    assert not lock_file(part).exists() and not tmp_file(part).exists()
    assert_every_named_checkpoint_exists(part)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"interrupted by {signal.Signals(sig).name}" in lines[0] and str(part) in lines[0], err
    assert cli.main(["run", str(cfg), "--quiet", "--out", str(part), "--resume"]) == 0
    assert_same_path(full, part)
    assert proc.returncode == code and "--resume" in lines[0] and f"--out {part}" in lines[0], (proc.returncode, err)


def test_run_interrupted_names_the_exact_resume_command():
    e = RunInterrupted("SIGINT", 130, Path("/o/p.nc"), 7)
    assert e.exit_code == 130 and "keeps 7 points (status running)" in str(e)
    assert e.line(["run", "c.toml", "--out", "/o/p.nc"]).endswith(
        ": python -m continuation run c.toml --out /o/p.nc --resume")
    assert "nothing to resume" in str(RunInterrupted("SIGTERM", 143))


def small_run(competition, out, **kw):
    return continue_path(competition.problem, iso_classification(), ODEPredictor("rk4"), NewtonCorrector(gtol=1e-11),
                         AdaptiveSteps(initial=0.25), kw.pop("stop", StopRule(max_steps=2)),
                         projection=NewtonProjection(), start=(1.0, 1.0), output=Output(out, progress=False), **kw)


def test_a_second_writer_is_refused_and_a_stale_lock_taken_over(tmp_path, competition, capsys):
    out = tmp_path / "p.nc"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock_file(out).write_text(f"{sleeper.pid}\n")
        with pytest.raises(OutputLocked) as err:
            small_run(competition, out)
        msg = str(err.value)
        assert "\n" not in msg and str(lock_file(out)) in msg and f"pid {sleeper.pid}" in msg
        assert not out.exists() and lock_file(out).exists()  # the other run's lock stays
        cfg = tmp_path / "c.toml"
        cfg.write_text(GAUSSIAN)
        assert cli.main(["run", str(cfg), "--quiet", "--out", str(out)]) == 2  # refused before any work (a file problem: exit 2)
        err_line = capsys.readouterr().err.strip()
        assert err_line.startswith("error: ") and "\n" not in err_line and f"pid {sleeper.pid}" in err_line
    finally:
        sleeper.kill()
        sleeper.wait()
    # the owner is gone (killed): its lock is stale and taken over with a note
    ds = small_run(competition, out)
    assert ds.attrs["status"] == "finished" and "taking over the lock" in capsys.readouterr().err
    assert not lock_file(out).exists()  # released at the end
    # released on an error too
    with pytest.raises(ContinuationError, match="exists"):
        small_run(competition, out)
    assert not lock_file(out).exists()


def test_a_full_disk_is_one_line_and_leaves_no_tmp(tmp_path, competition, monkeypatch):
    import continuation.files.writer as writer_module

    out = tmp_path / "p.nc"
    real = writer_module._open_append
    appends = []

    class HalfAppended:
        """The second point's append in place: its step written into OUT, then ENOSPC."""

        def __init__(self, path):
            with real(path) as nc:
                nc["step"][len(nc.dimensions["step"])] = 99

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        @property
        def variables(self):
            raise OSError(errno.ENOSPC, "No space left on device")

    def full_disk(path):
        appends.append(path)
        return HalfAppended(path) if len(appends) == 1 else real(path)

    monkeypatch.setattr(writer_module, "_open_append", full_disk)
    with pytest.raises(OutputNotWritable) as err:
        small_run(competition, out)
    msg = str(err.value)
    assert appends and "\n" not in msg and str(out) in msg and "no space left" in msg
    assert not tmp_file(out).exists() and not lock_file(out).exists()
    ds = load_path(out)  # the point before is intact, and so is every checkpoint it names
    assert ds.sizes["step"] == 1 and ds.attrs["status"] == "running"
    assert_every_named_checkpoint_exists(out)
    # netCDF's own report of a full disk (RuntimeError "NetCDF: HDF error") is one line too
    monkeypatch.setattr(xr.Dataset, "to_netcdf", lambda self, path, *a, **k: (_ for _ in ()).throw(
        RuntimeError("NetCDF: HDF error")))
    with pytest.raises(OutputNotWritable, match=r"could not be written|no space left"):
        small_run(competition, tmp_path / "q.nc")
    assert not tmp_file(tmp_path / "q.nc").exists()


def test_a_read_only_folder_is_one_line(tmp_path, competition, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:  # root writes anywhere: then the refusal of the file system is simulated
        folder.chmod(0o555)
    else:
        def read_only(*a, **k):
            raise OSError(errno.EROFS, "Read-only file system")

        monkeypatch.setattr(os, "open", read_only)
    try:
        with pytest.raises(OutputNotWritable) as err:
            small_run(competition, folder / "p.nc")
        msg = str(err.value)
        assert "\n" not in msg and "not writable" in msg and str(folder / "p.nc") in msg
    finally:
        folder.chmod(0o755)
    assert list(folder.iterdir()) == []


@pytest.fixture
def written(tmp_path, competition):
    out = tmp_path / "p.nc"
    small_run(competition, out, stop=StopRule(max_steps=3))
    return out


@pytest.mark.parametrize("damage", ["truncated", "random", "foreign", "folder"])
def test_a_damaged_or_foreign_path_file_is_one_line(tmp_path, written, damage):
    bad = tmp_path / "bad.nc"
    if damage == "truncated":
        bad.write_bytes(written.read_bytes()[:700])
    elif damage == "random":
        bad.write_bytes(np.random.default_rng(0).bytes(3000))
    elif damage == "foreign":
        xr.Dataset({"v": ("x", np.arange(3.0))}).to_netcdf(bad)
    else:
        bad.mkdir()
    for read in (load_path, load_point):
        with pytest.raises(PathFileError) as err:
            read(bad)
        msg = str(err.value)
        assert "\n" not in msg and str(bad) in msg, msg


@pytest.mark.parametrize("damage", ["truncated", "garbage", "wrong size", "another step", "folder gone",
                                    "folder a file", "file gone", "bad tangent"])
def test_a_damaged_or_missing_checkpoint_is_one_line(written, damage):
    last = checkpoint_file(written, 3)
    kind = PathFileError
    if damage == "truncated":
        last.write_bytes(last.read_bytes()[:200])
    elif damage == "garbage":
        last.write_bytes(b"not a checkpoint" * 20)
    elif damage == "wrong size":
        point = torch.load(last, weights_only=True)
        torch.save(dict(point, x=torch.zeros(5, dtype=torch.float64)), last)
    elif damage == "another step":
        torch.save(torch.load(checkpoint_file(written, 2), weights_only=True), last)
    elif damage == "bad tangent":
        point = torch.load(last, weights_only=True)
        assert "tangent" in point  # saved with every point: a resume orients the next tangent by it
        torch.save(dict(point, tangent=torch.zeros(2, 2)), last)
    elif damage in ("folder gone", "folder a file"):
        for f in last.parent.iterdir():
            f.unlink()
        last.parent.rmdir()
        if damage == "folder a file":
            last.parent.write_text("x")
        kind = CheckpointMissing
    else:
        last.unlink()
        kind = CheckpointMissing
    with pytest.raises(kind) as err:
        load_point(written, -1, size=4 if damage != "wrong size" else 4)
    msg = str(err.value)
    assert "\n" not in msg and str(written) in msg, msg
    if kind is CheckpointMissing:
        # "no checkpoint ... (checkpoints kept: [...3])" said the opposite of the truth
        assert "is missing" in msg or "is not a folder" in msg, msg
    if damage == "wrong size":
        assert "holds 5 parameters" in msg and "has 4" in msg
    if damage == "bad tangent":
        assert "its tangent must be a vector of 3 or 7 values, got shape (2, 2)" in msg, msg


def test_from_a_path_of_another_problem_size_names_both_sizes(tmp_path, written, gaussian):
    with pytest.raises(PathFileError) as err:
        continue_path(gaussian.problem, iso_classification(), ODEPredictor("rk4"), NewtonCorrector(gtol=1e-11),
                      AdaptiveSteps(), StopRule(max_steps=1), start=Start(from_point=(written, 1)),
                      output=Output(progress=False))
    msg = str(err.value)
    n_other = sum(v.numel() for v in gaussian.problem.init_params(0).values())
    assert "\n" not in msg and "holds 4 parameters" in msg and f"has {n_other}" in msg, msg


def test_pruning_waits_for_the_file_that_no_longer_names_the_checkpoint(tmp_path, monkeypatch):
    """A write that fails (or a kill) between the checkpoint and the rename leaves the old file,
    which still names checkpoint k - 2: it must still be there. A kill after the rename leaves an
    orphan checkpoint, which the next writer removes."""
    import continuation.files.writer as path_module

    out = tmp_path / "p.nc"
    x, mu = torch.zeros(3, dtype=torch.float64), torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)

    def row(k):
        return {"s": float(k), "lambda": 1.0, "gamma": 1.0, "t": 0.0}

    w = PathWriter(out, {"status": "running"}, checkpoint_every=3)
    for k in range(4):
        w.append(row(k), x, mu)
    assert [r["checkpoint"] for r in w.rows] == [0, -1, 2, 3]

    class Killed(BaseException):
        pass

    def kill_at(stage):
        def hook(s, step):
            if s == stage:
                raise Killed

        return hook

    monkeypatch.setattr(path_module, "_test_kill", kill_at("write"))
    with pytest.raises(Killed):
        w.append(row(4), x, mu)  # would prune checkpoint 2
    assert list(load_path(out)["checkpoint"].values) == [0, -1, 2, 3] and checkpoint_file(out, 2).exists()
    monkeypatch.setattr(path_module, "_test_kill", kill_at("prune"))
    w = PathWriter(out, {"status": "running"}, checkpoint_every=3, rows=w.rows)
    assert not checkpoint_file(out, 4).exists()  # the file never named it
    with pytest.raises(Killed):
        w.append(row(4), x, mu)
    assert list(load_path(out)["checkpoint"].values) == [0, -1, -1, 3, 4] and checkpoint_file(out, 2).exists()
    PathWriter(out, {"status": "running"}, checkpoint_every=3, rows=w.rows)
    assert not checkpoint_file(out, 2).exists()  # the orphan is gone, the named ones stay
    assert all(checkpoint_file(out, k).exists() for k in (0, 3, 4))


# -- statuses -------------------------------------------------------------------------------


def test_max_steps_before_the_target_is_stopped_not_finished(competition):
    ds = continue_path(competition.problem, iso_classification(), ODEPredictor("rk4"), NewtonCorrector(gtol=1e-11),
                       AdaptiveSteps(initial=0.1, max_step=0.1), StopRule(max_steps=3, target={"lambda": 2.0}),
                       projection=NewtonProjection(), start=(1.0, 1.0), output=Output(progress=False))
    lam = float(ds["lambda"][-1])
    assert ds.attrs["status"] == "stopped"
    assert ds.attrs["stop_reason"] == f"max_steps 3 reached before the target lambda = 2.0 (lambda = {lam:.6g})"
    # the same budget with no target is the run's end: finished
    ds = continue_path(competition.problem, iso_classification(), ODEPredictor("rk4"), NewtonCorrector(gtol=1e-11),
                       AdaptiveSteps(initial=0.1, max_step=0.1), StopRule(max_steps=3),
                       projection=NewtonProjection(), start=(1.0, 1.0), output=Output(progress=False))
    assert ds.attrs["status"] == "finished" and ds.attrs["stop_reason"] == "max_steps 3 reached"


def test_a_run_that_stalls_is_stopped_no_progress(competition):
    """RELIABILITY.md B: a run whose accepted steps stay far below the initial step (here a drift
    limit of 1e-13 a step that the law alone meets only with ds ~ 1e-5; the CG-on-a-gauge-mode case
    of RELIABILITY.md no longer stalls since the gauge modes are deflated) used to end "finished:
    max_steps reached"."""
    ds = continue_path(competition.problem, iso_classification(), NoPredictor(), NewtonCorrector(gtol=1e-11),
                       AdaptiveSteps(initial=0.1, min_step=1e-12, max_drift=1e-13),
                       StopRule(max_steps=60, target={"lambda": 2.0}), start=(1.0, 1.0), output=Output(progress=False))
    assert ds.attrs["status"] == "stopped" and ds.sizes["step"] == 11
    assert ds.attrs["stop_reason"].startswith("no progress: the last 10 steps were all shorter than 0.001 of the "
                                              "initial step 0.1")


def test_a_law_that_does_not_move_the_multipliers_is_stopped_no_progress(competition):
    ds = continue_path(competition.problem, QuasiStatic(lambda_rate=1e-9, gamma_rate=0.0), ODEPredictor("euler"),
                       NewtonCorrector(gtol=1e-11), FixedSteps(size=0.1), StopRule(max_steps=100),
                       start=(1.0, 1.0), output=Output(progress=False))
    assert ds.attrs["status"] == "stopped" and ds.sizes["step"] == 11
    assert ds.attrs["stop_reason"].startswith("no progress: the multipliers moved by")


def test_a_run_going_away_from_its_target_is_stopped(competition, tmp_path):
    """Holding C + R / beta, lambda's direction is the law's at each point (nothing bounds the sign
    of R_gamma before the first tangent): a target below the start is found unreachable on the way."""
    from continuation.strategies.processes import IsoCPlusROverBeta

    out = tmp_path / "away.nc"
    stop = StopRule(max_steps=100, target={"lambda": 0.5})
    ds = continue_path(competition.problem, IsoCPlusROverBeta(beta=10.0), ODEPredictor("euler"),
                       NewtonCorrector(gtol=1e-11), FixedSteps(size=0.05), stop, start=(1.0, 1.0),
                       output=Output(out, progress=False))
    assert ds.attrs["status"] == "stopped" and ds.sizes["step"] == 11
    assert ds.attrs["stop_reason"].startswith("running away from the target lambda = 0.5")
    assert "(1 -> 1.12862)" in ds.attrs["stop_reason"]


def test_iso_classification_target_behind_its_start_is_refused_before_work(competition, tmp_path):
    """FAULTS.md: a sweep member (or a run) of iso-classification whose lambda target lies below the
    start ran its steps and stopped on 'running away'. At a stable equilibrium C_gamma =
    -grad C^T A^-1 grad C < 0, so lambda' = -alpha C_gamma has the sign of alpha: refused before
    any file is made. The premise checked here on the problem's own tangents: C_gamma < 0 at the start."""
    from continuation.surface.tangents import functional_derivatives, solve_tangents
    from solvers import NewtonCG

    system = competition.system
    mu = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)
    x = NewtonCG(gtol=1e-12).solve(system.objective, system.flatten(competition.problem.init_params(0)), mu).x
    C_gamma = float(functional_derivatives(system, x, mu, solve_tangents(system, x, mu))["C"][1])
    assert C_gamma < -1e-3
    out = tmp_path / "behind.nc"
    for alpha, target in ((1.0, 0.5), (-1.0, 2.0)):
        with pytest.raises(ValueError, match=rf"^target lambda = {target} is unreachable: process 'iso-classification' "
                                             r"moves lambda (up|down) .*C_gamma < 0 at a stable equilibrium"):
            continue_path(competition.problem, iso_classification(alpha=alpha), ODEPredictor("euler"),
                          NewtonCorrector(gtol=1e-11), FixedSteps(size=0.05), StopRule(target={"lambda": target}),
                          start=(1.0, 1.0), output=Output(out, progress=False))
        assert not out.exists()


def test_a_finished_run_exits_0_whatever_signal_comes_after(tmp_path):
    """FAULTS.md: SIGTERM after "wrote ... finished" was printed killed the program (status -15 /
    143) although its file was finished. The program (argv from sys.argv) sends itself SIGTERM
    and SIGINT just after the run returns: it still exits 0 and prints its line."""
    import subprocess
    import sys

    cfg = ROOT / "validation" / "configs" / "bratu_fold.toml"
    code = ("import os, signal, sys\n"
            "import continuation.apps.cli as cli\n"
            "real = cli._ended_program\n"
            "def ended():\n"
            "    real()\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    os.kill(os.getpid(), signal.SIGINT)\n"
            "cli._ended_program = ended\n"
            f"sys.argv = ['continuation', 'run', {str(cfg)!r}, '--out', {str(tmp_path / 'b.nc')!r}, '--quiet']\n"
            "sys.exit(cli.main())\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"))
    assert r.returncode == 0, (r.returncode, r.stderr[-1500:])
    assert "wrote" in r.stdout and "finished" in r.stdout
