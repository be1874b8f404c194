"""The connector's exceptions, classified by what the caller does with them. The whole tree, with the
module that defines each one outside this file:

    ConnectorError
    ├── RecordError                     the record is dead-lettered with this reason; the pipeline flows on
    │   ├── DecodeError                 the bytes are not a readable event (bad JSON, bad Avro framing, ...)
    │   │   ├── UndeclaredEncoding      decode.json_events: a schemaless value in an undeclared encoding
    │   │   └── SchemaNotFound          decode.registry: the registry has no schema under the record's id
    │   ├── MappingError                the event lacks what the route needs (matching key, wrong type)
    │   ├── RecordTooLarge              one record does not fit in any request body
    │   └── ConditionFailed             condition: the route's ``when`` cannot be evaluated on this record
    ├── TransientError                  wait and retry; never dead-letter
    │   └── RegistryUnavailable         decode.registry: the Schema Registry cannot answer now
    ├── CommitFailed                    source.consumer: a commit did not succeed; nothing recorded by it is sent
    ├── Abandoned                       sink.client: the connector is stopping; the batch is replayed later
    └── SettingsError                   config.loading: every problem of the settings; start-up stops (exit 2)

Outside the tree, because they never reach the loop: ``ConditionInvalid`` (a ``ValueError`` pydantic
turns into a settings problem), ``Incompatible`` (decode.avro: reader and writer schemas do not
resolve; a settings or decode problem where it is caught), ``RegistryRefused`` (the registry refuses
a producer-side request: tools and tests only), ``ToolError`` (the operator commands' exit 1), and
the private signals of one module (``_RequestRefused``, ``_Truncated``, ``_Corrupt``, ``_TooDeep``,
``_Beyond``, ``_Unfit``, ``_OpRefused``), each caught where it is raised.

Rejections the API reports per item are not exceptions: they arrive as data in a batch outcome, and
so do the platform's refusals of the configuration (a halt decision of ``sink.classify``).

While one record is prepared (``routing.Route.prepare``), only ``TransientError`` may leave: any other
exception (a ``RecursionError``, a ``MemoryError``, a bug meeting an input nobody thought of) still
dead-letters that record, marked unexpected, because a crash would only meet the same record again
after the restart. Known bad inputs raise a ``RecordError`` subclass naming what is wrong.
"""

from __future__ import annotations


class ConnectorError(Exception):
    """Base of every error the connector raises on purpose."""


class RecordError(ConnectorError):
    """A problem with one record: it goes to the dead-letter topic, the rest flows on."""

    stage = "record"


class DecodeError(RecordError):
    stage = "decode"


class MappingError(RecordError):
    stage = "map"


class RecordTooLarge(RecordError):
    stage = "size"


class TransientError(ConnectorError):
    """Worth retrying later; must never turn a record into a dead letter."""
