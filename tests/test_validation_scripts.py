"""The paper-figure scripts (validation/fig2-4) end to end at smoke size on the bundled digits:
their summaries, target checks and plots, so that a change that breaks them shows here and not
after an hour of a real run. Fig. 2 and 3 are sweeps (validation/configs/fig2_*.toml, fig3_*.toml)
that the scripts plot and tabulate; their configurations are checked against the ones the scripts
built before the sweeps."""

import copy
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from continuation.apps.sweep import Member, combine, expand, load_sweep, run_member, run_sweep

ROOT = Path(__file__).parents[1]
CONFIGS = ROOT / "validation" / "configs"
sys.path.insert(0, str(ROOT / "validation"))

import fig2_iso_c  # noqa: E402
import fig3_iso_c_cifar  # noqa: E402
import fig4_free_energy  # noqa: E402


def load(name: str) -> dict:
    return tomllib.loads((CONFIGS / name).read_text())


def shrink(cfg, **problem):
    cfg["problem"].update(dataset="digits", limit=200, val_limit=100, **problem)
    cfg["start"].update(train_steps=30, settle=1)
    cfg["corrector"]["steps"] = 10
    cfg["krylov"]["maxiter"] = 3
    return cfg


# The configurations validation/fig2_iso_c.py and fig3_iso_c_cifar.py built in Python before
# the sweeps (commit 0271b16), verbatim but for LAMBDA0 written out: the sweep configs must be these.
def old_fig2_config(dataset: str, data_dir: str, device: str, full: bool) -> dict:
    problem = {"name": "mlp", "dataset": dataset, "hidden": 256, "latent": 16, "grad_batch": 500,
               "hvp_batch": 500, "samples": 1, "device": device}
    if data_dir:
        problem["data_dir"] = data_dir
    if not full:
        problem["limit"] = 10_000
    n_train = 48_000 if full else 10_000
    epochs = 120 if full else 750
    return {
        "problem": problem,
        "start": {"lambda": 0.25, "gamma": 4.0, "train_steps": epochs * n_train // 500, "train_lr": 2e-3,
                  "train_resample_every": 1, "settle": 3, "seed": 0},
        "projection": {"name": "secant"},
        "process": {"name": "iso-classification", "tol": 5e-3, "measure": "evaluation",
                    "clock": "lambda"},
        "predictor": {"name": "none"},
        "corrector": {"name": "adam", "steps": 5 * n_train // 500 if full else 600, "eta_max": 1.5e-3,
                      "resample_every": 1},
        "krylov": {"name": "minres", "rtol": 1e-2, "maxiter": 30, "shift": -0.1},
        "steps": {"name": "fixed", "size": 0.25 if full else 0.075},
        "stop": {"max_steps": 200, "target": {"lambda": 3.5 if full else 1.0}},
        "output": {"progress": False},
    }


def old_plain_law(cfg: dict) -> dict:
    cfg = copy.deepcopy(cfg)
    cfg["projection"] = {"name": "none"}
    return cfg


def old_fd_variant(cfg: dict, h: float) -> dict:
    cfg = copy.deepcopy(cfg)
    cfg["process"] = {"name": "iso-classification-fd", "h": h, "clock": "lambda"}
    cfg["projection"] = {"name": "none"}
    return cfg


def old_fig3_config(dataset: str, data_dir: str, device: str, full: bool) -> dict:
    n_train, batch = (40_000, 128) if full else (256, 32)
    problem = {"name": "resnet", "dataset": dataset, "latent": 64, "grad_batch": batch, "hvp_batch": batch // 2,
               "samples": 1, "device": device}
    if data_dir:
        problem["data_dir"] = data_dir
    if not full:
        problem["limit"], problem["val_limit"] = n_train, 256
    epochs = 100 if full else 10
    return {
        "problem": problem,
        "start": {"lambda": 0.5, "gamma": 5.0, "train_steps": epochs * n_train // batch, "train_lr": 1e-3,
                  "train_resample_every": 1, "settle": 1 if not full else 3, "seed": 0},
        "projection": {"name": "secant"},
        "process": {"name": "iso-classification", "tol": 5e-3, "measure": "evaluation",
                    "clock": "lambda"},
        "predictor": {"name": "none"},
        "corrector": {"name": "adam", "steps": n_train // batch if full else 16, "eta_max": 1.5e-3,
                      "resample_every": 1},
        "krylov": {"name": "minres", "rtol": 1e-2, "maxiter": 20 if full else 5, "shift": -0.1},
        "steps": {"name": "fixed", "size": 0.25 if full else 0.75},
        "stop": {"max_steps": 200, "target": {"lambda": 2.0}},
        "output": {"progress": False},
    }


def fig3_smoke(cfg):
    """The size of the old fig3 smoke test."""
    cfg["problem"].update(dataset="digits", limit=32, val_limit=16, grad_batch=16, hvp_batch=8, width=16)
    cfg["start"]["train_steps"] = 3
    cfg["corrector"]["steps"] = 3
    cfg["krylov"]["maxiter"] = 2
    return cfg


def at_gammas(cfg: dict, gammas) -> list:
    """The scripts' loop: one run per gamma0 (start.gamma set as a float)."""
    runs = []
    for g0 in gammas:
        run = copy.deepcopy(cfg)
        run["start"]["gamma"] = float(g0)
        runs.append(run)
    return runs


SMALL = dict(hidden=16, latent=3, grad_batch=100, hvp_batch=50)


def accepting_any_miss(cfg: dict) -> dict:
    """The smoke sizes' steps since a point that misses its held tolerance stops a run: the same
    step, held steps that accept any miss (their corrector runs of a few updates hold nothing)."""
    size = cfg["steps"]["size"]
    return {**cfg, "steps": {"name": "held", "initial": size, "max_step": size, "min_step": size, "max_miss": 1e6}}


SWEEPS = {  # config file -> the runs the script made (the old smoke tests' sizes for the digits files)
    "fig2_fashion_mnist.toml": at_gammas(old_fig2_config("fashion-mnist", "", "cpu", False), [4, 6, 8, 10, 15]),
    "fig2_mnist_full.toml": at_gammas(old_fig2_config("mnist", "", "cuda", True), [4, 6, 8, 10, 15]),
    "fig2_digits.toml": at_gammas(shrink(old_fig2_config("digits", "", "cpu", False), **SMALL), [4, 6]),
    "fig3_fashion_mnist.toml": at_gammas(accepting_any_miss(old_fig3_config("fashion-mnist", "", "cpu", False)), [5, 20]),
    "fig3_cifar10_full.toml": at_gammas(old_fig3_config("cifar10", "", "cuda", True), [5, 10, 15, 20]),
    "fig3_digits.toml": at_gammas(accepting_any_miss(fig3_smoke(old_fig3_config("digits", "", "cpu", False))), [5]),
}


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_sweep_configs_are_the_scripts_runs(name):
    assert [m.config for m in expand(load(name), check=False)] == SWEEPS[name]


def test_compare_fd_config_is_the_two_laws_from_gamma4():
    """--compare-fd's runs: the exact law and the FD law (h = 0.02), no projection, from (0.25, 4)
    (trained from scratch now, as the gamma0 = 4 member is, rather than from its first point)."""
    cfg = load("fig2_compare_fd.toml")
    sweep = cfg.pop("sweep")
    assert sweep["mode"] == "zip" and "process" not in cfg
    runs = [{**cfg, "process": table} for table in sweep["process"]]
    base = old_fig2_config("fashion-mnist", "", "cpu", False)
    assert runs == [old_plain_law(base), old_fd_variant(base, 0.02)]


@pytest.mark.parametrize("args", [("fashion-mnist", "", "cpu", False), ("digits", "", "cpu", False),
                                  ("mnist", "/data", "cuda", True), ("fashion-mnist", "/x", "cpu", True)])
def test_base_config_for_fig4_is_unchanged(args):
    assert fig2_iso_c.base_config(*args) == old_fig2_config(*args)


def compare_sweep(main_config: dict, out: Path) -> None:
    """fig2_compare_fd.toml's two laws on `main_config`'s size, as its sweep would write them (each
    member run by the sweep's task, run_member, here; the combined dataset by its combine)."""
    base = {k: v for k, v in main_config.items() if k != "sweep"}
    compare = load("fig2_compare_fd.toml")
    base["projection"] = compare["projection"]
    out.mkdir()
    members = []
    threads = torch.get_num_threads()
    try:
        for i, table in enumerate(compare["sweep"]["process"]):
            members.append(Member(i, {"process": table}, {**base, "process": table}))
            assert run_member(members[-1].config, str(out / members[-1].file), i)["status"] == "finished"
    finally:
        torch.set_num_threads(threads)  # run_member takes one thread, as a Dask worker does
    combine(out, members)


@pytest.mark.slow  # default suite's time: run with -m slow (and in .ci/run)
def test_fig2_runs_summarises_and_plots(tmp_path, capsys):
    config = load("fig2_digits.toml")
    ds = run_sweep(config, tmp_path / "fig2", workers=2, progress=False)
    assert list(ds["status"].values) == ["finished", "finished"]
    compare_sweep(config, tmp_path / "fd")
    code = fig2_iso_c.main([str(tmp_path / "fig2"), "--compare-fd", str(tmp_path / "fd")])
    out = capsys.readouterr().out
    runs, extra = fig2_iso_c.members(tmp_path / "fig2"), fig2_iso_c.members(tmp_path / "fd")
    assert list(runs) == ["gamma0=4", "gamma0=6"] and list(extra) == ["gamma0=4 exact, plain", "gamma0=4 FD law"]
    main, plain, fd = (fig2_iso_c.summary(d[0]) for d in (runs["gamma0=4"], *extra.values()))
    assert main["points"] == fd["points"] == 11 and main["lambda_ratio"] == pytest.approx(4.0)
    # the secant holds training C to its tolerance (0.5%) even at this size; the laws alone train
    # from scratch as the gamma0 = 4 member does, so C0 is the same
    assert main["max_C_change"] <= 0.005 + 1e-9
    assert fd["C0"] == pytest.approx(main["C0"], rel=1e-6) and plain["C0"] == pytest.approx(main["C0"], rel=1e-6)
    assert fd["hvps_per_point"] == 0 and fd["grads_per_point"] >= 5 * 10  # one step + four re-equilibrations
    assert main["minutes"] == pytest.approx(float(runs["gamma0=4"][0]["seconds"].sum()) / 60)
    ok = all(fig2_iso_c.meets(fig2_iso_c.summary(d[0])) for d in runs.values())  # the laws alone are exempt
    assert code == (0 if ok else 1)
    for name in [*runs, *extra]:
        assert f"\n{name} " in out
    assert "law comparison" in out and "gamma0=4 FD law" in out.split("law comparison")[1]
    assert (tmp_path / "fig2" / "fig2.png").stat().st_size > 10_000


def test_fig2_script_errors_are_one_line(tmp_path, capsys):
    assert fig2_iso_c.main([str(tmp_path)]) == 2  # no sweep.nc
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no sweep dataset" in err


def test_fig4_runs_at_smoke_size(tmp_path, monkeypatch, capsys):
    base = fig2_iso_c.base_config
    monkeypatch.setattr(fig2_iso_c, "base_config",
                        lambda *a: shrink(base(*a), hidden=16, latent=3, grad_batch=100, hvp_batch=50))
    assert fig4_free_energy.main(["--out", str(tmp_path), "--dataset", "digits"]) == 0
    out = capsys.readouterr().out
    assert "F(0.5, 1) = " in out and "(b) F along" in out
    assert (tmp_path / "fig4.png").exists() and (tmp_path / "iso_c_gamma4.nc").exists()


@pytest.mark.slow
def test_fig3_runs_at_smoke_size(tmp_path, capsys):
    ds = run_sweep(load("fig3_digits.toml"), tmp_path / "fig3", workers=1, progress=False)
    assert list(ds["status"].values) == ["finished"]
    code = fig3_iso_c_cifar.main([str(tmp_path / "fig3")])
    res = fig2_iso_c.summary(fig2_iso_c.members(tmp_path / "fig3")["gamma0=5"][0])
    assert res["lambda_ratio"] == pytest.approx(4.0) and np.isfinite(res["C0"])
    assert code == (0 if fig2_iso_c.meets(res) else 1) and "\ngamma0=5 " in capsys.readouterr().out
    assert (tmp_path / "fig3" / "fig3.png").exists() and load_sweep(tmp_path / "fig3").sizes["run"] == 1
