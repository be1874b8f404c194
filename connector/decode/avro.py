"""Avro decoding (Confluent wire format); being written."""

from __future__ import annotations

from connector.config import RouteSettings, SchemaRegistrySettings
from connector.decode import Decoder


def avro_decoder(route: RouteSettings, registry: SchemaRegistrySettings) -> Decoder:
    raise NotImplementedError("Avro routes are not available yet")
