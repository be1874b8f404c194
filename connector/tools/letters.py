"""A dead letter read back from the dead-letter topic, and how the operator commands select and show it. Pure.

:mod:`connector.dlq` writes the original key, value, headers and timestamp plus provenance headers
(``__connect.errors.*``, ``altcraft.error.*``, ``altcraft.request.id``, ``altcraft.dead_letter.*``).
:func:`parse_letter` reads them back: where the record came from, at which stage and why it died, and
the original headers without the provenance ones (what a dead letter written again must carry).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from connector.dlq import TRUNCATED_HEADER

# Headers the connector (and this package) adds; everything else is the original record's.
PROVENANCE_PREFIXES = (
    "__connect.errors.",
    "altcraft.error.",
    "altcraft.request.id",
    "altcraft.dead_letter.",
    "altcraft.replay.",
)
# Written on a dead letter written again by ``dlq replay --dead-letter-again``: the letter it replaces.
REPLAY_OF_HEADER = "altcraft.replay.of"
REASON_WIDTH = 60  # of an Altcraft error text inside a reason label
ELLIPSIS = "…"

RawHeaders = Sequence[tuple[str, str | bytes | None]] | Mapping[str, str | bytes | None]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record of the dead-letter topic: its own position, its bytes, and what its headers say."""

    partition: int  # in the dead-letter topic
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    original_headers: tuple[tuple[str, bytes | None], ...]
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None
    stage: str
    exception: str
    message: str
    api_code: str | None = None
    api_text: str | None = None
    truncated: bool = False
    # Written by ``dlq replay --dead-letter-again``: the (topic, partition, offset) of the letter it replaces.
    replay_of: tuple[str, int, int] | None = None

    @property
    def source(self) -> tuple[str, int, int] | None:
        """The source record's position, when the provenance headers are complete."""
        if self.source_topic is None or self.source_partition is None or self.source_offset is None:
            return None
        return self.source_topic, self.source_partition, self.source_offset

    @property
    def reason(self) -> str:
        """The reason as counted: the exception class, with Altcraft's code and text for its rejections."""
        if self.api_code is None:
            return self.exception
        return f"{self.exception} {self.api_code}: {printable(self.api_text or '', REASON_WIDTH)}"


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def parse_letter(
    partition: int,
    offset: int,
    timestamp_ms: int | None,
    key: str | bytes | None,
    value: bytes | None,
    headers: RawHeaders | None,
) -> DeadLetter:
    """Read one dead letter. A provenance header present twice counts by its last occurrence (the connector
    appends its own after the original ones); a letter without them has stage and reason ``unknown``."""
    original: list[tuple[str, bytes | None]] = []
    prov: dict[str, str] = {}
    pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
    for name, raw in pairs:
        if name.startswith(PROVENANCE_PREFIXES):
            prov[name] = _text(raw)
        else:
            original.append((name, raw.encode() if isinstance(raw, str) else raw))
    return DeadLetter(
        partition=partition,
        offset=offset,
        timestamp_ms=timestamp_ms,
        key=key.encode() if isinstance(key, str) else key,
        value=value,
        original_headers=tuple(original),
        source_topic=prov.get("__connect.errors.topic") or None,
        source_partition=_int(prov.get("__connect.errors.partition")),
        source_offset=_int(prov.get("__connect.errors.offset")),
        stage=prov.get("__connect.errors.stage") or "unknown",
        exception=prov.get("__connect.errors.exception.class.name") or "unknown",
        message=prov.get("__connect.errors.exception.message", ""),
        api_code=prov.get("altcraft.error.code"),
        api_text=prov.get("altcraft.error.text"),
        truncated=prov.get(TRUNCATED_HEADER, "").lower() == "true",
        replay_of=_position(prov.get(REPLAY_OF_HEADER)),
    )


def _position(text: str | None) -> tuple[str, int, int] | None:
    """``topic/partition/offset`` (topic names cannot hold ``/``)."""
    if not text:
        return None
    topic, _, rest = text.partition("/")
    partition, offset = _int(rest.partition("/")[0]), _int(rest.partition("/")[2])
    if not topic or partition is None or offset is None:
        return None
    return topic, partition, offset


@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters a command takes: by stage (exact) and by reason (a case-insensitive part of the
    exception class, its message, or Altcraft's code and text)."""

    stage: str | None = None
    reason: str | None = None

    def matches(self, letter: DeadLetter) -> bool:
        if self.stage is not None and letter.stage != self.stage:
            return False
        if self.reason is not None:
            wanted = self.reason.lower()
            texts = (letter.exception, letter.message, letter.api_code or "", letter.api_text or "")
            if not any(wanted in t.lower() for t in texts):
                return False
        return True


def printable(text: str, width: int) -> str:
    """``text`` safe for a terminal, cut to ``width`` characters: line breaks, control characters (escape
    sequences included) and other unprintable characters are written as ``\\n``, ``\\x1b``, ``\\u200b``."""
    out: list[str] = []
    length = 0
    for ch in text:
        if ch.isprintable():
            piece = ch
        elif ch == "\n":
            piece = "\\n"
        elif ch == "\t":
            piece = "\\t"
        elif ord(ch) < 0x100:
            piece = f"\\x{ord(ch):02x}"
        else:
            piece = f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}"
        if length + len(piece) > width:
            out.append(ELLIPSIS)
            break
        out.append(piece)
        length += len(piece)
    return "".join(out)


def preview(data: bytes | None, width: int) -> str:
    """A short printable view of a record's value: its text (UTF-8, undecodable bytes as escapes) cut to
    ``width`` characters, with the size when cut."""
    if data is None:
        return "(null)"
    text = data.decode("utf-8", "backslashreplace")
    shown = printable(text, width)
    return f"{shown} ({len(data)} bytes)" if shown.endswith(ELLIPSIS) else shown


def first_per_source(letters: Iterable[DeadLetter]) -> tuple[list[DeadLetter], list[DeadLetter]]:
    """One letter per source record among the connector's letters, the first (lowest partition and offset),
    in (partition, offset) order; and the letters left out.

    The connector may dead-letter a record more than once (dead letters are at-least-once: a batch replayed
    after a crash writes its letters again, and so does a topic read again after an offsets reset).
    Replaying each copy would send the record in several requests under different keys and engage its
    profile again. The first copy is kept because later copies may still come: the choice must not change
    from one replay to the next. Letters written by ``dlq replay --dead-letter-again`` (which replace a
    letter explicitly) and letters without a source position are all kept."""
    kept: dict[tuple[str, int, int], DeadLetter] = {}
    loose: list[DeadLetter] = []
    others: list[DeadLetter] = []
    for letter in sorted(letters, key=lambda x: (x.partition, x.offset)):
        src = letter.source
        if src is None or letter.replay_of is not None:
            loose.append(letter)
        elif src in kept:
            others.append(letter)
        else:
            kept[src] = letter
    return sorted([*kept.values(), *loose], key=lambda x: (x.partition, x.offset)), others
