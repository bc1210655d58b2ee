"""State in, state out: a strategy keeps its own state in its slot of the run's State, the slots
travel with each point's checkpoint, and a killed run resumes with them to the uninterrupted
path (continuation/engine/state.py). And the tangent angle is accurate at small angles."""

import json
import math
import shutil
from dataclasses import dataclass
from typing import ClassVar, final

import pytest
import torch
import xarray as xr

import continuation.files.writer as writer_module
from continuation.engine.driver import Output, continue_path
from continuation.engine.state import dump_slots
from continuation.engine.stepper import _angle
from continuation.errors import PathFileError
from continuation.files.path import load_path, load_point
from continuation.strategies.correctors import NewtonCorrector
from continuation.strategies.predictors import NoPredictor, Prediction, Predictor, SecantPredictor
from continuation.strategies.processes import QuasiStatic
from continuation.strategies.step_control import FixedSteps, StopRule


@final
@dataclass
class AlternatingPredictor(Predictor):
    """A predictor with state of its own: the secant on every `period`-th step since the start and
    no prediction on the others, counting its steps in its slot. A resume that lost the count
    would predict differently, and the path (Newton from another guess, iterations) would differ."""

    period: int = 3
    name: ClassVar[str] = "alternating"
    stateful: ClassVar[bool] = True

    def init_state(self, start):
        return {"steps": 0, "secant": 0}

    def update_state(self, own, accepted):
        return {"steps": own["steps"] + 1, "secant": own["secant"] + (own["steps"] % self.period == 0)}

    def predict(self, make_context, start, ds, previous, process, own=None) -> Prediction:
        inner = SecantPredictor() if own["steps"] % self.period == 0 else NoPredictor()
        return inner.predict(make_context, start, ds, previous, process)


def run(competition, out, resume=False):
    return continue_path(competition.problem, QuasiStatic(lambda_rate=1.0), AlternatingPredictor(),
                         NewtonCorrector(gtol=1e-11), FixedSteps(size=0.2), StopRule(max_steps=7),
                         start=(1.0, 1.0), output=Output(out, resume=resume, progress=False), monitor=None)


class Killed(BaseException):
    pass


def test_a_strategy_with_state_of_its_own_resumes_identically(tmp_path, competition, monkeypatch):
    full = run(competition, tmp_path / "full.nc")
    assert full.attrs["status"] == "finished" and full.sizes["step"] == 8
    # its state went into each checkpoint: after point k it had counted k steps
    last = json.loads(load_point(tmp_path / "full.nc", -1)["state"])
    assert last["predictor"] == {"steps": 7, "secant": 3}
    assert last["stop"][-1][1]["lambda"] == pytest.approx(2.4, rel=1e-12) and last["control"] == 0.2

    def kill(stage, step):
        if (stage, step) == ("checkpoint", 5):
            raise Killed

    part = tmp_path / "part.nc"
    monkeypatch.setattr(writer_module, "_test_kill", kill)
    with pytest.raises(Killed):
        run(competition, part)
    monkeypatch.undo()
    assert load_path(part).sizes["step"] == 5 and load_path(part).attrs["status"] == "running"
    resumed = run(competition, part, resume=True)
    a, b = full.drop_vars("seconds"), resumed.drop_vars("seconds")
    for ds in (a, b):
        ds.attrs.pop("checkpoint_dir", None)
        ds.attrs.pop("history", None)
    xr.testing.assert_identical(a, b)
    # and the count matters: with the secant on every step the iterations differ
    other = continue_path(competition.problem, QuasiStatic(lambda_rate=1.0), SecantPredictor(),
                          NewtonCorrector(gtol=1e-11), FixedSteps(size=0.2), StopRule(max_steps=7),
                          start=(1.0, 1.0), output=Output(progress=False), monitor=None)
    assert list(other["newton_iters"].values) != list(full["newton_iters"].values)


def test_a_state_that_is_not_json_is_refused_by_name():
    with pytest.raises(TypeError, match="must be JSON"):
        dump_slots({"predictor": torch.zeros(2)})


def test_a_file_without_saved_state_cannot_be_resumed_and_says_so(tmp_path, competition):
    out = tmp_path / "p.nc"
    run(competition, out)
    # a file as an older version wrote it, killed: its last checkpoint without the state, status running
    f = writer_module.checkpoint_file(out, 7)
    point = torch.load(f, weights_only=True)
    point.pop("state")
    torch.save(point, f)
    ds = load_path(out)
    ds.attrs["status"] = "running"
    ds.to_netcdf(tmp_path / "q.nc")
    shutil.copytree(writer_module.checkpoint_dir(out), writer_module.checkpoint_dir(tmp_path / "q.nc"))
    with pytest.raises(PathFileError, match="holds no strategies' state"):
        run(competition, tmp_path / "q.nc", resume=True)


@pytest.mark.parametrize("angle", [1e-9, 2.4e-4, 1e-2, 0.7, 1.5707963267948966, 3.0, math.pi])
def test_the_tangent_angle_is_accurate_at_every_angle(angle):
    """Against the exact angle of two unit vectors in a plane, scaled and in 5 dimensions."""
    a = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64) * 3.0
    b = torch.tensor([math.cos(angle), math.sin(angle), 0.0, 0.0, 0.0], dtype=torch.float64) * 0.5
    q, _ = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    got = math.radians(_angle(q @ a, q @ b))
    assert got == pytest.approx(angle, rel=1e-13, abs=1e-15)
