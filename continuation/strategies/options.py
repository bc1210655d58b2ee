"""Scalar options and the start and stop tables, checked where a strategy is made: one ValueError
line naming the option and the value (the strategies' and StopRule's `__post_init__`, from
Python or from a TOML file). Imports nothing of the package: every strategy module imports it."""

from __future__ import annotations

import math
import numbers

from solvers import HVP_MODES

MU_NAMES = ("lambda", "gamma", "t")


# --- scalar options --------------------------------------------------------------------------

def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def number(option: str, value, *, allow_inf: bool = False) -> float:
    """A real number (not bool), not NaN, finite unless allow_inf."""
    if not _is_number(value):
        raise ValueError(f"{option} must be a number, got {value!r}")
    v = float(value)
    if math.isnan(v) or (math.isinf(v) and not allow_inf):
        raise ValueError(f"{option} must be finite, got {value!r}")
    return v


def positive(option: str, value, *, allow_inf: bool = False) -> float:
    v = number(option, value, allow_inf=allow_inf)
    if not v > 0:
        raise ValueError(f"{option} must be > 0, got {value!r}")
    return v


def non_negative(option: str, value) -> float:
    v = number(option, value)
    if not v >= 0:
        raise ValueError(f"{option} must be >= 0, got {value!r}")
    return v


def integer(option: str, value, *, minimum: int | None = None) -> int:
    """An int (a float with an integer value is refused too: 2.0 steps is a typo for 2 or 2.5)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{option} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{option} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def hvp_mode(value) -> str:
    """An HVP mode (solvers.HVP_MODES: "rev-rev", "fwd-rev"), or ValueError naming the option."""
    if value not in HVP_MODES:
        raise ValueError(f"hvp_mode must be 'rev-rev' or 'fwd-rev', got {value!r}")
    return value


def in_range(option: str, value, lo: float, hi: float, *, closed: bool = True) -> float:
    v = number(option, value)
    ok = lo <= v <= hi if closed else lo < v < hi
    if not ok:
        raise ValueError(f"{option} must be in {'[' if closed else '('}{lo:g}, {hi:g}{']' if closed else ')'}, "
                         f"got {value!r}")
    return v


# --- the start and the stop rule ------------------------------------------------------------

def check_mu_value(name: str, value, what: str) -> float:
    """lambda, gamma > 0 and finite; t in [0, 1] (the task path's ends: outside, mixture weights go negative)."""
    v = number(f"{what} {name}", value)
    if name in ("lambda", "gamma") and not v > 0:
        raise ValueError(f"{what} {name} must be > 0, got {value!r}")
    if name == "t" and not 0.0 <= v <= 1.0:
        raise ValueError(f"{what} t must be in [0, 1] (the task path from source to target), got {value!r}")
    return v


def check_start(start) -> tuple:
    """(lambda, gamma) or (lambda, gamma, t): a 1-D sequence, array or tensor of 2 or 3 finite
    numbers with lambda, gamma > 0 and t in [0, 1]; returns a tuple of floats."""
    shape = getattr(start, "shape", None)
    if shape is not None and len(shape) != 1:
        raise ValueError(f"start must be 2 or 3 numbers (lambda, gamma[, t]), got an array of shape {tuple(shape)}")
    if isinstance(start, (str, bytes, dict)) or not hasattr(start, "__len__"):
        raise ValueError(f"start must be 2 or 3 numbers (lambda, gamma[, t]), got {start!r}")
    if len(start) not in (2, 3):
        raise ValueError(f"start must be 2 or 3 numbers (lambda, gamma[, t]), got {len(start)}: {_short(start)}")
    values = []
    for name, v in zip(MU_NAMES, start):
        if hasattr(v, "item") and getattr(v, "ndim", 0) == 0:
            v = v.item()
        values.append(check_mu_value(name, v, "start"))
    return tuple(values)


def described(value) -> str:
    """A value as a one-line error shows it: its type and its repr, whitespace folded, cut at 60
    characters (e.g. "str 'quasi-static'", "int 42")."""
    text = " ".join(repr(value).split())
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"


def _short(value) -> str:
    try:
        return repr([float(v) for v in value])
    except (TypeError, ValueError):
        return repr(value)


def stop_tables(target, milestones, bounds, functionals=("R", "D", "C")):
    """The stop rule's tables checked at every depth: target {name: number}, milestones
    {name: [numbers]}, bounds {name: [lo, hi]} with lo < hi (+-inf allowed: a one-sided bound)."""
    for key, table in (("target", target), ("milestones", milestones), ("bounds", bounds)):
        if not isinstance(table, dict):
            raise ValueError(f"{key} must be a table such as {key} = {{lambda = ...}}, got {table!r}")
        valid = MU_NAMES + (tuple(functionals) if key == "bounds" else ())
        for name in table:
            if name not in valid:
                raise ValueError(f"{key} names {name!r}; valid: {', '.join(valid)}")
    for name, value in target.items():
        check_mu_value(name, value, "target")
    for name, values in milestones.items():
        if isinstance(values, (str, bytes, dict)) or not isinstance(values, (list, tuple)):
            raise ValueError(f"milestones {name} must be a list of numbers, e.g. milestones = {{{name} = [2.0, 3.0]}}, "
                             f"got {values!r}")
        for v in values:
            check_mu_value(name, v, "milestones")
    for name, pair in bounds.items():
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ValueError(f"bounds {name} must be [lo, hi], got {pair!r}")
        lo, hi = (number(f"bounds {name}", v, allow_inf=True) for v in pair)
        if not lo < hi:
            raise ValueError(f"bounds {name} must be [lo, hi] with lo < hi, got {pair!r}")
