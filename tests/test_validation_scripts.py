"""The paper-figure scripts (validation/fig2-4) end to end at smoke size on the bundled digits:
their summaries, target checks and plots, so that a change that breaks them shows here and not
after an hour of a real run."""

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "validation"))

import fig2_iso_c  # noqa: E402
import fig3_iso_c_cifar  # noqa: E402
import fig4_free_energy  # noqa: E402


def shrink(cfg, **problem):
    cfg["problem"].update(dataset="digits", limit=200, val_limit=100, **problem)
    cfg["start"].update(train_steps=30, settle=1)
    cfg["corrector"]["steps"] = 10
    cfg["krylov"]["maxiter"] = 3
    return cfg


def test_fig2_runs_summarises_and_plots(tmp_path):
    cfg = shrink(fig2_iso_c.base_config("digits", "", "cpu", False), hidden=16, latent=3, grad_batch=100,
                 hvp_batch=50)
    runs = {"main": (cfg, tmp_path / "main.nc"),
            "fd": (fig2_iso_c.fd_variant(cfg, 0.05), tmp_path / "fd.nc", (tmp_path / "main.nc", 0))}
    results = fig2_iso_c.run_all(runs)
    main, fd = results["main"], results["fd"]
    assert main["points"] == fd["points"] == 11 and main["lambda_ratio"] == pytest.approx(4.0)
    # the secant holds training C to its tolerance (0.5%) even at this size; the FD law starts
    # from the main run's first point, so C0 is the same
    assert main["max_C_change"] <= 0.005 + 1e-9 and fd["C0"] == main["C0"]
    assert fd["hvps_per_point"] == 0 and fd["grads_per_point"] >= 5 * 10  # one step + four re-equilibrations
    ok = fig2_iso_c.print_table(results, exempt=["fd"])
    assert ok == fig2_iso_c.meets(main)
    fig2_iso_c.plot({k: v[1] for k, v in runs.items()}, tmp_path / "fig2.png")
    assert (tmp_path / "fig2.png").stat().st_size > 10_000


def test_fig4_runs_at_smoke_size(tmp_path, monkeypatch, capsys):
    base = fig2_iso_c.base_config
    monkeypatch.setattr(fig2_iso_c, "base_config",
                        lambda *a: shrink(base(*a), hidden=16, latent=3, grad_batch=100, hvp_batch=50))
    assert fig4_free_energy.main(["--out", str(tmp_path), "--dataset", "digits"]) == 0
    out = capsys.readouterr().out
    assert "F(0.5, 1) = " in out and "(b) F along" in out
    assert (tmp_path / "fig4.png").exists() and (tmp_path / "iso_c_gamma4.nc").exists()


@pytest.mark.slow
def test_fig3_runs_at_smoke_size(tmp_path):
    cfg = fig3_iso_c_cifar.base_config("digits", "", "cpu", False)
    cfg["problem"].update(dataset="digits", limit=32, val_limit=16, grad_batch=16, hvp_batch=8, width=16)
    cfg["start"]["train_steps"] = 3
    cfg["corrector"]["steps"] = 3
    cfg["krylov"]["maxiter"] = 2
    res = fig2_iso_c.run_all({"g5": (cfg, tmp_path / "g5.nc")})
    assert res["g5"]["lambda_ratio"] == pytest.approx(4.0) and np.isfinite(res["g5"]["C0"])
