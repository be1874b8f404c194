"""A small Confluent-compatible Schema Registry (tests, the demo) and the producer-side wire format helper."""

from __future__ import annotations

from connector.decode.avro import encode
from connector.schema_registry.server import RegistryServer, SchemaStore, SeenRequest

__all__ = ["RegistryServer", "SchemaStore", "SeenRequest", "encode"]
