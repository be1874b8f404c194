"""One record's way through its route: decode, apply the op policy, map, serialize. Pure.

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
from dataclasses import dataclass

from connector.config import Format, OpAction, RouteSettings
from connector.decode import Decoder, json_decoder
from connector.decode.json_events import JsonDecoder, UndeclaredEncoding
from connector.dlq import Reason
from connector.errors import MappingError, RecordError, RecordTooLarge, TransientError
from connector.mapping import Mapper
from connector.sink.request import BodyShape, body_shape


@dataclass(slots=True)  # not frozen: a frozen __init__ costs four times more
class Unsent:
    """A record that becomes no item: exactly one of ``skip`` (a counted reason) or ``dead``.

    ``unexpected``: the record is dead because of an exception no stage raises on purpose (a bug in
    the connector meeting an input nobody thought of); it deserves an error log, not only a dead letter.
    """

    skip: str | None = None
    dead: Reason | None = None
    unexpected: bool = False


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
        self._max_item = max_body_bytes - self.shape.overhead
        ops = settings.ops
        self._ops: dict[str, OpAction] = {"c": ops.c, "r": ops.r, "u": ops.u, "d": ops.d, "tombstone": ops.tombstone}

    def prepare(self, value: bytes | None) -> bytes | Unsent:
        """The item of one record, or why there is none. Raises only :class:`TransientError`."""
        stage = "decode"  # where an unexpected exception happened (a RecordError carries its own stage)
        try:
            event = self.decode(value)
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
            if self._fields_only:
                fields = self.mapper.fields(event.row)
                try:
                    item = self.shape.fields_item(fields)
                except TypeError as exc:  # orjson's JSONEncodeError: an int over 64 bits, too deep a nesting
                    raise _unwritable(exc) from None
            else:
                mapped = self.mapper.map(event.row)
                try:
                    item = self.shape.item(mapped)
                except TypeError as exc:
                    raise _unwritable(exc) from None
            stage = "size"
            if len(item) > self._max_item:
                raise RecordTooLarge(
                    f"the item is {len(item)} bytes; with the request envelope it exceeds the body limit"
                )
            return item
        except UndeclaredEncoding as exc:
            self._warn_once(exc)
            return Unsent(dead=Reason(exc.stage, type(exc).__name__, str(exc)))
        except RecordError as exc:
            return Unsent(dead=Reason(exc.stage, type(exc).__name__, str(exc)))
        except TransientError:
            raise  # the loop holds the partition and reads this record again later
        except Exception as exc:  # the last resort: RecursionError, MemoryError, a bug meeting odd input
            return Unsent(dead=Reason(stage, type(exc).__name__, _message(exc)), unexpected=True)

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
