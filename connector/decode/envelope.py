"""Format-independent reading of change envelopes (Debezium and flattened), once the bytes are parsed.

Shared by the JSON and the Avro decoders so that both treat ops, deletes and placeholders alike.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from connector.errors import DecodeError
from connector.models import ChangeEvent

# Debezium writes this in place of a column whose value it could not read (e.g. unchanged TOAST);
# sending it would overwrite the real value in Altcraft.
UNAVAILABLE = "__debezium_unavailable_value"
# The same placeholder in a bytea column, as Debezium writes bytes with binary.handling.mode=base64
# (the JSON converter's default for bytes); Avro bytes are read as base64 text too.
UNAVAILABLE_B64 = base64.b64encode(UNAVAILABLE.encode()).decode("ascii")
UNAVAILABLE_BYTES = UNAVAILABLE.encode()
_PLACEHOLDERS = (UNAVAILABLE, UNAVAILABLE_B64)
_PLACEHOLDER_SET = frozenset(_PLACEHOLDERS)
KNOWN_OPS = frozenset({"c", "r", "u", "d", "t", "m"})
_MAX_DEPTH = 254  # as deep as the JSON writer goes; deeper values fail in mapping, with a message


def strip_unavailable(row: dict[str, Any]) -> dict[str, Any]:
    """The row without placeholders, at any depth: a column that is the placeholder (in either form),
    or an array column holding one (Debezium's placeholder for an unchanged array), is left out: its
    value is unknown, and absent means "unchanged". Nested object members and array items that are
    one are dropped.

    The common case, no placeholder and no array or object among the values, costs one set lookup per
    value in C and no copy.
    """
    try:
        if _PLACEHOLDER_SET.isdisjoint(row.values()):
            return row
    except TypeError:  # an array or an object among the values: look inside
        if not _holds_placeholder(list(row.values())):
            return row
    out: dict[str, Any] = {}
    for k, v in row.items():
        kind = type(v)
        if kind is str:
            if v in _PLACEHOLDERS:
                continue
        elif kind is list:
            if UNAVAILABLE in v or UNAVAILABLE_B64 in v:
                continue
            v = _without_placeholders(v, 1)
        elif kind is dict:
            v = _without_placeholders(v, 1)
        out[k] = v
    return out


def _holds_placeholder(value: Any) -> bool:
    """Whether a placeholder is anywhere inside ``value`` (walked with a stack: no depth limit)."""
    stack = [value]
    while stack:
        v = stack.pop()
        kind = type(v)
        if kind is str:
            if v in _PLACEHOLDERS:
                return True
        elif kind is dict:
            stack.extend(v.values())
        elif kind is list:
            stack.extend(v)
    return False


def _without_placeholders(value: Any, depth: int) -> Any:
    # Loops rather than comprehensions: one frame per level, so that nesting as deep as the JSON writer
    # allows stays far from the recursion limit.
    if depth > _MAX_DEPTH:
        return value
    if type(value) is dict:
        obj: dict[str, Any] = {}
        for k, v in value.items():
            if not (type(v) is str and v in _PLACEHOLDERS):
                obj[k] = _without_placeholders(v, depth + 1)
        return obj
    if type(value) is list:
        items: list[Any] = []
        for v in value:
            if not (type(v) is str and v in _PLACEHOLDERS):
                items.append(_without_placeholders(v, depth + 1))
        return items
    return value


Strip = Callable[[dict[str, Any]], dict[str, Any]] | None


def from_envelope(doc: dict[str, Any], strip: Strip = strip_unavailable) -> ChangeEvent:
    """A Debezium envelope (``op``, ``before``, ``after``) or a flattened row (``__op``, ``__deleted``).

    ``strip``: what takes placeholders out of the row (None: nothing, for rows known to hold none).
    """
    op = doc.get("op")
    if op is not None and ("after" in doc or "before" in doc):
        if type(op) is not str or op not in KNOWN_OPS:  # a list or an object is not even hashable
            raise DecodeError(f"unknown Debezium op {_shown(op)}")
        row = doc.get("before") if op == "d" else doc.get("after")
        if row is not None and type(row) is not dict:
            raise DecodeError(f"Debezium {'before' if op == 'd' else 'after'} is not an object")
        ts = doc.get("ts_ms")
        if row and strip is not None:
            row = strip(row)
        return ChangeEvent(op, row, ts if type(ts) is int else None)
    return from_flat(doc, default_op="r", strip=strip)


def from_flat(doc: dict[str, Any], default_op: str, strip: Strip = strip_unavailable) -> ChangeEvent:
    """A row that may carry ExtractNewRecordState's ``__`` fields (``__op``, ``__deleted``, ``__source_ts_ms``)."""
    if not any(k.startswith("__") for k in doc):
        return ChangeEvent(default_op, doc if strip is None else strip(doc))
    op = doc.get("__op", default_op)
    deleted = doc.get("__deleted")
    if deleted is True or deleted == "true":
        op = "d"
    if type(op) is not str or op not in KNOWN_OPS:
        raise DecodeError(f"unknown __op {_shown(op)}")
    ts = doc.get("__source_ts_ms")
    row = {k: v for k, v in doc.items() if not k.startswith("__")}
    return ChangeEvent(op, row if strip is None else strip(row), ts if type(ts) is int else None)


def _shown(value: Any) -> str:
    """A value for a message, cut short: the record may carry anything there (even 1,000 nested arrays)."""
    if type(value) in (dict, list):
        return f"of type {type(value).__name__}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
