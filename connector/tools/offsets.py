"""``altcraft-connector offsets show|reset``: the connector group's committed offsets and replay metadata.

The connector commits, with each offset, the offset ranges of the batches it may have sent and not yet
committed (commit metadata ``akc1:100-199;200-299``, :mod:`connector.replay`): the next owner of the
partition resends exactly those ranges under the same Request-IDs. ``show`` prints them with the
committed and end offsets and the lag.

``reset`` moves the committed offsets (to the earliest or latest offset, to a time, or to an offset)
and **commits them with empty metadata, on purpose**: recorded ranges belong to the old position, and
kept, they would make the next run cut and resend those batches under their old keys. It refuses while
the group has active members (a running connector would overwrite the new offsets with its next commit
and its recorded ranges), and asks for confirmation unless ``--yes``.

Moving back does not by itself re-engage anyone within Altcraft's deduplication window (1 day): batches
cut at the same offsets as the first time get the same keys and are answered as duplicates. To re-run a
topic on purpose, set a new ``altcraft.request_id_epoch`` too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, TextIO

from connector.config import Settings
from connector.replay import METADATA_PREFIX, parse_metadata
from connector.tools import ToolError
from connector.tools.kafka_admin import GroupInfo, KafkaTools
from connector.tools.letters import printable
from connector.tools.timespec import HELP, format_ms, parse_time

METADATA_WIDTH = 200
ACTIVE_STATES = frozenset({"Stable", "PreparingRebalance", "CompletingRebalance", "Assigning", "Reconciling"})
TargetKind = Literal["earliest", "latest", "timestamp", "offset"]


@dataclass(frozen=True, slots=True)
class Target:
    """Where ``reset --to`` moves the offsets."""

    kind: TargetKind
    value: int = 0  # the timestamp (ms) or the offset

    def describe(self) -> str:
        if self.kind == "timestamp":
            return f"the first offset at or after {format_ms(self.value)}"
        if self.kind == "offset":
            return f"offset {self.value}"
        return self.kind


def parse_target(text: str, now_s: float) -> Target:
    """``earliest``, ``latest``, an offset (a non-negative integer) or a time (ISO-8601 or ``1h``, ``2d`` ago)."""
    value = text.strip()
    if value.lower() in ("earliest", "latest"):
        return Target("earliest" if value.lower() == "earliest" else "latest")
    if value.isdigit():
        return Target("offset", int(value))
    try:
        return Target("timestamp", parse_time(value, now_s))
    except ValueError:
        raise ValueError(f"--to {text!r}: give earliest, latest, an offset (a number) or a time, {HELP}") from None


@dataclass(frozen=True, slots=True)
class PartitionState:
    """One partition as the group sees it."""

    topic: str
    partition: int
    committed: int | None  # None: nothing committed, auto.offset.reset applies
    metadata: str
    low: int  # first offset kept
    high: int  # end offset

    @property
    def lag(self) -> int | None:
        return None if self.committed is None else max(0, self.high - self.committed)

    @property
    def replay_ranges(self) -> list[tuple[int, int]]:
        return parse_metadata(self.metadata)


def describe_metadata(metadata: str) -> str:
    """The commit metadata as shown: the connector's recorded ranges with a count, or other text cut."""
    if not metadata:
        return "-"
    if metadata.startswith(METADATA_PREFIX):
        ranges = parse_metadata(metadata)
        records = sum(b - a + 1 for a, b in ranges)
        if not ranges:
            return f"{printable(metadata, METADATA_WIDTH)} (no range recorded)"
        return f"{printable(metadata, METADATA_WIDTH)} ({len(ranges)} range(s), {records} offsets)"
    return f"(not the connector's) {printable(metadata, METADATA_WIDTH)}"


def describe_group(group: GroupInfo) -> str:
    if not group.members:
        return f"group {group.group_id}: {group.state}, no active members"
    who = ", ".join(f"{printable(m.client_id, 60)}@{printable(m.host, 60)}" for m in group.members)
    return f"group {group.group_id}: {group.state}, {len(group.members)} active member(s): {who}"


def is_active(group: GroupInfo) -> bool:
    return bool(group.members) or group.state in ACTIVE_STATES


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i]) for i in range(len(header))]

    def fmt(cells: Sequence[str]) -> str:
        out = []
        for i, cell in enumerate(cells):
            last = i == len(cells) - 1
            out.append(cell.rjust(widths[i]) if i in right else (cell if last else cell.ljust(widths[i])))
        return "  ".join(out).rstrip()

    return [fmt(header), *(fmt(r) for r in rows)]


def render_show(group: GroupInfo, states: Sequence[PartitionState]) -> list[str]:
    """``offsets show``, as lines."""
    rows = []
    for s in states:
        committed = "-" if s.committed is None else str(s.committed)
        lag = "-" if s.lag is None else str(s.lag)
        meta = (
            describe_metadata(s.metadata)
            if s.committed is not None
            else "(nothing committed: auto.offset.reset applies)"
        )
        rows.append([s.topic, str(s.partition), committed, str(s.high), lag, meta])
    lines = [describe_group(group)]
    lines += _table(["topic", "partition", "committed", "end", "lag", "replay metadata"], rows, {1, 2, 3, 4})
    total = sum(s.lag or 0 for s in states)
    recorded = sum(1 for s in states if s.replay_ranges)
    lines.append(f"total lag {total}; {recorded} partition(s) with recorded batch ranges (resent under the same "
                 f"Request-IDs by the next owner)")  # fmt: skip
    return lines


@dataclass(frozen=True, slots=True)
class ResetStep:
    topic: str
    partition: int
    current: int | None
    new: int
    metadata: str  # cleared by the reset
    note: str = ""


def resolve(target: Target, state: PartitionState, by_time: int | None) -> tuple[int, str]:
    """The new offset of one partition, and a note when it differs from what was asked."""
    if target.kind == "earliest":
        return state.low, ""
    if target.kind == "latest":
        return state.high, ""
    if target.kind == "timestamp":
        return (state.high, "no record at or after that time: the end") if by_time is None else (by_time, "")
    if target.value < state.low:
        return state.low, f"offset {target.value} is no longer kept: the first kept"
    if target.value > state.high:
        return state.high, f"offset {target.value} is past the end: the end"
    return target.value, ""


def plan_reset(
    target: Target, states: Sequence[PartitionState], by_time: dict[tuple[str, int], int | None]
) -> list[ResetStep]:
    """The new offset of every partition (pure)."""
    steps = []
    for s in states:
        new, note = resolve(target, s, by_time.get((s.topic, s.partition)))
        steps.append(ResetStep(s.topic, s.partition, s.committed, new, s.metadata, note))
    return steps


def rewound(steps: Sequence[ResetStep], states: Sequence[PartitionState]) -> int:
    """How many records the reset makes the group read again (before the committed offset, or the end
    for a partition with no commit: what the group would otherwise skip is not counted)."""
    low = {(s.topic, s.partition): s.low for s in states}
    total = 0
    for step in steps:
        if step.current is not None and step.new < step.current:
            total += step.current - max(step.new, low[(step.topic, step.partition)])
    return total


def render_plan(group_id: str, target: Target, steps: Sequence[ResetStep]) -> list[str]:
    rows = []
    for s in steps:
        current = "-" if s.current is None else str(s.current)
        meta = "cleared: " + describe_metadata(s.metadata) if _clears(s.metadata) else "-"
        rows.append([s.topic, str(s.partition), current, str(s.new), meta + (f"  ({s.note})" if s.note else "")])
    lines = [f"reset group {group_id} to {target.describe()}:"]
    lines += _table(["topic", "partition", "committed", "new", "replay metadata"], rows, {1, 2, 3})
    return lines


def _clears(metadata: str) -> bool:
    """Whether committing empty metadata loses something: recorded ranges, or another tool's text."""
    return bool(parse_metadata(metadata)) or (bool(metadata) and not metadata.startswith(METADATA_PREFIX))


def render_after(group_id: str, steps: Sequence[ResetStep], again: int, epoch: str) -> list[str]:
    cleared = sum(1 for s in steps if _clears(s.metadata))
    lines = [
        f"committed {len(steps)} partition(s) of group {group_id}, with empty commit metadata.",
        f"The replay metadata is cleared on purpose ({cleared} partition(s) had ranges recorded): the next run does "
        f"not resend the batch ranges recorded at the old position under their old Request-IDs; it cuts its batches "
        f"afresh from the new offsets.",
    ]
    if again:
        shown = repr(epoch) if epoch else "empty"
        lines.append(
            f"{again} record(s) will be read again. Their Request-IDs mix in altcraft.request_id_epoch (now {shown}): "
            f"with the epoch of the first run, batches cut at the same offsets as then are answered by Altcraft as "
            f"duplicates within its deduplication window (1 day) and engage nobody, while batches cut elsewhere are "
            f"executed again. To re-engage on purpose, set a new altcraft.request_id_epoch before the next run."
        )
    return lines


# ------------------------------------------------------------------------------------ I/O


def _topics(settings: Settings, topic: str | None) -> list[str]:
    if topic is None:
        return list(dict.fromkeys(settings.topics))
    if topic not in settings.topics:
        raise ToolError(f"topic {topic} is read by no route of these settings (routes read: "
                        f"{', '.join(settings.topics)})")  # fmt: skip
    return [topic]


def _states(kafka: KafkaTools, topics: Sequence[str]) -> list[PartitionState]:
    out = []
    for topic in topics:
        parts = kafka.partitions(topic)
        marks = kafka.watermarks(topic, parts)
        committed = kafka.committed(topic, parts)
        for p in parts:
            off, meta = committed.get(p, (None, ""))
            out.append(PartitionState(topic, p, off, meta, marks[p][0], marks[p][1]))
    return out


def run_show(settings: Settings, *, topic: str | None, out: TextIO) -> int:
    with KafkaTools(settings) as kafka:
        states = _states(kafka, _topics(settings, topic))
        group = kafka.group()
    out.write("\n".join(render_show(group, states)) + "\n")
    return 0


def run_reset(
    settings: Settings,
    *,
    target: Target,
    topic: str | None,
    yes: bool,
    out: TextIO,
    err: TextIO,
    confirm: Callable[[str], bool],
) -> int:
    """Refuse while the group is active; show the plan; confirm unless ``yes``; commit with empty metadata."""
    group_id = settings.kafka.group_id
    with KafkaTools(settings) as kafka:
        group = kafka.group()
        if is_active(group):
            err.write(f"refused: {describe_group(group)}. Stop every connector of the group first (their next commit "
                      f"would overwrite the reset); nothing changed.\n")  # fmt: skip
            return 1
        topics = _topics(settings, topic)
        states = _states(kafka, topics)
        by_time: dict[tuple[str, int], int | None] = {}
        if target.kind == "timestamp":
            for t in topics:
                parts = [s.partition for s in states if s.topic == t]
                for p, off in kafka.offsets_for_time(t, parts, target.value).items():
                    by_time[(t, p)] = off
        steps = plan_reset(target, states, by_time)
        out.write("\n".join([describe_group(group), *render_plan(group_id, target, steps)]) + "\n")
        if not yes and not confirm(
            f"Commit these offsets for group {group_id}, clearing the replay metadata? Type 'yes' to go on: "
        ):
            err.write("not confirmed; nothing changed\n")
            return 1
        group = kafka.group()  # again: a connector may have joined while the question was open
        if is_active(group):
            err.write(f"refused: {describe_group(group)}; nothing changed.\n")
            return 1
        kafka.commit({(s.topic, s.partition): s.new for s in steps})
    lines = render_after(group_id, steps, rewound(steps, states), settings.altcraft.request_id_epoch)
    out.write("\n".join(lines) + "\n")
    return 0
