"""Every branch at a pitchfork (issue 27, item 2): the Chafee-Infante tree.

u'' + lambda (u - u^3) = 0 on N = 40 points (problems/chafee_infante.py): u = 0 has its pitchforks
at the discrete Dirichlet Laplacian's eigenvalues mu_k = 4 (N + 1)^2 sin^2(k pi / (2 (N + 1)))
(computed here in closed form, and by numpy's eigvalsh of the matrix). The tree must hold the root
path, both branches born at each of the first two (u -> -u mirror images: amplitudes opposite, F
equal), the first pair minima (index 0) shaped like sin(pi x) (no interior sign change), the second
saddles (index 1) shaped like sin(2 pi x) (one), each bifurcation at mu_k to 1e-10.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from continuation.apps.cli import main
from problems.chafee_infante import pitchforks

CONFIG = Path(__file__).resolve().parents[1] / "validation" / "configs" / "chafee_infante_tree.toml"
N = 40


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    out = tmp_path_factory.mktemp("tree") / "tree.nc"
    assert main(["tree", str(CONFIG), "--out", str(out), "--quiet"]) == 0
    return out, xr.load_dataset(out)


def test_the_first_two_pitchforks_and_both_sides_of_each(tree):
    out, ds = tree
    h = 1.0 / (N + 1)
    L = (2 * np.eye(N) - np.eye(N, k=1) - np.eye(N, k=-1)) / h**2
    mu = np.linalg.eigvalsh(L)[:2]
    np.testing.assert_allclose(mu, pitchforks(N, 2), rtol=1e-12)
    assert ds.sizes["branch"] == 5 and list(ds.parent.values) == [-1, 0, 0, 0, 0]
    born = ds.event_lambda.values[1:]
    np.testing.assert_allclose(born, [mu[0], mu[0], mu[1], mu[1]], rtol=1e-10, atol=0)
    assert sorted(ds.sign.values[1:].tolist()) == [-1, -1, 1, 1]
    for k, (i, j) in enumerate(((1, 2), (3, 4))):
        n = int(ds.points.values[i])
        assert n >= 5 and int(ds.points.values[j]) == n
        np.testing.assert_allclose(ds.amplitude.values[i, :n], -ds.amplitude.values[j, :n], rtol=0, atol=1e-10)
        np.testing.assert_allclose(ds.F.values[i, :n], ds.F.values[j, :n], rtol=0, atol=1e-12)
        assert (ds.morse_index.values[i, :n] == k).all()  # the first pair minima, the second saddles of index 1
        # the shape: u on the branch's first point changes sign k times inside (0, 1)
        first = torch.load(out.with_suffix(".branches") / f"branch_{i:03d}.nc.ckpt" / "step_000000.pt",
                           weights_only=False)["x"].numpy()
        assert int((np.diff(np.sign(first)) != 0).sum()) == k
    # the root stays on u = 0: F = 0 and its index counts the pitchforks passed
    root = ds.morse_index.values[0][np.isfinite(ds["lambda"].values[0])]
    lam = ds["lambda"].values[0][np.isfinite(ds["lambda"].values[0])]
    np.testing.assert_array_equal(root, (lam > mu[0]).astype(int) + (lam > mu[1]).astype(int))
    assert np.nanmax(np.abs(ds.F.values[0])) == 0.0
    assert out.with_suffix(".png").stat().st_size > 10_000


@pytest.mark.parametrize("edit, match", [
    ({"tree": {"depth": 0}}, r"\[tree\] depth must be an integer >= 1"),
    ({"tree": {"offset": 0.7}}, r"\[tree\] offset must be a number in \(0, 0.5\)"),
    ({"tree": {"width": 3}}, r"\[tree\] unknown key 'width'"),
    ({"monitor": {"modes": 3}}, r'set \[monitor\] branch = "follow"'),
])
def test_bad_tree_tables_are_one_line(tmp_path, capsys, edit, match):
    import tomllib

    from continuation.files.config import write_toml

    config = tomllib.loads(CONFIG.read_text())
    for section, table in edit.items():
        config[section] = {**(config[section] if section == "tree" else {}), **table}
    path = write_toml(config, tmp_path / "c.toml")
    assert main(["tree", str(path), "--out", str(tmp_path / "t.nc"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(match, err[0]), err


def test_the_branches_land_on_the_roots_range_end(tree):
    _, ds = tree
    for i in range(1, ds.sizes["branch"]):
        n = int(ds.points.values[i])
        assert ds["lambda"].values[i, n - 1] == pytest.approx(50.0, abs=1e-12)
        assert np.nanmax(ds["lambda"].values[i]) <= 50.0 + 1e-12
    assert "history" in ds.attrs and all("long_name" in ds[v].attrs for v in ("lambda", "F", "depth", "points"))


def test_a_root_without_a_bifurcation_is_one_line(tmp_path, capsys):
    import tomllib

    from continuation.files.config import write_toml

    config = tomllib.loads(CONFIG.read_text())
    config["stop"]["target"] = {"lambda": 5.0}  # before the first pitchfork
    path = write_toml(config, tmp_path / "c.toml")
    assert main(["tree", str(path), "--out", str(tmp_path / "t.nc"), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "located no bifurcation to branch from" in err[0]


def switch_config(tmp_path, name="s.toml", **monitor):
    """The tree's configuration without [tree], to lambda = 20, with [monitor] branch = "switch"."""
    import tomllib

    from continuation.files.config import write_toml

    config = tomllib.loads(CONFIG.read_text())
    config.pop("tree")
    config["stop"] = {"target": {"lambda": 20.0}}
    config["monitor"] = {"modes": 3, "branch": "switch", **monitor}
    return config, write_toml(config, tmp_path / name)


def test_pseudo_arclength_switches_onto_the_branch_born_at_the_pitchfork(tmp_path):
    """Item 4: `[monitor] branch = "switch"` on a pseudo-arclength path along u = 0: at the first
    pitchfork it continues on the branch born there and reaches lambda = 20 on it, where u equals
    scipy's solution from a sin(pi x) start to 1e-8; a run killed after the switch resumes to the
    uninterrupted path to the last bit."""
    import os
    import subprocess
    import sys
    import warnings

    from scipy.optimize import fsolve

    from continuation.files.path import load_path
    from continuation.files.schema import checkpoint_dir

    _, cfg = switch_config(tmp_path)
    assert main(["run", str(cfg), "--out", str(tmp_path / "whole.nc"), "--quiet"]) == 0
    whole = load_path(tmp_path / "whole.nc")
    types = list(whole.event_type.values)
    assert types[:2] == ["bifurcation", "branch_switch"]
    assert float(whole.event_lambda.values[0]) == pytest.approx(pitchforks(N, 1)[0], rel=1e-10)
    assert whole["lambda"].values[-1] == pytest.approx(20.0, abs=1e-12) and (whole.morse_index.values == 0).all()
    u = torch.load(sorted(checkpoint_dir(tmp_path / "whole.nc").glob("step_*.pt"))[-1], weights_only=False)["x"]
    h = 1.0 / (N + 1)
    L = (np.eye(N, k=1) + np.eye(N, k=-1) - 2 * np.eye(N)) / h**2
    s = np.sin(np.pi * np.arange(1, N + 1) * h)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = fsolve(lambda v: L @ v + 20.0 * (v - v**3), np.sign(float(u.sum())) * s,
                     fprime=lambda v: L + 20.0 * np.diag(1 - 3 * v**2), xtol=1e-14)
    np.testing.assert_allclose(u.numpy(), ref, rtol=0, atol=1e-8)
    # killed after the switch (at the write of point 7), resumed: the same path
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root), CONTINUATION_TEST_KILL_AT="write:7")
    cmd = [sys.executable, "-m", "continuation", "run", str(cfg), "--quiet", "--out", str(tmp_path / "k.nc")]
    assert subprocess.run(cmd, env=env, capture_output=True, cwd=root).returncode != 0
    assert main(["run", str(cfg), "--out", str(tmp_path / "k.nc"), "--quiet", "--resume"]) == 0
    resumed = load_path(tmp_path / "k.nc")
    assert resumed.sizes["step"] == whole.sizes["step"]
    for name in whole.data_vars:
        if name != "seconds":
            np.testing.assert_array_equal(resumed[name].values, whole[name].values, err_msg=name)


def test_switch_needs_pseudo_arclength(tmp_path, capsys):
    from continuation.files.config import write_toml

    config, _ = switch_config(tmp_path)
    config.update(process={"name": "quasi-static"}, predictor={"name": "ode"}, corrector={"name": "newton"})
    cfg = write_toml(config, tmp_path / "q.toml")
    assert main(["run", str(cfg), "--out", str(tmp_path / "q.nc"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "branch = 'switch'" in err[0] and "pseudo-arclength" in err[0]


def test_switch_with_the_monitor_off_is_refused(tmp_path, capsys):
    _, cfg = switch_config(tmp_path, "off.toml", enabled=False)
    assert main(["run", str(cfg), "--out", str(tmp_path / "o.nc"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "branch = 'switch' needs the monitor" in err[0]


def test_a_multiple_bifurcation_is_not_switched_at_and_says_so(tmp_path):
    """The linear-Gaussian first switch-on at gamma = 1.7 has multiplicity 2 (two equivalent latent
    units): a family of branches, not a mirror pair. The switching path writes why it goes on."""
    import tomllib

    from continuation.files.config import write_toml
    from continuation.files.path import load_path

    config = tomllib.loads((Path(__file__).resolve().parents[1] / "validation" / "configs" /
                            "gaussian_switch_on.toml").read_text())
    config["process"] = {"name": "pseudo-arclength", "parameter": "lambda"}
    config["predictor"] = {"name": "pseudo-arclength"}
    config["corrector"] = {"name": "bordered-newton", "descent": True}
    config["monitor"] = {"modes": 3, "branch": "switch"}
    config["stop"] = {"target": {"lambda": 1.6}}
    cfg = write_toml(config, tmp_path / "g.toml")
    assert main(["run", str(cfg), "--out", str(tmp_path / "g.nc"), "--quiet"]) == 0
    ds = load_path(tmp_path / "g.nc")
    details = [str(d) for d in ds.event_detail.values]
    assert any("has multiplicity 2; only simple bifurcations are switched at" in d for d in details), details
    assert "branch_switch" not in list(ds.event_type.values)
