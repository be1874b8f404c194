"""The decoder of an Avro route: framing, the writer schema by id from the registry, a compiled reader, the event.

Formats:

- ``debezium-avro``: a Debezium envelope (``before``, ``after``, ``op``, ``source``, ``ts_ms``) or a
  record flattened by ExtractNewRecordState (``__op``, ``__deleted``, ``__source_ts_ms``), read with
  :func:`~connector.decode.envelope.from_envelope` exactly like ``debezium-json``;
- ``avro``: a record named ``altcraft.connector.ProfileChange`` (``schemas/profile_change.avsc``) is
  read as ``op`` + ``profile``; any other record is a plain profile row like the ``json`` format
  (``__op``/``__deleted`` honoured, the op defaults to ``u``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from connector.config import Format, RouteSettings
from connector.decode import Decoder
from connector.decode.avro.compiler import compile_reader
from connector.decode.avro.framing import HEADER_SIZE, MAGIC, _framing_problem
from connector.decode.avro.runtime import _Corrupt, _failed_at, _Truncated
from connector.decode.avro.schema import (
    Incompatible,
    ReaderSchemaSource,
    Schema,
    _deref,
    _kind,
    load_reader_schema,
    parse_schema_text,
)
from connector.decode.envelope import from_envelope, from_flat, strip_unavailable
from connector.decode.json_events import TOMBSTONE
from connector.decode.registry import LruCache, RegistryClient, SchemaNotFound
from connector.errors import DecodeError
from connector.models import ChangeEvent

CANONICAL_NAME = "altcraft.connector.ProfileChange"
ENVELOPE_FIELDS = frozenset({"op", "before", "after", "ts_ms"})


def _is_envelope(schema: Schema) -> bool:
    names = {f["name"] for f in schema.get("fields", ())} if isinstance(schema, dict) else set()
    return "op" in names and ("before" in names or "after" in names)


def _full_name(schema: Schema) -> str | None:
    return str(schema["name"]) if isinstance(schema, dict) and schema.get("type") == "record" else None


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
        doc, plan = self._read(value)
        return plan.finish(doc)  # type: ignore[misc]  # set whenever read is set

    def quick(self, ops: frozenset[str]) -> Callable[[bytes | None], dict[str, Any] | ChangeEvent] | None:
        """The shorter way of :meth:`connector.decode.json_events.JsonDecoder.quick`, for a
        ``debezium-avro`` route: a Debezium envelope whose op is one of ``ops`` and whose ``after`` is a
        non-empty record gives its row alone; any other record what :meth:`__call__` gives. None for
        other formats."""
        if self.format is not Format.DEBEZIUM_AVRO or not ops <= frozenset("cru"):
            return None
        read = self._read

        def row_or_event(value: bytes | None) -> dict[str, Any] | ChangeEvent:
            if value is None:
                return TOMBSTONE
            doc, plan = read(value)
            if plan.finish is _finish_debezium:  # a Debezium envelope (from_envelope's checks, for this case)
                op = doc.get("op")
                row = doc.get("after")
                if type(op) is str and op in ops and type(row) is dict and row:
                    return strip_unavailable(row)
            return plan.finish(doc)  # type: ignore[misc]

        return row_or_event

    def _read(self, value: bytes) -> tuple[Any, _Plan]:
        """The record as read by its writer schema's compiled reader, and that schema's plan."""
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
        return doc, plan

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
    registry: RegistryClient,
    reader_schema: ReaderSchemaSource | None = None,
) -> Decoder:
    """The decoder of an Avro route, reading writer schemas through ``registry``.

    The client belongs to the caller, who closes it; every route of a connector shares one, so they
    share its schema cache. Compiled readers are kept for as many schema ids as the client keeps schemas.
    ``reader_schema``: a ``.avsc`` path or a schema document; by default the route's ``reader_schema``
    setting when it has one. An unreadable or invalid reader schema raises :class:`ValueError` here, at
    start-up, rather than on the first record.
    """
    source = reader_schema if reader_schema is not None else getattr(route, "reader_schema", None)
    parsed = load_reader_schema(source) if source is not None else None
    return AvroDecoder(route.format, registry, reader_schema=parsed, cache_size=registry.cache_size)
