"""Record bytes -> :class:`~connector.models.ChangeEvent`, one decoder per wire format."""

from __future__ import annotations

from collections.abc import Callable

from connector.config import Format, RouteSettings, SchemaRegistrySettings
from connector.decode.json_events import decode_debezium_json, decode_plain_json
from connector.models import ChangeEvent

Decoder = Callable[[bytes | None], ChangeEvent]


def json_decoder(fmt: Format) -> Decoder:
    """The decoder of a JSON format; Avro decoders need a registry and are built in ``decode.avro``."""
    if fmt is Format.JSON:
        return decode_plain_json
    if fmt is Format.DEBEZIUM_JSON:
        return decode_debezium_json
    raise ValueError(f"{fmt.value} is not a JSON format")


def build_decoder(route: RouteSettings, registry: SchemaRegistrySettings) -> Decoder:
    """The decoder of a route's format. Avro formats share one registry client per process."""
    if route.format in (Format.JSON, Format.DEBEZIUM_JSON):
        return json_decoder(route.format)
    from connector.decode.avro import avro_decoder

    return avro_decoder(route, registry)
