"""The append-only path writer (issue 13 items 3 and 4): points appended in place behind the
journal OUT.journal, a damaged or half-appended OUT read from the journal and rebuilt by a
resume, a torn journal line dropped, a real kill mid-append resumed to the uninterrupted path;
units, long_name, Conventions, history and continuation_version on every path.

continuation/files/writer.py has the order of a point's writes and the test hook."""

import json
import re
import signal
import subprocess
from importlib import metadata

import netCDF4
import numpy as np
import pytest
import torch
import xarray as xr

import continuation.files.writer as path_module
from continuation.apps import cli
from continuation.errors import PathFileError
from continuation.files.schema import CONVENTIONS, checkpoint_file, dataset_to_rows, journal_file, rows_to_dataset, variable_attrs
from continuation.files.path import load_path, load_point
from continuation.files.writer import PathWriter
from continuation.files.journal import read_journal

from test_faults import GAUSSIAN, assert_same_path, cli_cmd, env

HISTORY_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ: \S")
X = torch.zeros(4, dtype=torch.float64)


def event(step, kind, k):
    return {"type": kind, "step": step, "s": 0.1 * step - 0.05, "lambda": 1.0 + 0.01 * k, "gamma": 1.0, "t": 0.0,
            "R": 0.5, "D": 4.0, "C": 1.4, "F": 6.0, "eig": 1e-9 * k, "mode": k % 2, "multiplicity": 1,
            "index_before": 0, "index_after": 1, "iterations": 7, "hvps": 40 + k, "located": 1,
            "method": "illinois", "detail": f"eigenvalue {k} of A crosses zero ({kind})"}


def make_rows(n, events_at=(3, 5)):
    """Rows shaped like a monitored run's: floats (a NaN), counters, a KL, eig of 3 modes, events."""
    rows, k = [], 0
    for i in range(n):
        row = {"s": 0.1 * i, "lambda": 1.0 + 0.03 * i, "gamma": 1.0 + 0.01 * i, "t": 0.0, "R": 0.6 + 0.01 * i,
               "D": 4.1 - 0.01 * i, "C": 1.38, "F": 6.1 + 0.1 * i, "grad_norm": 1e-15 * (i + 1),
               "krylov_iters": 10 + i, "hvps": 40 + i, "gradients": 5, "corrector_runs": 2, "adam_updates": 100 * i,
               "seconds": 0.25, "step_size": 0.1, "next_step": 0.1, "rejected": i % 2, "C_drift": 1e-12 * i,
               "constraint_drift": np.nan, "tangent_angle": np.nan if i == 0 else 0.5, "krylov_residual": 1e-15,
               "val_loss": 0.7, "val_acc": 0.75, "kl_z0": 0.2 + 0.01 * i, "morse_index": 1 if i >= 3 else 0,
               "monitor_hvps": 4, "eig": (-0.1 + 0.05 * i, 0.45, np.nan if i == 2 else 0.9), "events": []}
        if i in events_at:
            for kind in ("bifurcation", "crossing")[: 2 if i == events_at[0] else 1]:
                row["events"].append(event(i, kind, k))
                k += 1
        rows.append(row)
    return rows


def write(out, rows, attrs=None, **kw):
    w = PathWriter(out, attrs or {"problem": "test", "status": "running"}, **kw)
    for r in rows:
        w.append(r, X, torch.tensor([r["lambda"], r["gamma"], r["t"]], dtype=torch.float64))
    return w


def read_nc(out) -> xr.Dataset:
    """OUT as xarray reads it, closed again (an open reader makes the writer rewrite whole)."""
    with xr.open_dataset(out, engine="netcdf4") as ds:
        return ds.load()


def assert_dataset_equal(got: xr.Dataset, want: xr.Dataset):
    assert set(got.variables) == set(want.variables)
    for name, w in want.variables.items():
        g = got[name].variable
        assert g.dims == w.dims, name
        if w.dtype.kind in "OUS":
            assert [str(v) for v in g.values] == [str(v) for v in w.values], name
        else:
            assert g.dtype == w.dtype, (name, g.dtype, w.dtype)
            np.testing.assert_array_equal(g.values, w.values, err_msg=name)  # NaN equal to NaN
        assert g.attrs == w.attrs, name


def test_a_path_appended_point_by_point_is_the_dataset_of_its_rows(tmp_path):
    out = tmp_path / "p.nc"
    rows = make_rows(8)
    w = write(out, rows[:1], checkpoint_every=3)
    inode = out.stat().st_ino
    for r in rows[1:]:
        w.append(r, X, torch.tensor([r["lambda"], r["gamma"], r["t"]], dtype=torch.float64))
    assert out.stat().st_ino == inode  # appended in place: never replaced by a renamed whole file
    got = read_nc(out)
    kept = (0, -1, -1, 3, -1, -1, 6, 7)  # every 3rd and the last two
    want = rows_to_dataset([dict(r, checkpoint=c) for r, c in zip(rows, kept)], got.attrs)
    assert_dataset_equal(got, want)
    assert got.sizes == {"step": 8, "mode": 3, "event": 3}
    assert list(got.event_type.values) == ["bifurcation", "crossing", "bifurcation"]
    assert list(got.event_step.values) == [3, 3, 5] and got.event_hvps.dtype == np.int64
    with netCDF4.Dataset(out) as nc:
        assert nc.dimensions["step"].isunlimited() and nc.dimensions["event"].isunlimited()
    # the journal holds the same record (load_path reads it while the run writes)
    assert_dataset_equal(load_path(out), want)
    # conventions
    assert got.attrs["Conventions"] == CONVENTIONS == "continuation-path-1"
    try:
        version = metadata.version("free-energy-continuation")
    except metadata.PackageNotFoundError:
        version = "unknown"
    assert got.attrs["continuation_version"] == version
    assert HISTORY_LINE.match(got.attrs["history"]) and "\n" not in got.attrs["history"]
    assert got.R.attrs == {"units": "nats per sample", "long_name": "rate R after correction"}
    assert got.eig.attrs["units"] == "nats per sample per squared parameter unit"
    assert got.seconds.attrs["units"] == "s" and got["lambda"].attrs["units"] == "1"
    assert got.kl_z0.attrs["units"] == "nats per sample" and "latent unit 0" in got.kl_z0.attrs["long_name"]
    assert got.adam_updates.attrs == {"units": "1", "long_name": "Adam updates of the step's corrector runs"}
    assert "units" not in got.event_type.attrs and got.event_type.attrs["long_name"].startswith("kind of event")
    for name in got.variables:
        assert got[name].attrs.get("long_name"), name
        assert "units" in got[name].attrs or name in ("event_type", "event_method", "event_detail"), name


def test_variable_attrs_patterns_and_unknown_names():
    assert variable_attrs("kl_z12") == {"units": "nats per sample",
                                        "long_name": "KL of latent unit 12's posterior to the prior (its rate), "
                                                     "training set"}
    assert variable_attrs("newton_iters") == {"units": "1", "long_name": "Newton iterations of the step's corrector runs"}
    assert variable_attrs("lbfgs_iters")["long_name"].startswith("L-BFGS iterations")
    assert variable_attrs("something_new") == {"long_name": "something_new"}  # no units guessed


def test_a_row_the_file_cannot_take_in_place_rewrites_it_whole(tmp_path):
    out = tmp_path / "p.nc"
    rows = make_rows(4, events_at=())
    w = write(out, rows[:3])
    inode = out.stat().st_ino
    short = {k: v for k, v in rows[3].items() if k != "val_acc"}  # a variable of the file missing
    w.append(short, X, torch.tensor([short["lambda"], short["gamma"], 0.0], dtype=torch.float64))
    assert out.stat().st_ino != inode
    got = read_nc(out)
    assert got.sizes["step"] == 4 and np.isnan(got.val_acc.values[3]) and got.val_acc.values[2] == 0.75
    assert_dataset_equal(got, rows_to_dataset(w.rows, got.attrs))


def test_a_reader_holding_the_file_open_does_not_stop_the_writer(tmp_path):
    """HDF5 refuses to open a file for writing that a reader holds: the point is written whole."""
    out = tmp_path / "p.nc"
    rows = make_rows(4, events_at=())
    w = write(out, rows[:3])
    held = xr.open_dataset(out, engine="netcdf4")  # open, as in a notebook watching the run
    try:
        with pytest.raises(OSError):
            netCDF4.Dataset(out, "a").close()  # the lock the writer meets
        w.append(rows[3], X, torch.tensor([rows[3]["lambda"], rows[3]["gamma"], 0.0], dtype=torch.float64))
        assert held.sizes["step"] == 3  # the reader keeps the file it opened
    finally:
        held.close()
    assert read_nc(out).sizes["step"] == 4 and load_path(out).sizes["step"] == 4


def test_a_damaged_file_is_read_from_the_journal_and_rebuilt_by_a_resume(tmp_path):
    out = tmp_path / "p.nc"
    rows = make_rows(5)
    w = write(out, rows)
    want = rows_to_dataset(w.rows, dict(w.attrs))
    data = bytearray(out.read_bytes())
    data[len(data) // 3:] = b"\0" * (len(data) - len(data) // 3)  # the file's later half zeroed, as a torn flush
    out.write_bytes(bytes(data[: 2 * len(data) // 3]))
    with pytest.raises((OSError, RuntimeError, ValueError)):
        read_nc(out)
    got = load_path(out)
    assert got.sizes["step"] == 5
    assert_dataset_equal(got, want)
    assert load_point(out)["mu"].tolist() == [rows[4]["lambda"], rows[4]["gamma"], 0.0]
    # a resume (the driver's order: the rows as load_path gives them) rebuilds OUT from them
    w = PathWriter(out, {"problem": "test", "status": "running"}, rows=dataset_to_rows(got))
    rebuilt = read_nc(out)
    assert rebuilt.sizes["step"] == 5
    assert_dataset_equal(rebuilt, want)  # the variables (the attributes gain a history line)
    more = make_rows(6)[5]
    w.append(more, X, torch.tensor([more["lambda"], more["gamma"], 0.0], dtype=torch.float64))
    assert read_nc(out).sizes["step"] == 6 and load_path(out).sizes["step"] == 6


def test_a_torn_journal_line_is_dropped_and_its_checkpoint_forgotten(tmp_path, monkeypatch):
    out = tmp_path / "p.nc"
    rows = make_rows(6, events_at=())
    write(out, rows[:4])
    kept = read_nc(out)
    # a kill after point 4's checkpoint and the first bytes of its journal line
    torch.save({"x": X, "mu": torch.zeros(3, dtype=torch.float64), "s": 0.4, "step": 4}, checkpoint_file(out, 4))
    journal = journal_file(out)
    with open(journal, "ab") as f:
        f.write(b'{"row":{"s":0.4,"lambda":1.1')
    got = load_path(out)
    assert got.sizes["step"] == 4
    assert_dataset_equal(got, kept)
    w = PathWriter(out, {"problem": "test", "status": "running"}, rows=dataset_to_rows(got))
    assert not checkpoint_file(out, 4).exists() and checkpoint_file(out, 3).exists()
    assert all(json.loads(line) for line in journal.read_text().splitlines())  # rewritten whole, nothing torn
    assert journal.read_bytes().endswith(b"\n")
    # a bad last line that does end in a newline is a torn write too; one before it is damage
    w.append(rows[4], X, torch.tensor([rows[4]["lambda"], rows[4]["gamma"], 0.0], dtype=torch.float64))
    text = journal.read_bytes()
    journal.write_bytes(text + b'{"row":{"s":\n')
    assert load_path(out).sizes["step"] == 5
    journal.write_bytes(text + b'{"row":{"s":\n' + text.splitlines(keepends=True)[-1])
    with pytest.raises(PathFileError) as err:
        load_path(out)
    msg = str(err.value)
    assert "\n" not in msg and str(journal) in msg and f"line {len(text.splitlines()) + 1} of" in msg


def test_a_point_appended_to_the_file_but_not_committed_is_not_on_record(tmp_path, monkeypatch):
    """Killed between the append in place and the journal's newline (hook "append"): the file
    has the point, the record does not, and a resume continues from the point before."""
    out = tmp_path / "p.nc"
    rows = make_rows(6, events_at=())
    w = write(out, rows[:4])

    class Killed(BaseException):
        pass

    def hook(stage, step):
        if stage == "append":
            raise Killed

    monkeypatch.setattr(path_module, "_test_kill", hook)
    with pytest.raises(Killed):
        w.append(rows[4], X, torch.tensor([rows[4]["lambda"], rows[4]["gamma"], 0.0], dtype=torch.float64))
    assert read_nc(out).sizes["step"] == 5  # in the file ...
    assert load_path(out).sizes["step"] == 4 and len(read_journal(out)[1]) == 4  # ... not on record
    assert checkpoint_file(out, 4).exists()
    monkeypatch.undo()
    w = PathWriter(out, {"problem": "test", "status": "running"}, rows=dataset_to_rows(load_path(out)))
    assert not checkpoint_file(out, 4).exists() and read_nc(out).sizes["step"] == 4
    for r in rows[4:]:
        w.append(r, X, torch.tensor([r["lambda"], r["gamma"], 0.0], dtype=torch.float64))
    assert list(read_nc(out)["s"].values) == [r["s"] for r in rows]


def test_finish_deletes_the_journal_a_resume_recreates_it_and_adds_a_history_line(tmp_path):
    out = tmp_path / "p.nc"
    rows = make_rows(4)
    w = write(out, rows)
    first = read_nc(out).attrs["history"]
    assert journal_file(out).exists()
    done = w.finish("finished", "target reached")
    assert not journal_file(out).exists()
    on_disk = read_nc(out)
    assert on_disk.attrs["status"] == "finished" and on_disk.attrs["stop_reason"] == "target reached"
    assert_dataset_equal(on_disk, done)
    # a resume of the finished file (attributes without history, as the driver gives them)
    written = dataset_to_rows(load_path(out))
    PathWriter(out, {"problem": "test", "status": "running"}, rows=written)
    attrs, journal_rows = read_journal(out)
    assert json.dumps(journal_rows) == json.dumps(written) and attrs["status"] == "running"
    history = read_nc(out).attrs["history"].split("\n")
    assert len(history) == 2 and history[0] == first and all(HISTORY_LINE.match(h) for h in history)
    assert load_path(out).attrs["history"] == "\n".join(history)


def test_killed_half_way_through_an_append_resumes_to_the_uninterrupted_path(tmp_path):
    """A real SIGKILL between the variable writes of point 4 (hook "write"): the file is left
    half-appended; the resume continues from point 3 with no point lost or written twice."""
    config = GAUSSIAN.replace("target = {lambda = 1.5}", "target = {lambda = 1.2}")
    cfg = tmp_path / "g.toml"
    cfg.write_text(config)
    full, part = tmp_path / "full.nc", tmp_path / "part.nc"
    assert cli.main(["run", str(cfg), "--quiet", "--out", str(full)]) == 0
    run = subprocess.run(cli_cmd(cfg, part), env=env(CONTINUATION_TEST_KILL_AT="write:4"), capture_output=True)
    assert run.returncode == -signal.SIGKILL, run.stderr.decode()[-2000:]
    killed = load_path(part)
    assert killed.sizes["step"] == 4 and killed.attrs["status"] == "running" and journal_file(part).exists()
    assert cli.main(["run", str(cfg), "--quiet", "--out", str(part), "--resume"]) == 0
    assert not journal_file(part).exists()
    a, b = load_path(full), load_path(part)
    assert a.sizes["step"] == b.sizes["step"] >= 6
    assert list(b["step"].values) == list(range(b.sizes["step"]))
    np.testing.assert_array_equal(a["lambda"].values, b["lambda"].values)
    assert_same_path(full, part)
    history = b.attrs["history"].split("\n")  # the killed run's command line, then this process's
    assert len(history) == 2 and f"run {cfg} --quiet --out {part}" in history[0]
    for name in b.variables:  # every variable of a real path has its name, and its units but for text
        assert b[name].attrs.get("long_name") and ("units" in b[name].attrs or b[name].dtype.kind in "OU"), name


def test_killed_inside_finish_a_resume_writes_the_file_and_deletes_the_journal(tmp_path):
    """SIGKILL after the status line is on record, before OUT is rewritten (hook "finish"): the
    path reads as finished (from the journal); `--resume` writes OUT whole with that status and
    removes the journal, computing nothing again."""
    config = GAUSSIAN.replace("target = {lambda = 1.5}", "target = {lambda = 1.2}")
    cfg = tmp_path / "g.toml"
    cfg.write_text(config)
    full, part = tmp_path / "full.nc", tmp_path / "part.nc"
    assert cli.main(["run", str(cfg), "--quiet", "--out", str(full)]) == 0
    n = load_path(full).sizes["step"]
    run = subprocess.run(cli_cmd(cfg, part), env=env(CONTINUATION_TEST_KILL_AT=f"finish:{n - 1}"),
                         capture_output=True)
    assert run.returncode == -signal.SIGKILL, run.stderr.decode()[-2000:]
    assert journal_file(part).exists() and read_nc(part).attrs["status"] == "running"
    assert load_path(part).attrs["status"] == "finished"
    assert cli.main(["run", str(cfg), "--quiet", "--out", str(part), "--resume"]) == 0
    assert not journal_file(part).exists() and read_nc(part).attrs["status"] == "finished"
    assert_same_path(full, part)
