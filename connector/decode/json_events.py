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
        if schema is not None and type(schema) is not dict:
            raise DecodeError(f"schema is {_a(schema)}, not an object")
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


def _apply_logical_types(row: dict[str, Any], schema: dict[str, Any], op: str) -> dict[str, Any]:
    """Turn Debezium's numeric temporal encodings into the strings Altcraft fields expect.

    The schema block is walked without checks (it runs once per record); a malformed one raises here
    and is described by :func:`_schema_problem`, off the hot path.
    """
    out = row
    try:
        for f in _row_fields(schema, op):
            name, logical = f.get("field"), f.get("name")
            if not logical or name not in row:
                continue
            v = row[name]
            try:
                converted = convert_temporal(logical, v)
            except DecodeError as exc:
                raise DecodeError(f"{name}: {exc}") from None
            if converted is not v:
                if out is row:
                    out = dict(row)
                out[name] = converted
    except (AttributeError, TypeError) as exc:
        raise DecodeError(_schema_problem(schema, op) or f"the schema block is malformed: {exc}") from None
    return out


def _schema_problem(schema: dict[str, Any], op: str) -> str | None:
    """What is wrong with the shape of a schema block, as a path (``schema.fields[3] is not an object``)."""
    fields = schema.get("fields") or []
    if type(fields) is not list:
        return f"schema.fields is {_a(fields)}, not a list"
    wanted = "before" if op == "d" else "after"
    where = "schema.fields"
    for i, f in enumerate(fields):
        if type(f) is not dict:
            return f"schema.fields[{i}] is {_a(f)}, not an object"
        if f.get("field") == wanted and f.get("type") == "struct":
            fields = f.get("fields") or []
            where = f"schema.fields[{i}].fields"
            if type(fields) is not list:
                return f"{where} is {_a(fields)}, not a list"
            break
    for i, f in enumerate(fields):
        if type(f) is not dict:
            return f"{where}[{i}] is {_a(f)}, not an object"
        name = f.get("field")
        if f.get("name") and name is not None and type(name) is not str:
            return f"{where}[{i}].field is {_a(name)}, not a string"
    return None


def _a(value: Any) -> str:
    """A JSON value's kind, for messages: "an array", "a number", "null"."""
    if value is None:
        return "null"
    kind = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(type(value))
    return kind or "a number"


_DATES = ("io.debezium.time.Date", "org.apache.kafka.connect.data.Date")
_MILLIS = ("io.debezium.time.Timestamp", "org.apache.kafka.connect.data.Timestamp")


def convert_temporal(logical: str, v: Any) -> Any:
    """Debezium / Kafka Connect temporal logical types -> ISO strings; other values unchanged.

    Raises :class:`DecodeError` for a value outside the dates and times Python represents (years 1 to
    9999): a real column never holds one, so the record is corrupt.
    """
    if type(v) is not int:
        return v
    try:
        if logical in _DATES:
            return (_EPOCH + dt.timedelta(days=v)).isoformat()
        if logical in _MILLIS:
            return _iso(v / 1000)
        if logical == "io.debezium.time.MicroTimestamp":
            return _iso(v / 1_000_000)
        if logical == "io.debezium.time.NanoTimestamp":
            return _iso(v / 1_000_000_000)
    except (OverflowError, ValueError, OSError):
        if logical in _DATES:
            raise DecodeError(f"day count {v} is outside the representable dates") from None
        raise DecodeError(f"{logical.rsplit('.', 1)[-1]} {v} is outside the representable times") from None
    return v


def _iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC).isoformat().replace("+00:00", "Z")
