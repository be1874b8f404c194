"""The connector's exceptions, classified by what the caller does with them.

    ConnectorError
    ├── RecordError                 the record is dead-lettered with this reason; the pipeline flows on
    │   ├── DecodeError             the bytes are not a readable event (bad JSON, bad Avro framing, ...)
    │   ├── MappingError            the event lacks what the route needs (matching key, wrong type)
    │   └── RecordTooLarge          one record does not fit in any request body
    └── TransientError              wait and retry; never dead-letter (API outage, registry down)

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
