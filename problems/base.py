"""A problem: parameters theta, continuation parameters mu = (lambda, gamma, t), an objective
J(theta; mu) and the functionals R, D, C, with J = R + lambda D + gamma C.

A problem is usually declared by its Hamiltonian (paper eq. 11),

    H(z; x, y, theta, lambda, gamma) = -log m_theta(z) - lambda log d_theta(x|z) - gamma log c_theta(y|z),

that is, by three log-densities; `GibbsQuadratureProblem`, `LinearGaussianGibbsProblem` and
`AmortizedProblem` turn a Hamiltonian and data into J, R, D, C (DESIGN.md section 1).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, final

import torch

MU_NAMES = ("lambda", "gamma", "t")
FUNCTIONAL_NAMES = ("R", "D", "C")


def make_mu(lam: float, gam: float, t: float = 0.0, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """The continuation-parameter vector mu = (lambda, gamma, t)."""
    return torch.tensor([lam, gam, t], dtype=dtype, device=device)


def mu_index(name: str) -> int:
    try:
        return MU_NAMES.index(name)
    except ValueError:
        raise ValueError(f"unknown continuation parameter {name!r}; valid: {', '.join(MU_NAMES)}") from None


class Problem(ABC):
    """J(theta; mu) = R + lambda D + gamma C on a fixed data set; theta is a dict of tensors.

    A deterministic problem (closed form, quadrature) is a plain `Problem`; one whose J is a
    random draw (minibatches, reparameterisation noise) is a `StochasticProblem`. `name` is a
    plain attribute: the class's default, or the one a registry factory passes in.
    `task_path`: whether J depends on the task time t = mu[2] (a problem on a path of tasks,
    paper section 4); a process that moves t needs one (continuation/strategies/checks.py).
    """

    name: str = "problem"
    task_path: bool = False

    @abstractmethod
    def init_params(self, seed: int = 0) -> dict:
        """A starting point theta (not on the equilibrium surface)."""

    @abstractmethod
    def functionals(self, theta: dict, mu: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"R": R, "D": D, "C": C}, each a scalar differentiable in theta and mu."""

    def objective(self, theta: dict, mu: torch.Tensor) -> torch.Tensor:
        """J(theta; mu). Subclasses override when J has a cheaper or more stable direct form."""
        f = self.functionals(theta, mu)
        return f["R"] + mu[0] * f["D"] + mu[1] * f["C"]

    def hessian_objective(self, theta: dict, mu: torch.Tensor) -> torch.Tensor:
        """The J that Hessian-vector products differentiate: J itself here; a stochastic problem
        may evaluate it on a smaller batch (a subsampled Hessian beside a full gradient)."""
        return self.objective(theta, mu)

    def evaluation_metrics(self, theta: dict, mu: torch.Tensor | None = None) -> dict:
        """Functionals measured apart from the step's own draw (train_R, ...); none here: a
        deterministic problem's R, D, C are already exact."""
        return {}

    def validation_metrics(self, theta: dict) -> dict:
        """Held-out metrics (val_loss, val_acc, ...); none for a problem without held-out data."""
        return {}

    def label_floor(self, t: float, measure: str = "batch") -> float:
        """The theta-independent part of C at task time t (nats per sample): the entropy the
        labels themselves carry, which no classifier can remove (soft labels on a task path;
        0 for hard labels). `measure` is where C is measured: "batch" (the step's draw) or
        "evaluation" (`evaluation_metrics`'s fixed draw). Used by the iso-classification
        transfer that holds C - C_floor(t) (continuation/strategies/transfer_processes.py)."""
        return 0.0

    def distortion_floor(self) -> float:
        """The theta-independent part of D (nats per sample): for a Gaussian decoder
        N(x; dec(z), sigma^2 I_d) the normaliser d/2 log(2 pi sigma^2), which no decoder removes;
        0 where none is split off. The geodesic transfer measures D - k R's drift on the scale
        |D - D_floor| + |k| R (continuation/strategies/transfer_processes.py): a relative drift against a
        value that carries an arbitrary constant says nothing."""
        return 0.0

    def gauge_directions(self, theta: dict) -> list[dict]:
        """Tangents at theta of a continuous symmetry orbit along which J is constant (exact zero
        modes of A, e.g. latent rotations); none by default."""
        return []

    def hessian_pattern(self, theta: dict):
        """Where A = Hess_theta J may be nonzero (a solvers.sparse.HessianPattern, or a scipy sparse
        matrix of the nonzeros), for the sparse direct solver (`[krylov] name = "sparse-lu"`);
        None (the default): A is treated as dense, reached by HVPs only."""
        return None

    def settings(self) -> dict:
        """A JSON-able description of the problem, recorded with a run: at least its name."""
        return {"name": self.name, "class": type(self).__name__}


class StochasticProblem(Problem):
    """A problem whose J is one random draw (batches, noise), fixed between `resample` calls.

    Within a path step J is one deterministic function of theta (common random numbers); the
    engine calls `resample(seed)` between path points (`resample_between_points`), and
    optimisers that train re-draw every few updates and restore `seed` afterwards.
    """

    seed: int  # the seed of the current draw
    resample_between_points = True  # a new draw at every path point

    @abstractmethod
    def resample(self, seed: int) -> None:
        """Draw new batches and noise from `seed` and set `self.seed = seed`."""

    @abstractmethod
    def evaluation_metrics(self, theta: dict, mu: torch.Tensor | None = None) -> dict:
        """train_R, train_D, train_C on one fixed draw over the whole training set (the same at
        every call), so that values along a path differ only because theta and mu do."""


class Hamiltonian(ABC):
    """H(z; x, y, theta, lambda, gamma) = -log m(z) - lambda log d(x|z) - gamma log c(y|z).

    Each log-density broadcasts over leading batch dimensions of its arguments, e.g.
    x of shape (B, 1, n) against z of shape (1, G, k) gives (B, G).
    """

    latent_dim: int
    prior_is_standard_normal: bool = False  # lets amortized problems use the analytic KL

    @abstractmethod
    def init_params(self, generator: torch.Generator, dtype=torch.float64) -> dict: ...

    @abstractmethod
    def log_prior(self, theta: dict, z: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def log_decoder(self, theta: dict, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def log_classifier(self, theta: dict, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor: ...

    def energy(self, theta: dict, z, x, y, mu: torch.Tensor) -> torch.Tensor:
        """H itself (paper eq. 11)."""
        return (-self.log_prior(theta, z) - mu[0] * self.log_decoder(theta, x, z)
                - mu[1] * self.log_classifier(theta, y, z))


@final
@dataclass
class FunctionalHamiltonian(Hamiltonian):
    """A Hamiltonian from three plain functions, for declaring a problem in a short script.

    Example (a 1-D latent, a tanh decoder and a logistic classifier)::

        H = FunctionalHamiltonian(
            latent_dim=1,
            params=lambda g, dtype: {"w": torch.randn(3, 1, generator=g, dtype=dtype)},
            log_prior_fn=lambda th, z: -0.5 * (z**2).sum(-1) - 0.5 * math.log(2 * math.pi),
            log_decoder_fn=lambda th, x, z: ...,
            log_classifier_fn=lambda th, y, z: ...,
        )
    """

    latent_dim: int
    params: Callable
    log_prior_fn: Callable
    log_decoder_fn: Callable
    log_classifier_fn: Callable
    prior_is_standard_normal: bool = False

    def init_params(self, generator, dtype=torch.float64):
        return self.params(generator, dtype)

    def log_prior(self, theta, z):
        return self.log_prior_fn(theta, z)

    def log_decoder(self, theta, x, z):
        return self.log_decoder_fn(theta, x, z)

    def log_classifier(self, theta, y, z):
        return self.log_classifier_fn(theta, y, z)
