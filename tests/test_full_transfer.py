"""validation/full_transfer.py end to end at smoke size on the CPU: generated MNIST and CIFAR-10
stand-ins in torchvision's layout, the four cases (MNIST and CIFAR-10, mixture and OT) each
through fig5_transfer.py in its own process, and the table; the sizing rule against its
formula; bad arguments in one line."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "validation"))

import full_transfer  # noqa: E402


@pytest.mark.slow
def test_full_transfer_runs_every_case_at_smoke_size(tmp_path, capsys):
    code = full_transfer.main(["--smoke", "--device", "cpu", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    rows = {r["case"]: r for r in summary["rows"]}
    assert set(rows) == set(full_transfer.CASES)
    for case, r in rows.items():
        assert r["status"] == "ran", (case, r, (tmp_path / case / "log.txt").read_text()[-2000:])
        assert r["t_end"] == 1.0 and (tmp_path / case / "transfer.nc").exists() and (tmp_path / case / "fig5.png").exists()
    assert code == 0
    assert rows["mnist-ot"]["held"] == "C - C_floor(t)" and rows["mnist-mixture"]["held"] == "C"
    # the CIFAR-10 cases ran the ResNet on the stand-in's vehicles -> animals
    log = (tmp_path / "cifar10-ot" / "log.txt").read_text()
    assert "iso-C transfer" in log
    from continuation.files.path import load_path

    settings = json.loads(load_path(tmp_path / "cifar10-ot" / "transfer.nc").attrs["settings"])
    assert settings["problem"]["name"].startswith("transfer-resnet:cifar10[vehicles->animals, ot]")
    assert settings["problem"]["ot_method"] == "emd" and settings["problem"]["ot_max_iter"] == full_transfer.EMD_BUDGET
    assert printed.count("| mnist-") == 2 and "wrote" in printed


def test_stand_ins_load_through_the_projects_loaders(tmp_path):
    import torchvision.datasets.cifar as cifar

    from problems.data import load_cifar10, load_mnist

    dirs = full_transfer.write_stand_ins(tmp_path)
    train, test = load_mnist(dirs["mnist"]), load_mnist(dirs["mnist"], train=False)
    assert tuple(train.x.shape[1:]) in ((28, 28), (1, 28, 28)) and len(train) == 1500 and len(test) == 297
    assert set(train.y.tolist()) == set(range(10))
    # the generated batches cannot carry CIFAR-10's md5 sums: torchvision refuses them as they are
    with pytest.raises(ValueError, match="CIFAR-10 in .* is damaged or incomplete"):
        load_cifar10(dirs["cifar10"])
    cifar.check_integrity, saved = (lambda *a, **k: True), cifar.check_integrity
    try:
        c = load_cifar10(dirs["cifar10"])
    finally:
        cifar.check_integrity = saved
    assert tuple(c.x.shape[1:]) == (3, 32, 32) and len(c) == 1500
    # channel-major layout: the three channels are the same grey image
    assert float((c.x[:, 0] - c.x[:, 2]).abs().max()) == 0.0 and float(c.x.max()) > 0.5


def test_plan_follows_the_budget_formula():
    cal = {"update_s": 0.004, "n_source": 24_476, "n_target": 23_523}
    p = full_transfer.plan("cifar10-mixture", cal, 540.0, 10_000)
    share = 0.35 * 540
    per_image = 0.004 * (645 / 500 + 55 * 8 / 1500) * 1.3  # 53 corrector runs on the mixture
    n = int((share - 30) / per_image) // 500 * 500
    assert p["limit"] == min(n, 23_500) and p["train_steps"] == 120 * p["limit"] // 500
    assert p["T"] == 5 * p["limit"] // 500 and p["fine_tune"] == 20 * p["limit"] // 500
    assert (p["estimate_s"] - 30) * 1.3 <= share - 30  # the estimate with its margin fits the share less start-up
    # the OT case is capped by --ot-limit and pays for its plan; a slow update skips the case
    ot = full_transfer.plan("mnist-ot", {**cal, "update_s": 1e-4}, 2000.0, 10_000)
    assert ot["limit"] == 10_000 and ot["estimate_s"] > 65.0
    ot = full_transfer.plan("mnist-ot", {**cal, "update_s": 2e-3}, 540.0, 10_000)
    per = 2e-3 * ((380 + 5 * 263) / 500 + 265 * 8 / 1500) * 1.3  # 263 corrector runs on the OT path
    assert 30 + full_transfer.plan_seconds(ot["limit"]) * 1.3 + ot["limit"] * per <= 0.15 * 540 \
        < 30 + full_transfer.plan_seconds(ot["limit"] + 500) * 1.3 + (ot["limit"] + 500) * per
    assert "does not fit" in full_transfer.plan("cifar10-ot", {**cal, "update_s": 1.0}, 540.0, 10_000)["skip"]


@pytest.mark.parametrize("argv, why", [(["--cases", "mnist-sinkhorn"], "unknown case 'mnist-sinkhorn'"),
                                       (["--budget", "-5"], "--budget must be a positive"),
                                       (["--ot-limit", "10"], "--ot-limit must be at least 500")])
def test_bad_arguments_are_one_line(argv, why, capsys):
    assert full_transfer.main(argv + ["--smoke"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and why in err and len(err.splitlines()) == 1
