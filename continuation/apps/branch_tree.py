"""Every branch at a pitchfork: the bifurcation tree of a path, to a depth the user sets.

    python -m continuation tree validation/configs/chafee_infante_tree.toml --out out/tree.nc

The configuration is a run's (a path with the monitor on; `branch = "follow"` so that the path
stays on its branch and locates each bifurcation on it) plus a table

    [tree]
    depth = 1          # 1: the branches born on the root path; 2: also those born on them, ...
    offset = 0.01      # the branches start this far (relative, in the clock's multiplier) past the event
    max_steps = 40     # points per branch at most; a branch also ends where the clock leaves the root's range

From each located bifurcation (x*, p*) with null vector v, the branches are found on both sides
of p* and in both directions of v (`switch_branch`): at p_s = p* (1 +- offset) the reduced
equation g(a) = v . grad_x J(x* + a v; p_s) = 0 (Lyapunov-Schmidt along the null vector) is solved
for its root a != 0 on each sign (bracketed from a = 1e-4 (1 + |x*|), doubling, then brentq),
and Newton on grad J = 0 without a descent requirement (it stays on saddles) from x* + a v. Each
branch found is followed by the run's own process, predictor and corrector (a pseudo-arclength
configuration follows saddles) from p_s away from p*, with the monitor following it, so that its
own bifurcations are located and, below `depth`, branched from in turn.

OUT.nc holds every branch along (branch, point): the multipliers, R, D, C, F, the Morse index and
the signed amplitude a(point) = sign(v . (x - x*)) ||x - x*|| / sqrt(N) about the branch's
bifurcation point (0 on the root); per branch its parent, depth, the event's multiplier and the
sign of its start. OUT.png draws the tree (multiplier against amplitude, saddles dashed); each
branch's own path file is in OUT.branches/.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path

import numpy as np
import xarray as xr

from problems.base import MU_NAMES, mu_index

from continuation.errors import ContinuationError
from continuation.files.schema import variable_attrs
from continuation.singular.branch_switch import switch_branch
from continuation.files.config import TREE_KEYS, ConfigError, tree_options  # noqa: F401 (the table's checker)

def _amplitudes(path_file, ds, x_star, v) -> np.ndarray:
    """sign(v . (x - x*)) |x - x*| / sqrt(N) at each point of the path (its checkpoints); 0 on the root."""
    from continuation.files.path import load_point

    out = np.zeros(ds.sizes["step"])
    if x_star is None:
        return out
    for k in range(ds.sizes["step"]):
        d = load_point(path_file, k)["x"] - x_star
        out[k] = (1.0 if float(v @ d) >= 0 else -1.0) * float(d.norm()) / math.sqrt(d.numel())
    return out


def _bifurcations(path_file) -> list:
    """The path's located bifurcations with a saved null vector (phase_diagram.located_events)."""
    from continuation.apps.phase_diagram import located_events

    return [e for e in located_events(path_file, types=("bifurcation",)) if e["v"] is not None]


def run_tree(config: dict, out, *, progress: bool = True) -> xr.Dataset:
    """The root path, then every branch at its located bifurcations to `depth`; OUT (netCDF) and
    OUT with .png. Returns the tree's dataset."""
    from continuation.apps.phase_diagram import free_multiplier, monitored_run
    from continuation.apps.run import run_config
    from continuation.engine.driver import Output, Start, continue_path
    from continuation.surface.system import EquilibriumSystem

    o = tree_options(config)
    root_cfg, r, monitor = monitored_run(config, "tree", "the bifurcations the branches start from")
    if monitor.branch != "follow":
        raise ConfigError("tree: set [monitor] branch = \"follow\": a path that switches to the minimising branch "
                          "leaves the branch whose bifurcations the tree starts from")
    free = free_multiplier(r["process"])
    out = Path(out)
    folder = out.with_suffix(".branches")
    if folder.exists() and any(folder.iterdir()):
        raise ConfigError(f"{folder} exists and is not empty (the branches' paths); remove it or choose another --out")
    folder.mkdir(parents=True, exist_ok=True)
    root_file = folder / "branch_000.nc"
    root = run_config(root_cfg, root_file, progress=None if progress else False)
    lo, hi = sorted((float(root[free].values.min()), float(root[free].values.max())))
    problem = r["problem"]
    system = EquilibriumSystem(problem, problem.init_params(r["start"]["seed"]), r["hvp_mode"])
    if not _bifurcations(root_file):
        raise ContinuationError(f"tree: the root path ({root_file}: {root.attrs['status']}, "
                                f"{root.attrs['stop_reason']}) located no bifurcation to branch from")
    branches = [{"file": root_file, "ds": root, "parent": -1, "depth": 0, "event": math.nan, "side": 0, "sign": 0,
                 "x_star": None, "v": None}]
    queue = [0]
    while queue:
        k = queue.pop(0)
        b = branches[k]
        if b["depth"] >= o["depth"]:
            continue
        for e in _bifurcations(b["file"]):
            for x_s, mu_s, side, sign in switch_branch(system, e["x"], e["mu"], e["v"], free, offset=o["offset"]):
                n = len(branches)
                f = folder / f"branch_{n:03d}.nc"
                process = r["process"]
                if hasattr(process, "direction"):
                    process = dataclasses.replace(process, direction=side)
                # lands on the root's range end in its direction of travel (a branch that turns back
                # ends on max_steps, or where it leaves the range on the other side)
                stop = dataclasses.replace(r["stop"], target={free: hi if side > 0 else lo}, milestones={},
                                           max_steps=o["max_steps"], away_points=0,
                                           bounds={**r["stop"].bounds, free: [lo, hi]})
                branch_monitor = copy.copy(monitor)
                try:
                    ds = continue_path(problem, process, r["predictor"], r["corrector"], r["steps"], stop,
                                       projection=r["projection"],
                                       start=Start(mu=tuple(float(m) for m in mu_s), theta0=system.unflatten(x_s)),
                                       output=Output(f, progress=False), solver=r["krylov"], hvp_mode=r["hvp_mode"],
                                       monitor=branch_monitor)
                except ContinuationError as err:
                    if progress:
                        print(f"  branch from {free} = {float(e['mu'][mu_index(free)]):.10g} (side {side:+d}, sign "
                              f"{sign:+d}): not followed ({str(err).splitlines()[0]})")
                    continue
                branches.append({"file": f, "ds": ds, "parent": k, "depth": b["depth"] + 1,
                                 "event": float(e["mu"][mu_index(free)]), "side": side, "sign": sign,
                                 "x_star": e["x"], "v": e["v"]})
                queue.append(n)
                if progress:
                    print(f"  branch {n} from {free} = {float(e['mu'][mu_index(free)]):.10g} on branch {k} (sign "
                          f"{sign:+d}): {ds.sizes['step']} points, {ds.attrs['status']}: {ds.attrs['stop_reason']}")
    tree = tree_dataset(branches, free, problem.name)
    tree.to_netcdf(out)
    plot_tree(tree, out.with_suffix(".png"))
    return tree


def tree_dataset(branches, free: str, problem: str) -> xr.Dataset:
    n = max(b["ds"].sizes["step"] for b in branches)
    k = len(branches)

    def grid(get):
        a = np.full((k, n), np.nan)
        for i, b in enumerate(branches):
            vals = get(b)
            a[i, :len(vals)] = vals
        return a

    data = {name: grid(lambda b, nm=name: b["ds"][nm].values) for name in (*MU_NAMES, "R", "D", "C", "F")}
    data["morse_index"] = grid(lambda b: b["ds"].morse_index.values if "morse_index" in b["ds"] else
                               np.full(b["ds"].sizes["step"], -1))
    data["amplitude"] = grid(lambda b: _amplitudes(b["file"], b["ds"], b["x_star"], b["v"]))
    ds = xr.Dataset({name: (("branch", "point"), v, variable_attrs(name)) for name, v in data.items()})
    ds["amplitude"].attrs.update(units="parameter unit (root mean square)", long_name=(
        "sign(v . (x - x*)) |x - x*| / sqrt(N) about the branch's bifurcation point x* (v its null vector); 0 on "
        "the root"))
    ds["parent"] = ("branch", np.array([b["parent"] for b in branches], dtype=np.int64),
                    {"long_name": "the branch it starts from (-1: the root path)"})
    ds["depth"] = ("branch", np.array([b["depth"] for b in branches], dtype=np.int64),
                   {"units": "1", "long_name": "bifurcations between the root path and the branch"})
    ds["event_" + free] = ("branch", np.array([b["event"] for b in branches]),
                           {"units": "1", "long_name": "the bifurcation it starts from (NaN: the root)"})
    ds["side"] = ("branch", np.array([b["side"] for b in branches], dtype=np.int64),
                  {"long_name": f"+1: born on the side of larger {free}, -1: smaller"})
    ds["sign"] = ("branch", np.array([b["sign"] for b in branches], dtype=np.int64),
                  {"long_name": "the direction along the null vector it starts in"})
    ds["points"] = ("branch", np.array([b["ds"].sizes["step"] for b in branches], dtype=np.int64),
                    {"units": "1", "long_name": "points of the branch"})
    from continuation.files.schema import history_line, package_version

    ds.attrs.update({"continuation_version": package_version(), "history": history_line(), "free": free,
                     "problem": problem, "Conventions": "continuation-branch-tree-1",
                     "files": " ".join(str(b["file"]) for b in branches)})
    return ds


def plot_tree(ds: xr.Dataset, out) -> Path:
    from matplotlib.figure import Figure

    from continuation.apps.plot import save_figure

    free = ds.attrs["free"]
    fig = Figure(figsize=(7.5, 5.5))
    ax = fig.subplots()
    for i in range(ds.sizes["branch"]):
        p, a, idx = ds[free].values[i], ds.amplitude.values[i], ds.morse_index.values[i]
        if np.isfinite(ds["event_" + free].values[i]):  # the branch passes through its bifurcation point
            p, a = np.r_[ds["event_" + free].values[i], p], np.r_[0.0, a]
            idx = np.r_[idx[0], idx]
        ok = np.isfinite(p) & np.isfinite(a)
        label = "root path" if ds.parent.values[i] < 0 else (
            f"branch {i}: from {free} = {ds['event_' + free].values[i]:.6g} on {int(ds.parent.values[i])}")
        line = None
        for j in range(int(ok.sum()) - 1):  # solid where a minimum (index 0), dashed on saddles
            style = "-" if idx[j] == 0 and idx[j + 1] == 0 else "--"
            kw = {"color": line.get_color()} if line is not None else {}
            line, = ax.plot(p[ok][j:j + 2], a[ok][j:j + 2], style, lw=1.3, label=label if line is None else None, **kw)
        if line is not None and np.isfinite(ds["event_" + free].values[i]):
            ax.plot([ds["event_" + free].values[i]], [0.0], "o", color=line.get_color(), mfc="none", ms=6)
    ax.set_xlabel(f"{free} (dimensionless multiplier)")
    ax.set_ylabel("amplitude about the bifurcation point (parameter units, RMS)")
    ax.set_title(f"bifurcation tree of {ds.attrs.get('problem', '')}: solid minima, dashed saddles; o where a "
                 f"branch is born", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    return save_figure(fig, [ax], out)
