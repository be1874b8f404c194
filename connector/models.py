"""Small value types passed between the steps of the pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TopicPartitionKey = tuple[str, int]


@dataclass(slots=True)  # not frozen: made once per record, and a frozen __init__ costs four times more
class ChangeEvent:
    """A decoded change: the operation (c, r, u, d, or ``tombstone``) and the row it carries."""

    op: str
    row: dict[str, Any] | None
    # Source timestamp in ms when the envelope carries one (Debezium ts_ms / __source_ts_ms).
    source_ts_ms: int | None = None


@dataclass(frozen=True, slots=True)
class ItemRejection:
    """One item the platform refused, by its index in the request's data list."""

    index: int
    code: int
    text: str
    # Altcraft's error_debug for it, when the answer carried one ("" otherwise).
    debug: str = ""


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """What the API finally said about a batch (after retries, splits and bisection)."""

    accepted: int
    rejected: tuple[ItemRejection, ...]
    request_id: str
    requests: int
    duplicates: int


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a record is dead: the stage, the exception class name and message, and the API's word if any."""

    stage: str
    exception: str
    message: str
    api_code: int | None = None
    api_text: str | None = None
    request_id: str | None = None
    api_debug: str | None = None


@dataclass(slots=True)  # not frozen: a frozen __init__ costs four times more
class Unsent:
    """A record that becomes no item: exactly one of ``skip`` (a counted reason) or ``dead``.

    ``unexpected``: the record is dead because of an exception no stage raises on purpose (a bug in
    the connector meeting an input nobody thought of); it deserves an error log, not only a dead letter.
    """

    skip: str | None = None
    dead: Reason | None = None
    unexpected: bool = False


@dataclass(slots=True)
class ImportItem:
    """The item of a record to import without engaging (an op or ``otherwise`` set to import)."""

    item: bytes
