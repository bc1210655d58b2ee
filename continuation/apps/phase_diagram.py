"""The phase diagram: every critical point a path locates, followed in a second multiplier.

    python -m continuation phase-diagram validation/configs/gaussian_phase_diagram.toml --out out/phase.nc

The configuration is a run's (a path with the monitor on, `docs/stability.md`) plus a table

    [phase_diagram]
    along = "gamma"        # the second multiplier, stepped
    range = [0.3, 3.0]     # along's range; the run's start lies inside it
    step = 0.05            # along's first step (default: the range / 25); max_step (default: step), min_step
    # gtol = 1e-11, eig_tol = 1e-10   # Newton's tolerances on the extended system (absolute)

The run's path (OUT.path.nc, or --path an existing one with its event checkpoints) locates the
folds and bifurcations in its clock (the `free` multiplier, the process's: lambda for
`quasi-static` with lambda_rate, `pseudo-arclength`'s parameter). Each located event is then
followed in `along` across the range (`continuation/singular/critical_curve.py`): the curve
p_c(along) where that eigenvalue is zero. OUT.nc holds the curves along (curve, point); OUT.png
draws them in the (lambda, gamma) plane with the Morse index of each region.

The regions' Morse index is measured, not inferred: at a few values of `along`, a label point
between each pair of neighbouring curves; the run's start branch is continued to each (natural
continuation with a fixed-mu Newton that stays on saddles, `critical_curve.branch_index`) and the
negative eigenvalues of A there are counted. "-" marks a point the start branch does not reach
(a fold lies between). For the linear-Gaussian problem the start branch is the trivial one
(no latent direction on), whose index grows by each switch-on's multiplicity.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from problems.base import MU_NAMES, mu_index

from continuation.errors import ContinuationError
from continuation.files.schema import EIG_UNITS, PER_PARAMETER, variable_attrs
from continuation.files.config import PHASE_KEYS, ConfigError, phase_options  # noqa: F401 (the table's checker)



def resolved_monitor(run: dict):
    """The run's Monitor, with "auto" (no [monitor] table) resolved as continue_path does: on for a
    deterministic problem, off (None) for a stochastic one."""
    from problems.base import StochasticProblem

    from continuation.singular.monitor import Monitor

    m = run["monitor"]
    if isinstance(m, str):
        return None if isinstance(run["problem"], StochasticProblem) else Monitor()
    return m


def monitored_run(config: dict, table: str, what: str):
    """(the configuration without its command table, build_run's objects, the resolved Monitor) for a
    command that starts from a run's located events; ConfigError, before any work, where the monitor
    is off."""
    from continuation.files.config import build_run

    run_cfg = {k: v for k, v in config.items() if k != table}
    r = build_run(run_cfg)
    monitor = resolved_monitor(r)
    if monitor is None or monitor.modes < 1:
        raise ConfigError(f"{table.replace('_', '-')}: the monitor is off ([monitor] enabled = false, modes = 0, or a "
                          f"stochastic problem); it locates {what}")
    return run_cfg, r, monitor


def free_multiplier(process) -> str:
    """The multiplier a process moves as its clock: the one each event is located in."""
    name = getattr(process, "parameter", None) or getattr(process, "clock", None)
    if name in MU_NAMES:
        return name
    rates = {n: getattr(process, f"{n}_rate", 0.0) for n in ("lambda", "gamma")}
    moving = [n for n, v in rates.items() if v]
    if len(moving) == 1:
        return moving[0]
    raise ConfigError(f"phase-diagram: the process {process.name!r} does not move one multiplier alone; use "
                      f"quasi-static with one rate, or pseudo-arclength")


def located_events(path_file, types=("fold", "bifurcation")) -> list[dict]:
    """The path's located events of `types` that have a checkpoint: the event's fields (type, lambda,
    ..., mode, multiplicity, index_before, ...) with its saved point `x` and null vector `v` (None
    where none was saved), mu as the (3,) tensor `mu`."""
    from continuation.files.path import load_path
    from continuation.files.schema import event_file

    ds = load_path(path_file)
    out = []
    for j in range(ds.sizes.get("event", 0)):
        e = {k[len("event_"):]: (ds[k].values[j].item() if hasattr(ds[k].values[j], "item") else ds[k].values[j])
             for k in ds.data_vars if k.startswith("event_")}
        if e["type"] not in types or int(e.get("located", 0)) != 1 or int(e["checkpoint"]) < 0:
            continue
        saved = torch.load(event_file(path_file, int(e["checkpoint"])), weights_only=True)
        e["x"], e["v"] = saved["x"], saved.get("null_vector")
        e["mu"] = torch.tensor([float(e[n]) for n in MU_NAMES], dtype=saved["x"].dtype)
        out.append(e)
    return out


def trace_events(system, events, free: str, o: dict, progress=None) -> list:
    """(event, CriticalCurve or None, why not) per event: an event whose Newton start fails is kept
    with the reason."""
    from continuation.singular.critical_curve import follow

    curves = []
    for e in events:
        mu = e["mu"]
        mode = int(e["mode"]) if int(e.get("mode", -1)) >= 0 else 0
        try:
            c = follow(system, e["x"], mu, free=free, along=o["along"], low=o["range"][0], high=o["range"][1],
                       step=o["step"], max_step=o["max_step"], min_step=o["min_step"], mode=mode,
                       multiplicity=int(e.get("multiplicity", 1)), kind="auto", gtol=o["gtol"], eig_tol=o["eig_tol"],
                       dense_below=o["dense_below"])
            why = None
        except ContinuationError as err:
            c, why = None, str(err).splitlines()[0]
        if progress is not None:
            progress(e, c, why)
        curves.append((e, c, why))
    return curves


def curves_dataset(curves, free: str, along: str, attrs: dict) -> xr.Dataset:
    """(curve, point) arrays, NaN-padded: the multipliers, R, D, C, F, the critical eigenvalue,
    |grad J|, |eps|, Newton's iterations and HVPs at each point; per curve its event and kind."""
    kept = [(e, c) for e, c, _ in curves if c is not None]
    n = max([len(c.points) for _, c in kept], default=0)
    k = len(kept)

    def grid(get):
        a = np.full((k, n), np.nan)
        for i, (_, c) in enumerate(kept):
            for j, p in enumerate(c.points):
                a[i, j] = get(p)
        return a

    units = {"eig": EIG_UNITS, "grad_norm": PER_PARAMETER, "eps_norm": PER_PARAMETER, "iterations": "1", "hvps": "1"}
    long = {"eig": "mean of the critical eigenvalue cluster of Hess J (zero on the curve)",
            "eps_norm": "norm of the unfolding parameter (zero at a critical point of J)",
            "grad_norm": "|grad_theta J| at the point", "iterations": "Newton iterations on the extended system",
            "hvps": "Hessian-vector products spent on the point"}
    data = {}
    for name in MU_NAMES:
        data[name] = grid(lambda p, i=mu_index(name): float(p.mu[i]))
    for name in ("R", "D", "C", "F"):
        data[name] = grid(lambda p, nm=name: p.functionals[nm])
    data["eig"] = grid(lambda p: p.ell)
    data["grad_norm"] = grid(lambda p: p.grad_norm)
    data["eps_norm"] = grid(lambda p: p.eps_norm)
    data["iterations"] = grid(lambda p: p.iterations)
    data["hvps"] = grid(lambda p: p.hvps)
    ds = xr.Dataset({name: (("curve", "point"), v, {"units": units[name], "long_name": long[name]} if name in units
                            else variable_attrs(name)) for name, v in data.items()})
    per = {
        "kind": ([1 if c.kind == "bifurcation" else 0 for _, c in kept],
                 {"flag_values": np.array([0, 1], dtype=np.int64), "flag_meanings": "fold bifurcation",
                  "long_name": "what the curve's points are"}),
        "multiplicity": ([c.multiplicity for _, c in kept], {"long_name": "eigenvalues crossing together"}),
        "mode": ([c.mode for _, c in kept], {"long_name": "index of the lowest critical eigenvalue (0: lowest)"}),
        "points": ([len(c.points) for _, c in kept], {"long_name": "points of the curve", "units": "1"}),
        "index_before": ([int(e["index_before"]) for e, _ in kept], {"long_name": "the event's Morse index before"}),
        "index_after": ([int(e["index_after"]) for e, _ in kept], {"long_name": "the event's Morse index after"}),
        "event_lambda": ([float(e["lambda"]) for e, _ in kept], {"units": "1", "long_name": "the event's lambda"}),
        "event_gamma": ([float(e["gamma"]) for e, _ in kept], {"units": "1", "long_name": "the event's gamma"}),
    }
    for name, (values, a) in per.items():
        ds[f"curve_{name}"] = ("curve", np.asarray(values, dtype=np.int64 if name not in ("event_lambda",
                                                                                       "event_gamma") else float), a)
    from continuation.files.schema import history_line, package_version

    ds.attrs.update(attrs)
    ds.attrs.update({"continuation_version": package_version(), "history": history_line(), "free": free,
                     "along": along,
                     "curve_ended": json.dumps([c.ended for _, c in kept]),
                     "skipped": json.dumps([f"{e['type']} at {free} = {e[free]:.10g}: {why}" for e, c, why in curves
                                            if c is None])})
    return ds


def region_points(ds: xr.Dataset, at: float, span: tuple) -> list:
    """Label points of the regions at along = at: between consecutive curves in `free` (the
    curves' values interpolated there), and beyond the outer ones to the edges of `span`."""
    free, along = ds.attrs["free"], ds.attrs["along"]
    xs = []
    for i in range(ds.sizes["curve"]):
        a, p = ds[along].values[i], ds[free].values[i]
        ok = np.isfinite(a) & np.isfinite(p)
        a, p = a[ok], p[ok]
        order = np.argsort(a)
        if len(a) and a.min() <= at <= a.max():
            xs.append(float(np.interp(at, a[order], p[order])))
    edges = [span[0]] + sorted(xs) + [span[1]]
    return [0.5 * (edges[k] + edges[k + 1]) for k in range(len(edges) - 1) if edges[k + 1] > edges[k]]


def measure_regions(system, path: xr.Dataset, ds: xr.Dataset, rows: int = 3, substeps: int = 10) -> list:
    """The Morse index of the run's start branch at each region's label point, measured: from the
    path's first point, natural continuation (fixed-mu Newton that stays on saddles) to each label
    point in turn (`branch_index`), then the lowest eigenvalues there. Returns dicts (lambda,
    gamma, t, index; index None where the branch was lost: a fold between)."""
    from continuation.singular.critical_curve import branch_index
    from continuation.files.path import load_point

    free, along = ds.attrs["free"], ds.attrs["along"]
    i_free, i_along = mu_index(free), mu_index(along)
    saved = load_point(ds.attrs["path"], 0)
    x0, mu0 = saved["x"], saved["mu"].clone()
    fvals = ds[free].values[np.isfinite(ds[free].values)]
    avals = ds[along].values[np.isfinite(ds[along].values)]
    span = (min(float(fvals.min()), float(path[free].values.min())), max(float(fvals.max()),
                                                                         float(path[free].values.max())))
    out = []
    for at in np.linspace(float(avals.min()), float(avals.max()), rows + 2)[1:-1]:
        x, mu = x0, mu0
        for p in region_points(ds, float(at), span):
            mu1 = mu.clone()
            mu1[i_free], mu1[i_along] = p, at
            if i_free != 2 and not p > 0:
                continue
            got, index, at_least = branch_index(system, x, mu, mu1, substeps=substeps, modes=min(x.numel(), 32))
            out.append({"free": p, "along": float(at), "index": index, "at_least": at_least})
            if got is not None:
                x, mu = got, mu1
    return out


def plot_phase_diagram(ds: xr.Dataset, out, path=None, regions=None) -> Path:
    """The (lambda, gamma) plane: each critical curve, its event marked, the regions' Morse index."""
    from matplotlib.figure import Figure

    from continuation.apps.plot import save_figure

    free, along = ds.attrs["free"], ds.attrs["along"]
    fig = Figure(figsize=(10.5, 5.5))
    ax = fig.subplots()
    xname, yname = ("lambda", "gamma") if {free, along} == {"lambda", "gamma"} else (free, along)
    for i in range(ds.sizes["curve"]):
        kind = "bifurcation" if int(ds.curve_kind.values[i]) == 1 else "fold"
        m = int(ds.curve_multiplicity.values[i])
        label = (f"{kind} curve {i}: Morse index {int(ds.curve_index_before.values[i])} -> "
                 f"{int(ds.curve_index_after.values[i])}" + (f" (multiplicity {m})" if m > 1 else ""))
        line, = ax.plot(ds[xname].values[i], ds[yname].values[i], "-", lw=1.5, label=label)
        ax.plot([ds.curve_event_lambda.values[i] if xname == "lambda" else np.nan],
                [ds.curve_event_gamma.values[i] if yname == "gamma" else np.nan], "o", color=line.get_color(),
                ms=6, mfc="none")
    if path is not None:
        ax.plot(path[xname].values, path[yname].values, ":", color="0.4", lw=1, label="the run's path")
        ax.plot(path[xname].values[:1], path[yname].values[:1], ">", color="0.4", ms=6, label="its start")
    for r in regions or []:  # the regions' Morse index, measured at these points (measure_regions)
        xy = (r["free"], r["along"]) if xname == free else (r["along"], r["free"])
        text = "-" if r["index"] is None else (">=" if r["at_least"] else "") + str(r["index"])
        ax.text(*xy, text, ha="center", va="center", fontsize=9, color="0.25",
                bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="0.7", lw=0.5))
    ax.set_xlabel(f"{xname} (dimensionless multiplier)")
    ax.set_ylabel(f"{yname} (dimensionless multiplier)")
    ax.set_title(f"phase diagram of {ds.attrs.get('problem', '')}: critical curves in ({xname}, {yname});\n"
                 f"boxed: the Morse index of the run's start branch there (-: that branch does not reach it)",
                 fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the plane, not over a curve
    return save_figure(fig, [ax], out)


def run_phase_diagram(config: dict, out, *, path=None, progress: bool = True) -> xr.Dataset:
    """Run the configuration's path (or read `path`), follow each located event, write OUT (netCDF)
    and OUT with .png. Returns the curves' dataset."""
    from continuation.apps.run import run_config
    from continuation.files.path import load_path
    from continuation.surface.system import EquilibriumSystem

    o = phase_options(config)
    run_cfg, r, _ = monitored_run(config, "phase_diagram", "the folds and bifurcations the curves start from")
    free = free_multiplier(r["process"])
    if free == o["along"]:
        raise ConfigError(f"[phase_diagram] along = {o['along']!r} is the multiplier the process moves; choose "
                          f"the other one")
    start_along = float(r["start"][o["along"]])
    if not o["range"][0] <= start_along <= o["range"][1]:
        raise ConfigError(f"[phase_diagram] range {o['range']} must contain the start's {o['along']} = "
                          f"{start_along:g}")
    out = Path(out)
    if path is None:
        path = out.with_suffix(".path.nc")
        if path.exists():
            raise ConfigError(f"{path} exists (the run's path); pass it with --path to reuse it, or remove it")
        run_config(run_cfg, path, progress=None if progress else False)
    events = located_events(path)
    size = sum(v.numel() for v in r["problem"].init_params(r["start"]["seed"]).values())
    for e in events:
        if e["x"].numel() != size:
            raise ConfigError(f"--path {path}: its points have {e['x'].numel()} parameters, the configuration's "
                              f"problem {size}: a path of another problem or size")
    if not events:
        raise ContinuationError(f"phase-diagram: the path {path} has no located fold or bifurcation to follow "
                                f"(is [monitor] on, and does the path cross one?)")
    problem = r["problem"]
    system = EquilibriumSystem(problem, problem.init_params(r["start"]["seed"]), r["hvp_mode"])

    def say(e, c, why):
        if not progress:
            return
        where = f"{e['type']} at {free} = {e[free]:.10g}, {o['along']} = {e[o['along']]:.6g}"
        if c is None:
            print(f"  {where}: not followed ({why})")
        else:
            print(f"  {where}: {len(c.points)} points, {o['along']} {c.column(o['along']).min():.6g} .. "
                  f"{c.column(o['along']).max():.6g} (low end: {c.ended['low']}; high end: {c.ended['high']})")

    curves = trace_events(system, events, free, o, say)
    ds = curves_dataset(curves, free, o["along"], {"problem": problem.name, "path": str(path),
                                                   "Conventions": "continuation-phase-diagram-1"})
    if not ds.sizes.get("curve", 0):
        raise ContinuationError(f"phase-diagram: no event of {path} could be followed: "
                                f"{'; '.join(json.loads(ds.attrs['skipped']))}")
    run_path = load_path(path)
    regions = measure_regions(system, run_path, ds)
    ds["region_" + free] = ("region", np.array([r["free"] for r in regions], dtype=float), {"units": "1"})
    ds["region_" + o["along"]] = ("region", np.array([r["along"] for r in regions], dtype=float), {"units": "1"})
    ds["region_index"] = ("region", np.array([-1 if r["index"] is None else r["index"] for r in regions],
                                             dtype=np.int64),
                          {"long_name": "Morse index of the run's start branch at the point (-1: branch not reached)"})
    ds["region_index_at_least"] = ("region", np.array([int(r["at_least"]) for r in regions], dtype=np.int64),
                                   {"long_name": "1: every computed eigenvalue negative, the index is at least "
                                                 "region_index"})
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(out)
    plot_phase_diagram(ds, out.with_suffix(".png"), run_path, regions)
    return ds
