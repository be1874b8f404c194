"""Avro events in the Confluent wire format: magic byte 0, a 4-byte big-endian schema id, Avro binary.

The writer schema of each id comes from the Schema Registry (:mod:`connector.decode.registry`). A route
may name a reader schema (a ``.avsc`` file); records are then read through Avro schema resolution
(fields matched by name or alias, writer-only fields skipped, reader-only fields given their defaults,
numeric promotions, union and enum resolution), so newer and older writers come out in one shape.

Why a compiled reader rather than ``fastavro.schemaless_reader`` on the hot path: fastavro's reader walks
the schema for every record and reads its input a byte at a time through ``file.read``; on the
Debezium customer envelope it reads about 120,000 records/s on one core (50,000/s with a reader
schema) before any value is converted or the envelope read, which would leave the decoder alone
eating most of the pipeline's budget. Here each (writer schema, reader schema) pair is compiled once
into a Python function that reads the bytes in place, resolves the schemas at compile time, skips
what the connector never reads (the envelope's ``source``), and turns logical types into Altcraft's
formats as it goes, only where the schema says so: about 200,000 events/s all included. fastavro
still parses and validates every schema, writes the producer side (:func:`encode`), and the tests
check the compiled reader against fastavro's reader.

What values become (Altcraft takes JSON; the JSON twins of Debezium events read the same):

============================================  ======================================================
``date`` (int), Connect/Debezium ``Date``      ``"YYYY-MM-DD"``
``timestamp-millis/micros/nanos`` (long),      RFC 3339 in UTC: ``"2024-05-01T10:20:30.123000Z"``
Debezium ``Timestamp``/``MicroTimestamp``/...  (the same text as :func:`~connector.decode.json_events.convert_temporal`)
``local-timestamp-*`` (long)                   ISO 8601 without an offset: ``"2024-05-01T10:20:30"``
``time-millis/micros``                         ``"HH:MM:SS[.ffffff]"``
``decimal`` (bytes or fixed)                   an int when the scale is 0, else a float (numeric fields)
``uuid`` (string or fixed 16)                  the canonical UUID string
``bytes`` / ``fixed`` without a logical type   base64 text (what Kafka Connect's JSON converter writes)
enum                                           the symbol
============================================  ======================================================

Formats:

- ``debezium-avro``: a Debezium envelope (``before``, ``after``, ``op``, ``source``, ``ts_ms``) or a
  record flattened by ExtractNewRecordState (``__op``, ``__deleted``, ``__source_ts_ms``), read with
  :func:`~connector.decode.envelope.from_envelope` exactly like ``debezium-json``;
- ``avro``: a record named ``altcraft.connector.ProfileChange`` (``schemas/profile_change.avsc``) is
  read as ``op`` + ``profile``; any other record is a plain profile row like the ``json`` format
  (``__op``/``__deleted`` honoured, the op defaults to ``u``).
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import functools
import io
import math
import os
import struct
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import fastavro
import orjson

from connector.config import Format, RouteSettings, SchemaRegistrySettings
from connector.decode import Decoder
from connector.decode.envelope import UNAVAILABLE, UNAVAILABLE_BYTES, from_envelope, from_flat
from connector.decode.json_events import TOMBSTONE, convert_temporal
from connector.decode.logical import (
    CONNECT_DATE,
    CONNECT_TIMESTAMP,
    DATE,
    JSON,
    MICRO_TIMESTAMP,
    NANO_TIMESTAMP,
    TIMESTAMP,
    VARIABLE_DECIMAL,
    day_text,
    parsed_json,
    variable_decimal,
)
from connector.decode.registry import LruCache, RegistryClient, SchemaNotFound, shared_client
from connector.errors import DecodeError
from connector.models import ChangeEvent

MAGIC = 0
HEADER_SIZE = 5
CANONICAL_NAME = "altcraft.connector.ProfileChange"

Schema = Any  # a schema as fastavro.parse_schema returns it: a str, a list (union) or a dict
ReaderSchemaSource = str | os.PathLike[str] | Mapping[str, Any] | list[Any]


# ====================================================================================== framing


def encode(schema_id: int, parsed_schema: Schema, record: Any) -> bytes:
    """``record`` in the Confluent wire format (the producer side; tests and the demo)."""
    out = io.BytesIO()
    out.write(bytes((MAGIC,)))
    out.write(schema_id.to_bytes(4, "big"))
    fastavro.schemaless_writer(out, parsed_schema, record)
    return out.getvalue()


def _framing_problem(value: bytes) -> str:
    if not value:
        return "empty value: no Confluent wire format header"
    if value[0] != MAGIC:
        hint = " (it looks like JSON: is the route's format right?)" if value[:1] in (b"{", b"[") else ""
        return f"magic byte 0x{value[0]:02x}, expected 0x00: not the Confluent Schema Registry wire format{hint}"
    return f"{len(value)} bytes: too short for the Confluent wire format header ({HEADER_SIZE} bytes)"


# ====================================================================================== runtime helpers

_AT = "  # at "  # ends a generated line converting a value, before the value's path
_ZIGZAG = tuple((n >> 1) ^ -(n & 1) for n in range(128))  # one-byte varints, decoded
_EPOCH_UTC = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_EPOCH_NAIVE = dt.datetime(1970, 1, 1)
# Items of no bytes (nulls, empty records) in all the arrays and maps of one record: nothing else
# bounds them, and arrays of arrays of nulls would multiply the counts of a few bytes into billions.
_MAX_ZERO_SIZE_ITEMS = 1_000_000


class _Truncated(Exception):
    pass


class _Corrupt(Exception):
    pass


def _long(b: bytes, p: int) -> tuple[int, int]:
    """A zig-zag varint from ``b[p:]`` (any length); returns the value and the next position."""
    n = 0
    shift = 0
    while True:
        x = b[p]
        p += 1
        n |= (x & 0x7F) << shift
        if x < 0x80:
            return (n >> 1) ^ -(n & 1), p
        shift += 7
        if shift == 63:  # the tenth byte holds the 64th bit, and nothing more
            x = b[p]
            if x > 1:
                raise _Corrupt("a variable-length integer runs over 64 bits")
            n |= x << 63
            return (n >> 1) ^ -(n & 1), p + 1


def _failed_at(exc: BaseException) -> str:
    """The path of the value whose conversion raised ``exc`` in a compiled reader (``"after.born: "``).

    Read from the generated line the traceback ends in, so that the hot path carries no bookkeeping.
    """
    tb = exc.__traceback__
    path = ""
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_filename == "<avro reader>":
            lines = frame.f_globals.get("_lines", ())
            line = lines[tb.tb_lineno - 1] if 0 < tb.tb_lineno <= len(lines) else ""
            path = line.partition(_AT)[2] or path
        tb = tb.tb_next
    return f"{path}: " if path else ""


def _bad_union(index: int, branches: int, path: str) -> _Corrupt:
    return _Corrupt(f"union branch {index} at {path} does not exist (the schema has {branches})")


def _bad_union_at(b: bytes, p: int, branches: int, path: str) -> _Corrupt:
    try:
        index = _long(b, p)[0]
    except IndexError:
        return _Corrupt(f"union branch index at {path} is cut short")
    return _bad_union(index, branches, path)


def _bad_enum(index: int, symbols: int, path: str) -> _Corrupt:
    return _Corrupt(f"enum index {index} at {path} does not exist (the schema has {symbols} symbols)")


def _bad_length(n: int, path: str) -> Exception:
    return _Truncated() if n >= 0 else _Corrupt(f"negative length {n} at {path}")


def _bad_boolean(x: int, path: str) -> _Corrupt:
    return _Corrupt(f"boolean byte 0x{x:02x} at {path} is neither 0 nor 1")


def _b64(v: bytes) -> str:
    if v == UNAVAILABLE_BYTES:  # a bytea column Debezium could not read: the placeholder, never sent
        return UNAVAILABLE
    return base64.b64encode(v).decode("ascii")


def _beyond(v: int, unit: str) -> ValueError:
    return ValueError(f"{v} {unit} since the epoch is outside the representable times")


def _utc(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _ts_millis(v: int) -> str:
    try:
        return _utc(_EPOCH_UTC + dt.timedelta(milliseconds=v))
    except OverflowError:
        raise _beyond(v, "ms") from None


def _ts_micros(v: int) -> str:
    try:
        return _utc(_EPOCH_UTC + dt.timedelta(microseconds=v))
    except OverflowError:
        raise _beyond(v, "us") from None


def _ts_nanos(v: int) -> str:
    try:
        return _utc(_EPOCH_UTC + dt.timedelta(microseconds=v // 1000))
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
    s, us = divmod(v, 1_000_000)
    m, s = divmod(s, 60)
    h, m = divmod(m, 60)
    return dt.time(h, m, s, us).isoformat()


def _time_millis(v: int) -> str:
    return _time_micros(v * 1000)


def _decimal(scale: int, v: bytes) -> int | float:
    unscaled = int.from_bytes(v, "big", signed=True)
    return unscaled if scale == 0 else unscaled / 10**scale


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


_RUNTIME: dict[str, Any] = {
    "_ZZ": _ZIGZAG,
    "_long": _long,
    "_unpack_f": struct.Struct("<f").unpack_from,
    "_unpack_d": struct.Struct("<d").unpack_from,
    "_Truncated": _Truncated,
    "_Corrupt": _Corrupt,
    "_bad_union": _bad_union,
    "_bad_union_at": _bad_union_at,
    "_bad_enum": _bad_enum,
    "_bad_length": _bad_length,
    "_bad_boolean": _bad_boolean,
    "_deepcopy": copy.deepcopy,
}


# ====================================================================================== the compiler

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED = frozenset({"record", "enum", "fixed"})
_PROMOTIONS = frozenset(
    {
        ("int", "long"), ("int", "float"), ("int", "double"), ("long", "float"), ("long", "double"),
        ("float", "double"), ("string", "bytes"), ("bytes", "string"),
    }
)  # fmt: skip


class Incompatible(Exception):
    """The writer schema cannot be read with the reader schema (found when compiling, not per record)."""


def _kind(s: Schema) -> str:
    if isinstance(s, list):
        return "union"
    if isinstance(s, dict):
        t = s["type"]
        return t if isinstance(t, str) else _kind(t)
    return str(s)


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _describe(s: Schema) -> str:
    k = _kind(s)
    return f"{k} {s['name']}" if k in _NAMED and isinstance(s, dict) else k


def _loosely_same_name(w: dict[str, Any], r: dict[str, Any]) -> bool:
    wanted = _short(w["name"])
    return wanted == _short(r["name"]) or any(_short(a) == wanted for a in r.get("aliases", ()))


def _min_size(s: Schema, named: dict[str, Any], seen: frozenset[str] = frozenset()) -> int:
    """The fewest bytes a value can take (0 for null and records of nulls): guards loops over blocks."""
    s = _deref(s, named)
    k = _kind(s)
    if k == "null":
        return 0
    if k == "record":
        if s["name"] in seen:
            return 1
        return sum(_min_size(f["type"], named, seen | {s["name"]}) for f in s["fields"])
    if k == "fixed":
        return int(s["size"])
    return 1


def _deref(s: Schema, named: dict[str, Any]) -> Schema:
    while True:
        if isinstance(s, str):
            if s in _PRIMITIVES:
                return s
            try:
                s = named[s]
            except KeyError:
                raise Incompatible(f"unknown type name {s!r}") from None
        elif isinstance(s, dict) and not isinstance(s["type"], str):
            s = s["type"]  # {"type": {...}}: the inner schema is the type
        elif isinstance(s, dict) and s["type"] not in _PRIMITIVES and s["type"] not in _NAMED | {"array", "map"}:
            s = s["type"]  # {"type": "some.Named"}
        else:
            return s


class _Compiler:
    """Generates the source of one reader function for a (writer, reader) pair of parsed schemas."""

    def __init__(
        self, writer_named: dict[str, Any], reader_named: dict[str, Any], only: frozenset[str] | None = None
    ) -> None:
        self.wn = writer_named
        self.rn = reader_named
        self.only = only  # the top-level record's fields to read; the others are skipped
        self.ns: dict[str, Any] = dict(_RUNTIME)
        self.n = 0
        self.functions: dict[tuple[str, ...], str] = {}  # recursive records: key -> function name
        self.pending: list[tuple[str, tuple[str, ...], Schema, Schema | None]] = []
        self.stack: list[tuple[str, ...]] = []
        self._loop_tail: list[tuple[str, str]] = []  # open block loops: (count variable, indentation)
        self.zero_size_items = False  # whether a block loop of items of no bytes draws on the budget _Z
        self.ns["_Z"] = [0]  # that budget: what is left of it while one record is read

    # -- small tools

    def tmp(self, prefix: str = "v") -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def const(self, value: Any) -> str:
        """An expression evaluating to ``value`` (a fresh copy when it is mutable)."""
        if value is None or type(value) in (bool, int, str) or (type(value) is float and math.isfinite(value)):
            return repr(value)
        name = self.tmp("_k")
        self.ns[name] = value
        return f"_deepcopy({name})" if isinstance(value, dict | list) else name

    def helper(self, fn: Any) -> str:
        name = self.tmp("_h")
        self.ns[name] = fn
        return name

    def wderef(self, s: Schema) -> Schema:
        return _deref(s, self.wn)

    def rderef(self, s: Schema) -> Schema:
        return _deref(s, self.rn)

    def matches(self, w: Schema, r: Schema) -> bool:
        """Whether a writer branch may be read as a reader branch (both dereferenced, not unions)."""
        wk, rk = _kind(w), _kind(r)
        if wk != rk:
            return (wk, rk) in _PROMOTIONS
        if wk in _NAMED and not _loosely_same_name(w, r):
            return False
        if wk == "fixed":
            return bool(w["size"] == r["size"])
        if wk == "array":
            return self._items_match(w["items"], r["items"])
        if wk == "map":
            return self._items_match(w["values"], r["values"])
        return True

    def pick(self, w: Schema, branches: list[Any]) -> Schema | None:
        """The reader branch a writer value goes to: the first of the same type, else the first it promotes to."""
        candidates = [self.rderef(b) for b in branches]
        for rb in candidates:
            if _kind(rb) == _kind(w) and self.matches(w, rb):
                return rb
        for rb in candidates:
            if self.matches(w, rb):
                return rb
        return None

    def _items_match(self, w: Schema, r: Schema) -> bool:
        w, r = self.wderef(w), self.rderef(r)
        if _kind(w) == "union" or _kind(r) == "union":
            return True
        return self.matches(w, r)

    # -- output conversions

    def conversion(self, r: Schema) -> Callable[[Any], Any] | None:
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

    # -- reading

    def read_long(self, dst: str, ind: str, out: list[str]) -> None:
        """A zig-zag varint: one or two bytes inline (ids, lengths, dates), longer ones by ``_long``.
        No loop here: Python allows 20 nested blocks per function, and arrays nest their readers."""
        x = self.tmp("x")
        out += [
            f"{ind}{dst} = b[p]",
            f"{ind}if {dst} < 128:",
            f"{ind}    p += 1",
            f"{ind}    {dst} = _ZZ[{dst}]",
            f"{ind}else:",
            f"{ind}    {x} = b[p + 1]",
            f"{ind}    if {x} < 128:",
            f"{ind}        p += 2",
            f"{ind}        {dst} = ({dst} & 127) | ({x} << 7)",
            f"{ind}        {dst} = ({dst} >> 1) ^ -({dst} & 1)",
            f"{ind}    else:",
            f"{ind}        {dst}, p = _long(b, p)",
        ]

    def read_blob(self, dst: str, ind: str, out: list[str], path: str, text: bool = False) -> None:
        """Bytes (``text``: a UTF-8 string) of a length-prefixed value."""
        n, e = self.tmp("n"), self.tmp("e")
        self.read_long(n, ind, out)
        out += [
            f"{ind}{e} = p + {n}",
            f"{ind}if {e} > L or {n} < 0:",
            f"{ind}    raise _bad_length({n}, {path!r})",
            f"{ind}{dst} = b[p:{e}].decode()" if text else f"{ind}{dst} = b[p:{e}]",
            f"{ind}p = {e}",
        ]

    def emit(self, w: Schema, r: Schema, dst: str, ind: str, out: list[str], path: str) -> None:
        """Code reading a writer-``w`` value as reader type ``r`` into variable ``dst``."""
        w, r = self.wderef(w), self.rderef(r)
        wk, rk = _kind(w), _kind(r)
        if wk == "union":
            self.emit_writer_union(w, r, dst, ind, out, path)
            return
        if rk == "union":
            branch = self.pick(w, r)
            if branch is not None:
                self.emit(w, branch, dst, ind, out, path)
                return
            raise Incompatible(f"{path}: a {_describe(w)} matches no branch of the reader's union")
        if not self.matches(w, r):
            raise Incompatible(f"{path}: a {_describe(w)} cannot be read as a {_describe(r)}")
        if wk == "null":
            out.append(f"{ind}{dst} = None")
        elif wk == "boolean":
            out += [
                f"{ind}{dst} = b[p]",
                f"{ind}p += 1",
                f"{ind}if {dst} > 1:",
                f"{ind}    raise _bad_boolean({dst}, {path!r})",
                f"{ind}{dst} = {dst} == 1",
            ]
        elif wk in ("int", "long"):
            self.read_long(dst, ind, out)
            if rk in ("float", "double"):
                out.append(f"{ind}{dst} = float({dst})")
        elif wk == "float":
            out += [f"{ind}{dst} = _unpack_f(b, p)[0]", f"{ind}p += 4"]
        elif wk == "double":
            out += [f"{ind}{dst} = _unpack_d(b, p)[0]", f"{ind}p += 8"]
        elif wk in ("string", "bytes"):
            self.read_blob(dst, ind, out, path, text=rk == "string")
        elif wk == "fixed":
            size = int(w["size"])
            out += [
                f"{ind}if p + {size} > L:",
                f"{ind}    raise _Truncated",
                f"{ind}{dst} = b[p:p + {size}]",
                f"{ind}p += {size}",
            ]
        elif wk == "enum":
            self.emit_enum(w, r, dst, ind, out, path)
        elif wk == "array":
            self.emit_array(w, r, dst, ind, out, path)
        elif wk == "map":
            self.emit_map(w, r, dst, ind, out, path)
        elif wk == "record":
            self.emit_record(w, r, dst, ind, out, path)
        else:
            raise Incompatible(f"{path}: unknown type {wk!r}")
        convert = self.conversion(r)
        if convert is not None:
            out.append(f"{ind}{dst} = {self.helper(convert)}({dst}){_AT}{path}")  # named when it fails

    def emit_writer_union(self, w: list[Any], r: Schema, dst: str, ind: str, out: list[str], path: str) -> None:
        idx = self.tmp("i")
        small = len(w) < 64  # the branch index is one byte: compare the raw byte (zig-zag: 2 * index)
        if small:
            out += [f"{ind}{idx} = b[p]", f"{ind}p += 1"]
        else:
            self.read_long(idx, ind, out)
        branches = [self.wderef(b) for b in w]
        order = sorted(range(len(branches)), key=lambda i: _kind(branches[i]) == "null")  # null last
        keyword = "if"
        for i in order:
            wb = branches[i]
            target = self.pick(wb, r if _kind(r) == "union" else [r])
            out.append(f"{ind}{keyword} {idx} == {2 * i if small else i}:")
            keyword = "elif"
            if target is None:
                message = f"{path}: the writer's {_describe(wb)} has no counterpart in the reader schema"
                out.append(f"{ind}    raise _Corrupt({message!r})")
            else:
                before = len(out)
                self.emit(wb, target, dst, ind + "    ", out, path)
                if len(out) == before:
                    out.append(f"{ind}    pass")
        if small:
            out += [f"{ind}else:", f"{ind}    raise _bad_union_at(b, p - 1, {len(w)}, {path!r})"]
        else:
            out += [f"{ind}else:", f"{ind}    raise _bad_union({idx}, {len(w)}, {path!r})"]

    def emit_enum(self, w: dict[str, Any], r: dict[str, Any], dst: str, ind: str, out: list[str], path: str) -> None:
        symbols = list(w["symbols"])
        known = set(r["symbols"])
        default = r.get("default")
        mapped = tuple(s if s in known else (default if default in known else None) for s in symbols)
        self.read_long(dst, ind, out)
        table = self.const(mapped)
        out += [
            f"{ind}if not 0 <= {dst} < {len(symbols)}:",
            f"{ind}    raise _bad_enum({dst}, {len(symbols)}, {path!r})",
        ]
        if None in mapped:
            names = self.const(tuple(symbols))
            out += [
                f"{ind}if {table}[{dst}] is None:",
                f"{ind}    raise _Corrupt({path!r} + ': enum symbol ' + repr({names}[{dst}]) + "
                "' is not in the reader schema and it has no default')",
            ]
        out.append(f"{ind}{dst} = {table}[{dst}]")

    def _block_loop(self, item_size: int, ind: str, out: list[str], path: str) -> str:
        """Opens the block loop of an array or map; returns the indentation of one item's code.

        ``item_size``: the fewest bytes one item takes. A block count is checked against the bytes left
        before the loop starts, so that a corrupt count (a varint can say 2**63) fails at once instead of
        looping or allocating for ages; items of no bytes draw on the record's budget instead.
        """
        count, size = self.tmp("c"), self.tmp("s")
        self.read_long(count, ind, out)
        out.append(f"{ind}while {count}:")
        inner = ind + "    "
        out += [f"{inner}if {count} < 0:", f"{inner}    {count} = -{count}"]
        self.read_long(size, inner + "    ", out)
        if item_size == 0:
            self.zero_size_items = True
            out += [
                f"{inner}_Z[0] -= {count}",
                f"{inner}if _Z[0] < 0:",
                f"{inner}    raise _Corrupt({path!r} + ': more than {_MAX_ZERO_SIZE_ITEMS} empty items in one record')",
            ]
        else:
            needed = count if item_size == 1 else f"{count} * {item_size}"
            out += [
                f"{inner}if {needed} > L - p:",
                f"{inner}    raise _Corrupt({path!r} + ': a block of ' + str({count}) + ' items in ' + str(L - p) + "
                "' bytes left')",
            ]
        out.append(f"{inner}for _ in range({count}):")
        self._loop_tail.append((count, inner))
        return inner + "    "

    def _close_block_loop(self, out: list[str]) -> None:
        count, inner = self._loop_tail.pop()
        self.read_long(count, inner, out)

    def emit_array(self, w: dict[str, Any], r: dict[str, Any], dst: str, ind: str, out: list[str], path: str) -> None:
        out.append(f"{ind}{dst} = []")
        item = self.tmp()
        body = self._block_loop(_min_size(w["items"], self.wn), ind, out, path)
        self.emit(w["items"], r["items"], item, body, out, path + "[]")
        out.append(f"{body}{dst}.append({item})")
        self._close_block_loop(out)

    def emit_map(self, w: dict[str, Any], r: dict[str, Any], dst: str, ind: str, out: list[str], path: str) -> None:
        out.append(f"{ind}{dst} = {{}}")
        key, item = self.tmp("k"), self.tmp()
        body = self._block_loop(1 + _min_size(w["values"], self.wn), ind, out, path)  # 1: the key's length
        self.read_blob(key, body, out, path + "{}", text=True)
        self.emit(w["values"], r["values"], item, body, out, path + "{}")
        out.append(f"{body}{dst}[{key}] = {item}")
        self._close_block_loop(out)

    def emit_record(self, w: dict[str, Any], r: dict[str, Any], dst: str, ind: str, out: list[str], path: str) -> None:
        key = ("read", w["name"], r["name"])
        if key in self.stack:  # a recursive type: call a function of its own
            name = self.functions.get(key)
            if name is None:
                name = self.functions[key] = self.tmp("_rec")
                self.pending.append((name, key, w, r))
            out.append(f"{ind}{dst}, p = {name}(b, p)")
            return
        self.stack.append(key)
        try:
            wanted = r["fields"] if path or self.only is None else [f for f in r["fields"] if f["name"] in self.only]
            by_name = {f["name"]: f for f in wanted}
            by_alias = {a: f for f in wanted for a in f.get("aliases", ())}
            values: dict[str, str] = {}
            for f in w["fields"]:
                rf = by_name.get(f["name"]) or by_alias.get(f["name"])
                where = f"{path}.{f['name']}" if path else f["name"]
                if rf is None or rf["name"] in values:
                    self.emit_skip(f["type"], ind, out, where)
                    continue
                var = self.tmp()
                self.emit(f["type"], rf["type"], var, ind, out, where)
                values[rf["name"]] = var
            items = []
            for rf in wanted:
                if rf["name"] in values:
                    items.append(f"{rf['name']!r}: {values[rf['name']]}")
                elif "default" in rf:
                    items.append(f"{rf['name']!r}: {self.const(self.default(rf['type'], rf['default']))}")
                else:
                    raise Incompatible(
                        f"{path or r['name']}: the reader's field {rf['name']!r} has no default and the writer "
                        "does not have it"
                    )
            out.append(f"{ind}{dst} = {{{', '.join(items)}}}")
        finally:
            self.stack.pop()

    # -- skipping writer-only fields

    def emit_skip(self, w: Schema, ind: str, out: list[str], path: str) -> None:
        w = self.wderef(w)
        k = _kind(w)
        junk = self.tmp("x")
        if k == "null":
            return
        if k == "boolean":
            out.append(f"{ind}p += 1")
        elif k in ("int", "long", "enum"):
            out += [f"{ind}while b[p] > 127:", f"{ind}    p += 1", f"{ind}p += 1"]
        elif k == "float":
            out.append(f"{ind}p += 4")
        elif k == "double":
            out.append(f"{ind}p += 8")
        elif k in ("string", "bytes"):
            n = self.tmp("n")
            self.read_long(n, ind, out)
            out += [f"{ind}if {n} < 0:", f"{ind}    raise _bad_length({n}, {path!r})", f"{ind}p += {n}"]
        elif k == "fixed":
            out.append(f"{ind}p += {int(w['size'])}")
        elif k == "union":
            idx = self.tmp("i")
            self.read_long(idx, ind, out)
            keyword = "if"
            for i, branch in enumerate(w):
                out.append(f"{ind}{keyword} {idx} == {i}:")
                keyword = "elif"
                before = len(out)
                self.emit_skip(branch, ind + "    ", out, path)
                if len(out) == before:
                    out.append(f"{ind}    pass")
            out += [f"{ind}else:", f"{ind}    raise _bad_union({idx}, {len(w)}, {path!r})"]
        elif k in ("array", "map"):
            item = w["items"] if k == "array" else w["values"]
            body = self._block_loop(_min_size(item, self.wn) + (k == "map"), ind, out, path)
            if k == "map":
                self.read_blob(junk, body, out, path)
            before = len(out)
            self.emit_skip(item, body, out, path + "[]")
            if len(out) == before:
                out.append(f"{body}pass")
            self._close_block_loop(out)
        elif k == "record":
            key = ("skip", w["name"])
            if key in self.stack:
                name = self.functions.get(key)
                if name is None:
                    name = self.functions[key] = self.tmp("_rec")
                    self.pending.append((name, key, w, None))
                out.append(f"{ind}{junk}, p = {name}(b, p)")
                return
            self.stack.append(key)
            try:
                for f in w["fields"]:
                    self.emit_skip(f["type"], ind, out, f"{path}.{f['name']}")
            finally:
                self.stack.pop()
        # (the bounds of skipped fixed, float and double values are checked by the final length check)

    # -- defaults

    def default(self, r: Schema, value: Any) -> Any:
        """A reader field's JSON default as the value the compiled reader would have produced."""
        r = self.rderef(r)
        k = _kind(r)
        if k == "union":
            for branch in r:
                try:
                    return self.default(branch, value)
                except (Incompatible, TypeError, ValueError):
                    continue
            raise Incompatible(f"default {value!r} fits no branch of its union")
        if k == "null":
            if value is not None:
                raise Incompatible(f"default {value!r} is not null")
            return None
        if k == "boolean":
            base: Any = value if type(value) is bool else _wrong_default(value, k)
        elif k in ("int", "long"):
            base = value if type(value) is int else _wrong_default(value, k)
        elif k in ("float", "double"):
            base = float(value) if type(value) in (int, float) else _wrong_default(value, k)
        elif k in ("string", "enum"):
            base = value if type(value) is str else _wrong_default(value, k)
        elif k in ("bytes", "fixed"):
            base = value.encode("latin-1") if type(value) is str else _wrong_default(value, k)
        elif k == "array":
            base = [self.default(r["items"], v) for v in value] if type(value) is list else _wrong_default(value, k)
        elif k == "map":
            if type(value) is not dict:
                _wrong_default(value, k)
            base = {str(key): self.default(r["values"], v) for key, v in value.items()}
        elif k == "record":
            if type(value) is not dict:
                _wrong_default(value, k)
            base = {}
            for f in r["fields"]:
                if f["name"] in value:
                    base[f["name"]] = self.default(f["type"], value[f["name"]])
                elif "default" in f:
                    base[f["name"]] = self.default(f["type"], f["default"])
                else:
                    raise Incompatible(f"default of record {r['name']} lacks field {f['name']!r}")
        else:
            raise Incompatible(f"cannot read a default of type {k}")
        convert = self.conversion(r)
        return convert(base) if convert is not None else base

    # -- assembly

    def build(self, writer: Schema, reader: Schema) -> Callable[[bytes, int], tuple[Any, int]]:
        body: list[str] = []
        self.emit(writer, reader, "v0", "    ", body, "")
        lines = ["def _read(b, p):", "    L = len(b)", *body, "    return v0, p"]
        while self.pending:
            name, _key, w, r = self.pending.pop()
            self.stack = []  # emit_record / emit_skip push the key themselves; inner references call `name`
            inner: list[str] = []
            if r is None:
                self.emit_skip(w, "    ", inner, w["name"])
                lines += [f"def {name}(b, p):", "    L = len(b)", *inner, "    return None, p"]
            else:
                self.emit_record(w, r, "v0", "    ", inner, w["name"])
                lines += [f"def {name}(b, p):", "    L = len(b)", *inner, "    return v0, p"]
        if self.zero_size_items:
            lines.insert(2, f"    _Z[0] = {_MAX_ZERO_SIZE_ITEMS}")  # in _read: once per record
        self.ns["_lines"] = tuple(lines)  # for _failed_at
        source = "\n".join(lines) + "\n"
        namespace = self.ns
        try:
            exec(compile(source, "<avro reader>", "exec"), namespace)
        except (SyntaxError, RecursionError, MemoryError) as exc:
            raise Incompatible(f"the schema is too deeply nested to compile ({type(exc).__name__})") from None
        self.source = source
        reader_fn: Callable[[bytes, int], tuple[Any, int]] = namespace["_read"]
        return reader_fn


def _wrong_default(value: Any, kind: str) -> Any:
    raise Incompatible(f"default {value!r} is not a {kind}")


def compile_reader(
    writer: Schema, reader: Schema | None = None, only: frozenset[str] | None = None
) -> Callable[[bytes, int], tuple[Any, int]]:
    """A function ``(buffer, position) -> (value, next position)`` reading Avro binary written with
    ``writer`` as ``reader`` (default: as written), with values converted as the module docstring says.

    Both schemas must come from :func:`fastavro.parse_schema`. ``only``: the top-level record's fields
    worth reading (by reader name); the others are skipped and left out. Raises :class:`Incompatible`
    when the reader schema cannot read what the writer wrote.
    """
    writer_named: dict[str, Any] = dict(writer.get("__named_schemas", {})) if isinstance(writer, dict) else {}
    if reader is None:
        return _Compiler(writer_named, writer_named, only).build(writer, writer)
    reader_named: dict[str, Any] = dict(reader.get("__named_schemas", {})) if isinstance(reader, dict) else {}
    return _Compiler(writer_named, reader_named, only).build(writer, reader)


# ====================================================================================== schemas


def parse_schema_text(text: str) -> Schema:
    """A schema as fastavro parses it; :class:`ValueError` with the reason when it is not valid Avro."""
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    return parse_schema_doc(doc)


def parse_schema_doc(doc: Any) -> Schema:
    try:
        return fastavro.parse_schema(doc)
    except Exception as exc:  # fastavro raises several types for invalid schemas
        raise ValueError(f"not a valid Avro schema: {exc}") from None


def load_reader_schema(source: ReaderSchemaSource) -> Schema:
    """A reader schema from a ``.avsc`` file (path) or an already loaded schema document."""
    if isinstance(source, Mapping | list):
        return parse_schema_doc(dict(source) if isinstance(source, Mapping) else source)
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"reader schema {path}: cannot read the file: {exc.strerror}") from None
    try:
        return parse_schema_text(text)
    except ValueError as exc:
        raise ValueError(f"reader schema {path}: {exc}") from None


ENVELOPE_FIELDS = frozenset({"op", "before", "after", "ts_ms"})


def _is_envelope(schema: Schema) -> bool:
    names = {f["name"] for f in schema.get("fields", ())} if isinstance(schema, dict) else set()
    return "op" in names and ("before" in names or "after" in names)


def _full_name(schema: Schema) -> str | None:
    return str(schema["name"]) if isinstance(schema, dict) and schema.get("type") == "record" else None


# ====================================================================================== the decoder


class _Plan:
    """How to read the records of one writer schema id (for one route)."""

    __slots__ = ("finish", "name", "problem", "read")

    def __init__(
        self,
        read: Callable[[bytes, int], tuple[Any, int]] | None,
        finish: Callable[[Any], ChangeEvent] | None,
        name: str,
        problem: str = "",
    ) -> None:
        self.read = read  # None: every record of this id is dead, for ``problem``
        self.finish = finish
        self.name = name  # "writer schema id 3 (dbserver1.inventory.customers.Envelope)", for messages
        self.problem = problem


_finish_debezium = from_envelope


def _finish_plain(doc: Any) -> ChangeEvent:
    return from_flat(doc, default_op="u")


def _finish_canonical(doc: Any) -> ChangeEvent:
    profile = doc.get("profile")
    return from_envelope({"op": doc.get("op", "u"), "before": profile, "after": profile, "ts_ms": doc.get("ts_ms")})


def _nullable_markers(schema: Schema) -> tuple[str, ...]:
    """The top-level ``__`` fields (``__op``, ``__deleted``, ...) that may be null."""
    if not isinstance(schema, dict) or schema.get("type") != "record":
        return ()
    return tuple(
        f["name"]
        for f in schema["fields"]
        if f["name"].startswith("__") and isinstance(f["type"], list) and "null" in f["type"]
    )


def _absent_markers_dropped(
    finish: Callable[[Any], ChangeEvent], names: tuple[str, ...]
) -> Callable[[Any], ChangeEvent]:
    """An Avro record always has every field: a null ``__op`` means "not given", as a missing JSON key does."""

    def drop_then_finish(doc: Any) -> ChangeEvent:
        for name in names:
            if doc.get(name, 0) is None:
                del doc[name]
        return finish(doc)

    return drop_then_finish


class AvroDecoder:
    """``bytes | None -> ChangeEvent`` for one route: framing, writer schema by id, compiled reader, envelope.

    Compiled readers are kept per schema id in an LRU cache of ``cache_size`` entries.
    """

    def __init__(
        self,
        fmt: Format,
        client: RegistryClient,
        *,
        reader_schema: Schema | None = None,
        cache_size: int = 1_000,
    ) -> None:
        if fmt not in (Format.AVRO, Format.DEBEZIUM_AVRO):
            raise ValueError(f"{fmt.value} is not an Avro format")
        self.format = fmt
        self.client = client
        self.reader_schema = reader_schema
        self._plans: LruCache[int, _Plan] = LruCache(cache_size)
        self._last_head: bytes | None = None  # the 5-byte header of the last record read
        self._last_plan = _Plan(None, None, "", "no record read yet")

    def __call__(self, value: bytes | None) -> ChangeEvent:
        if value is None:
            return TOMBSTONE
        head = value[:5]
        if head == self._last_head:  # the usual case: the same writer schema as the record before
            plan = self._last_plan
        else:
            if type(value) is not bytes:
                value = bytes(value)
            if len(value) < HEADER_SIZE or value[0] != MAGIC:
                raise DecodeError(_framing_problem(value))
            plan = self._plan(int.from_bytes(head[1:], "big"))
            self._last_head, self._last_plan = head, plan
        read = plan.read
        if read is None:
            raise DecodeError(plan.problem)
        try:
            doc, end = read(value, 5)
        except Exception as exc:
            raise DecodeError(self._describe_failure(exc, plan)) from None
        if end != len(value):
            raise DecodeError(self._describe_leftover(end, len(value), plan))
        return plan.finish(doc)  # type: ignore[misc]  # set whenever read is set

    @staticmethod
    def _describe_leftover(end: int, size: int, plan: _Plan) -> str:
        if end > size:
            return f"truncated: the payload ends before the record of {plan.name} does"
        return f"{size - end} bytes left over after the record: the payload does not match {plan.name}"

    @staticmethod
    def _describe_failure(exc: Exception, plan: _Plan) -> str:
        where = plan.name
        if isinstance(exc, _Truncated | IndexError | struct.error):
            return f"truncated: the payload ends before the record of {where} does"
        if isinstance(exc, _Corrupt):
            return f"the payload does not match {where}: {exc}"
        if isinstance(exc, UnicodeDecodeError):
            return f"the payload does not match {where}: a string is not valid UTF-8 ({exc.reason})"
        if isinstance(exc, ValueError | OverflowError | DecodeError):
            at = _failed_at(exc)
            if at:
                return f"{where}: {at}{exc}"
            return f"the payload does not match {where}: a value cannot be converted ({exc})"
        return f"the payload does not match {where}: {type(exc).__name__}: {exc}"

    def _plan(self, schema_id: int) -> _Plan:
        plan = self._plans.get(schema_id)
        if plan is None:
            try:
                registered = self.client.schema(schema_id)  # RegistryUnavailable propagates: try again later
            except SchemaNotFound:
                raise  # not cached here: the client asks again after a while, the schema may appear
            except DecodeError as exc:  # e.g. a Protobuf schema: it stays so, remember it
                plan = _Plan(None, None, f"schema id {schema_id}", str(exc))
            else:
                plan = self._compile(schema_id, registered.text)
            self._plans.put(schema_id, plan)
        return plan

    def _compile(self, schema_id: int, text: str) -> _Plan:
        try:
            writer = parse_schema_text(text)
        except ValueError as exc:
            return _Plan(None, None, "", f"schema id {schema_id}: the registered writer schema is unusable: {exc}")
        effective = self.reader_schema if self.reader_schema is not None else writer
        name = f"writer schema id {schema_id} ({_full_name(writer) or _kind(writer)})"
        top = _kind(_deref(effective, effective.get("__named_schemas", {}) if isinstance(effective, dict) else {}))
        if top not in ("record", "map"):
            return _Plan(None, None, name, f"schema id {schema_id}: the schema describes a {top}, not a record")
        only = None
        if self.format is Format.DEBEZIUM_AVRO and _is_envelope(effective):
            only = ENVELOPE_FIELDS  # source, transaction: nothing the connector reads
        try:
            read = compile_reader(writer, self.reader_schema, only)
        except Incompatible as exc:
            problem = f"{name} cannot be read" + (
                f" as the reader schema {_full_name(self.reader_schema)}" if self.reader_schema is not None else ""
            )
            return _Plan(None, None, name, f"{problem}: {exc}")
        finish: Callable[[Any], ChangeEvent]
        if self.format is Format.DEBEZIUM_AVRO:
            finish = _finish_debezium
        elif _full_name(effective) == CANONICAL_NAME:
            finish = _finish_canonical
        else:
            finish = _finish_plain
        if only is None and _nullable_markers(effective):
            finish = _absent_markers_dropped(finish, _nullable_markers(effective))
        return _Plan(read, finish, name)


def avro_decoder(
    route: RouteSettings,
    registry: SchemaRegistrySettings | RegistryClient,
    reader_schema: ReaderSchemaSource | None = None,
) -> Decoder:
    """The decoder of an Avro route.

    ``registry``: the settings (the process's shared client for them is used) or a client.
    ``reader_schema``: a ``.avsc`` path or a schema document; by default the route's ``reader_schema``
    setting when it has one. An unreadable or invalid reader schema raises :class:`ValueError` here, at
    start-up, rather than on the first record.
    """
    if isinstance(registry, RegistryClient):
        client = registry
        cache_size = 1_000
    else:
        client = shared_client(registry)
        cache_size = registry.cache_size
    source = reader_schema if reader_schema is not None else getattr(route, "reader_schema", None)
    parsed = load_reader_schema(source) if source is not None else None
    return AvroDecoder(route.format, client, reader_schema=parsed, cache_size=cache_size)
