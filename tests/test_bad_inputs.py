"""Bad input is one line `error: ...` naming the option, file or value, with exit 2 (configuration,
files, data) or 1 (the run), never a traceback, never a silent result (RELIABILITY.md A and B,
the input side; the fault side is in test_continuation.py)."""

from __future__ import annotations

import gzip
import math
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from continuation import Output, Start, continue_path
from continuation.strategies import checks
from continuation.apps.cli import main
from continuation.files.config import ConfigError, build_run
from continuation.strategies.correctors import NewtonCorrector
from continuation.strategies.predictors import ODEPredictor
from continuation.strategies.processes import IsoClassification, QuasiStatic
from continuation.strategies.step_control import AdaptiveSteps, StopRule

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "continuation" / "apps" / "experiments" / "gaussian_iso_c.toml"
MLP = """[problem]
name = "mlp"
dataset = "digits"
limit = 64
val_limit = 16
hidden = 8
latent = 2
hvp_batch = 16
[corrector]
name = "adam"
steps = 5
[steps]
name = "fixed"
size = 0.1
[stop]
max_steps = 1
"""


def dump(config: dict) -> str:
    """The TOML text of a config (the sweep's writer: NaN, inf and nested tables included)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bad_input_sweep", ROOT / "validation" / "bad_input_sweep.py")
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    return sweep.dump(config)


def base_config(max_steps=2) -> dict:
    config = tomllib.loads(BASE.read_text())
    config["stop"] = {"max_steps": max_steps}  # no target: the valid run ends "finished" at max_steps
    config.setdefault("output", {})["progress"] = False
    return config


def one_error_line(capsys, code, expected_code, *needles):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == expected_code, (code, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def run_cli(tmp_path, config, *extra, out="x.nc"):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(dump(config) if isinstance(config, dict) else config)
    return main(["run", str(cfg), "--out", str(tmp_path / out), "--quiet", *extra])


# --- configuration values at every depth (exit 2, before any work) ---------------------------

def _set(section, **values):
    def edit(config):
        config.setdefault(section, {}).update(values)
    return edit


CONFIG_CASES = [
    # [stop]: nested tables and lists, types, NaN/inf, names (RELIABILITY A, B)
    ("target-nan", _set("stop", target={"lambda": math.nan}), "[stop] target.lambda is NaN"),
    ("target-inf", _set("stop", target={"lambda": math.inf}), "[stop] target.lambda is inf"),
    ("target-string", _set("stop", target={"lambda": "two"}), "target lambda must be a number"),
    ("target-name", _set("stop", target={"mu": 2.0}), "target names 'mu'"),
    ("target-t-not-moved", _set("stop", target={"t": 1.0}), "target t = 1.0 is unreachable"),
    ("target-t-range", _set("stop", target={"t": 2.0}), "target t must be in [0, 1]"),
    ("milestones-scalar", _set("stop", milestones={"lambda": 1.5}), "milestones lambda must be a list"),
    ("milestones-nan", _set("stop", milestones={"lambda": [2.0, math.nan]}), "[stop] milestones.lambda[1] is NaN"),
    ("milestones-negative", _set("stop", milestones={"lambda": [-2.0]}), "milestones lambda must be > 0"),
    ("bounds-short", _set("stop", bounds={"R": [0]}), "bounds R must be [lo, hi]"),
    ("bounds-order", _set("stop", bounds={"R": [5, 1]}), "lo < hi"),
    ("bounds-nan", _set("stop", bounds={"R": [0, math.nan]}), "bounds.R[1] is NaN"),
    ("max-steps-negative", _set("stop", max_steps=-5), "max_steps must be an integer >= 0"),
    ("max-steps-fraction", _set("stop", max_steps=2.5), "max_steps must be an integer"),
    ("max-s-nan", _set("stop", max_s=math.nan), "[stop] max_s is NaN"),
    ("max-s-zero", _set("stop", max_s=0.0), "max_s must be > 0"),
    # [start]
    ("start-t", _set("start", t=1.7), "[start] t must be in [0, 1]"),
    ("start-lambda-inf", _set("start", **{"lambda": math.inf}), "[start] lambda is inf"),
    ("start-gamma-negative", _set("start", gamma=-1.0), "[start] gamma must be > 0"),
    ("train-lr-zero", _set("start", train_lr=0.0), "[start] train_lr must be > 0"),
    ("train-steps-negative", _set("start", train_steps=-1), "[start] train_steps must be >= 0"),
    ("settle-zero", _set("start", settle=0), "[start] settle must be an integer >= 1"),
    # FAULTS.md (2026-12-06): silent results, now one line before any work
    ("target-at-start", _set("stop", target={"lambda": 1.0}, milestones={}),
     "target lambda = 1.0 is the start's value: the run would end at its first point"),
    ("milestone-beyond-target", _set("stop", target={"lambda": 2.0}, milestones={"lambda": [5.0]}),
     "milestone lambda = 5.0 lies beyond the target lambda = 2.0 (from the start 1): the run stops at the target"),
    ("max-angle-720", _set("steps", max_angle_deg=720), "max_angle_deg must be in (0, 180] degrees"),
    ("crossing-unknown", _set("monitor", crossings={"Q": [1.0]}),
     "monitor crossings: 'Q' not among this problem's quantities"),
    ("monitor-modes-over", _set("monitor", modes=200), "monitor modes = 200 exceeds the"),
    ("transfer-no-task-path", lambda config: config.update(process={"name": "iso-classification-transfer"}),
     "[process] process 'iso-classification-transfer' moves the task time t, and problem 'linear-gaussian' has no "
     "task path"),
    ("clock-move-iso", lambda config: config.update(predictor={"name": "none", "move": "clock"}),
     "with move = 'clock' moves t alone, and process 'iso-classification' does not move t"),
    ("bordered-newton-iso", lambda config: config.update(corrector={"name": "bordered-newton"}),
     "[corrector] corrector 'bordered-newton' solves grad J = 0 together with the arclength condition of process "
     "'pseudo-arclength'"),
    ("iso-target-behind", _set("stop", target={"lambda": 0.5}, milestones={}),
     "[stop] target lambda = 0.5 is unreachable: process 'iso-classification' moves lambda up from its start 1 "
     "(lambda' = -alpha C_gamma with alpha = 1, and C_gamma < 0 at a stable equilibrium)"),
    ("projection-nothing-held", lambda c: c.update(process={"name": "quasi-static", "lambda_rate": 1.0}),
     "[projection] projection 'newton' has nothing to hold: process 'quasi-static' holds no functional"),
    ("seed-fraction", _set("start", seed=1.5), "[start] seed must be an integer"),
    ("schedule", _set("start", train_schedule="linear"), "[start] train_schedule must be one of"),
    # [process]
    ("alpha-zero", _set("process", alpha=0.0), "alpha must be != 0"),
    ("alpha-nan", _set("process", alpha=math.nan), "[process] alpha is NaN"),
    ("tol-negative", _set("process", tol=-1.0), "tol must be >= 0"),
    ("rate-behind", lambda c: c.update(projection={"name": "none"}, process={"name": "quasi-static", "lambda_rate": -1.0},
                                       stop={"max_steps": 2, "target": {"lambda": 4.0}}),
     "target lambda = 4.0 is unreachable: process 'quasi-static' moves lambda down"),
    ("rates-zero", lambda c: c.update(projection={"name": "none"}, process={"name": "quasi-static", "lambda_rate": 0.0}),
     "would not move"),
    ("fd-h", lambda c: c.update(process={"name": "iso-classification-fd", "h": 0.0}), "h must be in (0, 1)"),
    ("beta", lambda c: c.update(process={"name": "iso-c-plus-r-over-beta", "beta": -1.0}), "beta must be > 0"),
    ("clock-lambda-behind", lambda c: (c["process"].update(clock="lambda"), c["stop"].update(target={"lambda": 0.5})),
     "moves lambda up"),
    # [predictor]: dopri5 tolerances float64 cannot meet
    ("rtol-zero", _set("predictor", method="dopri5", rtol=0.0, atol=0.0), "rtol must be in [1e-13, 1)"),
    ("rtol-tiny", _set("predictor", method="dopri5", rtol=1e-20), "rtol must be in [1e-13, 1)"),
    ("atol-tiny", _set("predictor", method="dopri5", atol=1e-300), "atol must be >= 1e-14"),
    ("rtol-negative", _set("predictor", method="dopri5", rtol=-1.0), "rtol must be in"),
    # [corrector], [projection], [krylov], [steps], [output], [problem]
    ("gtol-negative", _set("corrector", gtol=-1.0), "gtol must be > 0"),
    ("maxiter-zero", _set("corrector", maxiter=0), "maxiter must be an integer >= 1"),
    ("projection-max-iter", _set("projection", max_iter=0), "max_iter must be an integer >= 1"),
    ("krylov-maxiter", _set("krylov", maxiter=0), "[krylov] maxiter must be >= 1"),
    ("krylov-rtol", _set("krylov", rtol=0.0), "[krylov] rtol must be in (0, 1)"),
    ("krylov-rtol-inf", _set("krylov", rtol=math.inf), "[krylov] rtol is inf"),
    ("preconditioner-name", _set("krylov", preconditioner="ekfac"), "[krylov] unknown preconditioner 'ekfac'; valid: spectral"),
    ("preconditioner-kfac-problem", _set("krylov", preconditioner="kfac"),
     "[krylov] preconditioner = \"kfac\" needs a network problem with K-FAC factors (mlp-smooth); 'linear-gaussian' has none"),
    ("preconditioner-foreign-option", _set("krylov", preconditioner="kfac", preconditioner_rank=5),
     "[krylov] preconditioner_rank: an option of the spectral preconditioner, not of 'kfac'"),
    ("preconditioner-kfac-draws", _set("krylov", preconditioner="kfac", preconditioner_draws=-1),
     "[krylov] preconditioner_draws must be an integer >= 0 (0: exact factors), got -1"),
    ("preconditioner-rank", _set("krylov", preconditioner="spectral", preconditioner_rank=0),
     "[krylov] preconditioner_rank must be an integer >= 1"),
    ("preconditioner-typo", _set("krylov", preconditioner="spectral", preconditioner_ranks=5),
     "[krylov] unknown key 'preconditioner_ranks'; the preconditioner's keys: preconditioner, preconditioner_rank"),
    ("preconditioner-orphan", _set("krylov", preconditioner_rank=5), "[krylov] preconditioner_rank given without preconditioner"),
    ("preconditioner-gmres", _set("krylov", name="dense", preconditioner="spectral"),
     "[krylov] preconditioner works with name = \"cg\" or \"minres\", not 'dense'"),
    ("steps-nan", _set("steps", max_drift=math.nan), "[steps] max_drift is NaN"),
    ("steps-type", _set("steps", max_drift="small"), "[steps] max_drift must be a number"),
    ("checkpoint-every", _set("output", checkpoint_every=0), "[output] checkpoint_every must be >= 1"),
    ("sigma-diag-nested", _set("problem", sigma_diag=[3.0, math.inf, 0.6]), "[problem] sigma_diag[1] is inf"),
    ("sigma-diag-type", _set("problem", sigma_diag=3.0), "[problem] sigma_diag must be a list"),
    ("latent-dim", _set("problem", latent_dim=0), "latent_dim must be an integer >= 1"),
    ("name-type", _set("corrector", name=3), "[corrector] name must be a string"),
]


@pytest.mark.parametrize("label,edit,needle", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_configuration_value_is_one_line_before_any_work(tmp_path, capsys, label, edit, needle):
    config = base_config()
    edit(config)
    code = run_cli(tmp_path, config)
    one_error_line(capsys, code, 2, needle)
    assert not (tmp_path / "x.nc").exists()  # nothing written: refused before point 0


NETWORK_CASES = [
    ("limit-negative", {"limit": -5}, "limit must be 0"),
    ("limit-one", {"limit": 1}, "batch norm needs >= 2"),
    ("hvp-batch-one", {"hvp_batch": 1}, "hvp_batch must be"),
    ("grad-batch-negative", {"grad_batch": -10}, "grad_batch must be"),
    ("samples-zero", {"samples": 0}, "samples must be an integer >= 1"),
    ("samples-negative", {"samples": -1}, "samples must be an integer >= 1"),
    ("val-limit-negative", {"val_limit": -3}, "val_limit must be"),
    ("decoder-std", {"decoder_std": 0.0}, "decoder_std must be a finite number > 0"),
]


@pytest.mark.parametrize("label,options,needle", NETWORK_CASES, ids=[c[0] for c in NETWORK_CASES])
def test_bad_network_option_is_one_line(tmp_path, capsys, label, options, needle):
    config = tomllib.loads(MLP)
    config["problem"].update(options)
    one_error_line(capsys, run_cli(tmp_path, config), 2, "[problem]", needle)


TRANSFER = """[problem]
name = "transfer-mlp"
dataset = "digits"
path = "ot"
limit = 60
val_limit = 8
hidden = 8
latent = 2
hvp_batch = 16
{extra}
[start]
t = {t}
[process]
name = "quasi-static"
lambda_rate = 0.0
t_rate = 1.0
[stop]
max_steps = 1
target = {{t = {target}}}
"""


@pytest.mark.parametrize("extra,t,target,needle", [
    ('ot_method = "emd"\not_max_iter = 10', 0.0, 1.0, "raise ot_max_iter (now 10)"),
    ('ot_method = "sinkhorn"\not_reg = 1e-4\not_max_iter = 5', 0.0, 1.0, "ot_max_iter"),
    ("ot_reg = 0.0", 0.0, 1.0, "ot_reg must be > 0"),
    ("ot_max_iter = 0", 0.0, 1.0, "ot_max_iter must be an integer >= 1"),
    ("", 1.7, 1.0, "[start] t must be in [0, 1]"),
    ("", 0.0, 2.0, "target t must be in [0, 1]"),
    ("", 0.5, 0.25, "target t = 0.25 is unreachable"),
], ids=["emd-budget", "sinkhorn-budget", "ot-reg", "ot-max-iter", "start-t", "target-t", "target-t-behind"])
def test_task_path_inputs(tmp_path, capsys, extra, t, target, needle):
    code = run_cli(tmp_path, TRANSFER.format(extra=extra, t=t, target=target))
    one_error_line(capsys, code, 2, needle)


def test_emd_budget_is_checked_not_silent():
    """ot.emd stopping at its budget returns a feasible, non-optimal plan with a warning only:
    here it is an error naming ot_max_iter; with the budget it needs, the plan is optimal."""
    from problems.task_path import OTNotConverged, coupling

    rng = np.random.default_rng(0)
    xs, xt = rng.normal(size=(80, 3)), rng.normal(size=(80, 3))
    with pytest.raises(OTNotConverged, match="ot_max_iter"):
        coupling(xs, xt, "emd", num_itermax=20)
    G = coupling(xs, xt, "emd")
    assert np.allclose(G.sum(1), 1 / 80) and np.allclose(G.sum(0), 1 / 80)


# --- files: the configuration, data, path files, output folders (exit 2) ---------------------

def test_an_empty_configuration_file_is_refused(tmp_path, capsys):
    """A new user's empty file ran linear-gaussian iso-C for 100 steps on hidden defaults, exit 0."""
    empty = tmp_path / "empty.toml"
    empty.write_text("# nothing yet\n")
    one_error_line(capsys, main(["run", str(empty), "--out", str(tmp_path / "x.nc")]), 2,
                   f"error: {empty} is empty (no tables, no keys): give at least [problem] name = ...")
    assert not (tmp_path / "x.nc").exists()


def test_configuration_file_problems(tmp_path, capsys):
    one_error_line(capsys, main(["run", str(tmp_path), "--out", str(tmp_path / "x.nc")]), 2, "is a directory",
                   str(tmp_path))
    bad = tmp_path / "latin1.toml"
    bad.write_bytes('[problem]\nname = "linear-gaussian"  # caf\xe9\n'.encode("latin-1"))
    one_error_line(capsys, main(["run", str(bad), "--out", str(tmp_path / "x.nc")]), 2, "not UTF-8", str(bad))
    bad.write_text("[stop\nmax_steps = 2\n")
    one_error_line(capsys, main(["run", str(bad), "--out", str(tmp_path / "x.nc")]), 2, "table header [stop] is not "
                   "valid TOML (line 1: '[stop')")


@pytest.mark.parametrize("text,needle", [
    ('[problem]\nname = "linear-gaussian"\nname = "x"\n',
     "key 'name' is given twice in [problem] (line 3: 'name = \"x\"'); keep one"),
    ('[problem]\nname = "linear-gaussian"\n[problem]\nn = 3\n',
     "table [problem] is declared twice (line 3: '[problem]'); merge the two"),
    ('[prøblem]\nname = "linear-gaussian"\n',
     "table header [prøblem] is not valid TOML (line 1: '[prøblem]'): a table name is letters A-Z a-z, digits, _ and -"),
    ('[problem]\nname = "linear-gaussian"\nn =\n', "key 'n' in [problem] has no valid value (line 3: 'n =')"),
    ('[stop]\ntarget = {lambda = 2.0, lambda = 3.0}\n', "not valid TOML: Duplicate inline table key 'lambda' (line 2: "),
])
def test_a_toml_mistake_names_the_key_or_table_and_the_line(tmp_path, capsys, text, needle):
    """FAULTS.md: a duplicate key or a bad table name gave the parser's position only."""
    bad = tmp_path / "bad.toml"
    bad.write_text(text, encoding="utf-8")
    one_error_line(capsys, main(["run", str(bad), "--out", str(tmp_path / "x.nc")]), 2, f"error: {bad}: {needle}")


@pytest.fixture(scope="module")
def good_path(tmp_path_factory):
    folder = tmp_path_factory.mktemp("good")
    cfg = folder / "g.toml"
    cfg.write_text(dump(base_config()))
    out = folder / "g.nc"
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 0
    return cfg, out


def test_command_line_combinations(tmp_path, capsys, good_path):
    cfg, old = good_path
    out = str(tmp_path / "new.nc")
    one_error_line(capsys, main(["run", str(cfg), "--out", out, "--from-step", "3"]), 2, "--from-step needs --from")
    # --from with --resume: a file begun from that point continues; one begun otherwise is refused
    one_error_line(capsys, main(["run", str(cfg), "--out", str(old), "--from", str(old), "--resume", "--quiet"]), 2,
                   "was written with another configuration (run.from: None in the file")
    one_error_line(capsys, main(["run", str(cfg), "--out", out, "--from", str(old), "--from-step", "99"]), 2,
                   "--from-step 99 is out of range", str(old))
    one_error_line(capsys, main(["run", str(cfg), "--out", out, "--from", str(old), "--from-step", "-50"]), 2,
                   "--from-step -50 is out of range")
    one_error_line(capsys, main(["run", str(cfg), "--out", out, "--from", str(cfg)]), 2, "--from", str(cfg),
                   "not a readable netCDF file")
    one_error_line(capsys, main(["run", str(cfg), "--out", out, "--bogus"]), 2, "unrecognized arguments: --bogus")
    one_error_line(capsys, main(["run", str(cfg), "--out", out, "--from-step", "x"]), 2, "--from-step")
    assert not Path(out).exists()


def test_damaged_and_foreign_path_files(tmp_path, capsys, good_path):
    cfg, old = good_path
    truncated = tmp_path / "truncated.nc"
    truncated.write_bytes(old.read_bytes()[:3000])
    garbage = tmp_path / "garbage.nc"
    garbage.write_bytes(np.random.default_rng(0).bytes(4000))
    foreign = tmp_path / "foreign.nc"
    import xarray as xr
    xr.Dataset({"a": ("x", np.arange(3.0))}).to_netcdf(foreign, engine="netcdf4")
    for bad in (truncated, garbage):
        one_error_line(capsys, main(["plot", str(bad), "--out", str(tmp_path / "p.png")]), 2, str(bad))
        one_error_line(capsys, main(["run", str(cfg), "--out", str(tmp_path / "n.nc"), "--from", str(bad)]), 2,
                       str(bad))
        resumed = tmp_path / "resumed.nc"
        resumed.write_bytes(bad.read_bytes())
        one_error_line(capsys, main(["run", str(cfg), "--out", str(resumed), "--resume", "--quiet"]), 2,
                       str(resumed))
    one_error_line(capsys, main(["run", str(cfg), "--out", str(tmp_path / "n.nc"), "--from", str(foreign)]), 2,
                   str(foreign), "no 'step' dimension")


def test_output_targets(tmp_path, capsys, good_path):
    cfg, old = good_path
    folder = tmp_path / "a_folder"
    folder.mkdir()
    one_error_line(capsys, main(["run", str(cfg), "--out", str(folder), "--resume", "--quiet"]), 2,
                   "is a directory", str(folder))
    # /proc takes no new files, even for root (chmod 555 does not stop root): a real read-only folder
    one_error_line(capsys, main(["run", str(cfg), "--out", "/proc/x.nc", "--quiet"]), 2, "/proc", "not writable")
    one_error_line(capsys, main(["plot", str(old), "--out", str(tmp_path / "p.xyz")]), 2, "unknown figure format",
                   ".xyz")
    one_error_line(capsys, main(["plot", str(old), "--out", "/proc/p.png"]), 2, "/proc", "not writable")
    assert not (tmp_path / "p.xyz").exists()


def test_read_only_output_is_refused_before_pre_training(tmp_path, capsys, monkeypatch):
    """The writability check comes first: pre-training (minutes on real data) is never reached."""
    import continuation.apps.run as run_module

    monkeypatch.setattr(run_module, "equilibrate", lambda *a, **k: pytest.fail("pre-training ran"))
    config = tomllib.loads(MLP)
    config["start"] = {"train_steps": 5}
    one_error_line(capsys, run_cli(tmp_path, config, out="/proc/x.nc"), 2, "not writable")


def write_idx(path: Path, array: np.ndarray, gz: bool = False):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def _fashion_folder(tmp_path, images=20, labels=20, gz=False):
    folder = tmp_path / "fm"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    ext = ".gz" if gz else ""
    write_idx(folder / f"train-images-idx3-ubyte{ext}", rng.integers(0, 256, (images, 28, 28)), gz)
    write_idx(folder / f"train-labels-idx1-ubyte{ext}", rng.integers(0, 10, labels), gz)
    return folder, ext


def _damage(kind, folder, ext):
    images = folder / f"train-images-idx3-ubyte{ext}"
    if kind == "truncated":
        images.write_bytes(images.read_bytes()[: len(images.read_bytes()) // 2])
    elif kind == "empty":
        images.write_bytes(b"")
    elif kind == "garbage":
        images.write_bytes(np.random.default_rng(1).bytes(500))
    return images


@pytest.mark.parametrize("kind,gz,needle", [
    ("truncated", True, "truncated"),
    ("truncated", False, "truncated"),
    ("empty", False, "not an IDX file"),
    ("garbage", False, "not an IDX file"),
    ("garbage", True, "cannot be read"),
    ("labels", False, "has 19 labels but"),
])
def test_damaged_data_files_name_the_file(tmp_path, capsys, kind, gz, needle):
    folder, ext = _fashion_folder(tmp_path, labels=19 if kind == "labels" else 20, gz=gz)
    damaged = _damage(kind, folder, ext)
    config = tomllib.loads(MLP)
    config["problem"].update(dataset="fashion-mnist", data_dir=str(folder), limit=8, val_limit=2, hvp_batch=4)
    line = one_error_line(capsys, run_cli(tmp_path, config), 2, "[problem] data:", needle)
    assert str(damaged if kind != "labels" else folder / "train-labels-idx1-ubyte") in line


def test_damaged_mnist_is_not_reported_missing(tmp_path):
    from problems.data import DataFileError, load_mnist

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    write_idx(raw / "train-images-idx3-ubyte", rng.integers(0, 256, (6, 28, 28)))
    (raw / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x06\x01")  # 1 of 6 labels
    with pytest.raises(DataFileError, match="train-labels-idx1-ubyte: truncated"):
        load_mnist(tmp_path)


# --- the run (exit 1) ---------------------------------------------------------------------------

def test_diverging_pre_training_names_train_lr(tmp_path, capsys):
    config = tomllib.loads(MLP)
    config["start"] = {"train_steps": 20, "train_lr": 50.0}
    one_error_line(capsys, run_cli(tmp_path, config), 1, "pre-training diverged", "[start] train_lr = 50")


def test_unexpected_exception_is_one_line_and_debug_shows_it(tmp_path, capsys, monkeypatch):
    import continuation.apps.run as run_module

    def broken(*a, **k):
        raise KeyError("a bug")

    monkeypatch.setattr(run_module, "build_run", broken)
    cfg = tmp_path / "g.toml"
    cfg.write_text(dump(base_config()))
    line = one_error_line(capsys, main(["run", str(cfg), "--out", str(tmp_path / "x.nc")]), 1, "KeyError")
    assert "--debug" in line
    with pytest.raises(KeyError):
        main(["--debug", "run", str(cfg), "--out", str(tmp_path / "x.nc")])


# --- Python API (continuation/strategies/checks.py, strategies' __post_init__) -----------------------------

def test_stop_rule_and_strategy_options_are_checked_where_made():
    for kwargs, needle in [({"max_steps": 2.5}, "max_steps must be an integer"),
                           ({"max_steps": -1}, "max_steps must be an integer >= 0"),
                           ({"target": {"lambda": math.nan}}, "target lambda must be finite"),
                           ({"milestones": {"lambda": 1.5}}, "must be a list"),
                           ({"bounds": {"R": [0]}}, "bounds R must be [lo, hi]")]:
        with pytest.raises(ValueError, match=needle.replace("[", r"\[").replace("]", r"\]")):
            StopRule(**kwargs)
    assert StopRule(bounds={"R": [0.0, math.inf]}).bounds["R"][1] == math.inf  # one-sided: allowed
    with pytest.raises(ValueError, match="rtol"):
        ODEPredictor("dopri5", rtol=1e-300)
    with pytest.raises(ValueError, match="gtol must be > 0"):
        NewtonCorrector(gtol=-1)
    with pytest.raises(ValueError, match="alpha must be != 0"):
        IsoClassification(alpha=0)
    with pytest.raises(ValueError, match="alpha must be finite"):
        IsoClassification(alpha=math.nan)


@pytest.mark.parametrize("start,needle", [
    ((1.0,), "start must be 2 or 3 numbers"),
    ((1.0, 1.0, 0.0, 5.0), "start must be 2 or 3 numbers"),
    ((-1.0, 1.0), "start lambda must be > 0"),
    ((1.0, math.nan), "start gamma must be finite"),
    ((1.0, 1.0, 1.7), "start t must be in [0, 1]"),
    (torch.ones(1, 3), "shape (1, 3)"),
    ("1, 1", "start must be 2 or 3 numbers"),
])
def test_check_inputs_refuses_bad_starts(competition, start, needle):
    with pytest.raises(ValueError) as err:
        checks.check_inputs(competition.problem, QuasiStatic(), StopRule(), start=start)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_check_inputs_accepts_lists_and_tensors(competition):
    for start in ([1.0, 2.0], torch.tensor([1.0, 2.0, 0.0]), np.array([1.0, 2.0])):
        assert checks.check_inputs(competition.problem, QuasiStatic(), StopRule(), start=start)[:2] == (1.0, 2.0)


def test_check_inputs_dtype_shape_and_reachability(competition):
    problem = competition.problem
    theta = problem.init_params(0)
    with pytest.raises(ValueError, match="dtype float32 but problem .* computes in float64"):
        checks.check_inputs(problem, QuasiStatic(), StopRule(), start=(1.0, 1.0),
                            theta0={k: v.float() for k, v in theta.items()})
    key = next(iter(theta))
    with pytest.raises(ValueError, match="has shape"):
        checks.check_inputs(problem, QuasiStatic(), StopRule(), start=(1.0, 1.0),
                            theta0={**theta, key: torch.zeros(7, dtype=theta[key].dtype)})
    with pytest.raises(ValueError, match="target lambda = 2.0 is unreachable: process 'quasi-static' moves lambda down"):
        checks.check_inputs(problem, QuasiStatic(lambda_rate=-1.0), StopRule(target={"lambda": 2.0}), start=(1.0, 1.0))
    checks.check_inputs(problem, QuasiStatic(), StopRule(target={"lambda": 2.0}), start=(1.0, 1.0), theta0=theta)



@pytest.mark.parametrize("options,needle", [
    (dict(start="1, 1"), "start must be a Start or (lambda, gamma[, t]), got str '1, 1'"),
    (dict(start=None), "start must be a Start or (lambda, gamma[, t]), got NoneType"),
    (dict(start=(1.0, 1.0), output=3), "output must be an Output, a path (str or Path) or None, got int 3"),
    (dict(start=(1.0, 1.0), output=Output(checkpoint_every=0)), "checkpoint_every must be an integer >= 1"),
    (dict(start=Start(from_point="p.nc")), "from_point must be (path, step)"),
    (dict(start=(1.0, 1.0), monitor="on"), "monitor must be a continuation.singular.monitor.Monitor"),
])
def test_continue_path_refuses_bad_options_in_one_line(competition, options, needle):
    with pytest.raises(ValueError) as err:
        continue_path(competition.problem, QuasiStatic(), ODEPredictor("rk4"), NewtonCorrector(), AdaptiveSteps(),
                      StopRule(max_steps=0), **options)
    assert needle in str(err.value) and "\n" not in str(err.value), str(err.value)


@pytest.mark.parametrize("make,needle", [
    (lambda: Start(mu=(1.0, 1.0), settle=2.5), "start.settle must be an integer >= 1, got float 2.5"),
    (lambda: Start(mu=(1.0, 1.0), settle=True), "start.settle must be an integer >= 1, got bool True"),
    (lambda: Start(mu=(1.0, 1.0), equilibrate="no"), "start.equilibrate must be True or False, got str 'no'"),
    (lambda: Start(mu=(1.0, 1.0), settings=[1]), "start.settings must be a dict or None"),
    (lambda: Output(path=42), "output.path must be a path (str or Path) or None, got int 42"),
    (lambda: Output(resume=True), "output.resume = True needs output.path"),
    (lambda: Output(path="p.nc", resume=1), "output.resume must be True or False, got int 1"),
    (lambda: Output(progress="yes"), "output.progress must be True or False"),
    (lambda: Output(on_point=3), "output.on_point must be callable"),
    (lambda: Output(config="a = 1"), "output.config must be a dict or None"),
])
def test_start_and_output_refuse_a_bad_value_in_one_line(make, needle):
    with pytest.raises(ValueError) as err:
        make()
    assert needle in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_a_start_is_a_point_or_multipliers_not_both_nor_neither(tmp_path):
    with pytest.raises(ValueError, match=r"^start needs mu=\(lambda, gamma\[, t\]\) or from_point=\(path, step\), got neither$"):
        Start()
    with pytest.raises(ValueError, match="not both"):
        Start(mu=(1.0, 1.0), from_point=(tmp_path / "p.nc", 0))


def test_the_shorthands_are_the_options_they_stand_for(tmp_path, competition):
    """start=(lambda, gamma) is Start(mu=...), output="p.nc" is Output(path=...): the same file."""
    args = (competition.problem, QuasiStatic(), ODEPredictor("rk4"), NewtonCorrector(gtol=1e-11), AdaptiveSteps(),
            StopRule(max_steps=1))
    short = continue_path(*args, start=(1.0, 1.0), output=str(tmp_path / "a.nc"))
    full = continue_path(*args, start=Start(mu=(1.0, 1.0)), output=Output(path=tmp_path / "b.nc", progress=False))
    assert (tmp_path / "a.nc").exists() and short.attrs["settings"] == full.attrs["settings"]
    np.testing.assert_array_equal(short["gamma"].values, full["gamma"].values)


def test_float32_data_with_float64_parameters_is_a_dtype_error():
    from problems.registry import PROBLEMS

    problem = PROBLEMS["mlp"](dataset="digits", limit=16, val_limit=4, hidden=4, latent=2, hvp_batch=8)
    theta = torch.utils._pytree.tree_map(lambda v: v.double(), problem.init_params(0))
    with pytest.raises(ValueError, match="float64 but problem .* computes in float32"):
        checks.check_inputs(problem, QuasiStatic(), StopRule(), start=(1.0, 1.0), theta0=theta)


def test_build_run_reachability_is_skipped_for_from(tmp_path):
    config = base_config()
    config["stop"]["target"] = {"lambda": 0.5}
    config["process"] = {"name": "quasi-static"}
    config["projection"] = {"name": "none"}
    with pytest.raises(ConfigError, match="unreachable"):
        build_run(config)
    build_run(config, check_start=False)  # --from: the start is the old path's point, checked there


def test_bad_input_sweep_smoke(capsys):
    """About 40 cases of validation/bad_input_sweep.py, spread over all its kinds: every one a
    single `error:` line with the right exit code (the script exits 1 otherwise)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bad_input_sweep", ROOT / "validation" / "bad_input_sweep.py")
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    assert len(sweep.config_cases()) >= 100
    code = sweep.main_sweep(["--limit", "40", "--cap", "30"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "40 bad inputs" in out and " 40\n" in out.split("one line, right exit code")[1].splitlines()[0] + "\n"


def test_a_mu_that_is_not_a_3_vector_is_one_line_not_an_index_error(gaussian):
    """RELIABILITY.md B: a list or a (1, 3) tensor as mu gave TypeError / IndexError inside a problem."""
    x = gaussian.system.flatten(gaussian.problem.init_params(0))
    for mu, got in (([1.0, 1.0, 0.0], "got list"), (torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64),
                                                      "got a tensor of shape (1, 3)")):
        with pytest.raises(ValueError, match=r"mu must be a tensor of shape \(3,\)") as e:
            gaussian.system.objective(x, mu)
        assert got in str(e.value) and "\n" not in str(e.value)


def test_a_milestone_behind_the_direction_of_travel_is_refused(capsys, tmp_path):
    config = base_config()
    config["process"] = {"name": "quasi-static", "lambda_rate": 1.0}
    config["projection"] = {"name": "none"}
    config["stop"] = {"max_steps": 5, "milestones": {"lambda": [0.5, 2.0]}}
    cfg = tmp_path / "m.toml"
    cfg.write_text(dump(config))
    one_error_line(capsys, main(["run", str(cfg), "--out", str(tmp_path / "m.nc")]), 2,
                   "milestone lambda = 0.5 is unreachable: process 'quasi-static' moves lambda up from its start 1")


def test_a_cause_quoted_in_a_status_names_the_public_exception():
    """torch raises torch._C._LinAlgError (public name torch.linalg.LinAlgError): a stop reason
    quotes it as LinAlgError, not as the private class."""
    from continuation.errors import first_line

    with pytest.raises(torch.linalg.LinAlgError) as err:
        torch.linalg.cholesky(-torch.eye(2))
    assert first_line(err.value).startswith("LinAlgError: linalg.cholesky")


@pytest.mark.parametrize("role,value,needle", [
    ("problem", None, "continue_path: problem must be a Problem"),
    ("process", "quasi-static", "continue_path: process must be a Process (continuation.strategies.processes, or "
                                "build('process', {...})), got str 'quasi-static'"),
    ("predictor", None, "continue_path: predictor must be a Predictor"),
    ("corrector", lambda system, x, mu: x, "continue_path: corrector must be a Corrector"),
    ("control", None, "continue_path: control must be a StepControl"),
    ("stop", {"max_steps": 3}, "continue_path: stop must be a StopRule"),
    ("projection", "newton", "continue_path: projection must be a Projection"),
    ("solver", "minres", "continue_path: solver must be a Krylov solver (solvers.MINRES(), CG(), GMRES()) or None, "
                         "got str 'minres'"),
])
def test_continue_path_names_an_argument_not_of_its_role(competition, role, value, needle, tmp_path):
    """FAULTS.md: None, a string or a function in a role's place raised AttributeError from inside."""
    args = {"problem": competition.problem, "process": QuasiStatic(), "predictor": ODEPredictor("rk4"),
            "corrector": NewtonCorrector(), "control": AdaptiveSteps(), "stop": StopRule(max_steps=0)}
    extra = {}
    if role in args:
        args[role] = value
    else:
        extra[role] = value
    with pytest.raises(ValueError) as err:
        continue_path(*args.values(), start=(1.0, 1.0), output=tmp_path / "p.nc", **extra)
    msg = str(err.value)
    assert needle in msg and "\n" not in msg, msg
    assert not (tmp_path / "p.nc").exists()  # before any work


@pytest.mark.parametrize("options,needle", [
    (dict(limit=100000), "limit = 100000 exceeds the 1438 training samples of digits (val_fraction = 0.2)"),
    (dict(val_limit=100000), "val_limit = 100000 exceeds the 359 validation samples of digits"),
    (dict(limit=200, grad_batch=500), "grad_batch = 500 exceeds the 200 training samples"),
])
def test_data_sizes_beyond_the_data_are_refused(options, needle):
    """FAULTS.md: limit, val_limit beyond the data set and grad_batch beyond limit were accepted
    silently (capped). sklearn's digits: 1,797 images, 359 of them for validation at 0.2."""
    from continuation.files.config import build

    with pytest.raises(ValueError) as err:
        build("problem", {"name": "mlp", "dataset": "digits", **options})
    assert needle in str(err.value) and "\n" not in str(err.value), str(err.value)
    build("problem", {"name": "mlp", "dataset": "digits", "limit": 1438, "val_limit": 359, "grad_batch": 1438})


def test_an_output_that_is_a_folder_is_named_as_one(competition, tmp_path):
    """FAULTS.md: out = an existing folder said "exists; pass resume=True", which cannot help."""
    from continuation.errors import OutputExists

    for resume in (False, True):
        with pytest.raises(OutputExists) as err:
            continue_path(competition.problem, QuasiStatic(), ODEPredictor("rk4"), NewtonCorrector(), AdaptiveSteps(),
                          StopRule(max_steps=0), start=(1.0, 1.0), output=Output(tmp_path, resume=resume))
        assert str(err.value) == f"output {tmp_path} is a folder; give the path file's name in it, e.g. {tmp_path / 'path.nc'}"


def test_a_process_that_moves_t_needs_a_task_path_from_python_too(competition):
    with pytest.raises(ValueError, match="process 'quasi-static' moves the task time t, and problem .* has no task path"):
        continue_path(competition.problem, QuasiStatic(lambda_rate=0.0, t_rate=1.0), ODEPredictor("rk4"),
                      NewtonCorrector(), AdaptiveSteps(), StopRule(max_steps=0), start=(1.0, 1.0))


@pytest.mark.parametrize("objective,needle", [
    (lambda theta, mu: torch.tensor(3), "must return a floating-point scalar (J is differentiated), got dtype int64"),
    (lambda theta, mu: torch.tensor(3.0), "does not depend on theta (its value carries no gradient)"),
])
def test_an_energy_that_cannot_be_differentiated_in_theta_is_refused(objective, needle):
    """FAULTS.md: an objective returning torch.tensor(3) gave a 5-point "finished" path, grad 0."""
    from problems.energy import EnergyProblem

    with pytest.raises(ValueError) as err:
        EnergyProblem(objective, {"x": torch.zeros(3, dtype=torch.float64)})
    assert needle in str(err.value)


@pytest.mark.parametrize("B,needle", [
    ([[1.0, 2.0], [1.0]], "B must be an m x n matrix of numbers"),
    ([[1.0, 2.0]], "B must be an m x n matrix with n = len(sigma_diag) = 3, got shape (1, 2)"),
])
def test_a_ragged_or_misshapen_b_is_named(B, needle):
    """FAULTS.md: a ragged B gave numpy's "setting an array element with a sequence"."""
    from problems.registry import linear_gaussian

    with pytest.raises(ValueError) as err:
        linear_gaussian(sigma_diag=[1.0, 2.0, 3.0], B=B)
    assert needle in str(err.value)


def test_a_newton_projection_on_a_stochastic_problem_is_refused(tmp_path, capsys, competition):
    """FAULTS.md: projection 'newton' (Newton in mu along the equilibrium tangents) on the stochastic
    mlp was accepted. Refused before any work from a configuration (exit 2) and from Python, where
    the secant projection (built for stochastic problems) is accepted."""
    from continuation.errors import Misconfigured
    from continuation.strategies.correctors import AdamCorrector
    from continuation.strategies.projections import NewtonProjection
    from continuation.strategies.processes import iso_classification
    from continuation.strategies.step_control import FixedSteps

    config = tomllib.loads(MLP)
    config.update(process={"name": "iso-classification"}, projection={"name": "newton"})
    one_error_line(capsys, run_cli(tmp_path, config), 2, "[projection] projection 'newton' moves the multipliers by "
                   "Newton along the equilibrium tangents, and problem 'mlp:digits' is stochastic", "use projection 'secant'")
    config["projection"] = {"name": "secant"}
    run = build_run(config)
    assert run["projection"].name == "secant"
    problem = run["problem"]
    with pytest.raises(Misconfigured, match="projection 'newton' moves the multipliers") as err:
        continue_path(problem, iso_classification(), ODEPredictor("euler"), AdamCorrector(steps=2), FixedSteps(size=0.1),
                      StopRule(max_steps=1), projection=NewtonProjection(), start=(1.0, 1.0),
                      output=Output(tmp_path / "p.nc", progress=False))
    assert err.value.section == "projection" and not (tmp_path / "p.nc").exists()


@pytest.mark.parametrize("gauge,needle", [
    ("abc", "gauge must be a function theta -> list of dicts shaped like theta, got str"),
    (lambda theta: "abc", "gauge function of energy 'energy' must return a list of dicts shaped like theta (one per "
                          "zero mode; [] for none), got str"),
    (lambda theta: [{"y": theta["x"]}], "direction 0 is ['y'], theta has keys ['x']"),
    (lambda theta: [{"x": torch.ones(3)}], "direction 0['x'] is shape (3,) float32, theta['x'] has shape (2,)"),
    (lambda theta: 1 / 0, "gauge function of energy 'energy' raised ZeroDivisionError: division by zero"),
])
def test_a_gauge_function_that_returns_no_directions_is_named(gauge, needle):
    """FAULTS.md: a gauge function returning a string gave "unexpected ValueError: FlatView.flatten:
    pytree structure differs"."""
    from problems.energy import EnergyProblem

    def f(theta, mu):
        return (theta["x"] ** 2).sum() * mu[0]

    with pytest.raises(ValueError) as err:
        EnergyProblem(f, {"x": torch.ones(2, dtype=torch.float64)}, gauge=gauge)
    assert needle in str(err.value)
    # a good one: a list of dicts, or of bare tensors for a one-leaf theta
    p = EnergyProblem(f, {"x": torch.ones(2, dtype=torch.float64)}, gauge=lambda theta: [theta["x"]])
    assert torch.equal(p.gauge_directions(p.init_params(0))[0]["x"], torch.ones(2, dtype=torch.float64))


def test_a_gauge_function_from_a_configuration_is_checked(tmp_path, capsys):
    config = {"problem": {"name": "energy", "objective": "problems.bratu:bratu_energy", "size": 5,
                          "gauge": "builtins:repr"}}
    one_error_line(capsys, run_cli(tmp_path, config), 2, "[problem] bad value for problem 'energy': gauge function of "
                   "energy 'energy' must return a list of dicts shaped like theta")


def test_a_data_set_without_its_folder_names_the_table(tmp_path, capsys):
    """The new-user trial: "error: mnist needs data_dir ..." lacked the [problem] prefix of the other lines."""
    config = tomllib.loads(MLP)
    config["problem"]["dataset"] = "mnist"
    one_error_line(capsys, run_cli(tmp_path, config), 2, "error: [problem] data: mnist needs data_dir")
    config["problem"]["data_dir"] = str(tmp_path / "nowhere")
    one_error_line(capsys, run_cli(tmp_path, config), 2, f"error: [problem] data: MNIST not found in {tmp_path / 'nowhere'}")
