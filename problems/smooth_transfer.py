"""The smooth deterministic MLP (problems/smooth_network.py) on a task path (paper section 4,
appendix F): the transfer processes on an objective that has equilibria, so that a transfer's
hold is a Newton projection to tolerance rather than the spread of a stochastic corrector
(docs/transfer.md measured 1.9% run to run on Fashion-MNIST's OT KL hold).

    mixture (eq. 23):  J = (1 - t) J_s + t J_t + (w/2)|theta|^2, each J_. over its whole
                       training set with K fixed noise draws per image;
    ot (eq. 37):       J = sum_ij Gamma_ij [R + lambda D + gamma C](x_ij(t)) + (w/2)|theta|^2,
                       x_ij(t) = (1 - t) x_i^s + t x_j^t, C the soft label's cross-entropy
                       (1 - t) CE(y_i^s) + t CE(y_j^t), over every pair of the plan's support
                       with its weight and K fixed draws per pair;

all in nats per sample. J is smooth in t = mu[2], so b_t = -d/dt grad J is one forward-mode JVP.
The OT plan must be sparse for the sum to be exact and affordable: "emd" (at most n_s + n_t - 1
pairs, a vertex of the transport polytope) or "assignment" (n pairs); an entropic plan's dense
support (n_s n_t pairs) is refused with one line.
"""

from __future__ import annotations

import torch

from .amortized import encode, gaussian_kl_per_latent
from .data import Data
from .smooth_network import SmoothNetworkProblem
from .task_path import interpolate
from .transfer_problem import TaskPathTerms, _PairBatch


def refuse_dense_plan(ot_method: str) -> None:
    """One ValueError line for an entropic plan: its support is dense (n_s n_t pairs), which the
    exact J would sum over. Called by the registry before any data is read, and by the problem."""
    if ot_method == "sinkhorn":
        raise ValueError("ot_method 'sinkhorn' gives a dense plan (n_s n_t pairs) that the exact J would sum over; "
                         "use 'emd' or 'assignment' (a sparse optimal plan)")


class SmoothTransferProblem(TaskPathTerms, SmoothNetworkProblem):
    """J(theta; lambda, gamma, t) of the module docstring: a deterministic Problem on a task path
    (no resample), float64 by default.

    source, target: training sets with the same input shape and number of classes (t = 0, 1);
    source_val, target_val: validation sets (val_* metrics on the target, source_val_* on the
    source). path "mixture" or "ot"; ot_method "emd" or "assignment" (ValueError for "sinkhorn":
    its support is dense); weight_decay, samples, decoder_std, seed as SmoothNetworkProblem's.
    Cost of J: one forward pass over (n_s + n_t) K samples (mixture) or |supp Gamma| K (ot)."""

    name = "smooth-transfer"
    task_path = True

    def __init__(self, encoder, decoder, classifier, source: Data, target: Data, source_val: Data | None = None,
                 target_val: Data | None = None, *, path: str = "ot", ot_method: str = "emd",
                 ot_max_iter: int = 100_000, **kw):
        refuse_dense_plan(ot_method)
        self.weights = None
        self._set_task_path(source, target, source_val, path, ot_method, 0.05, ot_max_iter,
                            kw.get("dtype", torch.float64), kw.get("device", "cpu"))
        super().__init__(encoder, decoder, classifier, source, target_val, **kw)

    kfac = False  # SmoothNetworkProblem.curvature_factors is not this J's Gauss-Newton matrix
    kfac_refusal = "its J sums over the task path's weighted pairs, for which the factors are not written"

    def _draw_batches(self, seed: int) -> None:
        """Every source and target image (mixture) or every pair of the plan's support with its
        weight (ot), with K noise draws each from `seed`, once."""
        self.seed = int(seed)
        g = torch.Generator().manual_seed(self.seed)
        if self.path == "mixture":
            i, j = torch.arange(len(self.train)), torch.arange(len(self.target))
        else:
            i, j, w = self.sampler.all_pairs()
            self.weights = w.to(dtype=self.dtype, device=self.device)
        self.batch = _PairBatch(self._make_batch(i.to(self.device), g),
                                self._make_batch(j.to(self.device), g, self.target))
        self.hvp = self.batch

    def _on(self, theta, b: _PairBatch, mu=None):
        return self._path_functionals(theta, b, mu[2], self.weights)

    def objective(self, theta, mu):
        f = self._on(theta, self.batch, mu)
        return f["R"] + mu[0] * f["D"] + mu[1] * f["C"] + self.prior(theta)

    def label_mismatch(self, measure: str = "batch", seed: int = 12345) -> float:
        """q = sum_ij Gamma_ij 1[y_i^s != y_j^t] over the plan's support (the pairs J sums over:
        `measure` and `seed` do not matter here); 0 on the mixture."""
        if self.path == "mixture":
            return 0.0
        differ = (self.batch.source.y != self.batch.target.y).to(self.weights.dtype)
        return float((self.weights * differ).sum())

    @torch.no_grad()
    def evaluation_metrics(self, theta, mu=None) -> dict:
        """prior: (w/2)|theta|^2; kl_z{j}: each latent unit's rate on the path's data at t = mu[2]
        (the interpolated pairs with their weights, or the (1 - t, t) blend of the two sets);
        they sum to R. Cost: one encoder pass."""
        t = 0.0 if mu is None else float(mu[2])
        b = self.batch
        out = {"prior": float(self.prior(theta))}
        if self.path == "mixture":
            kl = (1 - t) * self._latent_kl(theta, b.source) + t * self._latent_kl(theta, b.target)
        else:
            x = interpolate(b.source.x, b.target.x, t)
            e = encode(self.encoder, theta["encoder"], x, b.source.eps[:1], b.source.mask)
            kl = (gaussian_kl_per_latent(e.mean, e.log_std, e.std) * self.weights[:, None]).sum(0)
        out.update({f"kl_z{j}": float(v) for j, v in enumerate(kl)})
        return out

    def settings(self) -> dict:
        return {**super().settings(), **self._task_settings()}
