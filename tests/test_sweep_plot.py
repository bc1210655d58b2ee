"""`continuation plot DIR`: a sweep's family on one figure, each member coloured by its swept value
(continuation/apps/plot.py plot_sweep), from a small linear-Gaussian sweep made once for the module."""

import json
import shutil

import matplotlib as mpl
import numpy as np
import pytest

from continuation.apps.cli import main
from continuation.apps.plot import plot_paths, plot_sweep
from continuation.apps.run import run_config
from continuation.apps.sweep import Member, combine, expand, load_sweep

GAMMAS = [1.0, 1.5, 2.0]
BASE = {
    "problem": {"name": "linear-gaussian", "n": 3, "m": 1, "latent_dim": 1, "sigma_diag": [3.0, 1.0, 0.6],
                "B": [[0.3, 1.0, 0.5]], "noise": 0.316227766016838},
    "start": {"lambda": 1.0, "gamma": 1.0},
    "process": {"name": "iso-classification"},
    "corrector": {"name": "newton", "gtol": 1e-11},
    "projection": {"name": "newton"},
    "steps": {"initial": 0.25, "max_step": 1.0},
    "stop": {"max_steps": 200, "target": {"lambda": 1.5}},
    "output": {"progress": False},
}


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    """Three members along start.gamma: what run_sweep writes (its expand and combine), the
    members run in this process rather than on Dask workers (a worker's start costs more than
    these runs; tests/test_validation_scripts.py runs sweeps on Dask)."""
    out = tmp_path_factory.mktemp("sweep")
    config = {**BASE, "sweep": {"start.gamma": GAMMAS}}
    members = expand(config)
    for m in members:
        run_config(m.config, out / m.file, progress=False)
    ds = combine(out, members, config=config)
    assert list(ds["status"].values) == ["finished"] * len(GAMMAS)
    return out


def viridis_position(rgba) -> float:
    """Where on viridis a colour lies (0..1): the nearest of 256 samples."""
    table = mpl.colormaps["viridis"](np.linspace(0, 1, 256))[:, :3]
    return float(np.argmin(np.sum((table - np.asarray(rgba)[:3]) ** 2, axis=1)) / 255)


def rd_lines(fig):
    """Member index -> the rate-distortion line drawn for it (tagged gid 'run<i>')."""
    return {int(line.get_gid()[3:]): line for a in fig.axes for line in a.get_lines()
            if (line.get_gid() or "").startswith("run")}


def test_colours_follow_the_swept_value(sweep_dir, tmp_path):
    drawn = plot_sweep(sweep_dir, tmp_path / "family.png")
    assert drawn.path.stat().st_size > 10_000 and drawn.color_axis == "start.gamma" and not drawn.skipped
    ds = load_sweep(sweep_dir)
    gammas = ds["start.gamma"].values
    order = np.argsort(gammas)
    positions = [viridis_position(drawn.colors[i]) for i in order]
    assert positions[0] == 0.0 and positions[-1] == 1.0 and np.all(np.diff(positions) > 0)
    lines = rd_lines(drawn.figure)
    assert sorted(lines) == [0, 1, 2]
    for i, line in lines.items():  # the figure's lines carry those colours, and each member's whole path
        assert mpl.colors.to_rgba(line.get_color()) == pytest.approx(drawn.colors[i])
        assert len(line.get_xdata()) == int(ds["length"].values[i])
    colorbar = [a for a in drawn.figure.axes if a.get_ylabel() == "start.gamma"]
    assert len(colorbar) == 1  # the colour bar, labelled by the key


def test_second_axis_by_marker_and_failed_members_skipped(sweep_dir, tmp_path):
    """Two axes (the second as a marker), and a member without a point named in the title."""
    ds = load_sweep(sweep_dir)
    files = [str(f) for f in ds["file"].values]
    out = tmp_path / "two"
    out.mkdir()
    members = []
    for i, f in enumerate(files):  # the three paths, each as member (gamma, method)
        shutil.copy(sweep_dir / f, out / f)
        cfg = json.loads(str(ds["config"].values[i]))
        members.append(Member(i, {"start.gamma": GAMMAS[i], "predictor.method": ["euler", "rk4", "euler"][i]}, cfg))
    members.append(Member(3, {"start.gamma": 2.5, "predictor.method": "rk4"}, members[0].config))  # no file
    combine(out, members, {3: {"stop_reason": "diverged at the start"}})
    drawn = plot_sweep(out, tmp_path / "two.png")
    assert sorted(drawn.colors) == [0, 1, 2] and list(drawn.skipped) == [3]
    assert drawn.marker_axis == "predictor.method"
    assert drawn.markers[0] == drawn.markers[2] != drawn.markers[1]
    lines = rd_lines(drawn.figure)
    assert [lines[i].get_marker() for i in range(3)] == [drawn.markers[i] for i in range(3)]
    title = drawn.figure._suptitle.get_text()
    assert "run_003.nc" in title and "diverged at the start" in title
    legend = [t.get_text() for t in drawn.figure.axes[0].get_legend().get_texts()]
    assert legend == ["predictor.method = euler", "predictor.method = rk4"]
    # the colour scale spans every member's value, drawn or not: 2.5 is the top
    assert viridis_position(drawn.colors[2]) == pytest.approx(viridis_position(mpl.colormaps["viridis"](
        (2.0 - 1.0) / 1.5)), abs=1 / 255)


def test_categorical_axis_gets_a_palette_and_legend(sweep_dir, tmp_path):
    ds = load_sweep(sweep_dir)
    out = tmp_path / "cat"
    out.mkdir()
    names = ["alpha", "beta", "gamma"]
    members = []
    for i, f in enumerate(str(f) for f in ds["file"].values):
        shutil.copy(sweep_dir / f, out / f)
        members.append(Member(i, {"problem.label": names[i]}, json.loads(str(ds["config"].values[i]))))
    combine(out, members)
    drawn = plot_sweep(out, tmp_path / "cat.png")
    assert len(set(drawn.colors.values())) == 3 and drawn.color_axis == "problem.label"
    legend = [t.get_text() for t in drawn.figure.axes[0].get_legend().get_texts()]
    assert legend == [f"problem.label = {n}" for n in names]


def test_cli_plots_a_sweep_folder_and_its_file(sweep_dir, tmp_path, capsys):
    assert main(["plot", str(sweep_dir), "--out", str(tmp_path / "a.png")]) == 0
    assert main(["plot", str(sweep_dir / "sweep.nc"), "--out", str(tmp_path / "b.png")]) == 0
    assert (tmp_path / "a.png").stat().st_size > 10_000 and (tmp_path / "b.png").exists()
    assert "3 members" in capsys.readouterr().out


def test_cli_one_line_errors(sweep_dir, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        ([str(empty)], "not a sweep folder (no sweep.nc)"),  # a folder without sweep.nc
        ([str(sweep_dir), str(sweep_dir / "run_000.nc")], "give one sweep"),  # a sweep with a path file
        ([str(sweep_dir / "run_000.nc"), str(sweep_dir / "sweep.nc")], "give one sweep"),
    ]
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "sweep.json").write_text("{}")
    cases.append(([str(unfinished)], "has no sweep.nc yet"))
    for args, expected in cases:
        assert main(["plot", *args, "--out", str(tmp_path / "x.png")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and expected in err, (args, err)
    assert not (tmp_path / "x.png").exists()


def test_path_files_still_plot_as_before(sweep_dir, tmp_path):
    out = plot_paths([sweep_dir / "run_000.nc", sweep_dir / "run_002.nc"], tmp_path / "paths.png")
    assert out.stat().st_size > 10_000


def test_no_member_with_a_point_is_one_line(tmp_path, capsys):
    members = [Member(0, {"start.gamma": 1.0}, BASE)]
    combine(tmp_path, members, {0: {"stop_reason": "bad start"}})
    assert main(["plot", str(tmp_path), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no member of the sweep has a point" in err and "bad start" in err
