"""Problems by name, for configuration files and the command line.

Each entry builds a problem from keyword options; adding a problem is adding one function here
(or registering one from a script: `PROBLEMS["mine"] = make_mine`).
"""

from __future__ import annotations

import numpy as np

from .linear_gaussian import LinearGaussianData, LinearGaussianGibbsProblem


def linear_gaussian(n: int = 3, m: int = 1, latent_dim: int = 1, seed: int = 0, sigma_d: float = 1.0,
                    sigma_c: float = 1.0, sigma_diag: list | None = None, B: list | None = None,
                    noise: float = 0.3):
    """Linear-Gaussian Gibbs problem (closed form, docs/linear_gaussian.md).

    x ~ N(0, Sigma) in R^n, y = B x + N(0, noise^2 I_m). With sigma_diag and B given, Sigma =
    diag(sigma_diag); otherwise a random instance from `seed`.
    """
    if not (sigma_d > 0 and sigma_c > 0 and noise > 0):
        raise ValueError(f"sigma_d, sigma_c and noise must be > 0, got {sigma_d}, {sigma_c}, {noise}")
    if sigma_diag is not None or B is not None:
        if sigma_diag is None or B is None:
            raise ValueError("give both sigma_diag and B, or neither (for a random instance)")
        B = np.atleast_2d(np.asarray(B, dtype=float))
        data = LinearGaussianData(np.diag(np.asarray(sigma_diag, dtype=float)), B, noise**2 * np.eye(B.shape[0]))
    else:
        data = LinearGaussianData.random(n, m, seed=seed, noise=noise)
    return LinearGaussianGibbsProblem.from_data(data, latent_dim, sigma_d, sigma_c)


PROBLEMS = {"linear-gaussian": linear_gaussian}
