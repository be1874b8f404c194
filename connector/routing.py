"""One record's way through its route: decode, apply the op policy, map, serialize. Pure.

The outcome says what the loop does with the record: send the item (its bytes, the common case, with no
wrapper object), or skip it (counted) or dead-letter it with a reason (:class:`Unsent`).
"""

from __future__ import annotations

from dataclasses import dataclass

from connector.config import OpAction, RouteSettings
from connector.decode import Decoder, json_decoder
from connector.dlq import Reason
from connector.errors import MappingError, RecordError, RecordTooLarge
from connector.mapping import Mapper
from connector.sink.request import BodyShape, body_shape


@dataclass(slots=True)  # not frozen: a frozen __init__ costs four times more
class Unsent:
    """A record that becomes no item: exactly one of ``skip`` (a counted reason) or ``dead``."""

    skip: str | None = None
    dead: Reason | None = None


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
        self.decode: Decoder = decoder or json_decoder(settings.format)
        self.mapper = Mapper(settings)
        self.shape: BodyShape = body_shape(settings)
        self._fields_only = self.mapper.fields_only
        self._max_item = max_body_bytes - self.shape.overhead
        ops = settings.ops
        self._ops: dict[str, OpAction] = {"c": ops.c, "r": ops.r, "u": ops.u, "d": ops.d, "tombstone": ops.tombstone}

    def prepare(self, value: bytes | None) -> bytes | Unsent:
        try:
            event = self.decode(value)
            action = self._ops.get(event.op)
            if action is None:  # truncate, message: nothing about one profile
                return Unsent(skip=f"op_{event.op}")
            if action is OpAction.SKIP:
                return Unsent(skip="tombstone" if event.op == "tombstone" else f"op_{event.op}")
            if action is OpAction.DEAD_LETTER:
                raise _OpRefused(f"op {event.op!r} is configured to be dead-lettered")
            if event.row is None:
                raise MappingError(f"op {event.op!r} carries no row")
            if self._fields_only:
                item = self.shape.fields_item(self.mapper.fields(event.row))
            else:
                item = self.shape.item(self.mapper.map(event.row))
            if len(item) > self._max_item:
                raise RecordTooLarge(
                    f"the item is {len(item)} bytes; with the request envelope it exceeds the body limit"
                )
            return item
        except RecordError as exc:
            return Unsent(dead=Reason(exc.stage, type(exc).__name__, str(exc)))
        except (TypeError, ValueError) as exc:  # e.g. a value orjson cannot serialize
            return Unsent(dead=Reason("map", type(exc).__name__, str(exc)))


class _OpRefused(MappingError):
    stage = "op"

