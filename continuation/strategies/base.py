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
    """A named role object; `settings()` gives its name and options.

    State in, state out (optax's init / update): a strategy that carries something from one
    accepted point to the next keeps it in its own slot of the run's State
    (continuation/engine/state.py), never in the engine's fields:

        own = strategy.init_state(start)            # at the first point (a Point)
        own = strategy.update_state(own, accepted)  # after each accepted point (an Accepted)

    and declares `stateful = True`, so that the engine passes `own=` to its working call
    (predict, correct, project, ...). The slot is written with every point's checkpoint as
    JSON and read back by `--resume` (continuation/engine/state.py: dump_slots / load_slots),
    so it must be made of numbers, strings, None, lists and dicts; `load_state` turns the
    JSON form back (lists into tuples, say) where the strategy needs it. Stateless strategies
    (the default) keep None and need none of this."""

    name: ClassVar[str] = "strategy"
    stateful: ClassVar[bool] = False

    def settings(self) -> dict:
        return settings_of(self)

    def init_state(self, start) -> object:
        """This strategy's own state at the first point `start` (None: it keeps none)."""
        return None

    def update_state(self, own, accepted) -> object:
        """This strategy's own state after an accepted point (`accepted`: an engine Accepted)."""
        return own

    def load_state(self, raw) -> object:
        """The state from its JSON form (what init_state / update_state returned, through JSON)."""
        return raw
