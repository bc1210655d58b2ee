"""Sweeps (continuation/apps/sweep.py): members on Dask equal the same paths run one by one, on any
number of workers; a failed member is recorded and the others go on; a re-run resumes only the
unfinished members; a worker killed mid-sweep loses and duplicates no point; bad sweeps are one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("distributed")

from continuation.files.config import ConfigError  # noqa: E402
from continuation.files.schema import command_line  # noqa: E402
from continuation.files.path import load_path
from continuation.apps.sweep import expand, load_sweep, member_path, run_member, run_sweep  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

BASE = """
[problem]
name = "linear-gaussian"
n = 3
m = 1
latent_dim = 1
sigma_diag = [3.0, 1.0, 0.6]
B = [[0.3, 1.0, 0.5]]
noise = 0.316227766016838

[start]
lambda = 1.0
gamma = 1.0

[process]
name = "iso-classification"

[corrector]
name = "newton"
gtol = 1e-11

[projection]
name = "newton"

[steps]
initial = 0.25
max_step = 0.5

[stop]
max_steps = 100
target = {lambda = 1.8}
"""
SWEEP = BASE + """
[sweep]
start.gamma = [1.0, 1.5]
stop.target.lambda = [1.6, 1.8]
"""
TIMING = ("seconds",)  # wall time: the only variable that differs between identical runs


def _config(text: str) -> dict:
    return tomllib.loads(text)


def _same_path(a, b, what: str) -> None:
    """Every variable but wall time identical (bit for bit: one torch thread everywhere)."""
    names = [k for k in a.data_vars if k not in TIMING]
    assert names and set(names) == {k for k in b.data_vars if k not in TIMING}, what
    assert a.sizes["step"] == b.sizes["step"], f"{what}: {a.sizes['step']} points against {b.sizes['step']}"
    for k in names:
        x, y = a[k].values, b[k].values
        if x.dtype.kind not in "biuf" or y.dtype.kind not in "biuf":  # text (an empty event_* may read as float)
            assert [str(v) for v in np.ravel(x)] == [str(v) for v in np.ravel(y)], f"{what}: {k}"
        else:
            assert np.array_equal(x, y, equal_nan=True), f"{what}: {k} differs (max {np.nanmax(np.abs(x - y))})"


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    """The sweep's members run one by one in this process (one torch thread), without Dask."""
    folder = tmp_path_factory.mktemp("serial")
    members = expand(_config(SWEEP))
    threads = torch.get_num_threads()
    try:
        out = []
        for m in members:
            r = run_member(m.config, str(folder / m.file), m.index)
            assert r["status"] == "finished", r
            out.append(load_path(folder / m.file))
    finally:
        torch.set_num_threads(threads)
    return members, out


@pytest.fixture(scope="module")
def client():
    """One LocalCluster of 2 single-threaded worker processes for the module (a start costs seconds)."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=40) as cluster, Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory, client):
    folder = tmp_path_factory.mktemp("two")
    return folder, run_sweep(_config(SWEEP), folder, client=client, progress=False)


def test_a_product_sweep_expands_in_order_and_a_zip_pairs_values():
    members = expand(_config(SWEEP))
    assert [m.values for m in members] == [
        {"start.gamma": 1.0, "stop.target.lambda": 1.6}, {"start.gamma": 1.0, "stop.target.lambda": 1.8},
        {"start.gamma": 1.5, "stop.target.lambda": 1.6}, {"start.gamma": 1.5, "stop.target.lambda": 1.8}]
    assert members[3].config["start"] == {"lambda": 1.0, "gamma": 1.5}
    assert members[2].config["stop"]["target"] == {"lambda": 1.6} and "sweep" not in members[2].config
    zipped = expand(_config(SWEEP + 'mode = "zip"\n'))
    assert [m.values for m in zipped] == [{"start.gamma": 1.0, "stop.target.lambda": 1.6},
                                         {"start.gamma": 1.5, "stop.target.lambda": 1.8}]


@pytest.mark.parametrize("table, message", [
    ("", "names no axes"),
    ("start.gamma = 2.0", "must be a non-empty list"),
    ("start.gamma = []", "must be a non-empty list"),
    ("gamma = [1.0, 2.0]", "section.key"),
    ("sweep.gamma = [1.0, 2.0]", "section.key"),
    ('mode = "grid"\nstart.gamma = [1.0]', "mode must be one of"),
    ('mode = "zip"\nstart.gamma = [1.0, 2.0]\nstart.lambda = [1.0]', "one length"),
    ("start.gamma = [1.0, 1.0]", "repeats a value"),
    ("start.gamma = [1.0, -1.0]", "sweep member 1 (start.gamma=-1.0): [start] gamma must be > 0"),
    ("corrector.gtol = [1e-11, 'x']", "sweep member 1"),
    # FAULTS.md: a member whose target lies behind its start ran its steps; now refused before any work
    ("stop.target.lambda = [1.6, 0.5]", "sweep member 1 (stop.target.lambda=0.5): [stop] target lambda = 0.5 is "
                                        "unreachable: process 'iso-classification' moves lambda up from its start 1"),
    ('corrector.name = ["newton", "bordered-newton"]', "sweep member 1 (corrector.name=bordered-newton): [corrector] "
                                                       "corrector 'bordered-newton' solves grad J = 0 together with"),
])
def test_a_bad_sweep_is_one_line_naming_the_key_or_member(table, message):
    with pytest.raises(ConfigError) as e:
        expand(_config(BASE + "\n[sweep]\n" + table + "\n"))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_two_workers_give_the_paths_run_one_by_one(two_workers, serial):
    folder, ds = two_workers
    members, paths = serial
    assert ds.sizes["run"] == 4 and list(ds["status"].values) == ["finished"] * 4
    assert list(ds["start.gamma"].values) == [1.0, 1.0, 1.5, 1.5]
    assert list(ds["stop.target.lambda"].values) == [1.6, 1.8, 1.6, 1.8]
    for i, (m, path) in enumerate(zip(members, paths)):
        assert int(ds["length"][i]) == path.sizes["step"] > 3
        _same_path(member_path(ds, i), path, f"member {i} of the combined dataset")
        _same_path(load_path(folder / m.file), path, f"member file {m.file}")
        assert float(path["lambda"][-1]) == pytest.approx(m.values["stop.target.lambda"], abs=1e-12)
    short = ds.isel(run=0)  # padding past the member's length: NaN, -1, and the step axis of the longest
    n = int(short["length"])
    assert n < ds.sizes["step"] and np.isnan(short["lambda"].values[n:]).all()
    assert (short["hvps"].values[n:] == -1).all() and short["hvps"].dtype.kind == "i"
    assert load_sweep(folder)["lambda"].attrs == ds["lambda"].attrs
    for i, m in enumerate(members):  # the member's attributes come back, those that differ between members too
        back, file = member_path(ds, i).attrs, load_path(folder / m.file).attrs
        for key in ("settings", "C0", "G0", "checkpoint_dir", "status", "stop_reason", "config", "history"):
            assert back[key] == file[key], (i, key)
        assert file["history"].endswith(f"{command_line()} (member {i})")  # this process's command, not the worker's


@pytest.mark.slow
def test_one_worker_gives_identical_data(two_workers, tmp_path):
    _, two = two_workers
    one = run_sweep(_config(SWEEP), tmp_path, workers=1, progress=False)
    for i in range(4):
        _same_path(member_path(one, i), member_path(two, i), f"member {i}, 1 worker against 2")


def test_a_rerun_resumes_only_unfinished_members(two_workers, tmp_path, serial, client):
    folder, _ = two_workers
    for f in folder.glob("run_00[0-3].nc*"):  # a copy of the finished sweep ...
        if f.is_dir():
            import shutil

            shutil.copytree(f, tmp_path / f.name)
        else:
            (tmp_path / f.name).write_bytes(f.read_bytes())
    (tmp_path / "sweep.json").write_bytes((folder / "sweep.json").read_bytes())
    (tmp_path / "run_002.nc").unlink()  # ... with one member lost
    before = {f.name: f.stat().st_mtime_ns for f in tmp_path.glob("run_00[013].nc")}
    ds = run_sweep(_config(SWEEP), tmp_path, client=client, progress=False)
    assert {f.name: f.stat().st_mtime_ns for f in tmp_path.glob("run_00[013].nc")} == before  # not run again
    _same_path(member_path(ds, 2), serial[1][2], "the re-run member")
    # another configuration in this folder is refused, one line
    with pytest.raises(ConfigError, match=r"another configuration \(sweep.start.gamma: \[1.0, 1.5\] in the folder, "
                                          r"\[1.0, 1.25\] now\)"):
        run_sweep(_config(SWEEP.replace("[1.0, 1.5]", "[1.0, 1.25]")), tmp_path, client=client, progress=False)


def test_a_failing_member_is_recorded_and_the_others_go_on(tmp_path, client):
    # member 1's corrector cannot meet gtol in one Newton iteration: its start does not equilibrate
    text = BASE.replace("target = {lambda = 1.8}", "target = {lambda = 1.3}") + \
        "\n[sweep]\nmode = \"zip\"\ncorrector.maxiter = [20, 1]\nstart.lambda = [1.0, 1.05]\n"
    ds = run_sweep(_config(text), tmp_path, client=client, progress=False)
    assert list(ds["status"].values) == ["finished", "failed"]
    reason = str(ds["stop_reason"].values[1])
    assert "equilibrat" in reason and "\n" not in reason
    assert int(ds["length"][1]) == 0 and int(ds["length"][0]) > 1


def test_the_cli_runs_a_sweep_and_says_how_each_member_ended(tmp_path):
    cfg = tmp_path / "s.toml"
    cfg.write_text(BASE + "\n[sweep]\nstart.gamma = [1.5]\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "continuation", "sweep", str(cfg), "--out", str(tmp_path / "o"),
                        "--workers", "1", "--quiet"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "1 member along run" in r.stdout and r.stdout.count(": finished,") == 1
    # a sweep config given to `run`, and bad options: one line each, exit 2
    for args, message in ((["run", str(cfg)], "has a [sweep] table"),
                          (["sweep", str(cfg), "--out", str(tmp_path / "p"), "--workers", "0"], "--workers"),
                          (["sweep", str(cfg), "--out", str(cfg)], "is a file")):
        r = subprocess.run([sys.executable, "-m", "continuation", *args], capture_output=True, text=True, env=env)
        assert r.returncode == 2 and message in r.stderr and r.stderr.count("\n") == 1, (args, r.stderr)


def test_an_unreachable_scheduler_is_one_line_and_leaves_the_folder_free(tmp_path, monkeypatch):
    import continuation.apps.sweep as sweep

    monkeypatch.setattr(sweep, "CONNECT_TIMEOUT", "1s")
    with pytest.raises(ConfigError, match="could not connect to a Dask scheduler"):
        run_sweep(_config(SWEEP), tmp_path, scheduler="tcp://127.0.0.1:9", progress=False)
    other = _config(SWEEP.replace("[1.0, 1.5]", "[2.0]"))  # no member wrote a file: another sweep may take the folder
    sweep._check_plan(tmp_path, sweep._plan(other, expand(other)))
    progress_only = _config(SWEEP + "\n[output]\nprogress = false\n")
    (tmp_path / "run_000.nc").write_bytes(b"")  # a member file: the plan now binds, but [output] progress may change
    sweep._check_plan(tmp_path, sweep._plan(progress_only, expand(progress_only)))


def test_a_second_sweep_into_a_folder_being_swept_is_refused(tmp_path):
    from continuation.errors import OutputLocked

    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "sweep.nc.lock").write_text(f"{alive.pid}\n")  # a live sweep's lock
        with pytest.raises(OutputLocked, match="is being written by another run"):
            run_sweep(_config(SWEEP), tmp_path, workers=1, progress=False)
        assert not (tmp_path / "sweep.json").exists()
    finally:
        alive.kill()


@pytest.mark.slow
def test_a_worker_killed_mid_sweep_loses_and_duplicates_no_point(tmp_path, serial):
    """SIGKILL the worker process writing a member (its pid is in the member's OUT.lock) once the
    member has a few points: Dask's nanny restarts the worker, the scheduler reschedules the task,
    and the member resumes from its file."""
    cfg = tmp_path / "s.toml"
    cfg.write_text(SWEEP)
    out = tmp_path / "o"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "continuation", "sweep", str(cfg), "--out", str(out),
                             "--workers", "2", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    killed = None
    try:
        deadline = time.monotonic() + 240
        while killed is None and time.monotonic() < deadline and proc.poll() is None:
            for lock in sorted(out.glob("run_*.nc.lock")):
                try:
                    pid = int(lock.read_text().strip())
                    points = load_path(lock.with_suffix("")).sizes["step"]
                except (OSError, ValueError, Exception):  # noqa: BLE001 - not written yet, or mid-write
                    continue
                if points >= 3 and load_path(lock.with_suffix("")).attrs.get("status") == "running":
                    os.kill(pid, signal.SIGKILL)
                    killed = (lock.with_suffix("").name, pid, points)
                    break
            time.sleep(0.05)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert killed is not None, "no member was caught mid-run (the members finished too fast to kill one)"
    assert proc.returncode == 0, stderr
    ds = load_sweep(out)
    assert list(ds["status"].values) == ["finished"] * 4
    members, paths = serial
    for i, path in enumerate(paths):
        _same_path(member_path(ds, i), path, f"member {i} after killing worker pid {killed[1]} at {killed}")


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_on_a_sweep_is_one_line_leaves_no_lock_and_resumes_to_the_same_members(tmp_path, client, signum):
    """FAULTS.md: Ctrl-C on a sweep printed its line, then two `resource_tracker ... leaked semaphore`
    lines, and left run_NNN.nc.lock files (the workers died mid-write). The signal to the process
    group, as a terminal (SIGINT) or a batch system (SIGTERM) sends it, once a member has a few
    points: exit 128 + signum, one line, no lock and no stop file left; the members keep their
    points, and (SIGINT) a re-run finishes them to the paths run one by one without Dask, bit for bit."""
    fine = SWEEP.replace("initial = 0.25", "initial = 0.02").replace("max_step = 0.5", "max_step = 0.02") \
        .replace("start.gamma = [1.0, 1.5]\n", "").replace("[1.6, 1.8]", "[1.3, 1.4]")
    cfg = tmp_path / "s.toml"
    cfg.write_text(fine)
    out = tmp_path / "o"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "continuation", "sweep", str(cfg), "--out", str(out),
                             "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    caught = None
    try:
        deadline = time.monotonic() + 240
        while caught is None and time.monotonic() < deadline and proc.poll() is None:
            for path in sorted(out.glob("run_*.nc")):
                try:
                    points = load_path(path).sizes["step"]
                except Exception:  # noqa: BLE001 - not written yet, or mid-write
                    continue
                if points >= 3:
                    os.killpg(proc.pid, signum)  # the whole group: the workers too
                    caught = (path.name, points)
                    break
            time.sleep(0.05)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert caught is not None, "no member was caught mid-run"
    assert proc.returncode == 128 + signum, stderr
    assert stderr.strip().startswith(f"error: sweep interrupted ({signal.Signals(signum).name})") and \
        "\n" not in stderr.strip(), stderr
    assert not list(out.glob("*.lock")) and not (out / "sweep.stop").exists(), sorted(p.name for p in out.iterdir())
    kept = {p.name: load_path(p) for p in sorted(out.glob("run_*.nc"))}
    assert kept[caught[0]].sizes["step"] >= caught[1]
    assert any(ds.attrs["status"] == "running" for ds in kept.values()), {k: d.attrs["status"] for k, d in kept.items()}
    if signum != signal.SIGINT:
        return
    ds = run_sweep(_config(fine), out, client=client, progress=False)
    assert list(ds["status"].values) == ["finished"] * 2
    alone = tmp_path / "alone"
    alone.mkdir()
    threads = torch.get_num_threads()
    try:
        for m in expand(_config(fine)):
            assert run_member(m.config, str(alone / m.file), m.index)["status"] == "finished"
            _same_path(member_path(ds, m.index), load_path(alone / m.file), f"member {m.index} after Ctrl-C at {caught}")
    finally:
        torch.set_num_threads(threads)


def test_a_sweep_runs_on_an_existing_scheduler(client, tmp_path, serial):
    """--scheduler ADDRESS: the cluster's own workers run the members (here the module's cluster)."""
    text = SWEEP.replace("stop.target.lambda = [1.6, 1.8]", 'mode = "zip"')
    ds = run_sweep(_config(text.replace("[1.0, 1.5]", "[1.5]")), tmp_path, scheduler=client.scheduler.address,
                   progress=False)
    assert list(ds["status"].values) == ["finished"]
    _same_path(member_path(ds, 0), serial[1][3], "the member run on the scheduler's workers")


def test_an_axis_of_whole_tables_replaces_the_section():
    text = BASE + '\n[sweep]\nmode = "zip"\nprocess = [{name = "iso-classification", tol = 1e-6}, ' \
        '{name = "quasi-static", lambda_rate = 1.0}]\nprojection.name = ["newton", "none"]\n'
    a, b = expand(_config(text))
    assert a.config["process"] == {"name": "iso-classification", "tol": 1e-6}
    assert b.config["process"] == {"name": "quasi-static", "lambda_rate": 1.0} and b.config["projection"]["name"] == "none"
    with pytest.raises(ConfigError, match="section.key"):
        expand(_config(BASE + "\n[sweep]\nprocess = [1.0, 2.0]\n"))
