"""The Confluent wire format around an Avro record: magic byte 0, a 4-byte big-endian schema id, the body."""

from __future__ import annotations

import io
from typing import Any

import fastavro

from connector.decode.avro.schema import Schema

MAGIC = 0
HEADER_SIZE = 5


def encode(schema_id: int, parsed_schema: Schema, record: Any) -> bytes:
    """``record`` in the Confluent wire format (the producer side; tests and the demo)."""
    out = io.BytesIO()
    out.write(bytes((MAGIC,)))
    out.write(schema_id.to_bytes(4, "big"))
    fastavro.schemaless_writer(out, parsed_schema, record)
    return out.getvalue()


def _framing_problem(value: bytes) -> str:
    if not value:
        return "empty value: no Confluent wire format header"
    if value[0] != MAGIC:
        hint = " (it looks like JSON: is the route's format right?)" if value[:1] in (b"{", b"[") else ""
        return f"magic byte 0x{value[0]:02x}, expected 0x00: not the Confluent Schema Registry wire format{hint}"
    return f"{len(value)} bytes: too short for the Confluent wire format header ({HEADER_SIZE} bytes)"
