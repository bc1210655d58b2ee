"""OUT.journal, the write-ahead journal of a path: one JSON line per entry, on record once its
newline is written. `read_journal` gives the (attrs, rows) on record."""

from __future__ import annotations

import json

from continuation.errors import PathFileError, first_line
from continuation.files.schema import EVENT_FIELDS, journal_file


# -- the journal ---------------------------------------------------------------------------------
# OUT.journal, JSON lines: {"attrs": {...}} first (every attribute), then per point
# {"row": {...}, "prune": K or null} (the row as rows_to_dataset takes it: scalars, eig as a list,
# events without their tensors; prune: the earlier point whose checkpoint this one deletes), and
# {"attrs": {...}} for attribute updates (merged). A line is on record once its newline is written.


def _plain(value):
    """json's fallback: numpy and torch numbers (and arrays) as Python numbers (lists)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"a path value must be a number, a string or a list of them, got {type(value).__name__}")


def _line(entry: dict) -> bytes:
    return json.dumps(entry, separators=(",", ":"), allow_nan=True, default=_plain).encode()


def _journal_row(row: dict) -> dict:
    """The row as the file holds it: its events reduced to the event_* fields."""
    if "events" not in row:
        return row
    return dict(row, events=[{k: e[k] for k in EVENT_FIELDS if k in e} for e in row["events"]])


def _entry(entry, rows: list) -> tuple[str, dict | None, int | None]:
    """("attrs", attrs, None) or ("row", row, prune) of one parsed journal line; ValueError if it is neither."""
    if not isinstance(entry, dict):
        raise ValueError("not a JSON object")
    if "attrs" in entry:
        if not isinstance(entry["attrs"], dict):
            raise ValueError("attrs is not an object")
        return "attrs", entry["attrs"], None
    row, prune = entry.get("row"), entry.get("prune")
    if not isinstance(row, dict) or not all(isinstance(k, str) for k in row):
        raise ValueError("neither attrs nor a row")
    if prune is not None and not (isinstance(prune, int) and 0 <= prune < len(rows)):
        raise ValueError(f"prune {prune!r} names no earlier point")
    if "eig" in row:
        row["eig"] = tuple(float(v) for v in row["eig"])
    if not isinstance(row.get("events", []), list) or not all(isinstance(e, dict) for e in row.get("events", [])):
        raise ValueError("events is not a list of objects")
    return "row", row, prune


def read_journal(path) -> tuple[dict, list[dict]] | None:
    """(attrs, rows) on record in OUT.journal, or None when there is no journal (or none of it is
    on record). The part after the last newline, and a last line that is not valid, are a torn
    write: dropped. Cost: O(points) (one json.loads a point).

    PathFileError (one line naming the journal) when it cannot be read or a line before the last
    is not a journal line (damage, not a torn write)."""
    file = journal_file(path)
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        return None  # none, or deleted by a finishing writer since: the file is then whole
    except OSError as e:
        raise PathFileError(f"{file} (the journal of {path}) cannot be read ({first_line(e)})") from e
    lines = data.split(b"\n")[:-1]  # after the last newline: a line not on record
    attrs, rows = None, []
    for i, line in enumerate(lines):
        try:
            kind, value, prune = _entry(json.loads(line), rows)
            if attrs is None and kind != "attrs":
                raise ValueError("the first line holds no attrs")
        except (ValueError, TypeError) as e:
            if i == len(lines) - 1:
                break  # a torn last line
            raise PathFileError(f"{file} (the journal of {path}) is damaged at line {i + 1} of {len(lines)} "
                                f"({first_line(e)}); remove it to read {path} without it") from None
        if kind == "attrs":
            attrs = {**(attrs or {}), **value}
            continue
        rows.append(value)
        if prune is not None:
            rows[prune]["checkpoint"] = -1
    return None if attrs is None else (attrs, rows)
