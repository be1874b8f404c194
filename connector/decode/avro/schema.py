"""Parsed Avro schemas: loading and validating them (through fastavro), and the facts the compiler asks of them.

A schema here is what :func:`fastavro.parse_schema` returns (a str, a list for a union, or a dict), with
named types referenced by name and listed under ``__named_schemas``; :func:`_deref` follows a reference
to the type it names.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import fastavro
import orjson

Schema = Any  # a schema as fastavro.parse_schema returns it: a str, a list (union) or a dict
ReaderSchemaSource = str | os.PathLike[str] | Mapping[str, Any] | list[Any]

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED = frozenset({"record", "enum", "fixed"})


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
