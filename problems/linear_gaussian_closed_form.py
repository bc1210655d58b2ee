"""Closed-form equilibrium of the linear-Gaussian problem (derivation: docs/linear_gaussian.md).

With l_1 >= l_2 >= ... the eigenvalues (eigenvectors u_i) of the scaled second moment
S(lambda, gamma) = diag(s) E[u u^T] diag(s), s = (sqrt(lambda)/sigma_d 1_n, sqrt(gamma)/sigma_c 1_m):

    F(lambda, gamma) = 1/2 sum_{i<k} phi(l_i) + 1/2 sum_{i>=k} l_i + lambda n/2 log(2 pi sigma_d^2)
                       + gamma m/2 log(2 pi sigma_c^2),     phi(l) = 1 + log l if l > 1 else l,
    M* = U_k diag(sqrt(max(l_i - 1, 0))) Q  (Q any k x k rotation: the gauge),
    W* = (sigma_d / sqrt(lambda)) M*_x,   V* = (sigma_c / sqrt(gamma)) M*_y,
    D = dF/dlambda = n/2 log(2 pi sigma_d^2) + 1/(2 lambda) sum_i psi(l_i) |u_i^x|^2,
    C = dF/dgamma  = m/2 log(2 pi sigma_c^2) + 1/(2 gamma)  sum_i psi(l_i) |u_i^y|^2,
    psi(l) = 1 for an active direction (i < k, l > 1), else l;   R = F - lambda D - gamma C.

Latent direction i (< k) is on where l_i > 1 and switches on where l_i(lambda, gamma) = 1: there
the Hessian A has a zero eigenvalue outside the gauge orbit. Computed in numpy float64,
independently of the torch code paths it is used to check.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import brentq


class LinearGaussianClosedForm:
    def __init__(self, second_moment, n: int, m: int, latent_dim: int, sigma_d: float = 1.0, sigma_c: float = 1.0):
        self.Su = np.asarray(second_moment, dtype=np.float64)
        self.n, self.m, self.k = n, m, latent_dim
        self.sigma_d, self.sigma_c = sigma_d, sigma_c
        if self.Su.shape != (n + m, n + m):
            raise ValueError(f"second moment has shape {self.Su.shape}, expected ({n + m}, {n + m})")

    @classmethod
    def of(cls, problem):
        """The closed form matching a LinearGaussianGibbsProblem."""
        h = problem.hamiltonian
        return cls(problem.second_moment.cpu().numpy(), h.n, h.m, h.latent_dim, h.sigma_d, h.sigma_c)

    def _check(self, lam, gam):
        if not (lam > 0 and gam > 0):
            raise ValueError(f"closed form needs lambda > 0 and gamma > 0, got ({lam}, {gam})")

    def scales(self, lam, gam) -> np.ndarray:
        self._check(lam, gam)
        return np.concatenate([np.full(self.n, math.sqrt(lam) / self.sigma_d),
                               np.full(self.m, math.sqrt(gam) / self.sigma_c)])

    def spectrum(self, lam, gam):
        """Eigenvalues (descending) and eigenvectors (columns) of S(lambda, gamma)."""
        s = self.scales(lam, gam)
        vals, vecs = np.linalg.eigh(s[:, None] * self.Su * s[None, :])
        return vals[::-1], vecs[:, ::-1]

    def active(self, lam, gam) -> np.ndarray:
        """Boolean mask over eigen-directions: True for the switched-on latent directions."""
        ell, _ = self.spectrum(lam, gam)
        return (np.arange(ell.size) < self.k) & (ell > 1.0)

    def _linear_terms(self, lam, gam):
        return (lam * 0.5 * self.n * math.log(2 * math.pi * self.sigma_d**2)
                + gam * 0.5 * self.m * math.log(2 * math.pi * self.sigma_c**2))

    def free_energy(self, lam, gam) -> float:
        ell, _ = self.spectrum(lam, gam)
        on = self.active(lam, gam)
        return 0.5 * float(np.sum(np.where(on, 1.0 + np.log(np.where(on, ell, 1.0)), ell))) + self._linear_terms(lam, gam)

    def functionals(self, lam, gam) -> dict:
        """R, D, C at equilibrium (D, C by the envelope theorem, R = F - lambda D - gamma C)."""
        ell, U = self.spectrum(lam, gam)
        psi = np.where(self.active(lam, gam), 1.0, ell)
        ux2 = np.sum(U[: self.n] ** 2, axis=0)
        uy2 = np.sum(U[self.n:] ** 2, axis=0)
        D = 0.5 * self.n * math.log(2 * math.pi * self.sigma_d**2) + 0.5 * float(psi @ ux2) / lam
        C = 0.5 * self.m * math.log(2 * math.pi * self.sigma_c**2) + 0.5 * float(psi @ uy2) / gam
        F = self.free_energy(lam, gam)
        return {"R": F - lam * D - gam * C, "D": D, "C": C, "F": F}

    def theta_star(self, lam, gam, rotation=None) -> dict:
        """An equilibrium {"W", "V"} (numpy); `rotation` (k x k orthogonal) picks the gauge."""
        on = [i for i in range(self.k) if self.active(lam, gam)[i]]
        return self.stationary_point(lam, gam, on, rotation)

    def stationary_point(self, lam, gam, directions, rotation=None) -> dict:
        """The stationary point with exactly the eigen-directions `directions` switched on.

        Column j of M is u_d sqrt(l_d - 1) for the j-th listed direction d (each needs l_d > 1),
        zero beyond. Any such subset is stationary (PPCA); only the top ones give the minimum, the
        rest are saddles: e.g. directions=[0] once l_1 > 1 is the branch where direction 1 stays off.
        """
        ell, U = self.spectrum(lam, gam)
        if len(directions) > self.k:
            raise ValueError(f"at most k = {self.k} directions can be on, got {list(directions)}")
        M = np.zeros((self.n + self.m, self.k))
        for j, d in enumerate(directions):
            if not ell[d] > 1.0:
                raise ValueError(f"direction {d} has eigenvalue {ell[d]:.6g} <= 1: it cannot be on")
            M[:, j] = U[:, d] * math.sqrt(ell[d] - 1.0)
        if rotation is not None:
            M = M @ rotation
        theta = M / self.scales(lam, gam)[:, None]
        return {"W": theta[: self.n], "V": theta[self.n:]}

    def gram(self, lam, gam) -> np.ndarray:
        """[W; V][W; V]^T at equilibrium: gauge invariant, so it compares across solvers."""
        t = self.theta_star(lam, gam)
        th = np.vstack([t["W"], t["V"]])
        return th @ th.T

    def critical_lambda(self, gam: float, direction: int, lam_min=1e-8, lam_max=1e8):
        """lambda at which latent direction `direction` (0-based, < k) switches on, gamma fixed.

        l_i grows monotonically with lambda (dl_i/dlambda = l_i |u_i^x|^2 / lambda), so the
        crossing l_i = 1 is unique; returns None if the direction is on (or off) on the whole range.
        """
        if not 0 <= direction < self.k:
            raise ValueError(f"direction must be in [0, {self.k}), got {direction}")
        g = lambda log_lam: self.spectrum(math.exp(log_lam), gam)[0][direction] - 1.0  # noqa: E731
        lo, hi = math.log(lam_min), math.log(lam_max)
        if g(lo) * g(hi) > 0:
            return None
        return math.exp(brentq(g, lo, hi, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=500))



class ScalarGaussianClosedForm:
    """The scalar case n = m = k = 1 in explicit formulas.

    x ~ N(0, s2), y = b x + eps, Var eps = tau2; q = b^2 s2 + tau2 = Var y; a = lambda/sigma_d^2,
    c = gamma/sigma_c^2. S = [[a s2, sqrt(ac) b s2], [sqrt(ac) b s2, c q]] has trace T = a s2 + c q,
    determinant Delta = a c s2 tau2, eigenvalues l_pm = (T +- sqrt(T^2 - 4 Delta)) / 2.

    F = 1/2 (1 + log l_+) + 1/2 l_-   if l_+ > 1 (latent on),   F = T/2 otherwise (plus linear terms);
    det(S - I) = a s2 (c tau2 - 1) + 1 - c q = 0 gives the critical multiplier
    lambda_c(gamma) = sigma_d^2 (1 - c q) / (s2 (1 - c tau2)) for c q < 1 (none when c q >= 1:
    the label alone keeps the latent on).
    """

    def __init__(self, s2: float, b: float, tau2: float, sigma_d: float = 1.0, sigma_c: float = 1.0):
        self.s2, self.b, self.tau2 = s2, b, tau2
        self.q = b * b * s2 + tau2
        self.sigma_d, self.sigma_c = sigma_d, sigma_c

    def second_moment(self) -> np.ndarray:
        s2, b = self.s2, self.b
        return np.array([[s2, b * s2], [b * s2, self.q]])

    def eigenvalues(self, lam, gam):
        a, c = lam / self.sigma_d**2, gam / self.sigma_c**2
        T = a * self.s2 + c * self.q
        Delta = a * c * self.s2 * self.tau2
        root = math.sqrt(T * T - 4 * Delta)
        return (T + root) / 2, (T - root) / 2

    def free_energy(self, lam, gam) -> float:
        lp, lm = self.eigenvalues(lam, gam)
        lin = 0.5 * lam * math.log(2 * math.pi * self.sigma_d**2) + 0.5 * gam * math.log(2 * math.pi * self.sigma_c**2)
        core = 0.5 * (1 + math.log(lp)) + 0.5 * lm if lp > 1 else 0.5 * (lp + lm)
        return core + lin

    def critical_lambda(self, gam):
        c = gam / self.sigma_c**2
        if c * self.q >= 1:
            return None
        return self.sigma_d**2 * (1 - c * self.q) / (self.s2 * (1 - c * self.tau2))


class TransferClosedForm:
    """Closed forms along a task path (docs/transfer.md), in numpy, from the path's own blocks:

    mixture:   S(t) = (1-t) S_s + t S_t,  kappa = 0;
    coupling:  S(t) = (1-t)^2 S_ss + t (1-t) (S_st + S_ts) + t^2 S_tt  (blocks of the joint moment
               of (u_s, u_t)),  kappa(t) = t (1-t) E|y_s - y_t|^2 / (2 sigma_c^2).

    At each t the equilibrium is LinearGaussianClosedForm's at S(t), with C + kappa and F + gamma
    kappa (R unchanged). The iso-C multiplier paths solve C(lambda, gamma, t) = C0 directly
    (brentq in gamma for lambda' = k; for the geodesic, also D - k R = D0 - k R0, the integral of
    D' = k R', by a 2-D root finder), never through tangents.
    """

    def __init__(self, moment, spread, n, m, latent_dim, sigma_d=1.0, sigma_c=1.0):
        self.moment, self.spread = moment, spread
        self.n, self.m, self.k, self.sigma_d, self.sigma_c = n, m, latent_dim, sigma_d, sigma_c

    @classmethod
    def mixture(cls, S_s, S_t, n, m, latent_dim, sigma_d=1.0, sigma_c=1.0):
        S_s, S_t = np.asarray(S_s, float), np.asarray(S_t, float)
        return cls(lambda t: (1 - t) * S_s + t * S_t, lambda t: 0.0, n, m, latent_dim, sigma_d, sigma_c)

    @classmethod
    def coupled(cls, joint, n, m, latent_dim, sigma_d=1.0, sigma_c=1.0):
        joint = np.asarray(joint, float)
        d = n + m
        ss, st, tt = joint[:d, :d], joint[:d, d:], joint[d:, d:]
        ys, yt = slice(n, d), slice(d + n, 2 * d)
        gap = np.trace(joint[ys, ys]) + np.trace(joint[yt, yt]) - 2 * np.trace(joint[ys, yt])
        return cls(lambda t: (1 - t) ** 2 * ss + t * (1 - t) * (st + st.T) + t * t * tt,
                   lambda t: t * (1 - t) * gap, n, m, latent_dim, sigma_d, sigma_c)

    def at(self, t) -> LinearGaussianClosedForm:
        return LinearGaussianClosedForm(self.moment(t), self.n, self.m, self.k, self.sigma_d, self.sigma_c)

    def functionals(self, lam, gam, t) -> dict:
        f = self.at(t).functionals(lam, gam)
        kappa = self.spread(t) / (2 * self.sigma_c**2)
        return {"R": f["R"], "D": f["D"], "C": f["C"] + kappa, "F": f["F"] + gam * kappa}

    def gram(self, lam, gam, t) -> np.ndarray:
        return self.at(t).gram(lam, gam)

    def iso_c_gamma(self, lam, t, C0, lo=1e-6, hi=1e6) -> float:
        """gamma with C(lambda, gamma, t) = C0 (C falls with gamma: dC/dgamma = Hess F < 0)."""
        g = lambda log_gam: self.functionals(lam, math.exp(log_gam), t)["C"] - C0  # noqa: E731
        return math.exp(brentq(g, math.log(lo), math.log(hi), xtol=1e-14, rtol=4 * np.finfo(float).eps))

    def geodesic_multipliers(self, t, k, C0, invariant, guess) -> tuple:
        """(lambda, gamma) with C = C0 and D - k R = invariant at t (eq. 30 integrated)."""
        from scipy.optimize import root

        def eqs(v):
            f = self.functionals(math.exp(v[0]), math.exp(v[1]), t)
            return [f["C"] - C0, f["D"] - k * f["R"] - invariant]

        sol = root(eqs, np.log(np.asarray(guess, float)), method="hybr", tol=1e-13)
        if max(abs(r) for r in eqs(sol.x)) > 1e-11:  # (hybr may warn that it cannot reach tol)
            raise RuntimeError(f"geodesic closed form at t = {t}: {sol.message}")
        return math.exp(sol.x[0]), math.exp(sol.x[1])
