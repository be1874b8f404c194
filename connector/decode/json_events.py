"""JSON events: plain rows and Debezium change events, with or without the schema/payload wrapper."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from connector.decode.envelope import from_envelope, from_flat, strip_unavailable
from connector.decode.logical import (
    ALTCRAFT_DATE_FIELDS,
    Converter,
    column_type_converter,
    converter,
    is_custom_field,
    list_converter,
    looks_like_base64_decimal,
)
from connector.decode.logical import convert_temporal as logical_temporal
from connector.errors import DecodeError
from connector.models import ChangeEvent

TOMBSTONE = ChangeEvent("tombstone", None)


def _not_json(exc: orjson.JSONDecodeError) -> DecodeError:
    return DecodeError(f"not valid JSON: {exc}")


def _json_object(value: bytes) -> dict[str, Any]:
    """The JSON object ``value`` holds; DecodeError when it is not JSON or not an object."""
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise _not_json(exc) from None
    if type(doc) is not dict:
        raise DecodeError(f"expected a JSON object, got {type(doc).__name__}")
    return doc


def decode_plain_json(value: bytes | None) -> ChangeEvent:
    """A JSON object holding the profile row (``__op``/``__deleted`` honoured when present)."""
    if value is None:
        return TOMBSTONE
    return from_flat(_json_object(value), default_op="u")


class UndeclaredEncoding(DecodeError):
    """A schemaless Debezium record holds a value in an encoding no Altcraft field takes (a day count
    for a date field, a base64 decimal), and the route did not declare the column's type."""

    def __init__(self, message: str, column: str) -> None:
        super().__init__(message)
        self.column = column


class JsonDecoder:
    """A JSON route's decoder: the stock one, plus the route's ``column_types`` for records that come
    without a schema block, plus (``debezium-json``) the check for undeclared Debezium encodings.

    The check (see the README, "Debezium values"): in a record without a schema, a column read by a
    ``fields`` entry that has no declared type fails the record with :class:`UndeclaredEncoding` when
    it holds an integer for one of Altcraft's date fields (``_bdate``, ``_regdate``), or, for a custom
    field, text that is padded base64 of at most 32 bytes (a decimal as Debezium writes it by default;
    Altcraft's own fields hold names, addresses and dates, never a decimal).
    """

    def __init__(
        self, debezium: bool, column_types: Mapping[str, str] | None = None, fields: Mapping[str, str] | None = None
    ) -> None:
        declared = dict(column_types or {})
        self._debezium = debezium
        self._typed = [(col, conv) for col, name in declared.items() if (conv := column_type_converter(name))]
        top = [(dst, src) for dst, src in (fields or {}).items() if "." not in src and src not in declared]
        self._date_columns = [(src, dst) for dst, src in top if dst in ALTCRAFT_DATE_FIELDS] if debezium else []
        self._number_columns = [(src, dst) for dst, src in top if is_custom_field(dst)] if debezium else []
        self._date_keys = tuple(col for col, _ in self._date_columns)
        self._number_keys = tuple(col for col, _ in self._number_columns)

    def __call__(self, value: bytes | None) -> ChangeEvent:
        if not self._debezium:
            event = decode_plain_json(value)
            return self._schemaless(event) if self._typed and event.row else event
        # Debezium's JSON converter output, schemas enabled or not, envelope or flattened.
        if value is None:
            return TOMBSTONE
        return self._event(_json_object(value))

    def quick(self, ops: frozenset[str]) -> Callable[[bytes | None], dict[str, Any] | ChangeEvent] | None:
        """A shorter way for the commonest record of a ``debezium-json`` route with no ``column_types``:
        an envelope without a schema block whose op is one of ``ops`` (the ops the route engages) and
        whose ``after`` is a non-empty object. For such a record the function it returns gives the row
        alone (a dict), with no :class:`ChangeEvent` made; for any other it gives what :meth:`__call__`
        gives. Either way the row, and what is raised, are :meth:`__call__`'s for the same bytes (a
        property test holds the two to that). None when the route has no such records to shorten."""
        if not self._debezium or self._typed or not ops <= frozenset("cru"):
            return None
        event_of, check = self._event, self._check_encodings

        def row_or_event(value: bytes | None) -> dict[str, Any] | ChangeEvent:
            if value is None:
                return TOMBSTONE
            doc = _json_object(value)
            op = doc.get("op")
            row = doc.get("after")
            # The checks of from_envelope and _event, for this case: an op of ``ops`` is a known one, not
            # a delete, and "after" is present; no schema block; a non-empty row.
            if type(op) is not str or op not in ops or type(row) is not dict or not row or "schema" in doc:
                return event_of(doc)
            row = strip_unavailable(row)
            check(row)
            return row

        return row_or_event

    def _event(self, doc: dict[str, Any]) -> ChangeEvent:
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
        if not event.row:
            return event
        if schema:
            return ChangeEvent(event.op, _apply_logical_types(event.row, schema, event.op), event.source_ts_ms)
        if self._typed:
            return self._schemaless(event)
        self._check_encodings(event.row)
        return event

    def _schemaless(self, event: ChangeEvent) -> ChangeEvent:
        """A row that came without a schema: the declared types applied, then the check."""
        row = event.row
        assert row is not None
        if self._typed:
            row = _convert_columns(row, self._typed)
        self._check_encodings(row)
        return event if row is event.row else ChangeEvent(event.op, row, event.source_ts_ms)

    def _check_encodings(self, row: dict[str, Any]) -> None:
        """Raise :class:`UndeclaredEncoding` for a schemaless row whose read columns hold an encoding no
        Altcraft field takes (the class docstring); cheap checks first, the exact ones off the hot path."""
        get = row.get
        for col in self._date_keys:
            if type(get(col)) is int:
                self._undeclared_date(row)
        for col in self._number_keys:
            v = get(col)
            if type(v) is str and v[-1:] == "=":  # base64 padding: the pattern is checked in _undeclared_decimal
                self._undeclared_decimal(row)

    def _undeclared_date(self, row: dict[str, Any]) -> None:
        for col, dst in self._date_columns:
            v = row.get(col)
            if type(v) is int:
                raise UndeclaredEncoding(
                    f"column {col!r} (Altcraft field {dst}) is the number {v}: without a schema Debezium writes "
                    f"dates and timestamps as numbers. Declare the column in routes[].column_types ({col}: date, "
                    "or timestamp / micro-timestamp / nano-timestamp), or let Debezium send schemas "
                    "(value.converter.schemas.enable=true)",
                    col,
                )

    def _undeclared_decimal(self, row: dict[str, Any]) -> None:
        for col, dst in self._number_columns:
            v = row.get(col)
            if type(v) is str and looks_like_base64_decimal(v):
                raise UndeclaredEncoding(
                    f"column {col!r} (Altcraft field {dst}) is {v!r}, base64 as Debezium writes a decimal "
                    f"without a schema. Declare it in routes[].column_types ({col}: decimal(<scale>); "
                    f"{col}: text if it is text), set Debezium's decimal.handling.mode=string or double, or let "
                    "Debezium send schemas (value.converter.schemas.enable=true)",
                    col,
                )


def _convert_columns(row: dict[str, Any], typed: list[tuple[str, Converter]]) -> dict[str, Any]:
    out = row
    for col, convert in typed:
        v = row.get(col)
        if v is None:
            continue
        try:
            converted = convert(v)
        except ValueError as exc:
            raise DecodeError(f"{col}: {exc}") from None
        if converted is not v:
            if out is row:
                out = dict(row)
            out[col] = converted
    return out


def _row_fields(schema: dict[str, Any], op: str) -> list[dict[str, Any]]:
    fields = schema.get("fields") or []
    wanted = "before" if op == "d" else "after"
    for f in fields:  # envelope: the row schema is the field named after/before
        if f.get("field") == wanted and f.get("type") == "struct":
            return list(f.get("fields") or [])
    return list(fields)


def _apply_logical_types(row: dict[str, Any], schema: dict[str, Any], op: str) -> dict[str, Any]:
    """Turn Debezium's and Connect's encodings (temporal numbers, base64 decimals, JSON text) into the
    values Altcraft fields take, as :mod:`connector.decode.logical` says.

    The schema block is walked without checks (it runs once per record); a malformed one raises here
    and is described by :func:`_schema_problem`, off the hot path.
    """
    out = row
    try:
        for f in _row_fields(schema, op):
            logical = f.get("name")
            name = f.get("field")
            try:
                if logical is not None:
                    convert = converter(logical, f.get("parameters"))
                elif f.get("type") == "array" and type(items := f.get("items")) is dict and items.get("name"):
                    item = converter(items.get("name"), items.get("parameters"))
                    convert = list_converter(item) if item is not None else None
                else:
                    continue
                if convert is None or name not in row:
                    continue
                v = row[name]
                if v is None:
                    continue
                converted = convert(v)
            except ValueError as exc:
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


def convert_temporal(logical: str, v: Any) -> Any:
    """Debezium / Kafka Connect temporal logical types -> ISO strings; other values unchanged.

    Raises :class:`DecodeError` for a value outside the dates and times Python represents (years 1 to
    9999): a real column never holds one, so the record is corrupt.
    """
    try:
        return logical_temporal(logical, v)
    except ValueError as exc:
        raise DecodeError(str(exc)) from None


# Debezium's JSON converter output with nothing declared (the decoder of ``format: debezium-json`` before
# a route adds its column types and checks).
decode_debezium_json = JsonDecoder(debezium=True)
