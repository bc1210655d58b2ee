"""Problems by name, for configuration files and the command line.

Each entry builds a problem from keyword options; adding a problem is adding one function here
(or registering one from a script: `PROBLEMS["mine"] = make_mine`). A factory's signature is
its configuration surface (continuation/files/config.py reads option names and defaults from it), so
each one spells its options out; the factory passes the problem's name and its options
(`locals()` at entry: exactly the keyword arguments) to the constructor, and the problem's
`settings()` records them.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from .linear_gaussian import LinearGaussianData, LinearGaussianGibbsProblem


def linear_gaussian(n: int = 3, m: int = 1, latent_dim: int = 1, seed: int = 0, sigma_d: float = 1.0,
                    sigma_c: float = 1.0, sigma_diag: list | None = None, B: list | None = None,
                    noise: float = 0.3):
    """Linear-Gaussian Gibbs problem (closed form, docs/linear_gaussian.md).

    x ~ N(0, Sigma) in R^n, y = B x + N(0, noise^2 I_m). With sigma_diag and B given, Sigma =
    diag(sigma_diag); otherwise a random instance from `seed`.
    """
    options = dict(locals())  # the keyword options exactly, before any other local name
    for key in ("n", "m", "latent_dim"):
        _at_least(key, options[key], 1)
    for key in ("sigma_d", "sigma_c", "noise"):
        _finite(key, options[key])
    if not (sigma_d > 0 and sigma_c > 0 and noise > 0):
        raise ValueError(f"sigma_d, sigma_c and noise must be > 0, got {sigma_d}, {sigma_c}, {noise}")
    if sigma_diag is not None or B is not None:
        if sigma_diag is None or B is None:
            raise ValueError("give both sigma_diag and B, or neither (for a random instance)")
        try:
            B = np.atleast_2d(np.asarray(B, dtype=float))
            sigma = np.asarray(sigma_diag, dtype=float)
        except (ValueError, TypeError):
            raise ValueError(f"B must be an m x n matrix of numbers and sigma_diag a list of n numbers, got B = {B!r}, "
                             f"sigma_diag = {sigma_diag!r}") from None
        if B.ndim != 2 or sigma.ndim != 1 or B.shape[1] != sigma.size:
            raise ValueError(f"B must be an m x n matrix with n = len(sigma_diag) = {sigma.size}, got shape "
                             f"{B.shape}")
        data = LinearGaussianData(np.diag(sigma), B, noise**2 * np.eye(B.shape[0]))
    else:
        data = LinearGaussianData.random(n, m, seed=seed, noise=noise)
    return LinearGaussianGibbsProblem.from_data(data, latent_dim, sigma_d, sigma_c, options=options)


PROBLEMS = {"linear-gaussian": linear_gaussian}


def mlp(dataset: str = "digits", data_dir: str = "", classes: str = "", val_fraction: float = 0.2, limit: int = 0,
        val_limit: int = 0, hidden: int = 128, latent: int = 8, classifier_hidden: int = 12, hvp_batch: int = 512,
        grad_batch: int = 0, samples: int = 2, decoder_std: float = 1.0, split_seed: int = 0, float64: bool = False,
        device: str = "cpu"):
    """The paper's MLP encoder/decoder/classifier on a data set (digits, fashion-mnist, mnist).

    dataset "digits" (sklearn, 8x8) needs no folder; "fashion-mnist" reads the Debian package's
    folder unless data_dir is given; "mnist" needs data_dir (torchvision layout). classes: a
    subset name ("0-4", "5-9") or empty for all; limit and val_limit cap the training and
    validation sets (0: no cap);
    grad_batch 0 means the whole training set. Noise and batches are re-drawn between points.
    device: "cpu" or a torch device name ("cuda"); the data and parameters live there.
    """
    options = dict(locals())  # the keyword options exactly, before any other local name
    _check_network(options)
    from .models import paper_mlp
    from .neural_problem import NeuralProblem

    data, train, val = _split(_flat_loaders(data_dir), dataset, classes, val_fraction, split_seed, limit, val_limit)
    train, val = train.flat(), val.flat()
    return NeuralProblem(*paper_mlp(input_dim=train.x.shape[1], hidden=hidden, latent=latent,
                                    classifier_hidden=classifier_hidden, classes=len(data.classes)),
                         train, val, **_network_options(options, _name("mlp", dataset, classes)))


def resnet(dataset: str = "fashion-mnist", data_dir: str = "", classes: str = "", val_fraction: float = 0.2,
           limit: int = 0, val_limit: int = 0, latent: int = 64, width: int = 256, hvp_batch: int = 128,
           grad_batch: int = 0, samples: int = 1, decoder_std: float = 1.0, split_seed: int = 0, device: str = "cpu"):
    """The paper's CIFAR-10 model (ResNet-18 encoder, FC + 4 deconvolutions, linear classifier).

    dataset "cifar10" needs data_dir (torchvision layout); "fashion-mnist" (the Debian folder,
    or data_dir) and "digits" are padded to 32x32 and repeated to 3 channels, a stand-in that
    installs here. classes: "vehicles", "animals", ... or empty for all. limit, val_limit: caps
    on the training and validation sets (0: none; on a CPU the validation pass of ResNet-18 over
    12,000 images alone takes minutes).
    """
    options = dict(locals())  # the keyword options exactly, before any other local name
    _check_network(options)
    from .models import cifar_resnet
    from .neural_problem import NeuralProblem

    data, train, val = _split(_rgb32_loaders(data_dir), dataset, classes, val_fraction, split_seed, limit, val_limit)
    return NeuralProblem(*cifar_resnet(latent=latent, classes=len(data.classes), width=width), train, val,
                         **_network_options(options, _name("resnet", dataset, classes)))


PROBLEMS["resnet"] = resnet


def transfer_mlp(dataset: str = "digits", data_dir: str = "", source: str = "0-4", target: str = "5-9",
                 path: str = "mixture", ot_method: str = "emd", ot_reg: float = 0.05, model: str = "paper",
                 ot_max_iter: int = 100_000,
                 val_fraction: float = 0.2, limit: int = 0, val_limit: int = 0, hidden: int = 128, latent: int = 8,
                 classifier_hidden: int = 12, dropout: float = 0.1, hvp_batch: int = 512, grad_batch: int = 0,
                 samples: int = 2, decoder_std: float = 1.0, split_seed: int = 0, float64: bool = False,
                 device: str = "cpu"):
    """An MLP on a task path from class subset `source` to `target` (t = 0 -> 1; paper section 4).

    path "mixture" (eq. 23) or "ot" (eq. 37: coupling by POT, ot_method "emd" or "sinkhorn"
    with ot_reg relative to the mean squared distance; soft labels). dataset: digits,
    fashion-mnist, mnist (data_dir). model "paper": 784-hidden-latent encoder with a
    classifier_hidden head (as `mlp`); "transfer": the paper's 784-400-64 encoder with dropout.
    limit and val_limit cap each task's training and validation sets (0: none).
    """
    options = dict(locals())  # the keyword options exactly, before any other local name
    _check_network(options)
    from .models import paper_mlp, transfer_mlp as transfer_model
    from .transfer_problem import TransferProblem

    if model not in ("paper", "transfer"):
        raise ValueError(f"model must be 'paper' or 'transfer', got {model!r}")
    loaders = _flat_loaders(data_dir)
    data_s, train_s, val_s = _split(loaders, dataset, source, val_fraction, split_seed, limit, val_limit)
    data_t, train_t, val_t = _split(loaders, dataset, target, val_fraction, split_seed, limit, val_limit)
    train_s, val_s, train_t, val_t = (d.flat() for d in (train_s, val_s, train_t, val_t))
    dim, classes = train_s.x.shape[1], len(data_s.classes)
    modules = (paper_mlp(input_dim=dim, hidden=hidden, latent=latent, classifier_hidden=classifier_hidden,
                         classes=classes) if model == "paper"
               else transfer_model(input_dim=dim, hidden=hidden, latent=latent, dropout=dropout, classes=classes))
    return TransferProblem(*modules, train_s, train_t, val_s, val_t, path=path, ot_method=ot_method, ot_reg=ot_reg,
                           ot_max_iter=ot_max_iter,
                           **_network_options(options, f"transfer-mlp:{dataset}[{source}->{target}, {path}]"))


PROBLEMS["transfer-mlp"] = transfer_mlp


def transfer_resnet(dataset: str = "fashion-mnist", data_dir: str = "", source: str = "vehicles",
                    target: str = "animals", path: str = "mixture", ot_method: str = "emd", ot_reg: float = 0.05,
                    val_fraction: float = 0.2, limit: int = 0, val_limit: int = 0, latent: int = 64, width: int = 256,
                    hvp_batch: int = 128, grad_batch: int = 0, samples: int = 1, decoder_std: float = 1.0,
                    split_seed: int = 0, float64: bool = False, device: str = "cpu", ot_max_iter: int = 100_000):
    """The CIFAR-10 model (ResNet-18 encoder) on a task path, e.g. vehicles -> animals (appendix G).

    dataset "cifar10" needs data_dir; "fashion-mnist" and "digits" padded to 32x32 RGB are the
    stand-ins that install here (use source "0-4", target "5-9" with them)."""
    options = dict(locals())  # the keyword options exactly, before any other local name
    _check_network(options)
    from .models import cifar_resnet
    from .transfer_problem import TransferProblem

    loaders = _rgb32_loaders(data_dir)
    data_s, train_s, val_s = _split(loaders, dataset, source, val_fraction, split_seed, limit, val_limit)
    data_t, train_t, val_t = _split(loaders, dataset, target, val_fraction, split_seed, limit, val_limit)
    return TransferProblem(*cifar_resnet(latent=latent, classes=len(data_s.classes), width=width), train_s,
                           train_t, val_s, val_t, path=path, ot_method=ot_method, ot_reg=ot_reg,
                           ot_max_iter=ot_max_iter,
                           **_network_options(options, f"transfer-resnet:{dataset}[{source}->{target}, {path}]"))


PROBLEMS["transfer-resnet"] = transfer_resnet


def _finite(option, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{option} must be a finite number, got {value!r}")
    return float(value)


def _at_least(option, value, least: int, zero_means: str = "") -> int:
    """An integer >= least (or 0, when zero_means says what 0 stands for)."""
    if isinstance(value, bool) or not isinstance(value, int) or not (value >= least or (zero_means and value == 0)):
        rule = f"0 ({zero_means}) or an integer >= {least}" if zero_means else f"an integer >= {least}"
        raise ValueError(f"{option} must be {rule}, got {value!r}")
    return value


def _check_network(o: dict) -> None:
    """The network problems' options, before any data is read. The models normalise with batch
    norm on batch statistics, which needs at least 2 samples in every batch (one sample has no
    variance: torch raises deep inside the forward pass), so the training set (limit), the
    gradient batch and the HVP batch are each 0 (all) or >= 2; negative caps were read as
    Python slices (limit = -5 dropped 5 samples)."""
    _at_least("limit", o["limit"], 2, "no cap; batch norm needs >= 2 samples")
    _at_least("val_limit", o["val_limit"], 1, "no cap")
    _at_least("grad_batch", o["grad_batch"], 2, "the whole training set; batch norm needs >= 2")
    _at_least("hvp_batch", o["hvp_batch"], 2, "the gradient batch; batch norm needs >= 2")
    _at_least("samples", o["samples"], 1)  # 0 noise samples average nothing: NaN D and C
    for key in ("hidden", "latent", "classifier_hidden", "width"):
        if key in o:
            _at_least(key, o[key], 1)
    if not 0 < _finite("val_fraction", o["val_fraction"]) < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {o['val_fraction']!r}")
    if not (_finite("decoder_std", o["decoder_std"]) > 0 and o["decoder_std"] ** 2 > 0):
        raise ValueError(f"decoder_std must be a finite number > 0 (its square too), got {o['decoder_std']!r}")
    if "dropout" in o and not 0 <= _finite("dropout", o["dropout"]) < 1:
        raise ValueError(f"dropout must be in [0, 1), got {o['dropout']!r}")
    if "ot_reg" in o:
        if not _finite("ot_reg", o["ot_reg"]) > 0:
            raise ValueError(f"ot_reg must be > 0, got {o['ot_reg']!r}")
        _at_least("ot_max_iter", o["ot_max_iter"], 1)


def _check_sizes(train, limit) -> None:
    """After the split: batch norm needs >= 2 training samples."""
    if len(train) < 2:
        raise ValueError(f"the training set has {len(train)} sample(s) after the split (limit = {limit}); "
                         "batch norm needs at least 2")


def _flat_loaders(data_dir: str) -> dict:
    """The data sets of the MLPs by name; loading happens only for the one asked for."""
    from .data import FASHION_MNIST_DIR, load_digits, load_fashion_mnist, load_mnist

    return {"digits": lambda: load_digits(),
            "fashion-mnist": lambda: load_fashion_mnist(data_dir or FASHION_MNIST_DIR),
            "mnist": lambda: load_mnist(data_dir) if data_dir else _needs_folder("mnist")}


def _rgb32_loaders(data_dir: str) -> dict:
    """The data sets of the CIFAR-shape model: CIFAR-10, or stand-ins padded to 32x32 RGB."""
    from .data import FASHION_MNIST_DIR, as_rgb32, load_cifar10, load_digits, load_fashion_mnist

    return {"cifar10": lambda: load_cifar10(data_dir) if data_dir else _needs_folder("cifar10"),
            "fashion-mnist": lambda: as_rgb32(load_fashion_mnist(data_dir or FASHION_MNIST_DIR)),
            "digits": lambda: as_rgb32(load_digits())}


def _split(loaders: dict, dataset, classes, val_fraction, split_seed, limit, val_limit):
    """The named data set (a class subset of it if asked), and its seeded train/validation split."""
    from .data import class_subset, train_val_split

    if dataset not in loaders:
        raise ValueError(f"unknown dataset {dataset!r}; valid: {', '.join(loaders)}")
    data = loaders[dataset]()
    if classes:
        data = class_subset(data, classes, relabel=True)
    train, val = train_val_split(data, val_fraction, seed=split_seed, limit=limit or None, val_limit=val_limit or None)
    _check_sizes(train, limit)
    return data, train, val


def _name(kind: str, dataset: str, classes: str) -> str:
    return f"{kind}:{dataset}" + (f"[{classes}]" if classes else "")


def _network_options(options: dict, name: str) -> dict:
    """The keyword arguments every network problem takes from its factory's options: the batch
    and noise sizes, precision, device, its name, and the options themselves for `settings()`."""
    return {"decoder_std": options["decoder_std"], "grad_batch": options["grad_batch"] or None,
            "hvp_batch": options["hvp_batch"], "samples": options["samples"],
            "dtype": torch.float64 if options.get("float64", False) else torch.float32,
            "device": _device(options["device"]), "name": name, "options": options}


def _device(name: str):
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"bad device {name!r}: {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no CUDA device here")
    return device


def _needs_folder(name):
    raise FileNotFoundError(f"{name} needs data_dir = the folder that holds it (torchvision layout); nothing is downloaded")


PROBLEMS["mlp"] = mlp


def mlp_smooth(dataset: str = "digits", data_dir: str = "", classes: str = "", val_fraction: float = 0.2,
               limit: int = 0, val_limit: int = 0, hidden: int = 128, latent: int = 8, classifier_hidden: int = 12,
               activation: str = "silu", weight_decay: float = 1e-3, samples: int = 1, decoder_std: float = 1.0,
               seed: int = 0, split_seed: int = 0, float64: bool = True, device: str = "cpu", stochastic: bool = False,
               draw_seed: int = 0):
    """The paper's MLP made a smooth deterministic J with attained minima (problems/smooth_network.py):
    SiLU (activation: silu, softplus, tanh), no batch norm, a weight prior weight_decay (nats per
    sample per unit parameter^2), the whole training set with `samples` fixed noise draws per
    image from `seed`. Data options as `mlp`'s. float64 by default (Newton to 1e-8 relative).
    stochastic: the cheap route's unbiased estimate of the same J (one of each image's fixed
    draws per resample; StochasticSmoothNetworkProblem), for Adam routes to compare with the
    exact path; draw_seed: its sequence of draws (0, 1, 2, ...: the same route on other draws)."""
    options = dict(locals())  # the keyword options exactly, before any other local name
    _check_network(dict(options, grad_batch=0, hvp_batch=0))
    from .models import activation as _activation, smooth_mlp
    from .smooth_network import SmoothNetworkProblem, StochasticSmoothNetworkProblem

    if not isinstance(stochastic, bool):
        raise ValueError(f"stochastic must be true or false, got {stochastic!r}")
    if draw_seed and not stochastic:
        raise ValueError(f"draw_seed = {draw_seed} needs stochastic = true (the exact J has no draws)")
    _activation(activation)  # the name, before any data is read
    data, train, val = _split(_flat_loaders(data_dir), dataset, classes, val_fraction, split_seed, limit, val_limit)
    train, val = train.flat(), val.flat()
    kind = functools.partial(StochasticSmoothNetworkProblem, draw_seed=draw_seed) if stochastic else SmoothNetworkProblem
    return kind(*smooth_mlp(input_dim=train.x.shape[1], hidden=hidden, latent=latent,
                            classifier_hidden=classifier_hidden, classes=len(data.classes), act=activation),
                train, val, weight_decay=weight_decay, samples=samples, decoder_std=decoder_std, seed=seed,
                dtype=torch.float64 if float64 else torch.float32, device=_device(device),
                name=_name("mlp-smooth", dataset, classes), options=options)


PROBLEMS["mlp-smooth"] = mlp_smooth


def transfer_smooth(dataset: str = "digits", data_dir: str = "", source: str = "0-4", target: str = "5-9",
                    path: str = "ot", ot_method: str = "emd", ot_max_iter: int = 100_000, val_fraction: float = 0.2,
                    limit: int = 0, val_limit: int = 0, hidden: int = 128, latent: int = 8,
                    classifier_hidden: int = 12, activation: str = "silu", weight_decay: float = 1e-3,
                    samples: int = 1, decoder_std: float = 1.0, seed: int = 0, split_seed: int = 0,
                    float64: bool = True, device: str = "cpu"):
    """The smooth deterministic MLP (`mlp-smooth`) on a task path from class subset `source` to
    `target` (t = 0 -> 1; problems/smooth_transfer.py): path "mixture" (eq. 23) or "ot" (eq. 37,
    soft labels) summed exactly over the plan's support (ot_method "emd" or "assignment"; an
    entropic plan is dense and refused). Model and data options as `mlp-smooth`'s; limit and
    val_limit cap each task's training and validation sets."""
    options = dict(locals())  # the keyword options exactly, before any other local name
    _check_network(dict(options, grad_batch=0, hvp_batch=0))
    _at_least("ot_max_iter", ot_max_iter, 1)
    from .models import activation as _activation, smooth_mlp
    from .smooth_transfer import SmoothTransferProblem, refuse_dense_plan

    _activation(activation)  # the name, before any data is read
    refuse_dense_plan(ot_method)
    loaders = _flat_loaders(data_dir)
    data_s, train_s, val_s = _split(loaders, dataset, source, val_fraction, split_seed, limit, val_limit)
    data_t, train_t, val_t = _split(loaders, dataset, target, val_fraction, split_seed, limit, val_limit)
    train_s, val_s, train_t, val_t = (d.flat() for d in (train_s, val_s, train_t, val_t))
    modules = smooth_mlp(input_dim=train_s.x.shape[1], hidden=hidden, latent=latent,
                         classifier_hidden=classifier_hidden, classes=len(data_s.classes), act=activation)
    return SmoothTransferProblem(*modules, train_s, train_t, val_s, val_t, path=path, ot_method=ot_method,
                                 ot_max_iter=ot_max_iter, weight_decay=weight_decay, samples=samples,
                                 decoder_std=decoder_std, seed=seed,
                                 dtype=torch.float64 if float64 else torch.float32, device=_device(device),
                                 name=f"transfer-smooth:{dataset}[{source}->{target}, {path}]", options=options)


PROBLEMS["transfer-smooth"] = transfer_smooth


def energy(objective: str = "", theta0: list | str | None = None, size: int = 0, functionals: str = "",
           gauge: str = "", sparsity: str = "", name: str = "energy"):
    """An energy J(theta; mu) given directly by a function (problems/energy.py, docs/energy.md).

    objective: "package.module:function", (theta, mu) -> scalar. The start theta: `size` (zeros
    of that length, theta = {"x": ...}), `theta0` a list of numbers (theta = {"x": ...}), or
    `theta0` a dotted path to a function seed -> dict of tensors. functionals (optional): a
    dotted path (theta, mu) -> {"R", "D", "C"}; without it D = dJ/dlambda, C = dJ/dgamma at fixed
    theta and R = J - lambda D - gamma C. gauge (optional): a dotted path theta -> list of zero
    modes. sparsity (optional): a dotted path theta -> solvers.sparse.HessianPattern, for
    `[krylov] name = "sparse-lu"`. Float64 throughout.
    """
    options = dict(locals())  # the keyword options exactly, before any other local name
    if not sparsity:  # recorded only where given: a path written before the option existed still resumes
        options.pop("sparsity")
    from .energy import EnergyProblem, resolve

    f = resolve(objective, "objective")
    _at_least("size", size, 1, "theta0 gives the start")
    if (theta0 is None) == (size == 0):
        raise ValueError("give the start theta by exactly one of size = N (zeros) or theta0 = [...] / "
                         "'package.module:function'")
    if size:
        start = {"x": torch.zeros(size, dtype=torch.float64)}
    elif isinstance(theta0, str):
        start = resolve(theta0, "theta0")
    elif isinstance(theta0, list) and theta0 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                     for v in theta0):
        start = {"x": torch.tensor([float(v) for v in theta0], dtype=torch.float64)}
    else:
        raise ValueError(f"theta0 must be a non-empty list of numbers or a dotted path 'package.module:function', "
                         f"got {theta0!r}")
    return EnergyProblem(f, start, functionals=resolve(functionals, "functionals") if functionals else None,
                         gauge=resolve(gauge, "gauge") if gauge else None,
                         sparsity=resolve(sparsity, "sparsity") if sparsity else None, name=name, options=options)


PROBLEMS["energy"] = energy
