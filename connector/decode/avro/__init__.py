"""Avro events in the Confluent wire format: magic byte 0, a 4-byte big-endian schema id, Avro binary.

The writer schema of each id comes from the Schema Registry (:mod:`connector.decode.registry`), through
a client the application opens once and hands to every Avro route. A route may name a reader schema (a
``.avsc`` file); records are then read through Avro schema resolution (fields matched by name or alias,
writer-only fields skipped, reader-only fields given their defaults, numeric promotions, union and enum
resolution), so newer and older writers come out in one shape.

One module per job, in the order a record meets them:

- :mod:`~connector.decode.avro.framing`: the wire format's header; :func:`encode` for producers;
- :mod:`~connector.decode.avro.decoder`: :class:`AvroDecoder`, which ties the header's schema id to a
  compiled reader and turns what it reads into a :class:`~connector.models.ChangeEvent`;
- :mod:`~connector.decode.avro.schema`: parsing and loading schemas, and what the compiler asks of them;
- :mod:`~connector.decode.avro.compiler`: :func:`compile_reader`, one generated function per
  (writer, reader) pair, and why the connector does not use fastavro's reader on the hot path;
- :mod:`~connector.decode.avro.resolution`: the schema resolution rules the compiler applies;
- :mod:`~connector.decode.avro.logical`: logical and Debezium types -> the values Altcraft takes;
- :mod:`~connector.decode.avro.runtime`: what the generated code calls while it reads.

Names with a leading underscore are shared between these modules only.
"""

from __future__ import annotations

from connector.decode.avro.compiler import compile_reader
from connector.decode.avro.decoder import CANONICAL_NAME, ENVELOPE_FIELDS, AvroDecoder, avro_decoder
from connector.decode.avro.framing import HEADER_SIZE, MAGIC, encode
from connector.decode.avro.schema import (
    Incompatible,
    ReaderSchemaSource,
    Schema,
    load_reader_schema,
    parse_schema_doc,
    parse_schema_text,
)

__all__ = [
    "CANONICAL_NAME",
    "ENVELOPE_FIELDS",
    "HEADER_SIZE",
    "MAGIC",
    "AvroDecoder",
    "Incompatible",
    "ReaderSchemaSource",
    "Schema",
    "avro_decoder",
    "compile_reader",
    "encode",
    "load_reader_schema",
    "parse_schema_doc",
    "parse_schema_text",
]
