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
from torch.func import functional_call

from .amortized import encode
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

    # -- curvature for the K-FAC preconditioner (solvers/preconditioners.py KFAC) ----------------
    kfac = True  # curvature_factors describes this problem's J (a subclass with another J says False)

    @property
    def curvature_shift(self) -> float:
        """The weight prior's Hessian, w I: exact, added to the Kronecker factors' approximation."""
        return self.weight_decay

    def gauss_newton_matrix(self, theta, mu) -> torch.Tensor:
        """The dense generalised Gauss-Newton matrix plus the prior, J_f^T (d^2 l / d f^2) J_f + w I
        (N, N), in the order of the flattened parameters (solvers/flat.py FlatView(theta)), with
        f and l as in `curvature_factors`: the Jacobian by torch.func (jacrev), the loss Hessian
        in closed form (block diagonal: 1 / N for the rate's mean, 2 std^2 / N for its log_std,
        lambda / (S N decoder_std^2) for the decoder mean, gamma (diag p - p p^T) / (S N) for the
        logits). For tests and small models: its cost is a Jacobian of (outputs x N) and O(N^2)
        memory."""
        from torch.func import jacrev

        from solvers.flat import FlatView

        view, b = FlatView(theta), self.batch

        def heads(v):
            th = view.unflatten(v)
            e = encode(self.encoder, th["encoder"], b.x, b.eps, b.mask)
            return (e, functional_call(self.decoder, th["decoder"], (e.z,)),
                    functional_call(self.classifier, th["classifier"], (e.z,)))

        def flat(v):
            e, recon, logits = heads(v)
            return torch.cat([e.mean.reshape(-1), e.log_std.reshape(-1), recon.reshape(-1), logits.reshape(-1)])

        x = view.flatten(theta).detach()
        Jf = jacrev(flat)(x)
        e, recon, logits = heads(x)
        N, S = b.x.shape[0], b.eps.shape[0]
        p = torch.softmax(logits, -1).reshape(-1, logits.shape[-1])
        eye = lambda k: torch.eye(k, dtype=x.dtype, device=x.device)  # noqa: E731
        Hl = torch.block_diag(eye(e.mean.numel()) / N, torch.diag(2 * e.std.reshape(-1) ** 2) / N,
                              float(mu[0]) / self.decoder_std**2 * eye(recon.numel()) / (S * N),
                              float(mu[1]) * torch.block_diag(*[torch.diag(q) - torch.outer(q, q) for q in p]) / (S * N))
        return (Jf.T @ Hl @ Jf + self.weight_decay * eye(x.numel())).detach()

    def curvature_factors(self, theta, mu, *, draws: int = 0, seed: int = 0) -> list:
        """K-FAC factors of J's generalised Gauss-Newton matrix, one pair per linear layer.

        The outputs f = (mean, log_std, decoder mean, logits) of the three networks are treated as
        the model and l = R + lambda D + gamma C as a convex function of them, so that
        GGN = J_f^T (d^2 l / d f^2) J_f (Schraudolph 2002; Martens 2020), positive semi-definite; its
        diagonal block for a linear layer with inputs a_i (augmented by a 1 for the bias) and
        output gradients g_i (rows i) is approximated by the Kronecker product

            A (x) G,     A = mean_i a_i a_i^T  (in+1, in+1),     G = sum_i E[g_i g_i^T]  (out, out)

        (Martens & Grosse 2015, K-FAC; Botev, Ritter & Barber 2017 for the Gauss-Newton form),
        where g_i is the backward pass of a random output-space vector u with E[u u^T] = d^2 l / d f^2:
        u = (N^-1/2 xi, (2/N)^1/2 exp(log_std) xi') for R (per latent unit), (lambda / (S N))^1/2
        xi / decoder_std for D, (gamma / (S N))^1/2 (e_y' - p), y' ~ softmax, for C (xi standard
        normal; N images, S noise draws; Martens & Grosse's sampled Fisher). With draws > 0, G is
        averaged over that many such vectors (generator from `seed`: the factors are a
        deterministic function of theta, mu and seed); draws = 0 (the default) sums the exact G
        instead, one backward pass for each column of a square root of d^2 l / d f^2 (2k + S (d +
        classes) of them). The weight prior's w I is not in the factors (`curvature_shift`).

        Returns [(part, weight_name, bias_name or None, A, G)] with part the theta key of the
        network ("encoder", "decoder", "classifier"); W of shape (out, in) acts as the operator
        V -> G V A on its (out, in+1) block [W | b]. Cost: one forward pass and `draws` (or, exact,
        2k + S (d + classes)) backward passes over the whole training set, each about half a
        gradient."""
        if not (isinstance(draws, int) and not isinstance(draws, bool) and draws >= 0):
            raise ValueError(f"curvature draws must be an integer >= 0 (0: exact), got {draws!r}")
        b = self.batch
        lam, gam = float(mu[0]), float(mu[1])
        layers, saved = [], {}
        handles = []
        for part, module in (("encoder", self.encoder), ("decoder", self.decoder), ("classifier", self.classifier)):
            for name, m in module.named_modules():
                if isinstance(m, torch.nn.Linear):
                    key = (part, f"{name}.weight" if name else "weight", (f"{name}.bias" if name else "bias")
                           if m.bias is not None else None)
                    layers.append(key)

                    def hook(mod, inp, out, key=key):
                        saved[key] = (inp[0].detach(), out)
                    handles.append(m.register_forward_hook(hook))
        try:
            with torch.enable_grad():
                theta = {p: {k: v.detach().requires_grad_(True) for k, v in d.items()} for p, d in theta.items()}
                e = encode(self.encoder, theta["encoder"], b.x, b.eps, b.mask)
                recon = functional_call(self.decoder, theta["decoder"], (e.z,))
                logits = functional_call(self.classifier, theta["classifier"], (e.z,))
        finally:
            for h in handles:
                h.remove()
        missing = [k for k in layers if k not in saved]
        if missing:
            raise ValueError(f"curvature_factors: the linear layers {missing} were not called by the forward pass")
        N, S = b.x.shape[0], b.eps.shape[0]
        g = torch.Generator(device="cpu").manual_seed(int(seed))
        p = torch.softmax(logits.detach(), -1)
        outs = [saved[k][1] for k in layers]
        G = [torch.zeros(o.shape[-1], o.shape[-1], dtype=o.dtype, device=o.device) for o in outs]

        def normal(like):
            return torch.randn(like.shape, generator=g, dtype=like.dtype).to(like.device)

        mean, log_std = e.mean, e.log_std
        heads = [mean, log_std, recon, logits]
        scale = [1.0 / math.sqrt(N), None, math.sqrt(max(lam, 0.0) / (S * N)) / self.decoder_std,
                 math.sqrt(max(gam, 0.0) / (S * N))]
        std = e.std.detach()

        def backward(u, weight):
            grads = torch.autograd.grad(heads, outs, grad_outputs=u, retain_graph=True, allow_unused=True)
            for j, gr in enumerate(grads):
                if gr is not None:
                    gr = gr.reshape(-1, gr.shape[-1])
                    G[j] += weight * (gr.T @ gr)

        if draws:  # Monte Carlo: E[u u^T] = d^2 l / d f^2 (the sampled Gauss-Newton matrix)
            for _ in range(draws):
                y = torch.multinomial(p.reshape(-1, p.shape[-1]).cpu(), 1, generator=g).to(p.device)
                onehot = torch.nn.functional.one_hot(y.reshape(p.shape[:-1]), p.shape[-1]).to(p.dtype)
                backward([scale[0] * normal(mean), math.sqrt(2.0 / N) * std * normal(log_std),
                          scale[2] * normal(recon), scale[3] * (onehot - p)], 1.0 / draws)
        else:  # exact: u runs over the columns of a square root of d^2 l / d f^2, one backward each
            zero = [torch.zeros_like(h) for h in heads]
            for k in range(mean.shape[-1]):
                for h, col in ((0, torch.full_like(mean[:, k], scale[0])), (1, math.sqrt(2.0 / N) * std[:, k])):
                    u = list(zero)
                    u[h] = torch.zeros_like(heads[h])
                    u[h][:, k] = col
                    backward(u, 1.0)
            for s_ in range(S):
                for k in range(recon.shape[-1]):
                    u = list(zero)
                    u[2] = torch.zeros_like(recon)
                    u[2][s_, ..., k] = scale[2]
                    backward(u, 1.0)
                for k in range(p.shape[-1]):  # d^2 CE = diag(p) - p p^T = sum_k sqrt(p_k)(e_k - p) (.)^T
                    u = list(zero)
                    u[3] = torch.zeros_like(logits)
                    col = -p[s_] * p[s_, ..., k:k + 1].sqrt()
                    col[..., k] += p[s_, ..., k].sqrt()
                    u[3][s_] = scale[3] * col
                    backward(u, 1.0)
        result = []
        for key, Gj in zip(layers, G):
            a = saved[key][0]
            a = a.reshape(-1, a.shape[-1])
            if key[2] is not None:
                a = torch.cat([a, torch.ones_like(a[:, :1])], 1)
            result.append((*key, a.T @ a / a.shape[0], Gj.detach()))
        return result


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
