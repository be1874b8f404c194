"""Format-independent reading of change envelopes (Debezium and flattened), once the bytes are parsed.

Shared by the JSON and the Avro decoders so that both treat ops, deletes and placeholders alike.
"""

from __future__ import annotations

from typing import Any

from connector.errors import DecodeError
from connector.models import ChangeEvent

# Debezium writes this in place of a column whose value it could not read (e.g. unchanged TOAST);
# sending it would overwrite the real value in Altcraft.
UNAVAILABLE = "__debezium_unavailable_value"
KNOWN_OPS = frozenset({"c", "r", "u", "d", "t", "m"})


def strip_unavailable(row: dict[str, Any]) -> dict[str, Any]:
    """The row without top-level placeholder values (nested ones are dropped where they are read).

    The common case, no placeholder, costs one scan in C and no copy.
    """
    if UNAVAILABLE not in row.values():
        return row
    return {k: v for k, v in row.items() if v != UNAVAILABLE}


def from_envelope(doc: dict[str, Any]) -> ChangeEvent:
    """A Debezium envelope (``op``, ``before``, ``after``) or a flattened row (``__op``, ``__deleted``)."""
    op = doc.get("op")
    if op is not None and ("after" in doc or "before" in doc):
        if type(op) is not str or op not in KNOWN_OPS:  # a list or an object is not even hashable
            raise DecodeError(f"unknown Debezium op {_shown(op)}")
        row = doc.get("before") if op == "d" else doc.get("after")
        if row is not None and type(row) is not dict:
            raise DecodeError(f"Debezium {'before' if op == 'd' else 'after'} is not an object")
        ts = doc.get("ts_ms")
        return ChangeEvent(op, strip_unavailable(row) if row else row, ts if type(ts) is int else None)
    return from_flat(doc, default_op="r")


def from_flat(doc: dict[str, Any], default_op: str) -> ChangeEvent:
    """A row that may carry ExtractNewRecordState's ``__`` fields (``__op``, ``__deleted``, ``__source_ts_ms``)."""
    if not any(k.startswith("__") for k in doc):
        return ChangeEvent(default_op, strip_unavailable(doc))
    op = doc.get("__op", default_op)
    deleted = doc.get("__deleted")
    if deleted is True or deleted == "true":
        op = "d"
    if type(op) is not str or op not in KNOWN_OPS:
        raise DecodeError(f"unknown __op {_shown(op)}")
    ts = doc.get("__source_ts_ms")
    row = {k: v for k, v in doc.items() if not k.startswith("__")}
    return ChangeEvent(op, strip_unavailable(row), ts if type(ts) is int else None)


def _shown(value: Any) -> str:
    """A value for a message, cut short: the record may carry anything there (even 1,000 nested arrays)."""
    if type(value) in (dict, list):
        return f"of type {type(value).__name__}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
