"""The validation report (continuation/apps/report.py, `python -m continuation report`): verdicts and
the markdown on synthetic checks, failures recorded while the other checks go on, exit codes,
bad --out refused in one line, and one real check (Lemma 3 on the linear-Gaussian problem) end to
end against the closed-form free energy."""

import json
import math
import sys
import tomllib

import numpy as np
import pytest

from continuation.apps import report
from continuation.apps.cli import main
from continuation.apps.report import (FAILS, HOLDS, NOT_MEASURED, Check, Experiments, ExperimentFailed, Result, decide,
                                 exit_code, run_checks, verdict_text, write_markdown)


def holding(res, ex):
    res.measure("toy", "error", 1e-9, "<=", 1e-6, ".2e")
    res.measure("toy", "status", "finished", ok=True, tolerance="finished")


def missing(res, ex):
    res.measure("toy", "error", 0.5, "<=", 1e-6, ".2e")
    res.measure("toy", "other", 2.0, ">", 1.0)


def raising(res, ex):
    raise RuntimeError("the data set is missing\nsecond line not shown")


def half(res, ex):
    res.part("first", lambda: res.measure("first", "x", 1.0, "==", 1.0))
    res.part("second", lambda: (_ for _ in ()).throw(ExperimentFailed("second-run: exited 1: boom")))


CHECKS = [Check("good", "A claim that holds (eq. 1)", "x is small.", holding),
          Check("bad", "A claim that does not hold (eq. 2)", "x is small too.", missing),
          Check("crash", "A claim whose run raises (eq. 3)", "y.", raising),
          Check("half", "A claim measured in part (eq. 4)", "z.", half)]


def test_verdicts_from_rows_and_errors():
    ok = {"part": "p", "quantity": "q", "text": "1", "tolerance": "<= 2", "ok": True}
    no = {**ok, "ok": False, "text": "3"}
    assert decide([ok, ok], []) == (HOLDS, "")
    verdict, reason = decide([ok, no], [])
    assert verdict == FAILS and "p: q = 3 (needs <= 2)" in reason
    assert decide([ok], ["run: died"]) == (NOT_MEASURED, "run: died")
    assert decide([no], ["run: died"])[0] == FAILS  # a miss is a miss whatever else failed
    assert decide([], []) == (NOT_MEASURED, "nothing was measured")
    r = Result()
    assert r.measure("p", "nan", float("nan"), "<=", 1.0) is False  # non-finite never passes
    assert r.measure("p", "inf", float("inf"), ">=", 1.0) is False
    assert r.measure("p", "pct", 0.0023, "<=", 0.005, ".2%") and r.rows[-1]["tolerance"] == "<= 0.50%"
    assert verdict_text({"verdict": NOT_MEASURED, "reason": "why"}) == "not measured (why)"
    assert verdict_text({"verdict": FAILS, "reason": "why"}) == "does not hold"


def test_a_failing_or_raising_check_is_recorded_and_the_others_run(tmp_path):
    lines = []
    results = run_checks(CHECKS, tmp_path, quick=True, say=lines.append)
    assert [r["verdict"] for r in results] == [HOLDS, FAILS, NOT_MEASURED, NOT_MEASURED]
    assert results[2]["reason"] == "error: the data set is missing"  # one line
    assert results[3]["reason"] == "second: second-run: exited 1: boom" and len(results[3]["rows"]) == 1
    # one line as each check starts and one as it ends, with its seconds
    assert len(lines) == 8 and lines[0].startswith("[1/4] good: A claim that holds")
    assert lines[1].startswith("[1/4] good: holds (") and lines[1].endswith(" s)")
    assert lines[5].startswith("[3/4] crash: not measured (error: the data set is missing) (")
    assert exit_code(results) == 1 and exit_code(results[:1]) == 0 and exit_code([]) == 1


def test_markdown_states_claim_numbers_tolerances_verdicts_and_figures(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_src = tmp_path / "runs" / "toy.png"
    fig_src.parent.mkdir()
    plt.figure()
    plt.plot([0, 1])
    plt.savefig(fig_src)
    plt.close("all")

    def with_figure(res, ex):
        holding(res, ex)
        res.note("a note | with a bar")
        res.figure(fig_src, "the toy figure")
        res.figure(tmp_path / "never.png", "not written")

    checks = [Check("fig", "Figure claim (Lemma 9)", "w.", with_figure), *CHECKS[1:3]]
    out = tmp_path / "report"
    results = run_checks(checks, out, quick=False, say=lambda line: None)
    path = write_markdown(results, out, quick=False, seconds=12.0, command="python -m continuation report --out x")
    text = path.read_text()
    assert path == out / "REPORT.md"
    assert "## 1. Figure claim (Lemma 9)" in text and "**Claim.** w." in text
    assert "| toy | error | 1.00e-09 | <= 1e-06 | yes |" in text
    assert "| toy | error | 5.00e-01 | <= 1e-06 | **no** |" in text
    assert "**Verdict: holds**" in text and "**Verdict: does not hold** (toy: error = 5.00e-01 (needs <= 1e-06)" in text
    assert "**Verdict: not measured (error: the data set is missing)**" in text
    assert "| 3 | [A claim whose run raises (eq. 3)](#3) | **not measured (error: the data set is missing)** |" in text
    assert "1 of 3 claims hold." in text and "a note \\| with a bar" not in text  # notes are plain text
    assert "![the toy figure](1_fig_0.png)" in text and (out / "1_fig_0.png").read_bytes() == fig_src.read_bytes()
    assert "(figure never.png was not written)" in text
    saved = json.loads((out / "report.json").read_text())
    assert saved["exit_code"] == 1 and [c["verdict"] for c in saved["checks"]] == [HOLDS, FAILS, NOT_MEASURED]


def test_experiments_run_once_and_keep_their_failure(tmp_path, monkeypatch):
    calls = []
    monkeypatch.chdir(tmp_path)  # a relative --out is made absolute: an experiment may change the folder
    assert Experiments("rel", quick=True).out == (tmp_path / "rel").resolve()

    class Toy(Experiments):
        def _boom(self, folder):
            calls.append(folder)
            raise RuntimeError("no data here\nmore")

        def _fine(self, folder):
            (folder / "x.txt").write_text("1")
            return {"value": 3}

    ex = Toy(tmp_path, quick=True, say=lambda line: None)
    for _ in range(2):
        with pytest.raises(ExperimentFailed, match=r"^boom: no data here$"):
            ex.get("boom")
    assert len(calls) == 1
    assert ex.get("fine")["value"] == 3 and ex.get("fine") is ex.get("fine")
    # an experiment (run in this process) that fails without its output: the reason is its last error
    # line; a SystemExit is its exit status, an exception its one line; the others go on
    def fails():
        print("working")
        print("error: the input is damaged", file=sys.stderr)
        sys.exit(2)

    with pytest.raises(ExperimentFailed, match=r"exited 2 without writing out.json: error: the input is damaged"):
        ex._run(tmp_path / "s", "fails", fails, "python fails.py", tmp_path / "out.json")
    assert (tmp_path / "s" / "fails.log").read_text() == "working\n"

    def raises():
        raise ValueError("bad value\nmore")

    with pytest.raises(ExperimentFailed, match=r"exited 1 without writing out.json: bad value$"):
        ex._run(tmp_path / "s", "raises", raises, "python raises.py", tmp_path / "out.json")


def test_quick_default_config_is_valid_toml_of_the_default_run(tmp_path):
    from continuation.files.config import build_run
    from continuation.apps.defaults import DEFAULT_CONFIG

    config = {k: dict(v) for k, v in DEFAULT_CONFIG.items()}
    for section, values in report.QUICK_DEFAULT.items():
        config[section].update(values)
    report.write_toml(config, tmp_path / "q.toml")
    back = tomllib.loads((tmp_path / "q.toml").read_text())
    assert back == config and back["start"]["train_steps"] < DEFAULT_CONFIG["start"]["train_steps"]
    build_run(back)  # every value accepted by the run's own checks


def test_cli_refuses_bad_out_and_names_in_one_line(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for args, message in [(["--out", str(afile)], "is a file; give a folder"),
                          (["--out", str(afile / "below")], "cannot create the folder"),
                          (["--out", str(tmp_path / "r"), "--only", "nope"], "unknown check 'nope'"),
                          (["--out", str(tmp_path / "r"), "--quik"], "unrecognized arguments")]:
        assert main(["report", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1, err
        assert "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_cli_exit_codes_and_progress(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(report, "CHECKS", CHECKS)
    assert main(["report", "--out", str(tmp_path / "a"), "--only", "good"]) == 0
    out = capsys.readouterr().out
    assert "[1/1] good: holds (" in out and f"wrote {tmp_path / 'a' / 'REPORT.md'}: 1 of 1 claims hold" in out
    assert main(["report", "--out", str(tmp_path / "b"), "--quick"]) == 1
    out = capsys.readouterr().out
    assert "  2. bad: does not hold" in out and "  3. crash: not measured (error: the data set is missing)" in out
    assert "**Verdict: does not hold**" in (tmp_path / "b" / "REPORT.md").read_text()


def test_concavity_check_end_to_end_against_the_closed_form_free_energy(tmp_path):
    """Lemma 3 on the linear-Gaussian problem through the report's own check (the foundation
    experiment in this process, its JSON read back); the measured Hess F eigenvalues against second
    differences of the closed-form F itself, computed here."""
    from problems import LinearGaussianClosedForm, LinearGaussianData, LinearGaussianGibbsProblem

    check = next(c for c in report.CHECKS if c.name == "concavity")
    lines = []
    result = check.run(tmp_path, True, Experiments(tmp_path, True, say=lines.append))
    assert result["verdict"] == HOLDS, result["reason"]
    assert (tmp_path / "foundation" / "foundation.json").exists() and lines[-1].startswith("    foundation: done")
    rows = {r["quantity"].split(" (")[0]: r for r in result["rows"]}

    # independent: the same instance as validation/gaussian_foundation.py (seed 0), Hess F by
    # second differences of the closed-form free energy (not of D and C as the script does)
    problem = LinearGaussianGibbsProblem.from_data(LinearGaussianData.random(3, 1, seed=0), latent_dim=2)
    F = LinearGaussianClosedForm.of(problem).free_energy
    h, lam, gam = 1e-3, 1.0, 1.0
    H = np.array([[F(lam + h, gam) - 2 * F(lam, gam) + F(lam - h, gam),
                   (F(lam + h, gam + h) - F(lam + h, gam - h) - F(lam - h, gam + h) + F(lam - h, gam - h)) / 4],
                  [0.0, F(lam, gam + h) - 2 * F(lam, gam) + F(lam, gam - h)]]) / h**2
    H[1, 0] = H[0, 1]
    eig = np.linalg.eigvalsh(H)
    measured = rows["largest eigenvalue of Hess F"]["value"]
    assert measured < 0 and math.isclose(measured, eig.max(), rel_tol=1e-4)
    saved = json.loads((tmp_path / "foundation" / "foundation.json").read_text())
    framework = np.array(next(r for r in saved if r["check"].startswith("Hess F"))["framework"])
    np.testing.assert_allclose(framework, H, rtol=1e-4, atol=1e-6)
    # appendix B with Hess R = -Hess F^-1 from the independent Hess F: the product is -I exactly,
    # and the script's finite-difference Hess R(D, C) met it to the tolerance the row states
    assert rows["max |Hess R(D, C) Hess F + I|"]["value"] <= 1e-5
    assert np.allclose(-np.linalg.inv(H) @ framework, -np.eye(2), atol=1e-4)
    assert [f["path"] for f in result["figures"]] == [str((tmp_path / "foundation" / "foundation.png").resolve())]
    assert (tmp_path / "foundation" / "foundation.png").exists()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
