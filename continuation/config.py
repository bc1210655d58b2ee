"""Configuration files: TOML in, strategy objects out, every mistake one line naming the key.

    [problem]    name = "linear-gaussian", then that problem's options
    [start]      lambda, gamma, t, equilibrate, settle (corrector runs at the start), seed (of the
                 initial parameters), train_steps, train_lr, train_schedule,
                 train_resample_every (Adam from scratch first, for neural models)
    [process]    name = "iso-classification" | "iso-classification-fd" | "quasi-static" | ...
    [predictor]  name = "ode" (method = "euler" | "rk4" | "dopri5") | "secant" | "none"
    [corrector]  name = "newton" | "adam" | "sgd" | "lbfgs"
    [projection] name = "none" | "newton" | "secant" (onto the process's held functional)
    [krylov]     name = "minres" | "cg", rtol, maxiter; hvp_mode = "fwd-rev" | "rev-rev" (for the tangents)
    [steps]      name = "adaptive" (initial, min_step, max_step, grow, shrink, max_angle_deg,
                 max_drift, ...) | "fixed" (size)
    [stop]       max_steps, max_s, target = {lambda = 4.0}, milestones = {lambda = [2, 3]}, bounds = {...}
    [output]     checkpoint_every, progress

Names map to classes in one table per role (continuation/registry.py); `python -m continuation list` prints them.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import tomllib
from pathlib import Path

from .registry import REGISTRY
from .step_control import StopRule


class ConfigError(ValueError):
    """A configuration mistake; the message is one line naming the section and key."""


DEFAULT_NAMES = {"problem": "linear-gaussian", "process": "iso-classification", "predictor": "ode",
                 "corrector": "newton", "projection": "none", "krylov": "minres", "steps": "adaptive"}
SECTIONS = ("problem", "start", "process", "predictor", "corrector", "projection", "krylov", "steps", "stop",
            "output")
START_KEYS = {"lambda": 1.0, "gamma": 1.0, "t": 0.0, "equilibrate": True, "settle": 1, "seed": 0,
              # Adam from scratch before the corrector (neural models): steps (0: none), peak lr, schedule
              "train_steps": 0, "train_lr": 3e-3, "train_schedule": "cosine",
              # a new batch and noise every this many training updates (1: plain minibatch SGD)
              "train_resample_every": 1}
OUTPUT_KEYS = {"checkpoint_every": 1, "progress": True}


def _parameters(factory) -> dict:
    """name -> default (inspect.Parameter.empty if required) of a factory or dataclass."""
    if dataclasses.is_dataclass(factory):
        out = {}
        for f in dataclasses.fields(factory):
            if f.name.startswith("_") or not f.init or f.name in ("monitor", "monitor_every"):
                continue
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                out[f.name] = f.default_factory()
            else:
                out[f.name] = inspect.Parameter.empty
        return out
    return {n: p.default for n, p in inspect.signature(factory).parameters.items()}


def _check_value(section, key, value, default):
    if isinstance(value, float) and math.isnan(value):
        raise ConfigError(f"[{section}] {key} is NaN")
    if default is inspect.Parameter.empty or default is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"[{section}] {key} must be true or false, got {value!r}")
    elif isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"[{section}] {key} must be a number, got {value!r}")
        if isinstance(default, float):
            value = float(value)
        elif isinstance(default, int) and not float(value).is_integer():
            raise ConfigError(f"[{section}] {key} must be an integer, got {value!r}")
        else:
            value = int(value)
    elif isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"[{section}] {key} must be a string, got {value!r}")
    elif isinstance(default, dict) and not isinstance(value, dict):
        raise ConfigError(f"[{section}] {key} must be a table, e.g. {key} = {{lambda = 1.0}}, got {value!r}")
    return value


def _checked_options(section, options: dict, params: dict, what: str) -> dict:
    for key in options:
        if key not in params:
            valid = ", ".join(sorted(params)) or "(none)"
            raise ConfigError(f"[{section}] unknown key {key!r} for {what}; valid: {valid}")
    return {k: _check_value(section, k, v, params[k]) for k, v in options.items()}


def build(section: str, table: dict | None):
    """An object of a named role (problem, process, ...) from its config table."""
    table = dict(table or {})
    name = table.pop("name", DEFAULT_NAMES[section])
    registry = REGISTRY[section]
    if name not in registry:
        raise ConfigError(f"[{section}] unknown name {name!r}; valid: {', '.join(registry)}")
    factory = registry[name]
    options = _checked_options(section, table, _parameters(factory), f"{section} {name!r}")
    try:
        return factory(**options)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"[{section}] bad value for {section} {name!r}: {str(e).splitlines()[0]}") from None


def load_config(path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"configuration file not found: {path}")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None


def build_run(config: dict) -> dict:
    """Every object a run needs, from a parsed configuration (a dict as TOML gives it)."""
    for section in config:
        if section not in SECTIONS:
            raise ConfigError(f"unknown section [{section}]; valid: {', '.join(SECTIONS)}")
        if not isinstance(config[section], dict):
            raise ConfigError(f"[{section}] must be a table")
    start = {**START_KEYS, **_checked_options("start", config.get("start", {}), START_KEYS, "start")}
    output = {**OUTPUT_KEYS, **_checked_options("output", config.get("output", {}), OUTPUT_KEYS, "output")}
    for key in ("lambda", "gamma"):
        if not start[key] > 0:
            raise ConfigError(f"[start] {key} must be > 0, got {start[key]}")
    if not (isinstance(start["settle"], int) and start["settle"] >= 1):
        raise ConfigError(f"[start] settle must be an integer >= 1, got {start['settle']!r}")
    krylov = dict(config.get("krylov", {}))
    hvp_mode = _check_value("krylov", "hvp_mode", krylov.pop("hvp_mode", "rev-rev"), "rev-rev")
    if hvp_mode not in ("fwd-rev", "rev-rev"):
        raise ConfigError(f"[krylov] hvp_mode must be 'fwd-rev' or 'rev-rev', got {hvp_mode!r}")
    run = {name: build(name, config.get(name)) for name in ("problem", "process", "predictor", "corrector",
                                                            "projection", "steps")}
    run["krylov"], run["hvp_mode"] = build("krylov", krylov), hvp_mode
    options = _checked_options("stop", config.get("stop", {}), _parameters(StopRule), "[stop]")
    try:
        run["stop"] = StopRule(**options)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"[stop] bad value: {str(e).splitlines()[0]}") from None
    for key in ("target", "milestones", "bounds"):
        for param in getattr(run["stop"], key):
            if param not in ("lambda", "gamma", "t", "R", "D", "C"):
                raise ConfigError(f"[stop] {key} names {param!r}; valid: lambda, gamma, t (and R, D, C for bounds)")
    run["start"], run["output"] = start, output
    return run


def describe_registry() -> str:
    """The text of `python -m continuation list`."""
    lines = []
    plural = {"problem": "problems", "process": "processes", "predictor": "predictors", "corrector": "correctors",
              "projection": "projections", "krylov": "krylov solvers", "steps": "step controls"}
    for role, registry in REGISTRY.items():
        lines.append(f"{plural[role]} ([{role}] name = ...):")
        for name, factory in registry.items():
            doc = (inspect.getdoc(factory) or "").split("\n")[0]
            opts = ", ".join(f"{k}={v!r}" for k, v in _parameters(factory).items() if v is not inspect.Parameter.empty)
            lines.append(f"  {name:<24} {doc}")
            if opts:
                lines.append(f"  {'':<24} options: {opts}")
    return "\n".join(lines)
