"""The Kafka clients of the operator commands, built from the connector's settings.

None of them joins the connector's consumer group:

- :meth:`KafkaTools.read` assigns partitions directly, under a throw-away group id it never commits to;
- :meth:`KafkaTools.committed` and :meth:`KafkaTools.commit` use the connector's group id without
  subscribing (Kafka's "simple consumer" commits: the broker refuses them while the group has members);
- :meth:`KafkaTools.group` describes the group with the admin client (its state and active members).

The connection (``bootstrap.servers``, ``security.protocol``, SASL, TLS) is the connector's:
:func:`~connector.config.kafka_common_props` plus ``kafka.consumer``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from connector.config import Settings, kafka_common_props
from connector.tools import ToolError

log = logging.getLogger(__name__)

TIMEOUT_S = 15.0
STALL_S = 60.0  # reading gives up when no record and no position moved for this long
# Consumer properties about group membership: meaningless for a client that never joins, and
# group.instance.id would make the broker check a commit against a static member.
_MEMBERSHIP_PROPS = ("group.instance.id", "group.protocol", "group.remote.assignor", "partition.assignment.strategy")
# Offsets a partition is read between: {partition: (start, end)}, end excluded.
Ranges = dict[int, tuple[int, int]]


@dataclass(frozen=True, slots=True)
class Member:
    client_id: str
    host: str


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """The consumer group as the broker describes it."""

    group_id: str
    state: str  # Stable, Empty, Dead (unknown to the broker), PreparingRebalance, ...
    members: tuple[Member, ...]


def read_ranges(watermarks: dict[int, tuple[int, int]], by_time: dict[int, int | None] | None) -> Ranges:
    """Where each partition is read: from its first offset kept (or the first at or after a time, when
    ``by_time`` is given; a partition with none has nothing to read) to its end offset now."""
    out: Ranges = {}
    for p, (low, high) in sorted(watermarks.items()):
        if by_time is None:
            start = low
        else:
            found = by_time.get(p)
            start = high if found is None else min(max(found, low), high)
        out[p] = (start, high)
    return out


class KafkaTools:
    """The tools' Kafka clients; close with :meth:`close` (or use as a context manager)."""

    def __init__(self, settings: Settings, timeout_s: float = TIMEOUT_S) -> None:
        librdkafka_log = logging.getLogger("librdkafka.tools")
        self._common: dict[str, Any] = {**kafka_common_props(settings), "logger": librdkafka_log}
        props: dict[str, Any] = {**self._common, **settings.kafka.consumer}
        for name in _MEMBERSHIP_PROPS:
            props.pop(name, None)
        self._props = props
        self._group_id = settings.kafka.group_id
        self._timeout = timeout_s
        self._reader: Consumer | None = None
        self._group_client: Consumer | None = None
        self._admin: AdminClient | None = None

    def __enter__(self) -> KafkaTools:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        for client in (self._reader, self._group_client):
            if client is not None:
                try:
                    client.close()
                except (KafkaException, RuntimeError) as exc:
                    log.debug("closing a Kafka client: %s", exc)
        self._reader = self._group_client = None
        self._admin = None

    # -- clients

    @property
    def _read_client(self) -> Consumer:
        if self._reader is None:
            self._reader = Consumer(
                {
                    **self._props,
                    "group.id": f"altcraft-connector-tools-{uuid.uuid4().hex[:12]}",  # never joined, never committed
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "auto.offset.reset": "earliest",
                }
            )
        return self._reader

    @property
    def _group(self) -> Consumer:
        if self._group_client is None:
            self._group_client = Consumer(
                {**self._props, "group.id": self._group_id, "enable.auto.commit": False,
                 "enable.auto.offset.store": False}
            )  # fmt: skip
        return self._group_client

    @property
    def _admin_client(self) -> AdminClient:
        if self._admin is None:
            self._admin = AdminClient(self._common)
        return self._admin

    # -- topics and offsets

    def partitions(self, topic: str) -> list[int]:
        """The topic's partitions; :class:`ToolError` when the topic does not exist."""
        try:
            meta = self._read_client.list_topics(topic, timeout=self._timeout).topics.get(topic)
        except KafkaException as exc:
            raise ToolError(f"cannot read the metadata of topic {topic}: {_kafka_text(exc)}") from None
        if meta is None or meta.error is not None:
            why = "it does not exist" if meta is None or meta.error.code() in _MISSING else meta.error.str()
            raise ToolError(f"cannot read topic {topic}: {why}")
        return sorted(meta.partitions)

    def watermarks(self, topic: str, partitions: list[int]) -> dict[int, tuple[int, int]]:
        """``{partition: (low, high)}``: the first offset kept and the end offset."""
        out = {}
        for p in partitions:
            try:
                low, high = self._read_client.get_watermark_offsets(TopicPartition(topic, p), timeout=self._timeout)
            except KafkaException as exc:
                raise ToolError(f"cannot read the offsets of {topic}[{p}]: {_kafka_text(exc)}") from None
            out[p] = (int(low), int(high))
        return out

    def offsets_for_time(self, topic: str, partitions: list[int], ms: int) -> dict[int, int | None]:
        """``{partition: the first offset whose timestamp is at or after ms}``; None when there is none."""
        try:
            got = self._read_client.offsets_for_times([TopicPartition(topic, p, ms) for p in partitions],
                                                      timeout=self._timeout)  # fmt: skip
        except KafkaException as exc:
            raise ToolError(f"cannot look up offsets by time in {topic}: {_kafka_text(exc)}") from None
        out: dict[int, int | None] = {}
        for tp in got:
            if tp.error is not None:
                raise ToolError(f"cannot look up offsets by time in {topic}[{tp.partition}]: {tp.error.str()}")
            out[tp.partition] = tp.offset if tp.offset >= 0 else None
        return out

    def ranges(self, topic: str, since_ms: int | None) -> Ranges:
        """The offsets to read ``topic`` between: everything kept, or from ``since_ms`` on, to its end now."""
        parts = self.partitions(topic)
        marks = self.watermarks(topic, parts)
        by_time = None if since_ms is None else self.offsets_for_time(topic, parts, since_ms)
        return read_ranges(marks, by_time)

    def read(self, topic: str, ranges: Ranges, on_progress: Callable[[int], None] | None = None) -> Iterator[Message]:
        """The records of ``topic`` in ``ranges`` (partitions assigned directly, nothing committed).

        Records come in per-partition order. Stops once every partition's position reached its end; a
        :class:`ToolError` when nothing moves for :data:`STALL_S` seconds."""
        todo = {p: r for p, r in ranges.items() if r[1] > r[0]}
        if not todo:
            return
        consumer = self._read_client
        consumer.assign([TopicPartition(topic, p, start) for p, (start, _) in sorted(todo.items())])
        read = 0
        last_move = time.monotonic()
        try:
            while todo:
                messages = consumer.consume(num_messages=1000, timeout=0.5)
                for msg in messages:
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF or (err.retriable() and not err.fatal()):
                            continue
                        raise ToolError(f"reading {topic}: {err.str()}")
                    p = msg.partition()
                    if p in todo and (msg.offset() or 0) < todo[p][1]:
                        read += 1
                        yield msg
                if messages:
                    last_move = time.monotonic()
                    if on_progress is not None:
                        on_progress(read)
                for tp in consumer.position([TopicPartition(topic, p) for p in sorted(todo)]):
                    if tp.offset >= todo[tp.partition][1]:
                        del todo[tp.partition]
                if time.monotonic() - last_move > STALL_S:
                    raise ToolError(f"reading {topic}: nothing arrived for {STALL_S:.0f} s; partitions {sorted(todo)} "
                                    f"not read to their end")  # fmt: skip
        finally:
            consumer.unassign()

    # -- the connector's group

    def committed(self, topic: str, partitions: list[int]) -> dict[int, tuple[int | None, str]]:
        """``{partition: (committed offset or None, commit metadata)}`` of the connector's group."""
        try:
            got = self._group.committed([TopicPartition(topic, p) for p in partitions], timeout=self._timeout)
        except KafkaException as exc:
            raise ToolError(
                f"cannot read the committed offsets of group {self._group_id}: {_kafka_text(exc)}"
            ) from None
        out: dict[int, tuple[int | None, str]] = {}
        for tp in got:
            if tp.error is not None:
                raise ToolError(f"cannot read the committed offset of {topic}[{tp.partition}]: {tp.error.str()}")
            out[tp.partition] = (tp.offset if tp.offset >= 0 else None, tp.metadata or "")
        return out

    def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        """Commit ``offsets`` for the connector's group with empty metadata (synchronously)."""
        tps = [TopicPartition(t, p, off, metadata="") for (t, p), off in sorted(offsets.items())]
        try:
            result = self._group.commit(offsets=tps, asynchronous=False)
        except KafkaException as exc:
            raise ToolError(f"the commit was refused: {_kafka_text(exc)}; nothing may have changed, check with "
                            f"`offsets show`") from None  # fmt: skip
        failed = [f"{tp.topic}[{tp.partition}]: {tp.error.str()}" for tp in result or [] if tp.error is not None]
        if failed:
            raise ToolError(f"the commit was refused for {', '.join(failed)}")

    def group(self) -> GroupInfo:
        """The connector's group: its state and active members."""
        group_id = self._group_id
        try:
            future = self._admin_client.describe_consumer_groups([group_id], request_timeout=self._timeout)[group_id]
            desc = future.result(timeout=self._timeout + 5)
        except KafkaException as exc:
            err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            if err is not None and err.code() == KafkaError.GROUP_ID_NOT_FOUND:
                return GroupInfo(group_id, "Dead", ())
            raise ToolError(f"cannot describe group {group_id}: {_kafka_text(exc)}") from None
        state = getattr(desc.state, "name", str(desc.state))
        members = tuple(Member(m.client_id, m.host) for m in desc.members or ())
        return GroupInfo(group_id, _STATE_NAMES.get(state, state), members)


_MISSING = frozenset({KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC})
_STATE_NAMES = {
    "STABLE": "Stable",
    "EMPTY": "Empty",
    "DEAD": "Dead",
    "PREPARING_REBALANCING": "PreparingRebalance",
    "COMPLETING_REBALANCING": "CompletingRebalance",
    "UNKNOWN": "Unknown",
}


def _kafka_text(exc: KafkaException) -> str:
    err = exc.args[0] if exc.args else None
    return err.str() if isinstance(err, KafkaError) else str(exc)
