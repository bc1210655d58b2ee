"""A run from a configuration: the same as a script calling `continue_path`, in one call."""

from __future__ import annotations

from .config import build_run
from .driver import continue_path


def run_config(config: dict, out=None, *, resume: bool = False, start_from=None, progress=None):
    """Build every object from `config` (a parsed TOML dict) and run the path; returns the dataset."""
    r = build_run(config)
    problem, start = r["problem"], r["start"]
    return continue_path(
        problem, r["process"], r["predictor"], r["corrector"], r["steps"], r["stop"],
        start=(start["lambda"], start["gamma"], start["t"]), theta0=problem.init_params(start["seed"]),
        equilibrate=start["equilibrate"] if start_from is None else False, out=out, resume=resume,
        config=config, solver=r["krylov"], progress=r["output"]["progress"] if progress is None else progress,
        checkpoint_every=r["output"]["checkpoint_every"], start_from=start_from, hvp_mode=r["hvp_mode"])
