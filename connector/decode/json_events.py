"""JSON events: plain rows and Debezium change events, with or without the schema/payload wrapper."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson

from connector.decode.envelope import from_envelope, from_flat
from connector.errors import DecodeError
from connector.models import ChangeEvent

TOMBSTONE = ChangeEvent("tombstone", None)
_EPOCH = dt.date(1970, 1, 1)


def _not_json(exc: orjson.JSONDecodeError) -> DecodeError:
    return DecodeError(f"not valid JSON: {exc}")


def decode_plain_json(value: bytes | None) -> ChangeEvent:
    """A JSON object holding the profile row (``__op``/``__deleted`` honoured when present)."""
    if value is None:
        return TOMBSTONE
    try:
        doc = orjson.loads(value)  # inline rather than in a helper: this runs once per record
    except orjson.JSONDecodeError as exc:
        raise _not_json(exc) from None
    if type(doc) is not dict:
        raise DecodeError(f"expected a JSON object, got {type(doc).__name__}")
    return from_flat(doc, default_op="u")


def decode_debezium_json(value: bytes | None) -> ChangeEvent:
    """Debezium's JSON converter output, schemas enabled or not, envelope or flattened."""
    if value is None:
        return TOMBSTONE
    try:
        doc = orjson.loads(value)  # inline rather than in a helper: this runs once per record
    except orjson.JSONDecodeError as exc:
        raise _not_json(exc) from None
    if type(doc) is not dict:
        raise DecodeError(f"expected a JSON object, got {type(doc).__name__}")
    schema = None
    if "payload" in doc and "schema" in doc:
        schema, doc = doc["schema"], doc["payload"]
        if doc is None:
            return TOMBSTONE
        if type(doc) is not dict:
            raise DecodeError("payload is not an object")
    event = from_envelope(doc)
    if schema and event.row:
        event = ChangeEvent(event.op, _apply_logical_types(event.row, schema, event.op), event.source_ts_ms)
    return event


def _row_fields(schema: dict[str, Any], op: str) -> list[dict[str, Any]]:
    fields = schema.get("fields") or []
    wanted = "before" if op == "d" else "after"
    for f in fields:  # envelope: the row schema is the field named after/before
        if f.get("field") == wanted and f.get("type") == "struct":
            return list(f.get("fields") or [])
    return list(fields)


def _apply_logical_types(row: dict[str, Any], schema: Any, op: str) -> dict[str, Any]:
    """Turn Debezium's numeric temporal encodings into the strings Altcraft fields expect."""
    if type(schema) is not dict:
        return row
    out = row
    for f in _row_fields(schema, op):
        name, logical = f.get("field"), f.get("name")
        if not logical or name not in row:
            continue
        v = row[name]
        converted = convert_temporal(logical, v)
        if converted is not v:
            if out is row:
                out = dict(row)
            out[name] = converted
    return out


def convert_temporal(logical: str, v: Any) -> Any:
    """Debezium / Kafka Connect temporal logical types -> ISO strings; other values unchanged."""
    if type(v) is not int:
        return v
    if logical in ("io.debezium.time.Date", "org.apache.kafka.connect.data.Date"):
        return (_EPOCH + dt.timedelta(days=v)).isoformat()
    if logical in ("io.debezium.time.Timestamp", "org.apache.kafka.connect.data.Timestamp"):
        return _iso(v / 1000)
    if logical == "io.debezium.time.MicroTimestamp":
        return _iso(v / 1_000_000)
    if logical == "io.debezium.time.NanoTimestamp":
        return _iso(v / 1_000_000_000)
    return v


def _iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC).isoformat().replace("+00:00", "Z")
