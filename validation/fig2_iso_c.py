"""Paper Fig. 2: iso-classification runs of the paper's MLP from lambda0 = 0.25 and several gamma0.

The runs are a sweep (continuation/apps/sweep.py); this script plots and tabulates its folder:

    python -m continuation sweep validation/configs/fig2_fashion_mnist.toml --out out/fig2   # CPU size
    python validation/fig2_iso_c.py out/fig2                         # fig2.png and the table

    python -m continuation sweep validation/configs/fig2_compare_fd.toml --out out/fig2_fd
    python validation/fig2_iso_c.py out/fig2 --compare-fd out/fig2_fd   # + the two laws alone

    python validation/fig2_iso_c.py out/fig2 --run validation/configs/fig2_fashion_mnist.toml  # both steps

Configurations (validation/configs/): fig2_fashion_mnist.toml (CPU size), fig2_mnist_full.toml
(the paper's size, for one GPU; set its problem.data_dir), fig2_digits.toml (seconds, the bundled
digits: a check of the pipeline), fig2_compare_fd.toml (the two laws alone from gamma0 = 4).

Each run: Adam from scratch at (0.25, gamma0) (minibatches of 500, a new batch and noise every
update, cosine schedule), `settle` runs of the corrector at the start, then the exact iso-C law
(tangents by MINRES on the minibatch Hessian) with the paper's procedure for the rest: mu moves
by the law, theta is re-equilibrated by Adam on the paper's schedule (T updates, peak 1.5e-3).
s is lambda - lambda0 (clock = "lambda"). Training R, D, C are measured on the whole training
set with one fixed noise draw, so that they change only when theta does.

Training C is held to 0.5% by the secant projection: T Adam updates move C about 5 times less
than the equilibrium tangents predict (on Fashion-MNIST at (0.55, 3.3): dC/dgamma -0.027 from
re-equilibrated runs against -0.12 to -0.18 from the tangents), so the law alone lets C drift
(--compare-fd shows by how much, for the exact law and the paper's finite-difference law);
the secant re-runs the corrector from the same prediction at corrected gamma until C is back.

CPU size: 10,000 training images, 15,000 training updates, T = 600, lambda 0.25 -> 1 in steps
of 0.075 (a factor of 4). Full size: the whole training set (48,000 after the validation split),
120 epochs, T = 5 epochs, lambda -> 3.5 in steps of 0.25 (the paper's range; for one GPU).

Writes DIR/fig2.png (rate-distortion curve, multipliers, training C, validation loss and
accuracy) and prints the table the issue asks for: per member the largest relative change of
training C, lambda_end / lambda0, the range of validation accuracy, whether R rose and D fell,
and minutes (the path's `seconds`: the start's settling and every step; pre-training is not
recorded). Exit status 1 when a member misses the targets (2% on C, 1 point on accuracy, R up,
D down, factor 4 in lambda) or has no point (the --compare-fd members are exempt); 2 when a
folder is not a sweep.

`base_config` is the gamma0 = 4 run of fig2_fashion_mnist.toml (or fig2_mnist_full.toml) on
another data set or device: validation/fig4_free_energy.py's setup.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from continuation.apps.plot import save_figure  # noqa: E402
from continuation.apps.sweep import load_sweep, member_path  # noqa: E402

CONFIGS = Path(__file__).parent / "configs"
HVP_COST = 1.5  # one minibatch HVP in minibatch gradients (benchmarks/hvp_cost.py: 1.05-1.53, rev-rev)


def base_config(dataset: str, data_dir: str, device: str, full: bool) -> dict:
    """The Fig. 2 run at (0.25, 4): configs/fig2_mnist_full.toml (full) or fig2_fashion_mnist.toml
    without its [sweep], on `dataset` and `device`, and `data_dir` when given."""
    cfg = tomllib.loads((CONFIGS / ("fig2_mnist_full.toml" if full else "fig2_fashion_mnist.toml")).read_text())
    del cfg["sweep"]
    cfg["problem"].update(dataset=dataset, device=device)
    if data_dir:
        cfg["problem"]["data_dir"] = data_dir
    return cfg


def summary(ds) -> dict:
    """The table's numbers of one path (a member_path of the sweep's dataset)."""
    c = ds["train_C"].values
    acc = ds["val_acc"].values
    R, D = ds["train_R"].values, ds["train_D"].values
    points = max(1, ds.sizes["step"] - 1)
    grads = ds["gradients"].values[1:].sum() / points  # Adam's, FD re-equilibrations included
    hvps = ds["hvps"].values[1:].sum() / points
    return {"points": ds.sizes["step"], "lambda_ratio": float(ds["lambda"][-1] / ds["lambda"][0]),
            "gamma": (float(ds["gamma"][0]), float(ds["gamma"][-1])), "C0": float(c[0]),
            "max_C_change": float(np.max(np.abs(c - c[0])) / c[0]),
            "acc_range": float((acc.max() - acc.min()) * 100), "acc": (float(acc.min()), float(acc.max())),
            "R": (float(R[0]), float(R[-1])), "D": (float(D[0]), float(D[-1])),
            "R_up": bool(R[-1] > R[0]), "D_down": bool(D[-1] < D[0]),
            "grads_per_point": float(grads), "hvps_per_point": float(hvps),
            "work_per_point": float(grads + HVP_COST * hvps),
            "seconds_per_point": float(ds["seconds"].values[1:].mean()) if ds.sizes["step"] > 1 else float("nan"),
            "minutes": float(ds["seconds"].values.sum()) / 60}


def meets(s: dict) -> bool:
    return (s["max_C_change"] <= 0.02 and s["acc_range"] <= 1.0 and s["R_up"] and s["D_down"]
            and s["lambda_ratio"] >= 4.0 - 1e-9)


def label(config: dict) -> str:
    """A member's name from its configuration: gamma0, and the law when it is not the secant-held exact one."""
    name = f"gamma0={float(config.get('start', {}).get('gamma', 1.0)):g}"
    process = config.get("process", {}).get("name", "iso-classification")
    projection = config.get("projection", {}).get("name", "none")
    if process.endswith("-fd"):
        return f"{name} FD law"
    return name if projection != "none" else f"{name} exact, plain"


def members(folder) -> dict:
    """label -> (path dataset, or None for a member without a point; status; stop_reason) of a sweep folder."""
    ds = load_sweep(folder)
    out = {}
    for i in range(ds.sizes["run"]):
        name = label(json.loads(str(ds["config"].values[i])))
        if name in out:  # swept over something else too (a seed): the file tells them apart
            name = f"{name} {ds['file'].values[i]}"
        path = member_path(ds, i) if int(ds["length"].values[i]) > 0 else None
        out[name] = (path, str(ds["status"].values[i]), str(ds["stop_reason"].values[i]))
    return out


def plot(paths: dict, out: Path) -> Path:
    """Fig. 2's panels for label -> path dataset."""
    fig, ax = plt.subplots(1, 4, figsize=(17, 4))
    acc_ax = ax[3].twinx()
    for name, ds in paths.items():
        c = ax[0].plot(ds["train_D"].values, ds["train_R"].values, "o-", ms=3, label=name)[0].get_color()
        ax[1].plot(ds["lambda"].values, ds["gamma"].values, "o-", ms=3, color=c, label=name)
        ax[2].plot(ds["lambda"].values, 100 * (ds["train_C"].values / ds["train_C"].values[0] - 1), "o-", ms=3,
                   color=c, label=name)
        ax[3].plot(ds["lambda"].values, ds["val_loss"].values, "-", color=c, label=f"{name} loss")
        acc_ax.plot(ds["lambda"].values, 100 * ds["val_acc"].values, ":", color=c)
    ax[0].set(xlabel="training distortion D", ylabel="training rate R", title="(a) rate-distortion")
    ax[1].set(xlabel="lambda", ylabel="gamma", title="(b) multipliers")
    ax[2].axhspan(-2, 2, color="0.9", zorder=0)
    ax[2].set(xlabel="lambda", ylabel="% change", title="training C (band: +-2%)")
    ax[3].set(xlabel="lambda", ylabel="validation loss (solid)", title="(c) validation loss and accuracy")
    acc_ax.set(ylabel="validation accuracy % (dotted)")
    return save_figure(fig, ax, out)


def print_table(results: dict, exempt=()) -> bool:
    """The issue's table (label -> summary, or None for a member without a point); True when
    every member not in `exempt` meets the targets."""
    print(f"\n{'run':<22} {'pts':>3} {'lam x':>5} {'gamma0->end':>13} {'C0':>7} {'max|dC|/C0':>10} "
          f"{'val acc %':>13} {'R0->end':>13} {'D0->end':>15} {'ok':>3} {'min':>5}")
    ok = True
    for name, s in results.items():
        if s is None:
            ok &= name in exempt
            print(f"{name:<22}   0 no point: the member failed (see above)")
            continue
        good = meets(s)
        ok &= good or name in exempt
        print(f"{name:<22} {s['points']:>3d} {s['lambda_ratio']:>5.2f} {s['gamma'][0]:>5.2f}->{s['gamma'][1]:<6.3f} "
              f"{s['C0']:>7.4f} {100 * s['max_C_change']:>9.2f}% {100 * s['acc'][0]:>5.1f}-{100 * s['acc'][1]:<6.1f} "
              f"{s['R'][0]:>5.2f}->{s['R'][1]:<6.2f} {s['D'][0]:>6.2f}->{s['D'][1]:<7.2f} {'yes' if good else 'NO':>3} "
              f"{s['minutes']:>5.1f}")
    return ok


def report(runs: dict, extra: dict, out: Path) -> int:
    """Plot (to `out`) and tabulate the members of a sweep folder and of the --compare-fd folder
    (`members`' dicts): the exit status."""
    everything = {**runs, **extra}
    for name, (_, status, why) in everything.items():
        if status != "finished":
            print(f"  {name}: {status}" + (f": {why}" if why else ""))
    results = {name: summary(ds) if ds is not None else None for name, (ds, _, _) in everything.items()}
    ok = print_table(results, exempt=list(extra))
    if extra:
        print(f"\nlaw comparison, per accepted point (gradient equivalents: minibatch gradients + {HVP_COST} x HVPs):")
        gammas = {n.split(" ")[0] for n in extra}
        for name in [n for n in runs if n in gammas] + list(extra):
            s = results[name]
            if s is not None:
                print(f"  {name:<22} max|dC|/C0 {100 * s['max_C_change']:6.2f}%  gradients {s['grads_per_point']:7.0f}  "
                      f"HVPs {s['hvps_per_point']:5.0f}  gradient equivalents {s['work_per_point']:7.0f}  "
                      f"s/point {s['seconds_per_point']:6.1f}")
    drawn = {name: ds for name, (ds, _, _) in everything.items() if ds is not None}
    if drawn:
        print(f"wrote {plot(drawn, out)}")
    return 0 if ok else 1


def main(argv=None, figure: str = "fig2.png", doc: str = __doc__, compare: bool = True):
    """Fig. 2's command line; Fig. 3's too (its figure name and docstring, no --compare-fd)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="the sweep folder (python -m continuation sweep CONFIG --out DIR)")
    if compare:
        parser.add_argument("--compare-fd", type=Path, default=None, metavar="DIR",
                            help="the sweep folder of fig2_compare_fd.toml: the two laws alone, tabulated, plotted "
                                 "and compared with the folder's member of the same gamma0 (exempt from the targets)")
    parser.add_argument("--run", type=Path, default=None, metavar="CONFIG",
                        help="run (or finish) the sweep CONFIG into the folder first")
    parser.add_argument("--workers", type=int, default=None, help="with --run: worker processes (default: the cores)")
    args = parser.parse_args(argv)
    try:
        if args.run is not None:
            from continuation.files.config import load_config
            from continuation.apps.sweep import run_sweep

            run_sweep(load_config(args.run), args.folder, workers=args.workers)
        runs = members(args.folder)
        compare_fd = getattr(args, "compare_fd", None)
        extra = members(compare_fd) if compare_fd is not None else {}
    except (OSError, ValueError) as e:  # not a sweep folder, a bad configuration, no data: one line
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    clash = sorted(set(runs) & set(extra))
    if clash:
        print(f"error: --compare-fd {compare_fd} has members named as {args.folder}'s ({', '.join(clash)}): "
              f"give the fig2_compare_fd.toml sweep", file=sys.stderr)
        return 2
    return report(runs, extra, args.folder / figure)


if __name__ == "__main__":
    sys.exit(main())
