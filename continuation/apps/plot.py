"""Figures of paths: the rate-distortion curve, the multipliers, C and its drift, and
validation metrics (or F) along s. Several paths overlay, one colour each; a sweep's family
(continuation/apps/sweep.py) overlays with each member coloured by its swept value.

Figures are made with matplotlib's object API (`Figure`), so importing this module does not
choose a backend for the process (a notebook keeps its own)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from continuation.files.path import load_path


def plot_paths(paths, out, labels=None):
    datasets = [load_path(p) for p in paths]
    labels = labels or [Path(p).stem for p in paths]
    monitored = any("eig" in ds for ds in datasets)
    fig = Figure(figsize=(10, 10.5 if monitored else 7.5))  # no pyplot: the caller's backend is left alone
    ax = fig.subplots(3 if monitored else 2, 2)
    for ds, label in zip(datasets, labels):
        a = ds.attrs
        how = "/".join(a[k] for k in ("predictor", "corrector", "projection", "step_control") if k in a)
        several = len(datasets) > 1 and how
        _draw_path(ax, ds, label, monitored, rd_label=f"{label} ({how})" if several else label)
    _decorate(ax, datasets, monitored)
    if len(datasets) > 1:  # labels carry predictor/corrector/projection/steps; R falls as D grows: upper right is free
        ax[0, 0].legend(fontsize=7, loc="upper right", title="path (predictor/corrector/projection/steps)",
                        title_fontsize=7)
    if monitored:
        ax[2, 0].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    first = datasets[0].attrs
    if len(datasets) > 1:
        fig.suptitle(f"{first.get('process', '')} on {first.get('problem', '')}")
    else:
        how = ", ".join(f"{first[k]} {k.replace('_', ' ')}" for k in ("predictor", "corrector", "projection",
                                                                        "step_control") if k in first)
        fig.suptitle(f"{first.get('process', '')} on {first.get('problem', '')}: {first.get('status', '')}, "
                     f"{first.get('stop_reason', '')}\n{how}", fontsize=10)
    return save_figure(fig, ax.flat, out)


def _draw_path(ax, ds, label, monitored, *, rd_label=None, color=None, marker=None, gid=None) -> str:
    """One path on the panels (plot_paths' layout); returns its colour. `marker` (a sweep's second
    axis) marks the solid lines; `gid` tags the rate-distortion line (tests find members by it)."""
    s = ds["s"].values
    r, d = ("train_R", "train_D") if "train_R" in ds else ("R", "D")  # fixed-noise values when stochastic
    mark = {} if marker is None else {"marker": marker, "ms": 4, "markevery": max(1, len(s) // 8)}
    line = ax[0, 0].plot(ds[d].values, ds[r].values, "-", marker=marker or "o", ms=3 if marker is None else 4,
                         color=color, label=label if rd_label is None else rd_label, gid=gid)[0]
    c = line.get_color()
    ax[0, 1].plot(s, ds["lambda"].values, "-", color=c, label=f"{label}: lambda", **mark)
    ax[0, 1].plot(s, ds["gamma"].values, "--", color=c, label=f"{label}: gamma")
    if "train_C" in ds:  # stochastic problems: C on one fixed noise draw over the whole training set
        ax[1, 0].plot(s, ds["train_C"].values, "-", color=c, label=f"{label}: train C (fixed noise)", **mark)
        ax[1, 0].plot(s, ds["C"].values, ":", color=c, alpha=0.6, label=f"{label}: C on the step's batch")
    else:
        ax[1, 0].plot(s, ds["C"].values, "-", color=c, label=label, **mark)
    if "val_loss" in ds:
        ax[1, 1].plot(s, ds["val_loss"].values, "-", color=c, label=f"{label}: val loss", **mark)
        if "val_acc" in ds:
            ax[1, 1].plot(s, ds["val_acc"].values, ":", color=c, label=f"{label}: val acc")
    else:
        ax[1, 1].semilogy(s, np.maximum(np.abs(ds["C_drift"].values), 1e-17), "-", color=c, label=label, **mark)
    if monitored and "eig" in ds:
        _stability(ax, ds, s, c, label)
    return c


def _decorate(ax, datasets, monitored) -> None:
    """Axis labels, titles and scales of plot_paths' panels, for the paths drawn."""
    ax[0, 0].set(xlabel="distortion D", ylabel="rate R", title="rate-distortion curve")
    ax[0, 1].set(xlabel="s", title="multipliers (solid lambda, dashed gamma)")
    ax[1, 0].set(xlabel="s", ylabel="C", title="classification loss")
    # a band of +-2% around the start, so rounding noise does not look like drift
    key = lambda ds: "train_C" if "train_C" in ds else "C"  # noqa: E731
    c0 = [float(ds[key(ds)][0]) for ds in datasets]
    spread = max(max(0.02 * abs(c) for c in c0), 1e-12)  # C identically 0 (an energy without gamma)
    lo = min(min(float(ds[key(ds)].min()) for ds in datasets), min(c0) - spread)
    hi = max(max(float(ds[key(ds)].max()) for ds in datasets), max(c0) + spread)
    ax[1, 0].set_ylim(lo, hi)
    if any("val_loss" in ds for ds in datasets):
        ax[1, 1].set(xlabel="s", title="validation")
    else:
        ax[1, 1].set(xlabel="s", ylabel="|C - C0| / |C0|", title="C drift (floored at 1e-17)")
    if monitored:
        ax[2, 0].set(xlabel="s", ylabel="eigenvalue", title="lowest non-gauge eigenvalues of A (symlog)")
        scale = max((float(np.nanmax(np.abs(ds["eig"].values))) for ds in datasets if "eig" in ds
                     and np.isfinite(ds["eig"].values).any()), default=1.0)
        ax[2, 0].set_yscale("symlog", linthresh=max(1e-3 * scale, 1e-12))  # linear within 1e-3 of the largest
        ax[2, 1].yaxis.set_major_locator(MaxNLocator(integer=True))
        ax[2, 0].axhline(0.0, color="k", lw=0.6)
        ax[2, 1].set(xlabel="s", ylabel="Morse index", title="Morse index (-1: not monitored)")


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")


@dataclass
class SweepFigure:
    """What plot_sweep drew: the file, the figure, and per member (its index along run) the
    colour (RGBA) and marker it was drawn with; `skipped`: index -> why, for members not drawn."""

    path: Path
    figure: Figure
    colors: dict = field(default_factory=dict)
    markers: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)
    color_axis: str | None = None
    marker_axis: str | None = None


def _short(value) -> str:
    """An axis value for a legend: a number as %g, a table by its name (else its JSON)."""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return f"{value:g}"
    text = str(value)
    try:
        parsed = json.loads(text)
    except ValueError:
        return text
    if isinstance(parsed, dict) and "name" in parsed:
        rest = ", ".join(f"{k}={v}" for k, v in parsed.items() if k != "name")
        return f"{parsed['name']} ({rest})" if rest else str(parsed["name"])
    return text


def _numeric(values) -> bool:
    return np.asarray(values).dtype.kind in "iuf"


def is_sweep(path) -> bool:
    """`path` is a sweep: a folder holding sweep.nc, or a netCDF file with a 'run' dimension (a
    sweep.nc). A folder without sweep.nc is one line (not a sweep, or one not combined yet)."""
    from continuation.files.config import ConfigError
    from continuation.apps.sweep import PLAN_FILE, SWEEP_FILE

    path = Path(path)
    if path.is_dir():
        if (path / SWEEP_FILE).exists():
            return True
        if (path / PLAN_FILE).exists():
            raise ConfigError(f"plot {path}: the sweep there has no {SWEEP_FILE} yet (unfinished or interrupted); "
                              f"re-run its `continuation sweep CONFIG --out {path}` to finish and combine it")
        raise ConfigError(f"plot {path} is a folder but not a sweep folder (no {SWEEP_FILE}); give path files, "
                          f"or run `continuation sweep CONFIG --out {path}` first")
    if not path.exists():
        return False  # _path_file says so
    try:
        import netCDF4

        with netCDF4.Dataset(path, "r") as nc:
            return "run" in nc.dimensions
    except OSError:
        return False  # not readable: _path_file says how


def plot_sweep(sweep, out) -> SweepFigure:
    """A sweep's family on plot_paths' panels: each member coloured by its swept value.

    `sweep`: a sweep folder, its sweep.nc, or the combined dataset (continuation.apps.sweep.load_sweep).
    Colour: the first numeric axis on viridis, with a colour bar labelled by its key (else the
    first axis on a categorical palette, with a legend). Marker: the next axis, with a legend.
    Further axes are named in the title. Members without a point (failed at the start) are
    skipped and named in the title. Returns a SweepFigure (the figure stays open for inspection).
    Raises PathFileError (one line) when no member has a point."""
    import matplotlib as mpl
    from matplotlib.lines import Line2D

    from continuation.errors import PathFileError
    from continuation.apps.sweep import load_sweep, member_path

    ds = sweep if hasattr(sweep, "dims") else load_sweep(sweep)
    where = ds.encoding.get("source", "the sweep") if hasattr(sweep, "dims") else str(sweep)
    axes_keys = json.loads(ds.attrs.get("sweep_axes", "[]")) or \
        [k for k in ds.coords if ds[k].dims == ("run",) and k != "run"]
    n = ds.sizes["run"]
    lengths = ds["length"].values
    files = [str(f) for f in ds["file"].values]
    status = [str(s) for s in ds["status"].values]
    reasons = [str(r) for r in ds["stop_reason"].values]
    values = {k: ds[k].values for k in axes_keys}
    label_of = lambda i: ", ".join(f"{k}={_short(values[k][i])}" for k in axes_keys) or files[i]  # noqa: E731
    skipped = {i: f"{files[i]} ({label_of(i)}): {status[i]}" + (f": {reasons[i]}" if reasons[i] else "")
               for i in range(n) if lengths[i] <= 0}
    drawn = [i for i in range(n) if lengths[i] > 0]
    if not drawn:
        first = next(iter(skipped.values()), "")
        raise PathFileError(f"{where}: no member of the sweep has a point to plot ({n} without; {first})")

    numeric = [k for k in axes_keys if _numeric(values[k])]
    color_axis = numeric[0] if numeric else (axes_keys[0] if axes_keys else None)
    rest = [k for k in axes_keys if k != color_axis]
    marker_axis = rest[0] if rest else None
    colors, markers = {}, {}
    handles = []
    if color_axis is not None and color_axis in numeric:
        v = values[color_axis].astype(float)
        cmap = mpl.colormaps["viridis"]
        norm = mpl.colors.Normalize(vmin=float(np.min(v)), vmax=float(np.max(v)))
        if norm.vmin == norm.vmax:
            norm = mpl.colors.Normalize(vmin=norm.vmin - 0.5, vmax=norm.vmax + 0.5)  # one value: the middle
        colors = {i: tuple(float(x) for x in cmap(norm(v[i]))) for i in range(n)}
        scalar = mpl.cm.ScalarMappable(norm=norm, cmap=cmap)
    else:
        scalar = None
        palette = mpl.colormaps["tab10" if n <= 10 else "tab20"].colors
        levels = list(dict.fromkeys(_short(x) for x in values[color_axis])) if color_axis else [None]
        for i in range(n):
            key = _short(values[color_axis][i]) if color_axis else None
            colors[i] = tuple(float(x) for x in palette[levels.index(key) % len(palette)]) + (1.0,)
        if color_axis is not None:
            handles += [Line2D([], [], color=palette[j % len(palette)], lw=2, label=f"{color_axis} = {lv}")
                        for j, lv in enumerate(levels)]
    if marker_axis is not None:
        levels = list(dict.fromkeys(_short(x) for x in values[marker_axis]))
        for i in range(n):
            markers[i] = MARKERS[levels.index(_short(values[marker_axis][i])) % len(MARKERS)]
        handles += [Line2D([], [], color="0.3", ls="", marker=MARKERS[j % len(MARKERS)], label=f"{marker_axis} = {lv}")
                    for j, lv in enumerate(levels)]

    datasets = {i: member_path(ds, i) for i in drawn}
    monitored = "eig" in ds and any(np.isfinite(datasets[i]["eig"].values).any() for i in drawn)
    fig = Figure(figsize=(11.5, 10.5 if monitored else 7.5), layout="constrained")
    ax = fig.subplots(3 if monitored else 2, 2)
    for i in drawn:
        _draw_path(ax, datasets[i], label_of(i), monitored, color=colors[i], marker=markers.get(i), gid=f"run{i}")
    _decorate(ax, list(datasets.values()), monitored)
    if any("train_C" in d for d in datasets.values()):
        ax[1, 0].set_title("classification loss (solid: train C, fixed noise; dotted: the step's batch)")
    if any("val_acc" in d for d in datasets.values()):
        ax[1, 1].set_title("validation (solid: loss, dotted: accuracy)")
    if scalar is not None:
        fig.colorbar(scalar, ax=ax, label=color_axis, shrink=0.6, aspect=30)
    if handles:
        ax[0, 0].legend(handles=handles, fontsize=7, loc="upper right", title_fontsize=7, title="sweep")
    a = ds.attrs
    title = f"{a.get('process', 'paths')} on {a.get('problem', '')}: {n} members over " \
            f"{', '.join(axes_keys) or 'nothing'} ({a.get('sweep_mode', 'product')})"
    more = rest[1:]
    if more:
        title += f"; also swept (not drawn by colour or marker): {', '.join(more)}"
    failed_after = [f"{files[i]} ({label_of(i)})" for i in drawn if status[i] == "failed"]
    if failed_after:
        title += f"\nfailed after some points (drawn): {'; '.join(failed_after)}"
    if skipped:
        title += f"\nskipped, no points: {'; '.join(skipped.values())}"
    fig.suptitle(title, fontsize=9)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return SweepFigure(out, fig, colors={i: colors[i] for i in drawn}, markers={i: markers[i] for i in drawn
                                                                               if i in markers},
                       skipped=skipped, color_axis=color_axis, marker_axis=marker_axis)
EVENT_MARKERS = {"bifurcation": "X", "fold": "D", "jump": "v", "branch_switch": ">", "crossing": "*"}


def _stability(ax, ds, s, c, label) -> None:
    """The eigenvalue trace and Morse index along s; events as vertical lines and markers."""
    eig = ds["eig"].values
    seen = np.isfinite(eig[:, 0]) if eig.shape[1] else np.zeros(len(s), bool)  # monitored points (every > 1)
    for j in range(eig.shape[1]):
        ax[2, 0].plot(s[seen], eig[seen, j], "-" if j == 0 else ":", color=c, label=f"{label}: eigenvalue {j}" if j < 2 else None)
    ax[2, 1].step(s[seen], ds["morse_index"].values[seen], where="post", color=c, label=label)
    r, d = ("train_R", "train_D") if "train_R" in ds else ("R", "D")
    for j in range(ds.sizes.get("event", 0)):
        kind, es = str(ds["event_type"].values[j]), float(ds["event_s"].values[j])
        for a in (ax[0, 1], ax[2, 0], ax[2, 1]):
            a.axvline(es, color=c, lw=0.8, ls="--", alpha=0.6)
        e = float(ds["event_eig"].values[j])
        ax[2, 0].plot([es], [e if np.isfinite(e) else 0.0], EVENT_MARKERS.get(kind, "o"), color=c, ms=7,
                      label=f"{kind} at lambda {float(ds['event_lambda'].values[j]):.6g}")
        if r == "R" and kind != "branch_switch":
            ax[0, 0].plot([float(ds["event_D"].values[j])], [float(ds["event_R"].values[j])],
                          EVENT_MARKERS.get(kind, "o"), color=c, ms=7)


def save_figure(fig, axes, out) -> Path:
    """Legends on `axes`, a tight layout, the PNG written to `out` (its folder made), the figure closed."""
    for a in axes:
        if a.get_legend() is None:
            a.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    if fig.canvas.manager is not None:  # a pyplot figure (the validation scripts'): release it
        import matplotlib.pyplot as plt

        plt.close(fig)
    return out
