"""``altcraft-connector dlq inspect``: what the dead-letter topic holds, by stage and reason, with samples.

It reads the topic named by ``dead_letter.topic`` from its beginning (or from ``--since``) to its end
offsets at the start, with partitions assigned directly: it never joins the connector's group and
commits nothing. Values are user data and are shown cut and escaped; the settings are never shown.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from confluent_kafka import Message

from connector.config import Settings
from connector.tools.kafka_admin import KafkaTools, Ranges
from connector.tools.letters import DeadLetter, Selection, parse_letter, preview, printable
from connector.tools.progress import Progress
from connector.tools.timespec import format_ms

VALUE_WIDTH = 120  # characters of a value shown in a sample
KEY_WIDTH = 40
MESSAGE_WIDTH = 200


def letter_of(msg: Message) -> DeadLetter:
    """The dead letter a record of the dead-letter topic is."""
    kind, ts = msg.timestamp()
    return parse_letter(msg.partition() or 0, msg.offset() or 0, ts if kind else None, msg.key(), msg.value(),
                        msg.headers())  # fmt: skip


@dataclass(slots=True)
class Tally:
    """Counts by stage and by (stage, reason) of the selected letters, and the first ``limit`` of them
    (lowest partition and offset)."""

    selection: Selection
    limit: int
    read: int = 0
    selected: int = 0
    by_stage: Counter[str] = field(default_factory=Counter)
    by_reason: Counter[tuple[str, str]] = field(default_factory=Counter)
    samples: list[DeadLetter] = field(default_factory=list)

    def add(self, letter: DeadLetter) -> None:
        self.read += 1
        if not self.selection.matches(letter):
            return
        self.selected += 1
        self.by_stage[letter.stage] += 1
        self.by_reason[(letter.stage, letter.reason)] += 1
        # The first ``limit`` by (partition, offset), whatever order the partitions are read in.
        if len(self.samples) < self.limit or (self.samples and _pos(letter) < _pos(self.samples[-1])):
            bisect.insort(self.samples, letter, key=_pos)
            del self.samples[self.limit :]


def _pos(letter: DeadLetter) -> tuple[int, int]:
    return letter.partition, letter.offset


def _where(ranges: Ranges) -> str:
    parts = [f"{p}: {a}-{b - 1}" if b > a else f"{p}: none" for p, (a, b) in sorted(ranges.items())]
    return ", ".join(parts) or "no partitions"


def render(topic: str, ranges: Ranges, tally: Tally, since: str | None) -> list[str]:
    """The report, as lines."""
    sel = tally.selection
    filters = [f"since {since}" if since else "", f"stage {sel.stage}" if sel.stage else "",
               f"reason containing {sel.reason!r}" if sel.reason else ""]  # fmt: skip
    what = ", ".join(f for f in filters if f)
    lines = [f"dead-letter topic {topic}: {tally.read} dead letter(s) read (offsets {_where(ranges)})"]
    if what:
        lines.append(f"selected: {tally.selected} ({what})")
    if not tally.selected:
        lines.append("no dead letters" + (" match" if what else ""))
        return lines
    width = max(len(s) for s in tally.by_stage)
    lines += ["", "by stage:"]
    lines += [f"  {stage:<{width}}  {n:>8}" for stage, n in tally.by_stage.most_common()]
    reason_width = max(len(r) for _, r in tally.by_reason)
    lines += ["", "by stage and reason:"]
    lines += [f"  {stage:<{width}}  {reason:<{reason_width}}  {n:>8}" for (stage, reason), n in
              tally.by_reason.most_common()]  # fmt: skip
    if tally.samples:
        lines += ["", f"samples (the first {len(tally.samples)} of {tally.selected}, in partition order):"]
        for i, letter in enumerate(tally.samples, 1):
            lines += _sample(topic, i, letter)
    return lines


def _sample(topic: str, i: int, letter: DeadLetter) -> list[str]:
    src = letter.source
    where = f"{src[0]}[{src[1]}]@{src[2]}" if src else "unknown (no provenance headers)"
    lines = [
        f"  #{i} {topic}[{letter.partition}]@{letter.offset}  {format_ms(letter.timestamp_ms)}",
        f"     source  {printable(where, 300)}",
        f"     stage   {letter.stage}  {printable(letter.reason, 120)}",
        f"     message {printable(letter.message, MESSAGE_WIDTH)}",
    ]
    if letter.key is not None:
        lines.append(f"     key     {preview(letter.key, KEY_WIDTH)}")
    note = "  (truncated when dead-lettered)" if letter.truncated else ""
    lines.append(f"     value   {preview(letter.value, VALUE_WIDTH)}{note}")
    return lines


def run_inspect(
    settings: Settings,
    *,
    since_ms: int | None,
    since_text: str | None,
    selection: Selection,
    limit: int,
    out: TextIO,
    err: TextIO,
    progress_every_s: float = 10.0,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Read the dead-letter topic and write the report to ``out`` (progress to ``err``); exit code 0."""
    topic = settings.dead_letter.topic
    tally = Tally(selection, limit)
    progress = Progress(err.write, progress_every_s, clock)
    with KafkaTools(settings) as kafka:
        ranges = kafka.ranges(topic, since_ms)
        total = sum(b - a for a, b in ranges.values())
        for msg in kafka.read(topic, ranges):
            tally.add(letter_of(msg))
            progress(lambda: f"dlq inspect: read {tally.read} of about {total} dead letters")
    out.write("\n".join(render(topic, ranges, tally, since_text)) + "\n")
    return 0
