"""The paper's models as a problem: an amortized encoder, a Gaussian decoder and a softmax
classifier on a data set, evaluated on minibatches that are fixed between path points.

    J(theta; lambda, gamma) = R + lambda D + gamma C,   per sample (means over the batch):
    R = KL(e(z|x) || N(0, I)),  D = E_e[-log N(x; dec(z), decoder_std^2 I)],  C = E_e[-log softmax(cls(z))_y]

Stochastic estimates, as DESIGN.md section 3 recommends: gradients and mixed partials on a
"gradient batch" (the whole training set by default), Hessian-vector products on a smaller
"HVP batch" drawn from it (a subsampled Hessian with a full gradient). Reparameterisation noise
and dropout masks are drawn once per batch and re-drawn only by `resample(seed)`, between
path points, so that within a step J is one deterministic function of theta.

`NetworkModel` (abstract) holds what the network problems share: the modules, the batches,
the per-sample terms (the encoder's sample and rate from problems/amortized.py) and the
validation; `NetworkProblem` makes it stochastic (re-drawn between points): `NeuralProblem`
is one data set, `TransferProblem` a task path between two. The deterministic smooth variant
is problems/smooth_network.py.
"""

from __future__ import annotations

import contextlib
import math
from abc import abstractmethod
from typing import final

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .amortized import encode, gaussian_kl_per_latent
from .base import Problem, StochasticProblem
from .data import Data
from .neural import init_module_params


class _Batch:
    def __init__(self, x, y, eps, mask):
        self.x, self.y, self.eps, self.mask = x, y, eps, mask


class NetworkModel(Problem):
    """Encoder, decoder and classifier networks on data held as fixed batches (`self.batch` for
    R, D, C and gradients, `self.hvp` for Hessian-vector products), made by `_draw_batches(seed)`:
    what the stochastic network problems (NetworkProblem) and the deterministic smooth one
    (problems/smooth_network.py) share.

    name: the problem's name (default: the class's); options: the registry factory's keyword
    options, recorded by `settings()` so that a run's file says what it ran."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, classifier: nn.Module, train: Data,
                 val: Data | None = None, *, decoder_std: float = 1.0, grad_batch: int | None = None,
                 hvp_batch: int | None = 256, samples: int = 1, seed: int = 0, dtype=torch.float32, device="cpu",
                 name: str | None = None, options: dict | None = None):
        if len(train) == 0:
            raise ValueError("the training set is empty")
        if not (decoder_std > 0 and math.isfinite(decoder_std) and decoder_std**2 > 0):
            raise ValueError(f"decoder_std must be a finite number > 0 (its square too), got {decoder_std}")
        if name is not None:
            self.name = name
        self.options = dict(options or {})
        self.encoder, self.decoder, self.classifier = encoder, decoder, classifier
        self.latent_dim = encoder.latent_dim
        self.train = train.to(dtype=dtype, device=device)
        self.val = val.to(dtype=dtype, device=device) if val is not None else None
        self.decoder_std, self.samples = decoder_std, samples
        if grad_batch and grad_batch > len(train):
            raise ValueError(f"grad_batch = {grad_batch} exceeds the {len(train)} training samples; give at most "
                             f"{len(train)} (or 0: the whole training set)")
        self.grad_batch = min(grad_batch or len(train), len(train))
        self.hvp_batch = min(hvp_batch or self.grad_batch, self.grad_batch)
        self.dtype, self.device = dtype, torch.device(device)
        self._draw_batches(seed)

    @abstractmethod
    def _draw_batches(self, seed: int) -> None:
        """Set self.batch, self.hvp (and self.seed) from `seed`."""

    def distortion_floor(self) -> float:
        """d/2 log(2 pi decoder_std^2), d the number of pixels: D's Gaussian normaliser (Problem.distortion_floor)."""
        return 0.5 * self.train.x[0].numel() * math.log(2 * math.pi * self.decoder_std**2)

    # -- parameters and noise -----------------------------------------------------------------
    def init_params(self, seed: int = 0) -> dict:
        g = torch.Generator().manual_seed(seed)
        return {name: {k: v.to(self.device) for k, v in init_module_params(m, g, self.dtype).items()}
                for name, m in (("encoder", self.encoder), ("decoder", self.decoder), ("classifier", self.classifier))}

    def _make_batch(self, idx, g, data: Data | None = None):
        """Samples idx of `data` (default: the training set) with their own noise and masks from g."""
        data = self.train if data is None else data
        n = idx.numel()
        eps = torch.randn(self.samples, n, self.latent_dim, generator=g, dtype=self.dtype).to(self.device)
        shape = getattr(self.encoder, "mask_shape", None)
        mask = None
        if shape is not None:
            keep = 1.0 - self.encoder.dropout.p
            mask = torch.bernoulli(torch.full((n, *shape), keep, dtype=self.dtype), generator=g).to(self.device)
        return _Batch(data.x[idx], data.y[idx], eps, mask)

    # -- the functionals ----------------------------------------------------------------------
    def _terms(self, theta, x, eps, mask):
        """Per-sample R (B,), D (B,) (averaged over the noise samples) and the logits (S, B, K)."""
        e = encode(self.encoder, theta["encoder"], x, eps, mask)  # z: (S, B, k)
        x_flat = x.reshape(x.shape[0], -1)
        recon = functional_call(self.decoder, theta["decoder"], (e.z,))
        s2 = self.decoder_std**2
        D = (0.5 * ((x_flat - recon) ** 2).sum(-1) / s2).mean(0) + 0.5 * x_flat.shape[1] * math.log(2 * math.pi * s2)
        logits = functional_call(self.classifier, theta["classifier"], (e.z,))
        return e.kl(), D, logits

    def _latent_kl(self, theta, b: _Batch) -> torch.Tensor:
        """KL(e(z_j|x) || N(0, 1)) of each latent unit j, averaged over the batch's samples x: (k,).
        Analytic in the encoder's mean and std, so the noise does not enter; the units' values
        sum to the batch's rate R. Cost: one encoder pass."""
        e = encode(self.encoder, theta["encoder"], b.x, b.eps[:1], b.mask)
        return gaussian_kl_per_latent(e.mean, e.log_std, e.std).mean(0)

    @staticmethod
    def _cross_entropy(logits, y):
        """Per-sample -log softmax(logits)_y (B,), averaged over the noise samples."""
        S, B, K = logits.shape
        return F.cross_entropy(logits.reshape(-1, K), y.repeat(S), reduction="none").reshape(S, B).mean(0)

    @abstractmethod
    def _on(self, theta, batch, mu) -> dict:
        """R, D, C on one batch of this problem's kind."""

    def functionals(self, theta, mu):
        return self._on(theta, self.batch, mu)

    def hessian_objective(self, theta, mu):
        """J on the HVP batch: what Hessian-vector products differentiate."""
        f = self._on(theta, self.hvp, mu)
        return f["R"] + mu[0] * f["D"] + mu[1] * f["C"]

    @contextlib.contextmanager
    def _noise_samples(self, samples: int):
        """Batches made inside draw `samples` noise samples per image (the evaluation's count)."""
        saved, self.samples = self.samples, samples
        try:
            yield
        finally:
            self.samples = saved

    @torch.no_grad()
    def validation_metrics(self, theta, batch_size: int = 2048) -> dict:
        """val_loss: cross-entropy of the classifier at the encoder mean; val_acc in [0, 1]."""
        if self.val is None:
            return {}
        return self._classify(theta, self.val, batch_size)

    def _classify(self, theta, data, batch_size: int = 2048, prefix: str = "val") -> dict:
        loss, correct = 0.0, 0
        n = len(data)
        for i in range(0, n, batch_size):
            x, y = data.x[i: i + batch_size], data.y[i: i + batch_size]
            mean, _ = functional_call(self.encoder, theta["encoder"], (x,))
            logits = functional_call(self.classifier, theta["classifier"], (mean,))
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(-1) == y).sum())
        return {f"{prefix}_loss": loss / n, f"{prefix}_acc": correct / n}

    def settings(self) -> dict:
        return {**super().settings(), "decoder_std": self.decoder_std, "grad_batch": self.grad_batch,
                "hvp_batch": self.hvp_batch, "samples": self.samples, "dtype": str(self.dtype).removeprefix("torch."),
                "device": str(self.device), "train_size": len(self.train),
                "val_size": 0 if self.val is None else len(self.val), "options": dict(self.options)}


class NetworkProblem(NetworkModel, StochasticProblem):
    """Network problems whose J is one random draw of batches and noise (StochasticProblem),
    re-drawn between path points by `resample(seed)`."""

    def _draw_batches(self, seed: int) -> None:
        self.resample(seed)


@final
class NeuralProblem(NetworkProblem):
    name = "neural"

    def resample(self, seed: int) -> None:
        """New gradient batch, HVP batch, noise and masks (between path points only)."""
        self.seed = int(seed)
        g = torch.Generator().manual_seed(self.seed)
        n = len(self.train)
        idx = torch.arange(n) if self.grad_batch == n else torch.randperm(n, generator=g)[: self.grad_batch]
        self.batch = self._make_batch(idx.to(self.device), g)
        sub = idx[torch.randperm(idx.numel(), generator=g)[: self.hvp_batch]] if self.hvp_batch < idx.numel() else idx
        self.hvp = self._make_batch(sub.to(self.device), g)

    def _on(self, theta, b: _Batch, mu=None):
        R, D, logits = self._terms(theta, b.x, b.eps, b.mask)
        return {"R": R.mean(), "D": D.mean(), "C": self._cross_entropy(logits, b.y).mean()}

    @torch.no_grad()
    def evaluation_metrics(self, theta, mu=None, samples: int = 4, seed: int = 12345) -> dict:
        """train_R, train_D, train_C on the whole training set with one fixed noise draw (the same
        at every call), so that values along a path differ only because theta does (mu: unused
        here; a task path evaluates at its t); and kl_z0 ... kl_z{k-1}, the rate of each latent
        unit (KL of e(z_j|x) to the prior, averaged over the training set; they sum to train_R):
        a unit whose KL falls to ~0 has collapsed (posterior collapse)."""
        g = torch.Generator().manual_seed(seed)
        with self._noise_samples(samples):
            b = self._make_batch(torch.arange(len(self.train), device=self.device), g)
            f = self._on(theta, b)
        out = {f"train_{k}": float(v) for k, v in f.items()}
        out.update({f"kl_z{j}": float(v) for j, v in enumerate(self._latent_kl(theta, b))})
        return out
