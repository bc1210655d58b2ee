"""The base of every swappable role (process, predictor, corrector, projection, step control):
a name for configuration files and the settings it records in a path's attributes.

Concrete strategies are final dataclasses whose fields are their options (after diffrax and equinox), so that
`settings()` is the whole of what a run was asked to do, and a resumed run can be checked
against it.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC
from typing import ClassVar


def _plain(value):
    """A JSON-able form of an option value (a callable by its qualified name)."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # "inf", "nan": JSON has no such numbers
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if callable(value):
        return f"<{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', type(value).__name__)}>"
    if dataclasses.is_dataclass(value):
        return settings_of(value)
    return repr(value)


def settings_of(obj) -> dict:
    """{"name": ..., option: value, ...} of a dataclass strategy (fields not starting with _), or
    of a plain dict of options."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    out = {"name": getattr(obj, "name", type(obj).__name__)}
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            if not f.name.startswith("_"):
                out[f.name] = _plain(getattr(obj, f.name))
        for name in getattr(obj, "_omit_settings", tuple)():  # options that are settings only when set
            out.pop(name, None)
    return out


class Strategy(ABC):
    """A named role object; `settings()` gives its name and options."""

    name: ClassVar[str] = "strategy"

    def settings(self) -> dict:
        return settings_of(self)
