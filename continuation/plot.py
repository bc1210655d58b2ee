"""Figures of paths: the rate-distortion curve, the multipliers, C and its drift, and
validation metrics (or F) along s. Several paths overlay, one colour each.

Figures are made with matplotlib's object API (`Figure`), so importing this module does not
choose a backend for the process (a notebook keeps its own)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .path import load_path


def plot_paths(paths, out, labels=None):
    datasets = [load_path(p) for p in paths]
    labels = labels or [Path(p).stem for p in paths]
    monitored = any("eig" in ds for ds in datasets)
    fig = Figure(figsize=(10, 10.5 if monitored else 7.5))  # no pyplot: the caller's backend is left alone
    ax = fig.subplots(3 if monitored else 2, 2)
    for ds, label in zip(datasets, labels):
        s = ds["s"].values
        r, d = ("train_R", "train_D") if "train_R" in ds else ("R", "D")  # fixed-noise values when stochastic
        a = ds.attrs
        how = "/".join(a[k] for k in ("predictor", "corrector", "projection", "step_control") if k in a)
        several = len(datasets) > 1 and how
        line = ax[0, 0].plot(ds[d].values, ds[r].values, "o-", ms=3, label=f"{label} ({how})" if several else label)[0]
        c = line.get_color()
        ax[0, 1].plot(s, ds["lambda"].values, "-", color=c, label=f"{label}: lambda")
        ax[0, 1].plot(s, ds["gamma"].values, "--", color=c, label=f"{label}: gamma")
        if "train_C" in ds:  # stochastic problems: C on one fixed noise draw over the whole training set
            ax[1, 0].plot(s, ds["train_C"].values, "-", color=c, label=f"{label}: train C (fixed noise)")
            ax[1, 0].plot(s, ds["C"].values, ":", color=c, alpha=0.6, label=f"{label}: C on the step's batch")
        else:
            ax[1, 0].plot(s, ds["C"].values, "-", color=c, label=label)
        if "val_loss" in ds:
            ax[1, 1].plot(s, ds["val_loss"].values, "-", color=c, label=f"{label}: val loss")
            if "val_acc" in ds:
                ax[1, 1].plot(s, ds["val_acc"].values, ":", color=c, label=f"{label}: val acc")
        else:
            ax[1, 1].semilogy(s, np.maximum(np.abs(ds["C_drift"].values), 1e-17), "-", color=c, label=label)
        if monitored and "eig" in ds:
            _stability(ax, ds, s, c, label)
    ax[0, 0].set(xlabel="distortion D", ylabel="rate R", title="rate-distortion curve")
    if len(datasets) > 1:  # labels carry predictor/corrector/projection/steps; R falls as D grows: upper right is free
        ax[0, 0].legend(fontsize=7, loc="upper right", title="path (predictor/corrector/projection/steps)",
                        title_fontsize=7)
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
        ax[2, 0].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax[2, 1].yaxis.set_major_locator(MaxNLocator(integer=True))
        ax[2, 0].axhline(0.0, color="k", lw=0.6)
        ax[2, 1].set(xlabel="s", ylabel="Morse index", title="Morse index (-1: not monitored)")
    first = datasets[0].attrs
    if len(datasets) > 1:
        fig.suptitle(f"{first.get('process', '')} on {first.get('problem', '')}")
    else:
        how = ", ".join(f"{first[k]} {k.replace('_', ' ')}" for k in ("predictor", "corrector", "projection",
                                                                        "step_control") if k in first)
        fig.suptitle(f"{first.get('process', '')} on {first.get('problem', '')}: {first.get('status', '')}, "
                     f"{first.get('stop_reason', '')}\n{how}", fontsize=10)
    return save_figure(fig, ax.flat, out)


EVENT_MARKERS = {"bifurcation": "X", "fold": "D", "branch_switch": ">", "crossing": "*"}


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
