"""Reading a path: `load_path` (the dataset, from the journal while a run writes it) and
`load_point` (theta and mu of one point from its checkpoint). The schema is
continuation/files/schema.py."""

from __future__ import annotations

from pathlib import Path

import torch
import xarray as xr

from continuation.errors import CheckpointMissing, PathFileError, first_line
from continuation.files.journal import read_journal
from continuation.files.schema import PATH_VARIABLES, checkpoint_dir, checkpoint_file, rows_to_dataset


def load_path(path) -> xr.Dataset:
    """Read a path dataset fully into memory (the file is closed on return).

    While OUT.journal exists (a run writes the file, or was killed writing it) the dataset is
    built from the journal's committed lines (rows_to_dataset: the same variables, dtypes and
    attributes as the file once written whole), so a half-appended or damaged OUT is read as the
    points on record; nothing is written. Cost: O(points) either way (the journal: one JSON line
    per point).

    FileNotFoundError when there is no such file; PathFileError (one line naming the file) when
    it is a folder, not a netCDF file, damaged or truncated, or not a continuation path, or when
    its journal is damaged (a bad line before the last)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"path file not found: {path}")
    if path.is_dir():
        raise PathFileError(f"{path} is a folder, not a path file")
    journal = read_journal(path)
    if journal is not None:
        ds = rows_to_dataset(journal[1], journal[0])
    else:
        try:
            with xr.open_dataset(path, engine="netcdf4", decode_timedelta=False) as ds:
                ds = ds.load()
        except (OSError, RuntimeError, ValueError, KeyError, IndexError, TypeError) as e:
            raise PathFileError(f"{path} is not a readable netCDF file (a path file damaged, truncated, or another format: "
                                f"{first_line(e)})") from e
    if "step" not in ds.dims:
        raise PathFileError(f"{path} is not a continuation path: it has no 'step' dimension")
    missing = [v for v in PATH_VARIABLES if v not in ds.data_vars or ds[v].dims != ("step",)]
    if missing:
        raise PathFileError(f"{path} is not a continuation path: it lacks {', '.join(missing)} along 'step'")
    return ds


def load_point(path, step: int = -1, size: int | None = None) -> dict:
    """theta (flat), mu and s of a saved point; step -1 means the last point. `size`: the number
    of parameters the caller's problem has (a checkpoint of another size is refused).

    PathFileError (one line naming the file) for a damaged, foreign or wrong-size checkpoint;
    CheckpointMissing when the point's checkpoint is not kept or not there."""
    ds = load_path(path)
    n = ds.sizes["step"]
    if n == 0:
        raise PathFileError(f"{path} holds no points")
    if "checkpoint" not in ds.data_vars:
        raise CheckpointMissing(f"{path} names no checkpoints (a path written without theta, e.g. a baseline)")
    k = step if step >= 0 else n + step
    if not 0 <= k < n:
        raise PathFileError(f"{path} has steps 0..{n - 1}; step {step} does not exist")
    folder, file = checkpoint_dir(path), checkpoint_file(path, k)
    kept = [int(c) for c in ds["checkpoint"].values if c >= 0]
    if int(ds["checkpoint"][k]) < 0:
        raise CheckpointMissing(f"no checkpoint for step {k} of {path} (checkpoints kept: {kept})")
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "is missing"
        raise CheckpointMissing(f"no checkpoint for step {k} of {path}: its checkpoint folder {folder} {what} "
                                f"(the file names checkpoints {kept})")
    if not file.is_file():
        there = sorted(int(f.stem[5:]) for f in folder.glob("step_*.pt") if f.stem[5:].isdigit())
        raise CheckpointMissing(f"no checkpoint for step {k} of {path}: {file} is missing (the file names "
                                f"checkpoints {kept}, the folder holds {there})")
    try:
        point = torch.load(file, weights_only=True, map_location="cpu")
    except Exception as e:  # truncated zip, garbage bytes, a foreign pickle: all one kind here
        # torch's own message advises weights_only=False, which is wrong (and unsafe) for a damaged file
        why = type(e).__name__ if "weights_only" in str(e) else first_line(e)
        raise PathFileError(f"checkpoint {file} is damaged or not a checkpoint ({why})") from e
    # the point's scalars only: `eig` is (step, mode) and event_* run along `event`
    row = {name: ds[name].values[k].item() for name in ds.data_vars if ds[name].dims == ("step",)}
    _check_point(point, file, k, row, size)
    point["row"] = row
    return point


def _check_point(point, file, k: int, row: dict, size: int | None) -> None:
    if not isinstance(point, dict) or not {"x", "mu", "s"} <= set(point):
        raise PathFileError(f"checkpoint {file} is not a checkpoint (no x, mu, s)")
    x, mu = point["x"], point["mu"]
    if not (isinstance(x, torch.Tensor) and x.dim() == 1 and isinstance(mu, torch.Tensor) and mu.shape == (3,)):
        raise PathFileError(f"checkpoint {file} is damaged: x must be a vector and mu hold 3 values, got shapes "
                            f"{tuple(getattr(x, 'shape', ()))} and {tuple(getattr(mu, 'shape', ()))}")
    if point.get("step", k) != k or [float(v) for v in mu] != [row["lambda"], row["gamma"], row["t"]]:
        raise PathFileError(f"checkpoint {file} does not belong to step {k} of its path file (its mu "
                            f"{[float(v) for v in mu]}, the file's {[row['lambda'], row['gamma'], row['t']]})")
    if size is not None and x.numel() != size:
        raise PathFileError(f"checkpoint {file} holds {x.numel()} parameters; this run's problem has {size} "
                            "(a path written by a problem of another size)")
    tangent = point.get("tangent")
    if tangent is not None and not (isinstance(tangent, torch.Tensor) and tangent.dim() == 1
                                    and tangent.numel() in (3, x.numel() + 3)):
        raise PathFileError(f"checkpoint {file} is damaged: its tangent must be a vector of 3 or "
                            f"{x.numel() + 3} values, got shape {tuple(getattr(tangent, 'shape', ()))}")
