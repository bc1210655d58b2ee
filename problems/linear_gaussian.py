"""Linear-Gaussian problem: the Hamiltonian, its data, and its exact (Gibbs) objective.

Data u = (x, y): x ~ N(0, Sigma) in R^n, a regression label y = B x + eps in R^m,
eps ~ N(0, Noise). Model (theta = {"W": n x k, "V": m x k}):

    m(z) = N(0, I_k),   d(x|z) = N(W z, sigma_d^2 I_n),   c(y|z) = N(V z, sigma_c^2 I_m).

With a = lambda / sigma_d^2, c = gamma / sigma_c^2, s = (sqrt(a) 1_n, sqrt(c) 1_m),
M = diag(s) [W; V], S = diag(s) E[u u^T] diag(s) and P = I_k + M^T M, the Gibbs encoder is
e(z|u) = N(P^{-1} M^T diag(s) u, P^{-1}) and (docs/linear_gaussian.md)

    J(theta; lambda, gamma) = 1/2 tr((I + M M^T)^{-1} S) + 1/2 log det(I + M M^T)
                              + lambda n/2 log(2 pi sigma_d^2) + gamma m/2 log(2 pi sigma_c^2),

the negative log-likelihood of probabilistic PCA with unit noise on the scaled data.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass
from typing import final

import numpy as np
import torch

from .base import Hamiltonian, Problem
from .gibbs_quadrature import standard_normal_log_prior


@dataclass
class LinearGaussianData:
    """x ~ N(0, Sigma), y = B x + eps, eps ~ N(0, noise)."""

    Sigma: np.ndarray  # (n, n)
    B: np.ndarray  # (m, n)
    noise: np.ndarray  # (m, m)

    def __post_init__(self):
        self.Sigma, self.B, self.noise = (np.atleast_2d(np.asarray(a, dtype=np.float64))
                                          for a in (self.Sigma, self.B, self.noise))
        n, m = self.Sigma.shape[0], self.B.shape[0]
        if self.Sigma.shape != (n, n) or self.B.shape != (m, n) or self.noise.shape != (m, m):
            raise ValueError(f"LinearGaussianData: shapes Sigma {self.Sigma.shape}, B {self.B.shape}, "
                             f"noise {self.noise.shape} do not fit x in R^n, y in R^m")
        for name, mat in (("Sigma", self.Sigma), ("noise", self.noise)):
            if np.linalg.eigvalsh(mat).min() <= 0:
                raise ValueError(f"LinearGaussianData: {name} is not positive definite")

    @property
    def n(self) -> int:
        return self.Sigma.shape[0]

    @property
    def m(self) -> int:
        return self.B.shape[0]

    def second_moment(self) -> np.ndarray:
        """E[u u^T] of u = (x, y): [[Sigma, Sigma B^T], [B Sigma, B Sigma B^T + noise]]."""
        S, B = self.Sigma, self.B
        return np.block([[S, S @ B.T], [B @ S, B @ S @ B.T + self.noise]])

    def sample(self, count: int, seed: int = 0, dtype=torch.float64):
        """`count` samples (x, y) as tensors of shape (count, n), (count, m)."""
        rng = np.random.default_rng(seed)
        x = rng.multivariate_normal(np.zeros(self.n), self.Sigma, size=count)
        y = x @ self.B.T + rng.multivariate_normal(np.zeros(self.m), self.noise, size=count)
        return torch.tensor(x, dtype=dtype), torch.tensor(y, dtype=dtype)

    @classmethod
    def random(cls, n: int, m: int, seed: int = 0, spectrum=None, noise: float = 0.3):
        """A generic instance: Sigma = Q diag(spectrum) Q^T with a random rotation Q."""
        rng = np.random.default_rng(seed)
        spectrum = np.linspace(3.0, 0.5, n) if spectrum is None else np.asarray(spectrum, float)
        Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
        B = rng.standard_normal((m, n)) / math.sqrt(n)
        return cls(Q @ np.diag(spectrum) @ Q.T, B, noise**2 * np.eye(m))


@final
@dataclass
class LinearGaussianHamiltonian(Hamiltonian):
    """H = |z|^2/2 + lambda |x - W z|^2 / (2 sigma_d^2) + gamma |y - V z|^2 / (2 sigma_c^2) + consts."""

    n: int
    m: int
    latent_dim: int
    sigma_d: float = 1.0
    sigma_c: float = 1.0
    prior_is_standard_normal = True

    def init_params(self, generator, dtype=torch.float64):
        k = self.latent_dim
        return {"W": torch.randn(self.n, k, generator=generator, dtype=dtype) / math.sqrt(k),
                "V": torch.randn(self.m, k, generator=generator, dtype=dtype) / math.sqrt(k)}

    def log_prior(self, theta, z):
        return standard_normal_log_prior(theta, z)

    @staticmethod
    def _gaussian(target, mean, sigma):
        d = target.shape[-1]
        return -0.5 * ((target - mean) ** 2).sum(-1) / sigma**2 - 0.5 * d * math.log(2 * math.pi * sigma**2)

    def log_decoder(self, theta, x, z):
        return self._gaussian(x, z @ theta["W"].T, self.sigma_d)

    def log_classifier(self, theta, y, z):
        return self._gaussian(y, z @ theta["V"].T, self.sigma_c)


class LinearGaussianGibbs(Problem):
    """Exact Gibbs encoder for the linear-Gaussian Hamiltonian, in closed form, for a data
    second moment E[u u^T] that `data_moment(mu)` gives (fixed, or moving with t on a task path).
    """

    def __init__(self, hamiltonian: LinearGaussianHamiltonian, second_moment, dtype=torch.float64, *,
                 name: str | None = None, options: dict | None = None):
        h = hamiltonian
        second_moment = torch.as_tensor(np.asarray(second_moment), dtype=dtype)
        if second_moment.shape != (h.n + h.m, h.n + h.m):
            raise ValueError(f"second moment has shape {tuple(second_moment.shape)}, expected "
                             f"({h.n + h.m}, {h.n + h.m}) for x in R^{h.n}, y in R^{h.m}")
        if name is not None:
            self.name = name
        self.options = dict(options or {})
        self.hamiltonian = h
        self.second_moment = second_moment
        self.dtype = dtype

    def distortion_floor(self) -> float:
        """n/2 log(2 pi sigma_d^2): D's Gaussian normaliser (Problem.distortion_floor)."""
        h = self.hamiltonian
        return 0.5 * h.n * math.log(2 * math.pi * h.sigma_d**2)

    def settings(self) -> dict:
        h = self.hamiltonian
        return {**super().settings(), "n": h.n, "m": h.m, "latent_dim": h.latent_dim, "sigma_d": h.sigma_d,
                "sigma_c": h.sigma_c, "second_moment": self.second_moment.tolist(), "options": dict(self.options)}

    @abstractmethod
    def data_moment(self, mu):
        """E[u u^T] of the data at mu, and the soft-label term (None: hard labels)."""

    def init_params(self, seed: int = 0) -> dict:
        return self.hamiltonian.init_params(torch.Generator().manual_seed(seed), self.dtype)

    def gauge_directions(self, theta) -> list[dict]:
        """Tangents of the gauge orbit theta -> theta Q (Q in O(k)): (W Omega, V Omega) for the
        k(k-1)/2 elementary skew matrices Omega. J is constant along them: zero modes of A."""
        k = self.hamiltonian.latent_dim
        out = []
        for i in range(k):
            for j in range(i + 1, k):
                omega = torch.zeros(k, k, dtype=self.dtype)
                omega[i, j], omega[j, i] = 1.0, -1.0
                out.append({"W": theta["W"] @ omega, "V": theta["V"] @ omega})
        return out

    def _scales(self, mu):
        h = self.hamiltonian
        lam, gam = mu[0], mu[1]
        s = torch.cat([torch.sqrt(lam / h.sigma_d**2).expand(h.n), torch.sqrt(gam / h.sigma_c**2).expand(h.m)])
        return s

    def _constants(self, mu):
        h = self.hamiltonian
        return (mu[0] * 0.5 * h.n * math.log(2 * math.pi * h.sigma_d**2)
                + mu[1] * 0.5 * h.m * math.log(2 * math.pi * h.sigma_c**2))

    def _label_term(self, spread):
        return 0.0 if spread is None else spread / (2 * self.hamiltonian.sigma_c**2)

    def _posterior(self, theta, mu):
        s = self._scales(mu)
        theta_uv = torch.cat([theta["W"], theta["V"]], dim=0)
        M = s[:, None] * theta_uv
        k = M.shape[1]
        P = torch.eye(k, dtype=M.dtype, device=M.device) + M.T @ M
        L = torch.linalg.cholesky(P)
        return s, M, P, L

    def objective(self, theta, mu):
        s, M, P, L = self._posterior(theta, mu)
        Su, spread = self.data_moment(mu)
        S = s[:, None] * Su * s[None, :]
        X = torch.cholesky_solve(M.T @ S @ M, L)  # P^{-1} M^T S M
        logdet = 2 * torch.log(torch.diagonal(L)).sum()
        return (0.5 * (torch.trace(S) - torch.trace(X)) + 0.5 * logdet + self._constants(mu)
                + mu[1] * self._label_term(spread))

    def functionals(self, theta, mu):
        h = self.hamiltonian
        s, M, P, L = self._posterior(theta, mu)
        k = M.shape[1]
        # Not torch.cholesky_inverse: its forward-mode derivative is wrong in torch 2.14
        # (tests/test_linear_gaussian.py::test_functionals_forward_mode_matches_finite_differences).
        P_inv = torch.cholesky_solve(torch.eye(k, dtype=M.dtype, device=M.device), L)
        G = P_inv @ M.T * s[None, :]  # posterior mean = G u
        Su, spread = self.data_moment(mu)
        eye_u = torch.eye(h.n + h.m, dtype=M.dtype, device=M.device)
        theta_uv = torch.cat([theta["W"], theta["V"]], dim=0)
        K = eye_u - theta_uv @ G  # u - [W; V] E[z|u] = K u
        err = torch.diagonal(K @ Su @ K.T) + torch.diagonal(theta_uv @ P_inv @ theta_uv.T)
        D = err[: h.n].sum() / (2 * h.sigma_d**2) + 0.5 * h.n * math.log(2 * math.pi * h.sigma_d**2)
        C = (err[h.n:].sum() / (2 * h.sigma_c**2) + 0.5 * h.m * math.log(2 * math.pi * h.sigma_c**2)
             + self._label_term(spread))
        logdet = 2 * torch.log(torch.diagonal(L)).sum()
        R = 0.5 * (torch.trace(P_inv) + torch.trace(G @ Su @ G.T) - k + logdet)
        return {"R": R, "D": D, "C": C}


@final
class LinearGaussianGibbsProblem(LinearGaussianGibbs):
    """The linear-Gaussian Gibbs problem on one data distribution. The expectation over data
    uses the second moment E[u u^T]: the population one (exact expectations over N(0, Sigma),
    `from_data`) or an empirical one (`from_samples`)."""

    name = "linear-gaussian"

    @classmethod
    def from_data(cls, data: LinearGaussianData, latent_dim: int, sigma_d=1.0, sigma_c=1.0, dtype=torch.float64,
                  **kw):
        h = LinearGaussianHamiltonian(data.n, data.m, latent_dim, sigma_d, sigma_c)
        return cls(h, data.second_moment(), dtype, **kw)

    @classmethod
    def from_samples(cls, hamiltonian, x: torch.Tensor, y: torch.Tensor, **kw):
        u = torch.cat([x, y], dim=1)
        return cls(hamiltonian, (u.T @ u / u.shape[0]).numpy(), x.dtype, **kw)

    def data_moment(self, mu):
        return self.second_moment, None


@final
class LinearGaussianTransferProblem(LinearGaussianGibbs):
    """The linear-Gaussian Gibbs problem on a task path: the data moment is S(t) of a
    `problems.task_path.TaskMoments` (mixture or coupling), t = mu[2]; soft labels add
    gamma kappa(t) to J and kappa(t) to C, kappa = label_spread / (2 sigma_c^2) (docs/transfer.md)."""
    task_path = True  # J depends on t = mu[2] (paper section 4)

    name = "linear-gaussian-transfer"

    def __init__(self, hamiltonian: LinearGaussianHamiltonian, moments, dtype=torch.float64, **kw):
        if (moments.n, moments.m) != (hamiltonian.n, hamiltonian.m):
            raise ValueError(f"task path for x in R^{moments.n}, y in R^{moments.m}; the Hamiltonian has "
                             f"n = {hamiltonian.n}, m = {hamiltonian.m}")
        super().__init__(hamiltonian, moments.second_moment(torch.tensor(0.0, dtype=dtype)).numpy(), dtype, **kw)
        self.moments = moments

    def data_moment(self, mu):
        return self.moments.second_moment(mu[2]), self.moments.label_spread(mu[2])

    def label_floor(self, t: float, measure: str = "batch") -> float:
        """kappa(t) = label_spread(t) / (2 sigma_c^2): the soft label's theta-independent part of C
        (docs/transfer.md), the same on either measure (the expectations are exact)."""
        spread = self.moments.label_spread(torch.tensor(float(t), dtype=self.dtype))
        return float(self._label_term(spread))
