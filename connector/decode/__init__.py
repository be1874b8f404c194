"""Record bytes -> :class:`~connector.models.ChangeEvent`, one decoder per wire format.

Avro routes read writer schemas through one Schema Registry client per application: the composition
root opens it with :func:`open_registry`, passes it to :func:`build_decoder` for every route, and closes
it (``client.close()``) when the application stops.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from connector.config import AVRO_FORMATS, Format, RouteSettings, SchemaRegistrySettings
from connector.decode.json_events import decode_debezium_json, decode_plain_json
from connector.decode.registry import RegistryClient
from connector.models import ChangeEvent

Decoder = Callable[[bytes | None], ChangeEvent]


def json_decoder(fmt: Format) -> Decoder:
    """The decoder of a JSON format; Avro decoders need a registry client (:func:`build_decoder`)."""
    if fmt is Format.JSON:
        return decode_plain_json
    if fmt is Format.DEBEZIUM_JSON:
        return decode_debezium_json
    raise ValueError(f"{fmt.value} is not a JSON format")


def open_registry(settings: SchemaRegistrySettings, routes: Sequence[RouteSettings]) -> RegistryClient | None:
    """The Schema Registry client the Avro ``routes`` share, or None when no route reads Avro.

    The caller owns the client and closes it. Connects to nothing yet: schemas are fetched on first use.
    """
    if not any(r.format in AVRO_FORMATS for r in routes):
        return None
    return RegistryClient(settings)


def build_decoder(route: RouteSettings, registry: RegistryClient | None) -> Decoder:
    """The decoder of a route's format; Avro formats read writer schemas through ``registry``.

    Raises :class:`ValueError` for an Avro route without a client (see :func:`open_registry`), or with an
    unreadable reader schema.
    """
    if route.format not in AVRO_FORMATS:
        return json_decoder(route.format)
    if registry is None:
        raise ValueError(
            f"route {route.name!r} reads {route.format.value}: its decoder needs a Schema Registry client "
            "(open_registry(settings.schema_registry, settings.routes))"
        )
    from connector.decode.avro import avro_decoder  # imports this module: not at the top

    return avro_decoder(route, registry)
