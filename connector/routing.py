"""One record's way through its route: decode, apply the op policy, the condition, map, serialize. Pure.

The outcome says what the loop does with the record: send the item (its bytes, the common case, with no
wrapper object), or skip it (counted) or dead-letter it with a reason (:class:`Unsent`).

:meth:`Route.prepare` gives every record a verdict: whatever one record holds, it must not stop the
partitions (a crash would only meet the same record again after the restart). The only exception it
lets through is :class:`~connector.errors.TransientError`, a fault of the moment (the Schema Registry
down) that the loop waits out. Known bad inputs raise a :class:`~connector.errors.RecordError` naming
what is wrong; anything else is still dead-lettered, with the stage it happened in, and marked
``unexpected`` so that the loop reports it loudly: it is a bug to fix here, not a bad record.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from connector.config import AVRO_FORMATS, Format, Mode, OpAction, Otherwise, RouteSettings
from connector.decode import Decoder, json_decoder
from connector.decode.json_events import JsonDecoder, UndeclaredEncoding
from connector.errors import DecodeError, MappingError, RecordError, RecordTooLarge, TransientError
from connector.mapping import Mapper
from connector.models import ChangeEvent, ImportItem, Reason, Unsent
from connector.ordering import ProfileKeys, profile_keys
from connector.sink.request import BodyShape, body_shape

if TYPE_CHECKING:
    from connector.condition import Condition


class Route:
    """The compiled form of one route's settings."""

    def __init__(
        self,
        settings: RouteSettings,
        max_body_bytes: int,
        decoder: Decoder | None = None,
    ) -> None:
        self.settings = settings
        self.name = settings.name
        self.decode: Decoder = _route_decoder(settings, decoder)
        self._warned: set[str] = set()  # columns whose undeclared encoding was logged
        self.mapper = Mapper(settings)
        self.shape: BodyShape = body_shape(settings)
        self._fields_only = self.mapper.fields_only
        self._match = self.mapper.match_fields
        self._by_email = self._match == ("email",)
        # The profile key(s) of the item the last prepare() returned (connector.ordering); set only when
        # prepare returns bytes, read by the loop right after, so no wrapper object is made per record.
        self.key: ProfileKeys = None
        self._max_item = max_body_bytes - self.shape.overhead
        # Records an op (or otherwise) imports without engaging: items of profiles/import_batch.
        self.import_shape: BodyShape | None = None
        if settings.mode is not Mode.IMPORT and (settings.ops.importing() or settings.otherwise is Otherwise.IMPORT):
            self.import_shape = body_shape(settings.model_copy(update={"mode": Mode.IMPORT}))
        self._otherwise_imports = settings.otherwise is Otherwise.IMPORT
        ops = settings.ops
        self._ops: dict[str, OpAction] = {"c": ops.c, "r": ops.r, "u": ops.u, "d": ops.d, "tombstone": ops.tombstone}
        # routes[].when, compiled once; None (the common case) costs prepare one comparison.
        self.condition: Condition | None = None
        self._sides: _EnvelopeSides | None = None
        if settings.when is not None:
            # Imported here: the CEL runtime costs about 12 MB of resident memory, which a process
            # whose routes have no condition need not carry.
            from connector.condition import ROW_VARIABLES, VARIABLES, compile_condition

            avro = settings.format in AVRO_FORMATS
            self.condition = compile_condition(settings.when, ROW_VARIABLES if avro else VARIABLES)
            if settings.format is Format.DEBEZIUM_JSON and self.condition.reads:
                self._sides = _EnvelopeSides(self.decode, self.condition.reads)
        # The decoder's short way (JsonDecoder.quick, AvroDecoder.quick) for records of the ops this route
        # engages, when nothing but the op decides that a record is engaged.
        self._quick: Callable[[bytes | None], dict[str, Any] | ChangeEvent] | None = None
        quick = getattr(self.decode, "quick", None)
        if quick is not None and self.condition is None:
            self._quick = quick(frozenset(op for op in "cru" if self._ops[op] is OpAction.ENGAGE))

    def prepare(self, value: bytes | None) -> bytes | ImportItem | Unsent:
        """The item of one record (bytes to engage; :class:`ImportItem` to import only), or why there is
        none. Raises only :class:`TransientError`."""
        stage = "decode"  # where an unexpected exception happened (a RecordError carries its own stage)
        try:
            got = self.decode(value) if self._quick is None else self._quick(value)
            if type(got) is dict:  # a row of an op this route engages, read on the decoder's short way
                stage = "map"
                return self._engage(got)
            event: ChangeEvent = got  # type: ignore[assignment]
            stage = "op"
            action = self._ops.get(event.op)
            if action is None:  # truncate, message: nothing about one profile
                return Unsent(skip=f"op_{event.op}")
            if action is OpAction.SKIP:
                return Unsent(skip="tombstone" if event.op == "tombstone" else f"op_{event.op}")
            if action is OpAction.DEAD_LETTER:
                raise _OpRefused(f"op {event.op!r} is configured to be dead-lettered")
            stage = "map"
            if event.row is None:
                raise MappingError(f"op {event.op!r} carries no row")
            if self.condition is not None and action is OpAction.ENGAGE:
                stage = "condition"
                if not self._holds(event, value):
                    if not self._otherwise_imports:
                        return Unsent(skip="condition")
                    action = OpAction.IMPORT
                stage = "map"
            if action is OpAction.IMPORT and self.import_shape is not None:
                return self._import_item(event.row)
            return self._engage(event.row)
        except UndeclaredEncoding as exc:
            self._warn_once(exc)
            return Unsent(dead=Reason(exc.stage, type(exc).__name__, str(exc)))
        except RecordError as exc:
            return Unsent(dead=Reason(exc.stage, type(exc).__name__, str(exc)))
        except TransientError:
            raise  # the loop holds the partition and reads this record again later
        except Exception as exc:  # the last resort: RecursionError, MemoryError, a bug meeting odd input
            return Unsent(dead=Reason(stage, type(exc).__name__, _message(exc)), unexpected=True)

    def _engage(self, row: dict[str, Any]) -> bytes:
        """The item that engages the profile of ``row`` (sets :attr:`key`). Raises RecordError."""
        if self._fields_only:
            fields = self.mapper.fields(row)
            try:
                item = self.shape.fields_item(fields)
            except TypeError as exc:  # orjson's JSONEncodeError: an int over 64 bits, too deep a nesting
                raise _unwritable(exc) from None
        else:
            mapped = self.mapper.map(row)
            fields = mapped.fields
            try:
                item = self.shape.item(mapped)
            except TypeError as exc:
                raise _unwritable(exc) from None
        email = fields.get("email") if self._by_email else None  # the common case, inline
        self.key = "e:" + email.lower() if type(email) is str and email else profile_keys(fields, self._match)
        if len(item) > self._max_item:
            raise RecordTooLarge(f"the item is {len(item)} bytes; with the request envelope it exceeds the body limit")
        return item

    def _import_item(self, row: dict[str, Any]) -> ImportItem:
        """An item of profiles/import_batch: the profile fields alone (no content, no custom_data)."""
        assert self.import_shape is not None
        fields = self.mapper.fields(row)
        try:
            item = self.import_shape.fields_item(fields)
        except TypeError as exc:
            raise _unwritable(exc) from None
        self.key = profile_keys(fields, self._match)
        if len(item) > self._max_item:
            raise RecordTooLarge(f"the item is {len(item)} bytes; with the request envelope it exceeds the body limit")
        return ImportItem(item)

    def _holds(self, event: ChangeEvent, value: bytes | None) -> bool:
        """Whether the route's condition engages this record (raises ConditionFailed when it cannot tell)."""
        assert self.condition is not None
        if event.op == "d":
            before, after = event.row, None
        else:
            before, after = None, event.row
        if self._sides is None or value is None:
            return self.condition.holds(event.op, before, after, None)
        # The envelope is read again only for the records whose verdict needs before or source.
        verdict = self.condition.holds_without(event.op, after, *((before,) if event.op == "d" else ()))
        if verdict is not None:
            return verdict
        before, source = self._sides(value, event)
        return self.condition.holds(event.op, before, after, source)

    def _warn_once(self, exc: UndeclaredEncoding) -> None:
        """A misconfiguration, not a bad record: said once per column in the log, besides the dead letters."""
        if exc.column not in self._warned:
            self._warned.add(exc.column)
            log.warning("route %s: records are dead-lettered: %s", self.name, exc)


def _route_decoder(settings: RouteSettings, decoder: Decoder | None) -> Decoder:
    """The decoder a route reads with. The stock JSON decoders know nothing of the route; for JSON
    formats the route's own one replaces them, with its ``column_types`` and the check for undeclared
    Debezium encodings in the columns its ``fields`` read."""
    fmt = settings.format
    if fmt in _JSON_FORMATS and (decoder is None or decoder is json_decoder(fmt)):
        return JsonDecoder(fmt is Format.DEBEZIUM_JSON, settings.column_types, settings.fields)
    return decoder or json_decoder(fmt)


_JSON_FORMATS = (Format.JSON, Format.DEBEZIUM_JSON)
log = logging.getLogger(__name__)


class _EnvelopeSides:
    """``before`` and ``source`` of a ``debezium-json`` record, for a condition that reads them.

    The decoder keeps only the row (``after``; ``before`` for a delete), so the envelope is read again,
    and only for routes whose condition reads these. An update's ``before`` goes through the route's
    decoder as the row of a delete would: the same schema block or column types, the same placeholders
    left out. Flattened records (ExtractNewRecordState) carry neither: null.
    """

    def __init__(self, decode: Decoder, reads: frozenset[str]) -> None:
        self._decode = decode
        self._before = "before" in reads

    def __call__(self, value: bytes, event: ChangeEvent) -> tuple[Any, Any]:
        before = event.row if event.op == "d" else None
        doc = orjson.loads(value)  # the decoder read these bytes already: they are a JSON object
        schema, payload = None, doc
        if "payload" in doc and "schema" in doc:
            schema, payload = doc["schema"], doc["payload"]
        if payload.get("op") is None or not ("after" in payload or "before" in payload):
            return before, None  # a flattened row
        source = payload.get("source")
        if not self._before or event.op == "d" or payload.get("before") is None:
            return before, source
        if type(payload["before"]) is not dict:
            raise DecodeError("Debezium before is not an object")
        delete: dict[str, Any] = {"op": "d", "before": payload["before"], "after": None}
        read_as = delete if schema is None else {"schema": schema, "payload": delete}
        return self._decode(orjson.dumps(read_as)).row, source


class _OpRefused(MappingError):
    stage = "op"


def _unwritable(exc: TypeError) -> MappingError:
    return MappingError(f"the item cannot be written as JSON: {exc}")


def _message(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # a message that cannot even be rendered
        text = ""
    return text or f"{type(exc).__name__} without a message"
