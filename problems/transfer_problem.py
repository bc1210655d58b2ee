"""The paper's models on a task path from a source data set (t = 0) to a target (t = 1),
paper section 4 and appendix F (problems/task_path.py for the two paths).

    mixture:  J(theta; mu) = (1 - t) J(source batch) + t J(target batch)           (eq. 23)
    ot:       pairs (i, j) ~ Gamma, x = (1 - t) x_i^s + t x_j^t, and
              C = (1 - t) CE(y_i^s) + t CE(y_j^t)  (the soft label of Remark 11)   (eq. 37)

Both are smooth in t = mu[2], so b_t = -d/dt grad J is one forward-mode JVP (DESIGN.md section
1). Source and target must share the input shape and the number of classes (class subsets
relabelled 0..K-1, e.g. digits 0-4 -> 5-9: one classifier head of 5 outputs, as the paper's
four-way head for CIFAR-10 vehicles -> animals). Validation metrics are on the target
(val_loss, val_acc) and the source (source_val_loss, source_val_acc).
"""

from __future__ import annotations

import math
from typing import final

import torch

from .data import Data
from .neural_problem import NetworkProblem, _Batch
from .task_path import OT_METHODS, PATHS, CouplingSampler, coupling, interpolate


class _PairBatch:
    """One minibatch of a task path: source and target halves (mixture) or coupled pairs (ot)."""

    def __init__(self, source: _Batch, target: _Batch):
        self.source, self.target = source, target


def check_task_path(source: Data, target: Data, path: str, ot_method: str) -> None:
    """One ValueError line for a task path that cannot be built: an unknown path or OT method,
    inputs of different shapes, different numbers of classes, or an empty target."""
    if path not in PATHS:
        raise ValueError(f"unknown task path {path!r}; valid: {', '.join(PATHS)}")
    if ot_method not in OT_METHODS:
        raise ValueError(f"unknown OT method {ot_method!r}; valid: {', '.join(OT_METHODS)}")
    if source.x.shape[1:] != target.x.shape[1:]:
        raise ValueError(f"source inputs {tuple(source.x.shape[1:])} and target inputs "
                         f"{tuple(target.x.shape[1:])} differ in shape")
    if len(source.classes) != len(target.classes):
        raise ValueError(f"source has {len(source.classes)} classes, target {len(target.classes)}: "
                         "one classifier head needs the same number (choose subsets of equal size)")
    if len(target) == 0:
        raise ValueError("the target training set is empty")


class TaskPathTerms:
    """R, D, C on a task path (eq. 23, 37) and the OT path's label floor (Remark 11), shared by
    the stochastic TransferProblem and the deterministic SmoothTransferProblem
    (problems/smooth_transfer.py). Needs `path`, `_terms`, `_cross_entropy`, `batch`, and on the
    OT path `sampler`, `train`, `target` (`_set_task_path` sets the path's own)."""

    def _set_task_path(self, source: Data, target: Data, source_val: Data | None, path: str, ot_method: str,
                       ot_reg: float, ot_max_iter: int, dtype, device) -> None:
        """Check the path (one line), keep the target and source validation sets, and on the OT
        path compute the coupling (problems/task_path.py) and its sampler."""
        check_task_path(source, target, path, ot_method)
        self.path, self.ot_method, self.ot_max_iter = path, ot_method, ot_max_iter
        self.target = target.to(dtype=dtype, device=device)
        self.source_val = source_val.to(dtype=dtype, device=device) if source_val is not None else None
        self.sampler = None
        if path == "ot":
            self.coupling = coupling(source.x.cpu().numpy(), target.x.cpu().numpy(), ot_method, ot_reg,
                                     num_itermax=ot_max_iter)
            self.sampler = CouplingSampler(self.coupling)

    def _task_settings(self, **extra) -> dict:
        return {"path": self.path, "ot_method": self.ot_method, **extra, "ot_max_iter": self.ot_max_iter,
                "target_size": len(self.target),
                "source_val_size": 0 if self.source_val is None else len(self.source_val)}

    @torch.no_grad()
    def validation_metrics(self, theta, batch_size: int = 2048) -> dict:
        """The target's (val_*) and the source's (source_val_*) validation metrics."""
        out = super().validation_metrics(theta, batch_size)
        if self.source_val is not None:
            out.update(self._classify(theta, self.source_val, batch_size, prefix="source_val"))
        return out

    def _path_functionals(self, theta, b: _PairBatch, t, weights=None):
        mean = (lambda v: v.mean()) if weights is None else (lambda v: (v * weights).sum())  # noqa: E731
        if self.path == "mixture":
            out = {}
            for part, w in ((b.source, 1 - t), (b.target, t)):
                R, D, logits = self._terms(theta, part.x, part.eps, part.mask)
                C = self._cross_entropy(logits, part.y)
                for name, v in (("R", R), ("D", D), ("C", C)):
                    out[name] = out.get(name, 0.0) + w * v.mean()
            return out
        x = interpolate(b.source.x, b.target.x, t)
        R, D, logits = self._terms(theta, x, b.source.eps, b.source.mask)
        C = (1 - t) * self._cross_entropy(logits, b.source.y) + t * self._cross_entropy(logits, b.target.y)
        return {"R": mean(R), "D": mean(D), "C": mean(C)}

    def label_mismatch(self, measure: str = "batch", seed: int = 12345) -> float:
        """q = sum_ij Gamma_ij 1[y_i^s != y_j^t] over the pairs C is measured on: the step's batch
        (uniform weights) or evaluation_metrics's pairs (`seed` is its seed); 0 on the mixture."""
        if self.path == "mixture":
            return 0.0
        if measure == "batch":
            return float((self.batch.source.y != self.batch.target.y).double().mean())
        if getattr(self, "_q_evaluation", None) is None or self._q_evaluation[0] != seed:
            i, j, w = self._evaluation_pairs(torch.Generator().manual_seed(seed))
            differ = (self.train.y[i.to(self.train.y.device)].cpu() != self.target.y[j.to(self.target.y.device)].cpu())
            self._q_evaluation = (seed, float((w * differ.double()).sum() / w.sum()))
        return self._q_evaluation[1]

    def label_floor(self, t: float, measure: str = "batch") -> float:
        """C_floor(t) = q h(t), h(t) = -(1-t) log(1-t) - t log t: on the OT path a pair whose
        labels differ has the soft label (1 - t, t) of entropy h(t), which its cross-entropy
        cannot go below (Remark 11; docs/transfer.md); 0 on the mixture path (hard labels)."""
        if self.path == "mixture":
            return 0.0
        t = min(max(float(t), 0.0), 1.0)
        h = -sum(p * math.log(p) for p in (t, 1.0 - t) if p > 0.0)
        return self.label_mismatch(measure) * h


@final
class TransferProblem(TaskPathTerms, NetworkProblem):
    name = "transfer"
    task_path = True  # J depends on t = mu[2] (paper section 4)

    def __init__(self, encoder, decoder, classifier, source: Data, target: Data, source_val: Data | None = None,
                 target_val: Data | None = None, *, path: str = "mixture", ot_method: str = "emd",
                 ot_reg: float = 0.05, ot_max_iter: int = 100_000, **kw):
        self.ot_reg = ot_reg
        self._set_task_path(source, target, source_val, path, ot_method, ot_reg, ot_max_iter,
                            kw.get("dtype", torch.float32), kw.get("device", "cpu"))
        super().__init__(encoder, decoder, classifier, source, target_val, **kw)

    # -- batches ------------------------------------------------------------------------------
    def _draw(self, count: int, g) -> _PairBatch:
        ns, nt = len(self.train), len(self.target)
        if self.path == "mixture":
            pick = lambda n: torch.arange(n) if count >= n else torch.randperm(n, generator=g)[:count]  # noqa: E731
            i, j = pick(ns), pick(nt)
        else:
            i, j = self.sampler.sample(count, g)
        return _PairBatch(self._make_batch(i.to(self.device), g),
                          self._make_batch(j.to(self.device), g, self.target))

    def resample(self, seed: int) -> None:
        """New source/target batches (or coupled pairs), noise and masks (between path points)."""
        self.seed = int(seed)
        g = torch.Generator().manual_seed(self.seed)
        self.batch = self._draw(self.grad_batch, g)
        self.hvp = self._draw(self.hvp_batch, g)

    def _on(self, theta, b: _PairBatch, mu):
        return self._path_functionals(theta, b, mu[2])

    @torch.no_grad()
    def evaluation_metrics(self, theta, mu=None, samples: int = 4, seed: int = 12345) -> dict:
        """train_R, train_D, train_C of the training distribution at t = mu[2] with one fixed
        noise draw: the whole source and target sets (mixture), or every pair of the coupling's
        support with its weight (ot)."""
        t = 0.0 if mu is None else float(mu[2])
        g = torch.Generator().manual_seed(seed)
        with self._noise_samples(samples):
            if self.path == "mixture":
                b = _PairBatch(self._make_batch(torch.arange(len(self.train), device=self.device), g),
                               self._make_batch(torch.arange(len(self.target), device=self.device), g, self.target))
                f = self._path_functionals(theta, b, t)
            else:
                i, j, w = self._evaluation_pairs(g)
                f = {"R": 0.0, "D": 0.0, "C": 0.0}
                chunk = 8192
                for a in range(0, len(i), chunk):
                    sl = slice(a, a + chunk)
                    b = _PairBatch(self._make_batch(i[sl].to(self.device), g),
                                   self._make_batch(j[sl].to(self.device), g, self.target))
                    part = self._path_functionals(theta, b, t, w[sl].to(device=self.device, dtype=self.dtype))
                    f = {k: f[k] + part[k] for k in f}
        return {f"train_{k}": float(v) for k, v in f.items()}

    def _evaluation_pairs(self, g):
        """The pairs (i, j) and weights evaluation_metrics measures the OT path on: every pair of
        the coupling's support with its weight, or, when the support has more than 4 (n_s + n_t)
        pairs (an entropic plan), n_s + n_t pairs drawn from Gamma with `g` (its first use)."""
        i, j, w = self.sampler.all_pairs()
        n = len(self.train) + len(self.target)
        if len(i) > 4 * n:
            i, j = self.sampler.sample(n, g)
            w = torch.full((n,), 1.0 / n, dtype=torch.float64)
        return i, j, w

    def settings(self) -> dict:
        return {**super().settings(), **self._task_settings(ot_reg=self.ot_reg)}
