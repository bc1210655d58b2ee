"""Configuration files: TOML in, strategy objects out, every mistake one line naming the key.

    [problem]    name = "linear-gaussian", then that problem's options
    [start]      lambda, gamma, t, equilibrate, settle (corrector runs at the start), seed (of the
                 initial parameters), train_steps, train_lr, train_schedule,
                 train_resample_every (Adam from scratch first, for neural models)
    [process]    name = "iso-classification" | "iso-classification-fd" | "quasi-static" | "pseudo-arclength" | ...
    [predictor]  name = "ode" (method = "euler" | "rk4" | "dopri5") | "secant" | "none" | "pseudo-arclength"
    [corrector]  name = "newton" | "adam" | "sgd" | "lbfgs" | "bordered-newton"
    [projection] name = "none" | "newton" | "secant" (onto the process's held functional)
    [krylov]     name = "minres" | "cg", rtol, maxiter; hvp_mode = "fwd-rev" | "rev-rev" (for the tangents);
                 preconditioner = "spectral" (preconditioner_rank, preconditioner_tol) | "kfac"
                 (preconditioner_damping, preconditioner_draws) | "amg"
                 (solvers/preconditioners.py: the tangent solves and the trust-newton corrector's CG)
    [steps]      name = "adaptive" (initial, min_step, max_step, grow, shrink, max_angle_deg,
                 max_drift, ...) | "fixed" (size) | "held" (initial, max_miss, min_step, max_step,
                 grow, shrink, max_factor: steps that shrink where the projection cannot hold
                 the held value, or where lambda or gamma moves by more than max_factor)
    [stop]       max_steps, max_s, target = {lambda = 4.0}, milestones = {lambda = [2, 3]}, bounds = {...}
    [monitor]    stability monitoring and events (continuation/singular/monitor.py): enabled (default: on for
                 a deterministic problem, off for a stochastic one), every, modes, zero_tol, locate_tol,
                 locate, branch = "minimising" | "follow" | "switch", crossings = {C = [0.1]}, tol, dense_below
    [output]     checkpoint_every, progress

Names map to classes in one table per role (continuation/strategies/registry.py); `python -m continuation list` prints them.

`dumps_toml` / `write_toml` are the way back: a configuration dict as TOML (the report's quick
run, the iso-C routes, the GPU check's sweep, the bad-input sweep's cases all write with them).
"""

from __future__ import annotations

from continuation.errors import Misconfigured, first_line

import dataclasses
import inspect
import json
import math
import re
import tomllib
from pathlib import Path

from problems.base import MU_NAMES
from problems.data import DataFileError

from continuation.strategies.checks import check_combination, check_reachable
from continuation.singular.monitor import Monitor
from continuation.strategies.registry import REGISTRY
from continuation.strategies.step_control import StopRule


class ConfigError(ValueError):
    """A configuration mistake; the message is one line naming the section and key."""


DEFAULT_NAMES = {"problem": "linear-gaussian", "process": "iso-classification", "predictor": "ode",
                 "corrector": "newton", "projection": "none", "krylov": "minres", "steps": "adaptive"}
SECTIONS = ("problem", "start", "process", "predictor", "corrector", "projection", "krylov", "steps", "stop",
            "monitor", "output", "phase_diagram", "tree")
START_KEYS = {"lambda": 1.0, "gamma": 1.0, "t": 0.0, "equilibrate": True, "settle": 1, "seed": 0,
              # Adam from scratch before the corrector (neural models): steps (0: none), peak lr, schedule
              "train_steps": 0, "train_lr": 3e-3, "train_schedule": "cosine",
              # a new batch and noise every this many training updates (1: plain minibatch SGD)
              "train_resample_every": 1}
OUTPUT_KEYS = {"checkpoint_every": 1, "progress": True}
TRAIN_SCHEDULES = ("cosine", "step", "constant")
INF_MEANINGFUL = {("stop", "bounds"), ("corrector", "gtol")}


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


def _annotations(factory) -> dict:
    """name -> the annotation's text (e.g. "float | None") of a factory's options, where given."""
    if dataclasses.is_dataclass(factory):
        return {f.name: str(f.type) for f in dataclasses.fields(factory)}
    return {n: str(p.annotation) for n, p in inspect.signature(factory).parameters.items()
            if p.annotation is not inspect.Parameter.empty}


def _kind(annotation: str) -> str | None:
    """The TOML kind an option without a typed default takes, from its annotation text."""
    words = set(re.findall(r"[A-Za-z_]+", annotation)) - {"None", "Optional", "typing"}
    for kind, names in (("bool", {"bool"}), ("int", {"int"}), ("float", {"float"}), ("list", {"list", "List"}),
                        ("dict", {"dict", "Dict"}), ("str", {"str"})):
        if (words and words <= names) or (kind == "float" and words == {"int", "float"}):
            return kind
    return None


def _finite_everywhere(where: str, value, allow_inf: bool = False) -> None:
    """NaN (and inf unless allowed) refused at every depth of a value: tables in tables, lists in lists."""
    if isinstance(value, float) and (math.isnan(value) or (math.isinf(value) and not allow_inf)):
        raise ConfigError(f"{where} is {value} (must be finite)" if not math.isnan(value) else f"{where} is NaN")
    if isinstance(value, dict):
        for k, v in value.items():
            _finite_everywhere(f"{where}.{k}", v, allow_inf)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _finite_everywhere(f"{where}[{i}]", v, allow_inf)


def _check_value(section, key, value, default, annotation: str = ""):
    # inf only where it is a meaningful value: an option whose default is inf (max_s), one-sided
    # bounds, a corrector's gtol (adam/sgd: every point converged; newton/lbfgs refuse it themselves)
    allow_inf = ((isinstance(default, float) and math.isinf(default)) or (section, key) in INF_MEANINGFUL)
    _finite_everywhere(f"[{section}] {key}", value, allow_inf)
    if default is inspect.Parameter.empty or default is None:
        kind = _kind(annotation)
        default = {"bool": False, "int": 0, "float": 0.0, "list": [], "dict": {}, "str": ""}.get(kind)
        if default is None:
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
    elif isinstance(default, list):
        if not isinstance(value, list):
            raise ConfigError(f"[{section}] {key} must be a list, got {value!r}")
        _numbers_only(f"[{section}] {key}", value)  # every list option holds numbers (sigma_diag, B)
    return value


def _numbers_only(where: str, value) -> None:
    for i, v in enumerate(value):
        if isinstance(v, list):
            _numbers_only(f"{where}[{i}]", v)
        elif isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{where}[{i}] must be a number, got {v!r}")


def _checked_options(section, options: dict, params: dict, what: str, annotations: dict | None = None) -> dict:
    for key in options:
        if key not in params:
            valid = ", ".join(sorted(params)) or "(none)"
            hint = ""
            if section == "process" and key == "project":  # the option before projections were strategies
                hint = ' (the projection is its own table now: [projection] name = "newton" | "secant" | "none")'
            raise ConfigError(f"[{section}] unknown key {key!r} for {what}; valid: {valid}{hint}")
    annotations = annotations or {}
    return {k: _check_value(section, k, v, params[k], annotations.get(k, "")) for k, v in options.items()}


def build(section: str, table: dict | None):
    """An object of a named role (problem, process, ...) from its config table."""
    table = dict(table or {})
    name = table.pop("name", DEFAULT_NAMES[section])
    registry = REGISTRY[section]
    if not isinstance(name, str):
        raise ConfigError(f"[{section}] name must be a string, got {name!r}")
    if name not in registry:
        raise ConfigError(f"[{section}] unknown name {name!r}; valid: {', '.join(registry)}")
    factory = registry[name]
    options = _checked_options(section, table, _parameters(factory), f"{section} {name!r}", _annotations(factory))
    if section == "krylov":
        _check_krylov(options)
    try:
        return factory(**options)
    except (DataFileError, FileNotFoundError) as e:  # a damaged data file, or a data folder that is not there
        raise ConfigError(f"[{section}] data: {first_line(e, typed=False)}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"[{section}] bad value for {section} {name!r}: {first_line(e, typed=False)}") from None


def _check_krylov(options: dict) -> None:
    """solvers/krylov.py takes its options as given; a tolerance <= 0 or a budget < 1 (0 was read
    as the default budget) are refused here."""
    if "rtol" in options and not 0 < options["rtol"] < 1:
        raise ConfigError(f"[krylov] rtol must be in (0, 1), got {options['rtol']!r}")
    if options.get("maxiter") is not None and options["maxiter"] < 1:
        raise ConfigError(f"[krylov] maxiter must be >= 1 (or left out: the solver's default), got {options['maxiter']!r}")
    if options.get("damping", 0.0) < 0:
        raise ConfigError(f"[krylov] damping must be >= 0, got {options['damping']!r}")


# built afresh for every solve from that solve's operator (refresh = 1), so that a resumed run
# repeats the uninterrupted one exactly (a build kept across points would start anew at the resume)
PRECONDITIONER_KEYS = {"preconditioner_rank": "rank", "preconditioner_tol": "tol",
                       "preconditioner_damping": "damping", "preconditioner_draws": "draws"}
# which preconditioner takes which of them
PRECONDITIONER_OPTIONS = {"spectral": {"rank", "tol"}, "kfac": {"damping", "draws"}, "amg": set()}


def _preconditioner(krylov: dict):
    """`[krylov] preconditioner = "spectral"` and its preconditioner_* options, popped from the
    table (solvers/preconditioners.py), or None; ConfigError on a bad name or value."""
    from solvers.preconditioners import PRECONDITIONERS, make_preconditioner

    name = krylov.pop("preconditioner", None)
    for k in krylov:
        if k.startswith("preconditioner") and k not in PRECONDITIONER_KEYS:
            raise ConfigError(f"[krylov] unknown key {k!r}; the preconditioner's keys: preconditioner, "
                              f"{', '.join(PRECONDITIONER_KEYS)}")
    options = {PRECONDITIONER_KEYS[k]: krylov.pop(k) for k in list(krylov) if k in PRECONDITIONER_KEYS}
    if name is None:
        if options:
            raise ConfigError(f"[krylov] {', '.join('preconditioner_' + k for k in options)} given without "
                              f"preconditioner = ...; valid: {', '.join(PRECONDITIONERS)}")
        return None
    if not isinstance(name, str):
        raise ConfigError(f"[krylov] preconditioner must be a name, got {name!r}; valid: {', '.join(PRECONDITIONERS)}")
    foreign = sorted(set(options) - PRECONDITIONER_OPTIONS.get(name, set(options)))
    if name in PRECONDITIONERS and foreign:
        owners = {k: next(n for n, keys in PRECONDITIONER_OPTIONS.items() if k in keys) for k in foreign}
        raise ConfigError(f"[krylov] {', '.join('preconditioner_' + k for k in foreign)}: "
                          f"{'an option' if len(foreign) == 1 else 'options'} of the "
                          f"{' and '.join(sorted(set(owners.values())))} preconditioner, not of {name!r}")
    try:
        return make_preconditioner(name, **options)
    except ValueError as e:  # Spectral's messages name its fields (rank, tol): here they are preconditioner_*
        msg = first_line(e, typed=False)
        for field in PRECONDITIONER_KEYS.values():
            msg = msg.replace(f"preconditioner {field} ", f"preconditioner_{field} ")
        raise ConfigError(f"[krylov] {msg}") from None


def load_config(path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"configuration file not found: {path}")
    if path.is_dir():
        raise ConfigError(f"{path} is a directory, not a configuration file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}: {data[e.start:e.start + 1]!r}); TOML files are "
                          f"UTF-8") from None
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {toml_error(text, e)}") from None
    if not config:  # a file given on purpose that says nothing: every option its default is not a choice
        raise ConfigError(f"{path} is empty (no tables, no keys): give at least [problem] name = ...; "
                          f"`python -m continuation run` without a file runs the built-in default")
    return config


def toml_error(text: str, e: Exception) -> str:
    """The parser's error as one line naming what is wrong where: the line's number and text, and
    for the common mistakes the key or table by name (a key given twice, a table declared twice,
    a table name that is not a bare key)."""
    m = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
    what = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(e)) or "invalid"
    if m is None:
        return f"not valid TOML: {what}"
    number = int(m.group(1))
    lines = text.splitlines()
    line = lines[number - 1].strip() if 0 < number <= len(lines) else ""
    table = ""
    for previous in reversed(lines[:number - 1]):
        header = re.match(r"\s*\[+\s*([^\]]*?)\s*\]+", previous)
        if header:
            table = header.group(1)
            break
    where = f"line {number}: {line!r}"
    key = re.match(r"\s*([^=\s]+)\s*=", line)
    header = re.match(r"\s*\[+\s*([^\]]*?)\s*(\]+|$)", line)
    if what.startswith("Cannot overwrite a value") and key:
        inside = f" in [{table}]" if table else ""
        return f"key {key.group(1)!r} is given twice{inside} ({where}); keep one"
    if what.startswith("Invalid value") and key:
        inside = f" in [{table}]" if table else ""
        return f"key {key.group(1)!r}{inside} has no valid value ({where}): give a number, \"text\", true/false, [...] or {{...}}"
    if what.startswith("Cannot declare") and header:
        return f"table [{header.group(1)}] is declared twice ({where}); merge the two"
    if header and not key and ("table declaration" in what or "Invalid" in what):
        name = header.group(1)
        if not re.fullmatch(r"[A-Za-z0-9_.\-\s\"']+", name) or not line.rstrip().endswith("]"):
            known = ", ".join(f"[{s}]" for s in SECTIONS)
            return (f"table header [{name}] is not valid TOML ({where}): a table name is letters A-Z a-z, digits, _ "
                    f"and - (or quoted), closed by ]; the tables are {known}, [sweep]")
    return f"not valid TOML: {what} ({where})"


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else "inf" if v == math.inf else "-inf" if v == -math.inf else repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string: JSON's escapes are TOML's
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)


def _toml_key(k) -> str:
    k = str(k)
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def dumps_toml(config: dict) -> str:
    """A configuration dict as TOML: its dicts as tables (their dicts inline), any other top-level
    value as a key before the first table; floats include nan and inf (TOML has them)."""
    keys = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in config.items() if not isinstance(v, dict)]
    tables = []
    for section, table in config.items():
        if isinstance(table, dict):
            tables += [f"[{_toml_key(section)}]", *(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items()), ""]
    return "\n".join(keys + ([""] if keys and tables else []) + tables)


def write_toml(config: dict, path) -> Path:
    """`dumps_toml(config)` written to `path`; the path."""
    path = Path(path)
    path.write_text(dumps_toml(config))
    return path


# -- the tables of `continuation phase-diagram` and `continuation tree` (checked here, used by apps/) --

PHASE_KEYS = {"along": "gamma", "range": None, "step": None, "max_step": None, "min_step": None,
              "gtol": 1e-11, "eig_tol": 1e-10, "dense_below": 512}


def _command_table(config: dict, name: str, keys: dict, example: str) -> dict:
    """A command's table ([phase_diagram], [tree]) over its defaults; ConfigError where it is absent
    or has an unknown key."""
    table = config.get(name)
    if not isinstance(table, dict):
        raise ConfigError(f"{name.replace('_', '-')} needs a [{name}] table: {example}")
    unknown = [k for k in table if k not in keys]
    if unknown:
        raise ConfigError(f"[{name}] unknown key {unknown[0]!r}; valid: {', '.join(keys)}")
    return {**keys, **table}


def phase_options(config: dict) -> dict:
    """The [phase_diagram] table, checked (ConfigError, one line)."""
    o = _command_table(config, "phase_diagram", PHASE_KEYS, "along = \"gamma\", range = [LOW, HIGH]")
    if o["along"] not in MU_NAMES:
        raise ConfigError(f"[phase_diagram] along must be one of {', '.join(MU_NAMES)}, got {o['along']!r}")
    r = o["range"]
    if not (isinstance(r, list) and len(r) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                        and math.isfinite(v) for v in r) and r[0] < r[1]):
        raise ConfigError(f"[phase_diagram] range must be [LOW, HIGH] with LOW < HIGH, finite, got {r!r}")
    if o["along"] != "t" and not r[0] > 0:
        raise ConfigError(f"[phase_diagram] range must lie in {o['along']} > 0, got {r!r}")
    o["step"] = (r[1] - r[0]) / 25 if o["step"] is None else o["step"]
    for key in ("step", "max_step", "min_step", "gtol", "eig_tol"):
        v = o[key]
        if v is not None and not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                                  and v > 0):
            raise ConfigError(f"[phase_diagram] {key} must be a positive number, got {v!r}")
    top = o["max_step"] if o["max_step"] is not None else o["step"]
    if o["step"] > top:
        raise ConfigError(f"[phase_diagram] step = {o['step']} exceeds max_step = {top}")
    if o["min_step"] is not None and o["min_step"] > min(o["step"], top):
        raise ConfigError(f"[phase_diagram] min_step = {o['min_step']} exceeds step = {o['step']} or max_step = {top}")
    if not (isinstance(o["dense_below"], int) and o["dense_below"] >= 0):
        raise ConfigError(f"[phase_diagram] dense_below must be an integer >= 0, got {o['dense_below']!r}")
    return o


TREE_KEYS = {"depth": 1, "offset": 0.01, "max_steps": 40}


def tree_options(config: dict) -> dict:
    """The [tree] table, checked (ConfigError, one line)."""
    o = _command_table(config, "tree", TREE_KEYS, "depth = 1, offset = 0.01, max_steps = 40")
    for key in ("depth", "max_steps"):
        if isinstance(o[key], bool) or not isinstance(o[key], int) or o[key] < 1:
            raise ConfigError(f"[tree] {key} must be an integer >= 1, got {o[key]!r}")
    off = o["offset"]
    if isinstance(off, bool) or not isinstance(off, (int, float)) or not (0 < off < 0.5):
        raise ConfigError(f"[tree] offset must be a number in (0, 0.5), got {off!r}")
    return o


def build_run(config: dict, *, check_start: bool = True) -> dict:
    """Every object a run needs, from a parsed configuration (a dict as TOML gives it).

    Every value is checked before any work: types, finiteness at every depth, ranges, names;
    with check_start (a run that starts from [start], not from --from), also that the stop
    rule's target lies ahead in the direction the process moves. Raises ConfigError (one line)."""
    if not isinstance(config, dict):
        raise ConfigError(f"a configuration is a table of tables, got {type(config).__name__}")
    for section in config:
        if section not in SECTIONS:
            raise ConfigError(f"unknown section [{section}]; valid: {', '.join(SECTIONS)}")
        if not isinstance(config[section], dict):
            raise ConfigError(f"[{section}] must be a table")
    if "phase_diagram" in config:  # `continuation phase-diagram`'s table (continuation/apps/phase_diagram.py):
        phase_options(config)      # a run of the same file ignores it, but checks it
    if "tree" in config:  # `continuation tree`'s table (continuation/apps/branch_tree.py), likewise
        tree_options(config)
    start = {**START_KEYS, **_checked_options("start", config.get("start", {}), START_KEYS, "start")}
    output = {**OUTPUT_KEYS, **_checked_options("output", config.get("output", {}), OUTPUT_KEYS, "output")}
    for key in ("lambda", "gamma"):
        if not start[key] > 0:
            raise ConfigError(f"[start] {key} must be > 0, got {start[key]}")
    if not 0.0 <= start["t"] <= 1.0:
        raise ConfigError(f"[start] t must be in [0, 1] (t = 0 the source task, 1 the target), got {start['t']}")
    if not (isinstance(start["settle"], int) and start["settle"] >= 1):
        raise ConfigError(f"[start] settle must be an integer >= 1, got {start['settle']!r}")
    if start["train_steps"] < 0:
        raise ConfigError(f"[start] train_steps must be >= 0 (0: no pre-training), got {start['train_steps']}")
    if not start["train_lr"] > 0:
        raise ConfigError(f"[start] train_lr must be > 0, got {start['train_lr']}")
    if start["train_schedule"] not in TRAIN_SCHEDULES:
        raise ConfigError(f"[start] train_schedule must be one of {', '.join(TRAIN_SCHEDULES)}, "
                          f"got {start['train_schedule']!r}")
    if start["train_resample_every"] < 0:
        raise ConfigError(f"[start] train_resample_every must be >= 0 (0: one draw), got {start['train_resample_every']}")
    if output["checkpoint_every"] < 1:
        raise ConfigError(f"[output] checkpoint_every must be >= 1, got {output['checkpoint_every']}")
    krylov = dict(config.get("krylov", {}))
    hvp_mode = _check_value("krylov", "hvp_mode", krylov.pop("hvp_mode", "rev-rev"), "rev-rev")
    if hvp_mode not in ("fwd-rev", "rev-rev"):
        raise ConfigError(f"[krylov] hvp_mode must be 'fwd-rev' or 'rev-rev', got {hvp_mode!r}")
    run = {name: build(name, config.get(name)) for name in ("problem", "process", "predictor", "corrector",
                                                            "projection", "steps")}
    preconditioner = _preconditioner(krylov)
    run["krylov"], run["hvp_mode"] = build("krylov", krylov), hvp_mode
    if preconditioner is not None:
        if not hasattr(run["krylov"], "preconditioner"):
            raise ConfigError(f"[krylov] preconditioner works with name = \"cg\" or \"minres\", not "
                              f"{krylov.get('name', DEFAULT_NAMES['krylov'])!r}")
        run["krylov"].preconditioner = preconditioner
    options = _checked_options("stop", config.get("stop", {}), _parameters(StopRule), "[stop]",
                               _annotations(StopRule))
    try:
        run["stop"] = StopRule(**options)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"[stop] {first_line(e, typed=False)}") from None
    run["monitor"] = _monitor(config.get("monitor"))
    try:
        check_combination(run["problem"], run["process"], run["predictor"], run["corrector"], run["projection"],
                          run["monitor"])
    except Misconfigured as e:
        raise ConfigError(f"[{e.section}] {first_line(e, typed=False)}") from None
    if check_start:
        try:
            check_reachable(run["process"], run["stop"], (start["lambda"], start["gamma"], start["t"]), run["problem"])
        except ValueError as e:
            raise ConfigError(f"[stop] {first_line(e, typed=False)} ([start] {_start_text(start)}, [process] name = "
                              f"{run['process'].name!r})") from None
    _bind_to_pattern(run)
    run["start"], run["output"] = start, output
    return run


def _bind_to_pattern(run: dict) -> None:
    """A sparse direct solver or the amg preconditioner takes the problem's declared sparsity pattern
    (solvers/sparse.py): checked here, on the problem's start parameters, before any work (the
    stepper binds them again to the run's own template). ConfigError (one line) where the problem
    declares none, its sparsity function fails, or the pattern is wrong."""
    solver = run["krylov"]
    for what, obj in (("name = \"sparse-lu\"", solver if getattr(solver, "direct", False) else None),
                      ("preconditioner", getattr(solver, "preconditioner", None))):
        if obj is None or not callable(getattr(obj, "bind", None)):
            continue
        try:
            obj.bind(run["problem"], run["problem"].init_params(0))
        except ValueError as e:
            msg = first_line(e, typed=False)
            raise ConfigError(msg if msg.startswith("[krylov]") else f"[krylov] {what}: {msg}") from None


def _monitor(table: dict | None):
    """The [monitor] section: "auto" when absent (continue_path decides by the problem), None when
    enabled = false, else a Monitor with the table's options."""
    if table is None:
        return "auto"
    table = dict(table)
    enabled = table.pop("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"[monitor] enabled must be true or false, got {enabled!r}")
    options = _checked_options("monitor", table, {"enabled": True, **_parameters(Monitor)}, "[monitor]",
                               _annotations(Monitor))
    options.pop("enabled", None)
    if not enabled:
        if options.get("branch") == "switch":  # the switch is the monitor's: off, it would be ignored silently
            raise ConfigError("[monitor] branch = 'switch' needs the monitor, which enabled = false turns off")
        return None
    try:
        return Monitor(**options)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"[monitor] {first_line(e, typed=False).removeprefix('monitor ')}") from None


def _start_text(start) -> str:
    return f"lambda = {start['lambda']:g}, gamma = {start['gamma']:g}, t = {start['t']:g}"


def describe_registry() -> str:
    """The text of `python -m continuation list`."""
    lines = []
    plural = {"problem": "problems", "process": "processes", "predictor": "predictors", "corrector": "correctors",
              "projection": "projections", "krylov": "krylov solvers", "steps": "step controls"}
    for role, registry in REGISTRY.items():
        lines.append(f"{plural[role]} ([{role}] name = ...):")
        for name, factory in registry.items():
            doc = " ".join((inspect.getdoc(factory) or "").split("\n\n")[0].split())  # the first paragraph
            opts = ", ".join(f"{k}={v!r}" for k, v in _parameters(factory).items() if v is not inspect.Parameter.empty)
            lines.append(f"  {name:<24} {doc}")
            if opts:
                lines.append(f"  {'':<24} options: {opts}")
    from solvers.preconditioners import PRECONDITIONERS

    lines.append("preconditioners ([krylov] preconditioner = ..., with name = \"cg\" or \"minres\"):")
    for name, cls in PRECONDITIONERS.items():
        doc = " ".join((inspect.getdoc(cls) or "").split("\n\n")[0].split())
        keys = [k for k, v in PRECONDITIONER_KEYS.items() if v in _parameters(cls)]
        lines.append(f"  {name:<24} {doc}")
        if keys:
            lines.append(f"  {'':<24} options: {', '.join(keys)}")
    return "\n".join(lines)
