"""Paths are data: an `xarray.Dataset` along dimension `step`, written to netCDF after every
accepted point, with theta at path points in checkpoints beside it.

Schema (one value per accepted point):

| variable          | meaning                                                             |
|-------------------|---------------------------------------------------------------------|
| s                 | the process clock (mu' = d mu/ds as the process's law gives it)     |
| lambda, gamma, t  | continuation parameters                                             |
| R, D, C, F        | functionals and free energy J(theta; mu) after correction           |
| grad_norm         | ||grad_theta J|| after correction                                    |
| krylov_iters      | Krylov matvecs (HVPs) of this step's tangent and projection solves  |
| hvps              | every HVP of the step: krylov_iters and the corrector's (Newton-CG) |
| gradients         | gradient evaluations of J by the step's corrector runs              |
| corrector_runs    | corrector calls (the step's, projection iterates, FD re-equilibrations) |
| newton_iters, ... | the corrector's iterations, under its own name (attribute           |
|                   | corrector_counts): newton_iters, adam_updates, sgd_updates, lbfgs_iters |
| seconds           | wall time of this step, rejected attempts included (work counters too) |
| step_size         | ds of the accepted step; next_step: the ds proposed for the next    |
| rejected          | attempts rejected before this one was accepted                      |
| C_drift           | (C - C0) / |C0|; constraint_drift: the same for the held functional |
| tangent_angle     | degrees the tangent turned since the previous point                 |
| krylov_residual   | largest relative residual of the tangent solves at this point       |
| checkpoint        | the step number of the checkpoint holding theta, or -1               |
| val_loss, val_acc | validation metrics, where the problem has validation data           |

Attributes: problem, process, predictor, corrector, projection, step_control, corrector_counts,
held (the functional the process holds, or "none"), settings (JSON: every strategy's options, the
problem's, the start), config (JSON of the configuration given, or the settings), status
("running", "finished", "stopped"), stop_reason, C0, G0, checkpoint_dir.
Writes are atomic (temporary file, then rename), checkpoints first: a killed run leaves a
readable file whose every point has its checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import xarray as xr

INT_VARIABLES = ("krylov_iters", "hvps", "gradients", "corrector_runs", "rejected", "checkpoint")


def _is_int(name: str) -> bool:
    return name in INT_VARIABLES or name.endswith("_iters") or name.endswith("_updates")


def checkpoint_dir(path) -> Path:
    return Path(str(path) + ".ckpt")


def checkpoint_file(path, step: int) -> Path:
    return checkpoint_dir(path) / f"step_{step:06d}.pt"


def rows_to_dataset(rows: list[dict], attrs: dict) -> xr.Dataset:
    names = list(rows[0].keys()) if rows else []
    data = {}
    for name in names:
        values = [r.get(name, np.nan) for r in rows]
        dtype = np.int64 if _is_int(name) else np.float64
        data[name] = ("step", np.asarray(values, dtype=dtype))
    return xr.Dataset(data, coords={"step": np.arange(len(rows))}, attrs=attrs)


class PathWriter:
    """Appends points to a netCDF path and their theta to checkpoints, every point durable."""

    def __init__(self, path, attrs: dict, checkpoint_every: int = 1, rows=None):
        self.path = Path(path)
        self.attrs = dict(attrs)
        self.attrs["checkpoint_dir"] = checkpoint_dir(self.path).name
        self.checkpoint_every = max(1, int(checkpoint_every))
        self.rows = list(rows or [])
        checkpoint_dir(self.path).mkdir(parents=True, exist_ok=True)

    def append(self, row: dict, x: torch.Tensor, mu: torch.Tensor) -> None:
        step = len(self.rows)
        torch.save({"x": x.detach().cpu(), "mu": mu.detach().cpu(), "s": row["s"], "step": step},
                   checkpoint_file(self.path, step))
        row = dict(row, checkpoint=step)
        self.rows.append(row)
        self._prune(step)
        self.write()

    def _prune(self, step: int) -> None:
        """Keep every checkpoint_every-th checkpoint and always the last two (resume, secant)."""
        old = step - 2
        if old >= 0 and old % self.checkpoint_every != 0:
            checkpoint_file(self.path, old).unlink(missing_ok=True)
            self.rows[old]["checkpoint"] = -1

    def finish(self, status: str, reason: str) -> xr.Dataset:
        self.attrs.update(status=status, stop_reason=reason)
        return self.write()

    def write(self) -> xr.Dataset:
        ds = rows_to_dataset(self.rows, self.attrs)
        tmp = self.path.with_name(self.path.name + ".tmp")
        ds.to_netcdf(tmp, engine="netcdf4")
        os.replace(tmp, self.path)
        return ds


def load_path(path) -> xr.Dataset:
    """Read a path dataset fully into memory (the file is closed on return)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"path file not found: {path}")
    with xr.open_dataset(path, engine="netcdf4") as ds:
        return ds.load()


def load_point(path, step: int = -1) -> dict:
    """theta (flat), mu and s of a saved point; step -1 means the last point."""
    ds = load_path(path)
    n = ds.sizes["step"]
    if n == 0:
        raise ValueError(f"{path} holds no points")
    k = step if step >= 0 else n + step
    if not 0 <= k < n:
        raise ValueError(f"{path} has steps 0..{n - 1}; step {step} does not exist")
    file = checkpoint_file(path, k)
    if int(ds["checkpoint"][k]) < 0 or not file.exists():
        kept = [int(c) for c in ds["checkpoint"].values if c >= 0]
        raise FileNotFoundError(f"no checkpoint for step {k} of {path} (checkpoints kept: {kept})")
    point = torch.load(file, weights_only=True, map_location="cpu")
    point["row"] = {name: ds[name].values[k].item() for name in ds.data_vars}
    return point
