"""Debezium's and Kafka Connect's logical types -> the values Altcraft's fields take.

Debezium writes several column types in encodings no Altcraft field accepts: dates as day counts,
timestamps as epoch numbers, decimals as the base64 of their unscaled integer, ``jsonb`` as text. A
record's schema block (or an Avro writer schema) names the logical type of each column; a stream
without schemas can declare them per route (``routes[].column_types``, vocabulary in
:data:`COLUMN_TYPES`). Either way the value goes through the same converter here:

================================================  ==================================================
``io.debezium.time.Date``, Connect ``Date``        ``"YYYY-MM-DD"``
``io.debezium.time.Timestamp`` / ``Micro...`` /    RFC 3339 in UTC: ``"2024-05-01T10:20:30.123000Z"``
``Nano...``, Connect ``Timestamp``
``io.debezium.time.Time`` / ``MicroTime`` /        ``"HH:MM:SS[.ffffff]"``
``NanoTime``, Connect ``Time``
``io.debezium.time.ZonedTimestamp``                unchanged (Debezium writes ISO 8601 text already)
Connect ``Decimal`` (base64, ``scale`` parameter)  a JSON number with exactly the column's digits
``io.debezium.data.VariableScaleDecimal``          the same, from ``{"scale": s, "value": base64}``
``io.debezium.data.Json``                          the parsed document, which paths can reach into
================================================  ==================================================

Decimals become an ``int`` when they have no fractional digits and fit in 64 bits, else an
:class:`orjson.Fragment` holding the number's text (``2.28``, ``-0.050``): a float would round digits
past the 15th, and orjson cannot write :class:`decimal.Decimal`.

Converters leave a value of an unexpected JSON type as it is (``decimal.handling.mode=string`` or
``double`` give text and numbers, which Altcraft takes), and raise :class:`ValueError` for a value of
the right type that cannot be what its type says (a day count past year 9999, text that is not base64).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import re
from collections.abc import Callable
from typing import Any

import orjson

Converter = Callable[[Any], Any]

DATE = "io.debezium.time.Date"
TIME = "io.debezium.time.Time"
MICRO_TIME = "io.debezium.time.MicroTime"
NANO_TIME = "io.debezium.time.NanoTime"
TIMESTAMP = "io.debezium.time.Timestamp"
MICRO_TIMESTAMP = "io.debezium.time.MicroTimestamp"
NANO_TIMESTAMP = "io.debezium.time.NanoTimestamp"
ZONED_TIMESTAMP = "io.debezium.time.ZonedTimestamp"
CONNECT_DATE = "org.apache.kafka.connect.data.Date"
CONNECT_TIME = "org.apache.kafka.connect.data.Time"
CONNECT_TIMESTAMP = "org.apache.kafka.connect.data.Timestamp"
DECIMAL = "org.apache.kafka.connect.data.Decimal"
VARIABLE_DECIMAL = "io.debezium.data.VariableScaleDecimal"
JSON = "io.debezium.data.Json"

_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
_EPOCH_UTC = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_INT64 = range(-(2**63), 2**63)


class _Beyond(ValueError):
    pass


# ------------------------------------------------------------------------------------ temporal


@functools.lru_cache(maxsize=1 << 16)  # dates repeat (birth dates, days): a lookup beats the arithmetic
def day_text(days: int) -> str:
    """A day count since 1970 as ``YYYY-MM-DD`` (shared by the JSON and the Avro readers)."""
    try:
        return dt.date.fromordinal(_EPOCH_ORDINAL + days).isoformat()
    except (OverflowError, ValueError):
        raise _Beyond(f"day count {days} is outside the representable dates") from None


def utc_text(micros: int) -> str:
    """µs since 1970 as RFC 3339 in UTC (shared with the Avro reader); :class:`OverflowError` past year 9999."""
    return (_EPOCH_UTC + dt.timedelta(microseconds=micros)).isoformat().replace("+00:00", "Z")


def clock_text(micros: int) -> str:
    """µs since midnight, within one day, as ``HH:MM:SS[.ffffff]`` (shared with the Avro reader)."""
    s, us = divmod(micros, 1_000_000)
    m, s = divmod(s, 60)
    h, m = divmod(m, 60)
    return dt.time(h, m, s, us).isoformat()


def _timestamp(micros: int, kind: str, raw: int) -> str:
    try:
        return utc_text(micros)
    except OverflowError:
        raise _Beyond(f"{kind} {raw} is outside the representable times") from None


def _time(micros: int, kind: str, raw: int) -> str:
    if not 0 <= micros < 86_400_000_000:
        raise _Beyond(f"{kind} {raw} is outside one day")
    return clock_text(micros)


def _temporal(to_text: Callable[[int, str, int], str], per_micro: int, kind: str) -> Converter:
    """A converter of integer counts of ``per_micro`` µs (negative: of 1/``-per_micro`` µs, rounded to
    the nearest µs, as Python's own conversion of a float timestamp rounds)."""

    def convert(v: Any) -> Any:
        if type(v) is not int:
            return v
        micros = v * per_micro if per_micro > 0 else (v - per_micro // 2) // -per_micro
        return to_text(micros, kind, v)

    return convert


def _date_of(v: Any) -> Any:
    return day_text(v) if type(v) is int else v


_TEMPORAL: dict[str, Converter] = {
    DATE: _date_of,
    CONNECT_DATE: _date_of,
    TIMESTAMP: _temporal(_timestamp, 1000, "Timestamp"),
    CONNECT_TIMESTAMP: _temporal(_timestamp, 1000, "Timestamp"),
    MICRO_TIMESTAMP: _temporal(_timestamp, 1, "MicroTimestamp"),
    NANO_TIMESTAMP: _temporal(_timestamp, -1000, "NanoTimestamp"),
    TIME: _temporal(_time, 1000, "Time"),
    CONNECT_TIME: _temporal(_time, 1000, "Time"),
    MICRO_TIME: _temporal(_time, 1, "MicroTime"),
    NANO_TIME: _temporal(_time, -1000, "NanoTime"),
}


def convert_temporal(logical: str, v: Any) -> Any:
    """A temporal logical type's integer as Altcraft's text; other types and values unchanged.

    Raises :class:`ValueError` for a value outside the dates and times Python represents (years 1 to
    9999) or a time of day outside one day: a real column never holds one, so the record is corrupt.
    """
    convert = _TEMPORAL.get(logical)
    return v if convert is None else convert(v)


# ------------------------------------------------------------------------------------ decimals


def decimal_number(unscaled: int, scale: int) -> int | orjson.Fragment:
    """``unscaled * 10**-scale`` as a JSON number with exactly these digits (``228, 2`` -> ``2.28``)."""
    if scale <= 0:
        n = unscaled * 10**-scale
        return n if n in _INT64 else orjson.Fragment(str(n))
    digits = str(abs(unscaled)).rjust(scale + 1, "0")
    sign = "-" if unscaled < 0 else ""
    return orjson.Fragment(f"{sign}{digits[:-scale]}.{digits[-scale:]}")


def unscaled_of(raw: bytes) -> int:
    """The unscaled value of a Connect decimal: a big-endian two's-complement integer."""
    return int.from_bytes(raw, "big", signed=True)


def _b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise ValueError(f"{shown!r} is not the base64 of a decimal") from None


def decimal_converter(scale: int) -> Converter:
    """Connect ``Decimal`` of ``scale``: base64 text (JSON) or bytes (Avro) -> a number."""

    def convert(v: Any) -> Any:
        if type(v) is str:
            return decimal_number(unscaled_of(_b64decode(v)), scale)
        if type(v) is bytes:
            return decimal_number(unscaled_of(v), scale)
        return v  # decimal.handling.mode=string or double: already what Altcraft takes

    return convert


def variable_decimal(v: Any) -> Any:
    """``io.debezium.data.VariableScaleDecimal``: ``{"scale": s, "value": base64 or bytes}`` -> a number."""
    if type(v) is not dict:
        return v
    scale, raw = v.get("scale"), v.get("value")
    if type(scale) is not int or not -1000 <= scale <= 1000:
        raise ValueError(f"VariableScaleDecimal scale {scale!r} is not an integer of at most 1000")
    if type(raw) is str:
        raw = _b64decode(raw)
    if type(raw) is not bytes:
        raise ValueError("VariableScaleDecimal value is neither base64 text nor bytes")
    return decimal_number(unscaled_of(raw), scale)


def parameter_scale(parameters: Any) -> int:
    """The ``scale`` of a Connect ``Decimal``'s schema parameters (Connect writes it as text)."""
    scale = parameters.get("scale") if type(parameters) is dict else None
    try:
        n = int(scale)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"Decimal without a usable scale parameter ({scale!r})") from None
    if not -1000 <= n <= 1000:
        raise ValueError(f"Decimal scale {n} is out of range")
    return n


# ------------------------------------------------------------------------------------ JSON text


def parsed_json(v: Any) -> Any:
    """``io.debezium.data.Json`` text -> the document; text that is not JSON stays as it is."""
    if type(v) is not str:
        return v
    try:
        return orjson.loads(v)
    except orjson.JSONDecodeError:
        return v


# ------------------------------------------------------------------------------------ lookup

_BY_NAME: dict[str, Converter] = {**_TEMPORAL, VARIABLE_DECIMAL: variable_decimal, JSON: parsed_json}


def converter(logical: str | None, parameters: Any = None) -> Converter | None:
    """The converter of a logical type name (with its schema parameters), None when none is needed.

    Raises :class:`ValueError` for a ``Decimal`` without a usable scale.
    """
    if logical is None:
        return None
    if logical == DECIMAL:
        return _decimal_of_scale(parameter_scale(parameters))
    return _BY_NAME.get(logical)


@functools.lru_cache(maxsize=64)
def _decimal_of_scale(scale: int) -> Converter:
    return decimal_converter(scale)


def list_converter(item: Converter) -> Converter:
    """An array column whose items have a logical type (``numeric[]``, ``date[]``)."""

    def convert(v: Any) -> Any:
        return [item(x) for x in v] if type(v) is list else v

    return convert


# ------------------------------------------------------------------------------------ column_types

# The names a route may give a column arriving without a schema, after Debezium's own type names.
COLUMN_TYPES: dict[str, str | None] = {
    "date": DATE,
    "time": TIME,
    "micro-time": MICRO_TIME,
    "nano-time": NANO_TIME,
    "timestamp": TIMESTAMP,
    "micro-timestamp": MICRO_TIMESTAMP,
    "nano-timestamp": NANO_TIMESTAMP,
    "zoned-timestamp": ZONED_TIMESTAMP,
    "variable-decimal": VARIABLE_DECIMAL,
    "json": JSON,
    "text": None,  # sent as it is: silences the check for undeclared Debezium encodings
}
_DECIMAL_TYPE = re.compile(r"decimal\((-?\d{1,3})\)")


def column_type_converter(name: str) -> Converter | None:
    """The converter of a ``column_types`` entry (``date``, ``decimal(2)``, a Debezium type name, ...).

    Raises :class:`ValueError` naming the vocabulary for a name it does not know.
    """
    if name in COLUMN_TYPES:
        return converter(COLUMN_TYPES[name])
    m = _DECIMAL_TYPE.fullmatch(name)
    if m:
        return _decimal_of_scale(int(m.group(1)))
    if name in _BY_NAME or name == ZONED_TIMESTAMP:
        return _BY_NAME.get(name)
    known = ", ".join([*COLUMN_TYPES, "decimal(<scale>)"])
    raise ValueError(f"unknown column type {name!r}: expected one of {known}, or a Debezium type name")


# ------------------------------------------------------------------------------------ undeclared encodings

# Altcraft's standard date fields (its API documentation): an integer there is a Debezium day count or
# epoch number that arrived without a schema.
ALTCRAFT_DATE_FIELDS = frozenset({"_bdate", "_regdate"})
# Base64 text with padding, up to 32 bytes (a decimal of up to 77 digits): how a Debezium decimal looks
# without a schema. Unpadded base64 (a third of all lengths) is indistinguishable from ordinary words.
_PADDED_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4}){0,10}(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)")


def looks_like_base64_decimal(v: str) -> bool:
    return v[-1:] == "=" and _PADDED_BASE64.fullmatch(v) is not None


_SYSTEM_FIELDS = frozenset({"email", "phones", "phone", "subscriptions"})


def is_custom_field(name: str) -> bool:
    """Whether an Altcraft field is one of the database's custom fields (system fields start with ``_``)."""
    return not name.startswith("_") and name not in _SYSTEM_FIELDS
