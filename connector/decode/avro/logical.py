"""Avro's logical types and Debezium's / Kafka Connect's named types -> the values Altcraft's fields take.

Chosen per reader type when a reader is compiled (:func:`conversion`), so a value is converted only where
its schema says so. What values become (Altcraft takes JSON; the JSON twins of Debezium events read the
same):

============================================  ======================================================
``date`` (int), Connect/Debezium ``Date``      ``"YYYY-MM-DD"``
``timestamp-millis/micros/nanos`` (long),      RFC 3339 in UTC: ``"2024-05-01T10:20:30.123000Z"``
Debezium ``Timestamp``/``MicroTimestamp``/...  (the same text as :func:`~connector.decode.json_events.convert_temporal`)
``local-timestamp-*`` (long)                   ISO 8601 without an offset: ``"2024-05-01T10:20:30"``
``time-millis/micros``                         ``"HH:MM:SS[.ffffff]"``
``decimal`` (bytes or fixed)                   a JSON number with exactly its digits (an int when it fits)
``uuid`` (string or fixed 16)                  the canonical UUID string
``bytes`` / ``fixed`` without a logical type   base64 text (what Kafka Connect's JSON converter writes)
enum                                           the symbol
============================================  ======================================================

The Debezium / Connect types, dates and the text arithmetic are :mod:`connector.decode.logical`'s, shared
with the JSON path; what is here is what only Avro has (its own logical types, with their messages).
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import uuid
from collections.abc import Callable
from typing import Any

import orjson

from connector.decode.avro.schema import Schema, _kind
from connector.decode.envelope import UNAVAILABLE, UNAVAILABLE_BYTES
from connector.decode.json_events import convert_temporal
from connector.decode.logical import (
    CONNECT_DATE,
    CONNECT_TIMESTAMP,
    DATE,
    JSON,
    MICRO_TIMESTAMP,
    NANO_TIMESTAMP,
    TIMESTAMP,
    VARIABLE_DECIMAL,
    clock_text,
    day_text,
    decimal_number,
    parsed_json,
    utc_text,
    variable_decimal,
)

_EPOCH_NAIVE = dt.datetime(1970, 1, 1)


def _b64(v: bytes) -> str:
    if v == UNAVAILABLE_BYTES:  # a bytea column Debezium could not read: the placeholder, never sent
        return UNAVAILABLE
    return base64.b64encode(v).decode("ascii")


def _beyond(v: int, unit: str) -> ValueError:
    return ValueError(f"{v} {unit} since the epoch is outside the representable times")


def _ts_millis(v: int) -> str:
    try:
        return utc_text(v * 1000)
    except OverflowError:
        raise _beyond(v, "ms") from None


def _ts_micros(v: int) -> str:
    try:
        return utc_text(v)
    except OverflowError:
        raise _beyond(v, "us") from None


def _ts_nanos(v: int) -> str:
    try:
        return utc_text(v // 1000)
    except OverflowError:
        raise _beyond(v, "ns") from None


def _local_millis(v: int) -> str:
    try:
        return (_EPOCH_NAIVE + dt.timedelta(milliseconds=v)).isoformat()
    except OverflowError:
        raise _beyond(v, "ms") from None


def _local_micros(v: int) -> str:
    try:
        return (_EPOCH_NAIVE + dt.timedelta(microseconds=v)).isoformat()
    except OverflowError:
        raise _beyond(v, "us") from None


def _local_nanos(v: int) -> str:
    try:
        return (_EPOCH_NAIVE + dt.timedelta(microseconds=v // 1000)).isoformat()
    except OverflowError:
        raise _beyond(v, "ns") from None


def _time_micros(v: int) -> str:
    if not 0 <= v < 86_400_000_000:
        raise ValueError(f"time of day {v} us is outside one day")
    return clock_text(v)


def _time_millis(v: int) -> str:
    return _time_micros(v * 1000)


def _decimal(scale: int, v: bytes) -> int | orjson.Fragment:
    """Exactly the column's digits, as the JSON path sends them (``decode.logical.decimal_number``): a float
    would round digits past the 15th."""
    return decimal_number(int.from_bytes(v, "big", signed=True), scale)


def _uuid_fixed(v: bytes) -> str:
    return str(uuid.UUID(bytes=v))


_LOGICAL: dict[tuple[str, str], Callable[[Any], Any]] = {
    ("int", "date"): day_text,
    ("long", "timestamp-millis"): _ts_millis,
    ("long", "timestamp-micros"): _ts_micros,
    ("long", "timestamp-nanos"): _ts_nanos,
    ("long", "local-timestamp-millis"): _local_millis,
    ("long", "local-timestamp-micros"): _local_micros,
    ("long", "local-timestamp-nanos"): _local_nanos,
    ("int", "time-millis"): _time_millis,
    ("long", "time-micros"): _time_micros,
}


# The temporal types read as text here. Debezium's Time, MicroTime and NanoTime, which the JSON path
# turns into "HH:MM:SS" text, still arrive as integers: the Avro reader's tests pin that down.
_AVRO_TEMPORAL = frozenset({DATE, CONNECT_DATE, TIMESTAMP, CONNECT_TIMESTAMP, MICRO_TIMESTAMP, NANO_TIMESTAMP})


@functools.cache
def _connect_temporal(name: str) -> Callable[[Any], Any] | None:
    """Debezium's / Kafka Connect's temporal types, converted exactly as the JSON path does."""
    if name not in _AVRO_TEMPORAL:
        return None
    sample = convert_temporal(name, 0)
    if sample == 0:
        return None  # not a temporal type the JSON path converts either
    convert = functools.partial(convert_temporal, name)
    if isinstance(sample, str) and len(sample) == len("1970-01-01"):
        return functools.lru_cache(maxsize=1 << 16)(convert)  # a date: few distinct values
    return convert


def conversion(r: Schema) -> Callable[[Any], Any] | None:
    """What turns a value of reader type ``r`` (dereferenced) into what Altcraft expects."""
    k = _kind(r)
    attrs: dict[str, Any] = r if isinstance(r, dict) else {}
    logical = attrs.get("logicalType")
    if logical == "decimal" and k in ("bytes", "fixed"):
        return functools.partial(_decimal, int(attrs.get("scale", 0)))
    if logical == "uuid" and k == "fixed" and attrs.get("size") == 16:
        return _uuid_fixed
    if k in ("bytes", "fixed"):
        return _b64
    if isinstance(logical, str) and (k, logical) in _LOGICAL:
        return _LOGICAL[(k, logical)]
    connect_name = attrs.get("connect.name")
    if k in ("int", "long") and isinstance(connect_name, str):
        return _connect_temporal(connect_name)
    if k == "string" and connect_name == JSON:
        return parsed_json  # jsonb: a document that fields paths reach into, as on the JSON path
    if k == "record" and VARIABLE_DECIMAL in (connect_name, attrs.get("name")):
        return variable_decimal  # {"scale", "value"} (the value already base64 text) -> a number
    return None
