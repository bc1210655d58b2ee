"""The paper's MLP objective made a smooth deterministic function with attained, isolated minima,
so that its equilibria can be solved to tolerance and the exact machinery (Newton corrector,
tangents, Newton projection, stability monitor) applies to a network (docs/neural_equilibrium.md).

    J(theta; lambda, gamma) = R + lambda D + gamma C + (w / 2) |theta|^2      (nats per sample)

with R, D, C the paper's (problems/neural_problem.py: R = KL(e(z|x) || N(0, I)), D the Gaussian
decoder's -log density, C the classifier's cross-entropy), each the mean over the whole training
set with K fixed reparameterisation draws per sample (eps ~ N(0, I), drawn once from `seed`):
one deterministic function of theta, the same at every call.

Against the paper's model (problems/models.py paper_mlp), three changes, each for a measured
reason (../shared/cases/NEURAL.md, issue 25):
- a smooth activation (SiLU by default) for ReLU: with ReLU, J is only piecewise smooth; at a
  Newton stall 87 pre-activations sat within 1e-12 of their kink, where the gradient cannot
  vanish and the tangent is undefined.
- no batch norm: its symmetries are exact (the hidden biases before it are zero modes; the row
  scales nearly so), so the Hessian is singular at w = 0 and has >= 128 eigenvalues at w / N.
- a Gaussian weight prior of precision w per sample (N w on the whole set): it makes the minima
  attained (without it the logits' scale grows without bound once the codes separate the
  classes, C -> 0) and bounds the Hessian's spectrum below by w wherever the data term is
  convex, so the smallest eigenvalue is not at round-off. F = min J includes the prior's value
  (`prior` in evaluation_metrics); D = dF/dlambda and C = dF/dgamma still hold (the prior does
  not depend on mu).

The stochastic paper's model stays as the SGD route: an estimate of a different objective
(batch norm on batch statistics, ReLU, fresh noise at every point).
"""

from __future__ import annotations

import math

import torch

from .base import StochasticProblem
from .data import Data
from .neural_problem import NetworkModel, _Batch


class SmoothNetworkProblem(NetworkModel):
    """J = R + lambda D + gamma C + (w/2)|theta|^2 on the whole training set with fixed noise
    (module docstring): a deterministic Problem (no resample), float64 by default.

    encoder, decoder, classifier: torch modules (problems/models.py smooth_mlp). weight_decay w
    >= 0 (nats per sample per unit parameter^2; 0 drops the prior and its guarantees). samples
    K: reparameterisation draws per training sample. Cost of J: one forward pass of the three
    networks over n K samples."""

    name = "smooth-network"

    def __init__(self, encoder, decoder, classifier, train: Data, val: Data | None = None, *,
                 weight_decay: float = 1e-3, samples: int = 1, decoder_std: float = 1.0, seed: int = 0,
                 dtype=torch.float64, device="cpu", name: str | None = None, options: dict | None = None):
        if not (isinstance(weight_decay, (int, float)) and math.isfinite(weight_decay) and weight_decay >= 0):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
        if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
            raise ValueError(f"samples must be an integer >= 1, got {samples!r}")
        self.weight_decay = float(weight_decay)
        super().__init__(encoder, decoder, classifier, train, val, decoder_std=decoder_std, grad_batch=None,
                         hvp_batch=None, samples=samples, seed=seed, dtype=dtype, device=device, name=name,
                         options=options)

    def _draw_batches(self, seed: int) -> None:
        """The whole training set with its K noise draws from `seed`, once."""
        self.seed = int(seed)
        g = torch.Generator().manual_seed(self.seed)
        self.batch = self._make_batch(torch.arange(len(self.train), device=self.device), g)
        self.hvp = self.batch

    def _on(self, theta, b, mu=None):
        R, D, logits = self._terms(theta, b.x, b.eps, b.mask)
        return {"R": R.mean(), "D": D.mean(), "C": self._cross_entropy(logits, b.y).mean()}

    def prior(self, theta) -> torch.Tensor:
        """(w/2) |theta|^2 over every parameter (nats per sample)."""
        leaves = [v for part in theta.values() for v in part.values()]
        return 0.5 * self.weight_decay * sum((v * v).sum() for v in leaves)

    def objective(self, theta, mu):
        f = self._on(theta, self.batch)
        return f["R"] + mu[0] * f["D"] + mu[1] * f["C"] + self.prior(theta)

    def hessian_objective(self, theta, mu):
        return self.objective(theta, mu)

    @torch.no_grad()
    def evaluation_metrics(self, theta, mu=None) -> dict:
        """prior: the weight prior's value (w/2)|theta|^2 (F - R - lambda D - gamma C); kl_z0 ...
        kl_z{k-1}: each latent unit's rate on the training set (they sum to R); a unit whose KL
        falls to ~0 has collapsed. Cost: one encoder pass."""
        out = {"prior": float(self.prior(theta))}
        out.update({f"kl_z{j}": float(v) for j, v in enumerate(self._latent_kl(theta, self.batch))})
        return out

    def settings(self) -> dict:
        return {**super().settings(), "weight_decay": self.weight_decay, "seed": self.seed}


class StochasticSmoothNetworkProblem(SmoothNetworkProblem, StochasticProblem):
    """The cheap route's estimate of the same J (issue 25, item 5): `mlp-smooth` with
    `stochastic = true`. The exact J averages over the K fixed draws of each image
    (SmoothNetworkProblem); this problem's J at one draw uses, for every image, one of its K fixed
    draws chosen at random by `resample(seed)`, so that its expectation over draws is the exact J
    (the same objective, not an estimate of another one) and a route's distance from the exact
    path is its own error: the corrector's finite budget and the draw. draw_seed: which sequence
    of draws (the engine's draw seeds, step numbers and update counts, are the same in every
    run; draw_seed shifts them all, for a route repeated on other draws). Gradients and HVPs on that
    draw (whole training set); `evaluation_metrics` gives train_R, train_D, train_C of the exact
    J (all K draws), what the route's C hold and the comparison read. Cost of J: one forward pass
    over n samples (K times less than the exact J's)."""

    name = "smooth-network-stochastic"

    def __init__(self, *args, draw_seed: int = 0, **kwargs):
        if not (isinstance(draw_seed, int) and not isinstance(draw_seed, bool) and draw_seed >= 0):
            raise ValueError(f"draw_seed must be an integer >= 0, got {draw_seed!r}")
        self.draw_seed = draw_seed  # before the first draw (the base class's __init__ makes it)
        super().__init__(*args, **kwargs)

    def _draw_batches(self, seed: int) -> None:
        super()._draw_batches(seed)  # the exact J's batch: every image with its K fixed draws
        self.full, self.pool_seed = self.batch, int(seed)
        self.resample(seed)

    def resample(self, seed: int) -> None:
        """For every image one of its K fixed draws, chosen from `seed` (between points, and every
        `resample_every` corrector updates) and the problem's `draw_seed` (another sequence of
        draws for the same route: draw_seed 1_000_003 apart)."""
        self.seed = int(seed)
        g = torch.Generator().manual_seed(self.seed + 1_000_003 * int(self.draw_seed))
        n = self.full.x.shape[0]
        pick = torch.randint(self.samples, (n,), generator=g).to(self.full.eps.device)
        eps = self.full.eps[pick, torch.arange(n, device=pick.device)].unsqueeze(0)  # (1, n, k)
        self.batch = _Batch(self.full.x, self.full.y, eps, self.full.mask)
        self.hvp = self.batch

    @torch.no_grad()
    def evaluation_metrics(self, theta, mu=None) -> dict:
        """train_R, train_D, train_C: the exact J's terms (every image, all K fixed draws); prior
        and kl_z{j} as the deterministic problem's."""
        f = self._on(theta, self.full)
        out = {f"train_{k}": float(v) for k, v in f.items()}
        out["prior"] = float(self.prior(theta))
        out.update({f"kl_z{j}": float(v) for j, v in enumerate(self._latent_kl(theta, self.full))})
        return out

    def settings(self) -> dict:
        return {**super().settings(), "seed": self.pool_seed, "draw_seed": self.draw_seed}
