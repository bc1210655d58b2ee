"""A problem given by its energy J(theta; mu) directly, without a Hamiltonian.

    problem = EnergyProblem(objective=bratu_energy, theta0={"x": torch.zeros(63, dtype=torch.float64)})

`objective(theta, mu) -> scalar tensor`: theta a dict of tensors shaped like theta0, mu the
tensor (lambda, gamma, t). It must be a pure torch function of both (torch.func differentiates
it: gradients, HVPs, mixed partials d/dmu grad_theta J).

The engine's rows need R, D, C and F = J. Given `functionals(theta, mu) -> {"R", "D", "C"}` they
are the user's. Otherwise they are defined by the envelope theorem, which is what D and C are
for a Gibbs free energy (DESIGN.md section 1, D = dF/dlambda, C = dF/dgamma along the surface):

    D = partial J / partial lambda,   C = partial J / partial gamma   (at fixed theta, by autodiff),
    R = J - lambda D - gamma C,

so that J = R + lambda D + gamma C holds exactly, and for J affine in (lambda, gamma) (as the
paper's J and the Bratu energy are) R, D, C are its three parts. A J that does not depend on
gamma has C = 0. Cost: one extra reverse pass in mu per evaluation.

In a configuration file (problems/registry.py, `energy`):

    [problem]
    name = "energy"
    objective = "problems.bratu:bratu_energy"     # package.module:function
    size = 63                                     # theta = {"x": zeros(size)}, or
    # theta0 = [0.0, 0.0, ...]                    # theta = {"x": these numbers}, or
    # theta0 = "package.module:function"          # function(seed) -> dict of tensors (or a tensor)
    # functionals = "package.module:function"     # optional: (theta, mu) -> {"R", "D", "C"}
    # gauge = "package.module:function"           # optional: theta -> list of dicts (zero modes)
    # sparsity = "package.module:function"        # optional: theta -> HessianPattern (sparse-lu)

A dotted path that does not import, or names no callable, is one ValueError line.
"""

from __future__ import annotations

from continuation.errors import ContinuationError

import importlib
from typing import Callable

import torch
from torch.func import grad

from .base import Problem, make_mu


def resolve(path: str, what: str = "objective") -> Callable:
    """The callable named by "package.module:function" (or "package.module.function"); a
    ValueError of one line naming `what` and the path otherwise."""
    if not isinstance(path, str) or not path.strip():
        raise ValueError(f"{what} must be a dotted path 'package.module:function', got {path!r}")
    module, sep, attr = path.partition(":")
    if not sep:
        module, _, attr = path.rpartition(".")
    if not module or not attr or not all(p.isidentifier() for p in module.split(".") + attr.split(".")):
        raise ValueError(f"{what} {path!r} is not a dotted path of the form 'package.module:function'")
    try:
        obj = importlib.import_module(module)
    except ImportError as e:
        raise ValueError(f"{what} {path!r}: cannot import module {module!r} ({e})") from None
    except Exception as e:  # the module itself fails at import
        raise ValueError(f"{what} {path!r}: importing {module!r} raised {type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{what} {path!r}: module {module!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{what} {path!r} names a {type(obj).__name__}, not a function")
    return obj


def _as_tree(value, what: str) -> dict:
    if isinstance(value, torch.Tensor):
        value = {"x": value}
    if not isinstance(value, dict) or not value or not all(isinstance(v, torch.Tensor) for v in value.values()):
        raise ValueError(f"{what} must be a dict of tensors (or one tensor), got {type(value).__name__}")
    return value


def _checked_directions(dirs, theta: dict, who: str) -> list[dict]:
    """`dirs` as a list of dicts shaped like theta (module docstring of gauge_directions)."""
    must = "must return a list of dicts shaped like theta (one per zero mode; [] for none)"
    if not isinstance(dirs, (list, tuple)):
        raise ValueError(f"{who} {must}, got {type(dirs).__name__}")
    out = []
    for i, d in enumerate(dirs):
        if isinstance(d, torch.Tensor) and len(theta) == 1:
            d = {next(iter(theta)): d}
        if not isinstance(d, dict) or set(d) != set(theta):
            got = sorted(map(str, d)) if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"{who} {must}: direction {i} is {got}, theta has keys {sorted(theta)}")
        for k, v in d.items():
            if not isinstance(v, torch.Tensor) or not v.is_floating_point() or v.shape != theta[k].shape:
                got = f"shape {tuple(v.shape)} {str(v.dtype).removeprefix('torch.')}" if isinstance(v, torch.Tensor) \
                    else type(v).__name__
                raise ValueError(f"{who} {must}: direction {i}[{k!r}] is {got}, theta[{k!r}] has shape "
                                 f"{tuple(theta[k].shape)}")
        out.append(d)
    return out


class EnergyProblem(Problem):
    """J(theta; mu) given directly; R, D, C the user's or by the envelope theorem (module docstring).
    Its objective may read t = mu[2] (`task_path` True: nothing says it does not).

    theta0: a dict of tensors (or one tensor, named "x"), or a function seed -> such a dict:
    `init_params(seed)` returns a copy (the start, equilibrated by the corrector).
    functionals: optional (theta, mu) -> {"R", "D", "C"}. gauge: optional theta -> list of
    dicts shaped like theta, the tangents of a symmetry orbit (exact zero modes of A).
    sparsity: optional theta -> solvers.sparse.HessianPattern (or a scipy sparse matrix of A's
    nonzeros), for `[krylov] name = "sparse-lu"` (docs/energy.md, "Sparse energies")."""

    task_path = True  # an energy given directly may depend on t

    def __init__(self, objective: Callable, theta0, *, functionals: Callable | None = None,
                 gauge: Callable | None = None, sparsity: Callable | None = None, name: str = "energy",
                 options: dict | None = None):
        if not callable(objective):
            raise ValueError(f"objective must be a function (theta, mu) -> scalar, got {type(objective).__name__}")
        self.f, self.theta0, self.user_functionals, self.gauge = objective, theta0, functionals, gauge
        self.name, self.options = name, dict(options or {})
        if sparsity is not None and not callable(sparsity):
            raise ValueError(f"sparsity must be a function theta -> HessianPattern, got {type(sparsity).__name__}")
        self.sparsity = sparsity
        theta = {k: v.requires_grad_(v.is_floating_point()) for k, v in self.init_params(0).items()}
        mu = make_mu(1.0, 1.0, 0.0, dtype=next(iter(theta.values())).dtype)
        try:  # once, with theta's leaves requiring a gradient: does J depend on them?
            J = objective(theta, mu)
        except Exception as e:
            raise ValueError(f"objective(theta0, mu) raised {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                             ) from None
        if not isinstance(J, torch.Tensor) or J.numel() != 1:
            raise ValueError(f"objective(theta, mu) must return a scalar tensor, got "
                             f"{tuple(J.shape) if isinstance(J, torch.Tensor) else type(J).__name__}")
        if not torch.is_floating_point(J):
            raise ValueError(f"objective(theta, mu) must return a floating-point scalar (J is differentiated), got "
                             f"dtype {str(J.dtype).removeprefix('torch.')}")
        if not J.requires_grad:
            raise ValueError("objective(theta, mu) does not depend on theta (its value carries no gradient): "
                             "J must be computed from theta's tensors")
        if gauge is not None:
            if not callable(gauge):
                raise ValueError(f"gauge must be a function theta -> list of dicts shaped like theta, got "
                                 f"{type(gauge).__name__}")
            self.gauge_directions(self.init_params(0))  # once at construction: its shape, in one line

    def init_params(self, seed: int = 0) -> dict:
        theta = self.theta0(seed) if callable(self.theta0) else self.theta0
        return {k: v.detach().clone() for k, v in _as_tree(theta, "theta0").items()}

    def objective(self, theta, mu):
        return self.f(theta, mu).reshape(())

    def functionals(self, theta, mu):
        if self.user_functionals is not None:
            out = self.user_functionals(theta, mu)
            missing = [k for k in ("R", "D", "C") if not isinstance(out, dict) or k not in out]
            if missing:
                got = sorted(out) if isinstance(out, dict) else type(out).__name__
                raise ContinuationError(f"energy problem {self.name!r}: functionals must return a dict with R, D and C "
                                        f"(torch scalars); {', '.join(missing)} missing (got {got})")
            return out
        J = self.objective(theta, mu)
        dmu = grad(lambda m: self.f(theta, m).reshape(()))(mu)
        D, C = dmu[0], dmu[1]
        return {"R": J - mu[0] * D - mu[1] * C, "D": D, "C": C}

    def gauge_directions(self, theta):
        """The gauge function's directions at theta, checked: a list (or tuple) of dicts with theta's
        keys, each a floating tensor of its leaf's shape (a bare tensor is {"x": it} for a one-leaf
        theta). ValueError (one line naming the gauge function) otherwise."""
        if self.gauge is None:
            return []
        try:
            dirs = self.gauge(theta)
        except Exception as e:  # noqa: BLE001 - the user's function: one line naming it
            raise ValueError(f"gauge function of energy {self.name!r} raised {type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}") from None
        return _checked_directions(dirs, theta, f"gauge function of energy {self.name!r}")

    def hessian_pattern(self, theta):
        """The sparsity function's pattern at theta, or None without one (ValueError of one line
        naming the function when it raises or returns something else)."""
        if self.sparsity is None:
            return None
        from solvers.sparse import as_pattern

        try:
            value = self.sparsity(theta)
        except Exception as e:  # noqa: BLE001 - the user's function: one line naming it
            raise ValueError(f"sparsity function of energy {self.name!r} raised {type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}") from None
        return as_pattern(value, sum(v.numel() for v in theta.values()), f"sparsity function of energy {self.name!r}")

    def settings(self) -> dict:
        return {"name": self.name, "class": type(self).__name__, **self.options}
