"""A thin wrapper over :class:`confluent_kafka.Consumer`.

What it fixes, so that the rest of the pipeline cannot get it wrong:

- offsets are never stored or committed behind the pipeline's back (``enable.auto.commit`` and
  ``enable.auto.offset.store`` are off); :meth:`KafkaSource.commit` commits explicit offsets, each
  with an optional metadata string (the pipeline records its in-flight batches there);
- cooperative-sticky assignment, so a rebalance moves only the partitions that change owner;
- records are taken in batches with ``consume(num_messages, timeout)``;
- partitions are paused and resumed individually while the caller keeps polling, which keeps the
  group membership alive whatever the downstream API does;
- every error reaches one place: the ``error_cb`` of the properties (librdkafka's client-level errors)
  also receives the errors :meth:`KafkaSource.consume` meets on records (e.g. a topic the user may not
  read), and a fatal error ends :meth:`KafkaSource.consume` with :class:`KafkaException` either way.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from connector.errors import ConnectorError
from connector.models import TopicPartitionKey

log = logging.getLogger(__name__)

FIXED_CONSUMER_PROPS: dict[str, str | bool] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
}
DEFAULT_CONSUMER_PROPS: dict[str, str | int | bool] = {
    "partition.assignment.strategy": "cooperative-sticky",
    "auto.offset.reset": "earliest",
    # A small prefetch, refilled quickly. librdkafka fetches until about 10,000 records wait in the
    # local queue (its default, 100,000, is hundreds of MB with a few partitions), and a fetch brings at
    # most 4 MiB: compressed batches can grow several times when they are decompressed. Once the
    # queue is full librdkafka checks again after fetch.queue.backoff.ms; at its default of 1 s a
    # consumer taking 10,000 records per poll would wait most of the time (measured: 1M records in
    # 7.4 s at 176 MB peak with 16 MiB fetches and the 1 s back-off, 1.4 s at 87 MB with these).
    "fetch.max.bytes": 4_194_304,
    "max.partition.fetch.bytes": 1_048_576,
    "queued.max.messages.kbytes": 16_384,
    "queued.min.messages": 10_000,
    "fetch.queue.backoff.ms": 20,
}


@dataclass(frozen=True, slots=True)
class Assigned:
    """A partition given to this member, with where its group left off."""

    tp: TopicPartitionKey
    committed: int | None  # None: nothing committed yet, auto.offset.reset applies
    metadata: str


class CommitFailed(ConnectorError):
    """A synchronous commit did not succeed for every partition."""


AssignCallback = Callable[[list[Assigned]], None]
RevokeCallback = Callable[[list[TopicPartitionKey]], None]


# How long an assignment waits for committed offsets withheld behind an open transaction (below
# max.poll.interval.ms, 300 s by default): a killed member's transaction times out after the
# transactional producer's transaction.timeout.ms plus the broker's abort check (10 s).
COMMITTED_WAIT_S = 150.0


class KafkaSource:
    """Consumes the subscribed topics in batches; commits only what it is told to."""

    def __init__(self, props: dict[str, Any], *, committed_timeout_s: float = 30.0) -> None:
        if "group.id" not in props:
            raise ValueError("the consumer needs group.id")
        self._props = {**DEFAULT_CONSUMER_PROPS, **props, **FIXED_CONSUMER_PROPS}
        self._error_cb: Callable[[KafkaError], None] | None = props.get("error_cb")
        self._fatal: KafkaError | None = None
        self._props["error_cb"] = self._on_error
        self._props["on_commit"] = self._on_commit
        self._commit_answers: deque[Callable[[Exception | None], None]] = deque()
        self._consumer = Consumer(self._props)
        self._on_assign: AssignCallback | None = None
        self._on_revoke: RevokeCallback | None = None
        self._on_lost: RevokeCallback | None = None
        self._committed_timeout_s = committed_timeout_s
        self._paused: set[TopicPartitionKey] = set()
        self._assigned: set[TopicPartitionKey] = set()

    def subscribe(
        self,
        topics: Sequence[str],
        *,
        on_assign: AssignCallback | None = None,
        on_revoke: RevokeCallback | None = None,
        on_lost: RevokeCallback | None = None,
    ) -> None:
        """Join the group for ``topics``; the callbacks run inside :meth:`consume` (``on_lost`` defaults
        to ``on_revoke``)."""
        self._on_assign, self._on_revoke, self._on_lost = on_assign, on_revoke, on_lost
        self._consumer.subscribe(
            list(topics), on_assign=self._assign_cb, on_revoke=self._revoke_cb, on_lost=self._lost_cb
        )

    # -- rebalance callbacks (run inside consume())

    def _assign_cb(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assigned: list[Assigned] = []
        if partitions:
            for tp in self._committed_offsets(consumer, partitions):
                offset = tp.offset if tp.offset >= 0 else None
                assigned.append(Assigned((tp.topic, tp.partition), offset, tp.metadata or ""))
        self._assigned.update(a.tp for a in assigned)
        log.info("partitions assigned: %s", sorted(a.tp for a in assigned))
        if self._on_assign is not None:
            self._on_assign(assigned)

    def _committed_offsets(self, consumer: Consumer, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """The group's committed offsets and metadata. The broker withholds them while a transaction that
        commits offsets for them is open (exactly-once dead letters): after a previous owner was killed
        in the middle of one, until its instance restarts with the same transactional.id or the
        transaction times out. Timeouts are retried up to COMMITTED_WAIT_S; a longer wait fails."""
        deadline = time.monotonic() + max(COMMITTED_WAIT_S, self._committed_timeout_s)
        while True:
            try:
                return list(consumer.committed(partitions, timeout=self._committed_timeout_s))
            except KafkaException as exc:
                err = exc.args[0]
                passing = err.retriable() or err.code() in (KafkaError._TIMED_OUT, KafkaError.REQUEST_TIMED_OUT)
                if not passing or time.monotonic() >= deadline:
                    raise
                log.warning(
                    "reading the committed offsets of %d partition(s) timed out (%s); a transaction "
                    "of their previous owner may still be open; asking again",
                    len(partitions),
                    err.name(),
                )

    def _revoke_cb(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        log.info("partitions revoked: %s", sorted(keys))
        if self._on_revoke is not None:
            self._on_revoke(keys)
        self._forget(keys)

    def _lost_cb(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        log.warning("partitions lost (not committing their progress): %s", sorted(keys))
        callback = self._on_lost or self._on_revoke
        if callback is not None:
            callback(keys)
        self._forget(keys)

    def _forget(self, keys: list[TopicPartitionKey]) -> None:
        # librdkafka keeps a partition's pause across revocation and a later re-assignment to this
        # member: resume it now, or it would come back paused with nobody left to resume it.
        paused = [k for k in keys if k in self._paused]
        if paused:
            try:
                self._consumer.resume([TopicPartition(t, p) for t, p in paused])
            except KafkaException as exc:
                log.debug("resuming revoked partitions: %s", exc)
        for k in keys:
            self._assigned.discard(k)
            self._paused.discard(k)

    # -- consuming

    def _on_error(self, err: KafkaError) -> None:
        """librdkafka's error callback, and the errors found on records: to the caller's ``error_cb``
        (or the log); a fatal one is kept for :meth:`consume` to raise."""
        if err.fatal() and self._fatal is None:
            self._fatal = err
        if self._error_cb is not None:
            self._error_cb(err)
        elif not err.fatal():
            log.warning("consumer error (the client retries by itself): %s", err)

    def consume(self, max_records: int, timeout_s: float) -> list[Message]:
        """Up to ``max_records`` records; errors that the client recovers from by itself are reported to
        ``error_cb``; a fatal one raises :class:`KafkaException`."""
        messages = self._consumer.consume(num_messages=max_records, timeout=timeout_s)
        if self._fatal is not None:
            raise KafkaException(self._fatal)
        if not messages:
            return []
        out = []
        for m in messages:
            err = m.error()
            if err is None:
                out.append(m)
            elif err.code() == KafkaError._PARTITION_EOF:
                continue
            else:
                self._on_error(err)
                if err.fatal():
                    raise KafkaException(err)
        return out

    @property
    def assignment(self) -> set[TopicPartitionKey]:
        return set(self._assigned)

    # -- flow control

    def pause(self, tps: Sequence[TopicPartitionKey]) -> None:
        todo = [tp for tp in tps if tp in self._assigned and tp not in self._paused]
        if todo:
            self._consumer.pause([TopicPartition(t, p) for t, p in todo])
            self._paused.update(todo)

    def resume(self, tps: Sequence[TopicPartitionKey]) -> None:
        todo = [tp for tp in tps if tp in self._paused]
        if todo:
            self._consumer.resume([TopicPartition(t, p) for t, p in todo])
            self._paused.difference_update(todo)

    @property
    def paused(self) -> set[TopicPartitionKey]:
        return set(self._paused)

    def seek(self, tp: TopicPartitionKey, offset: int) -> None:
        self._consumer.seek(TopicPartition(tp[0], tp[1], offset))

    # -- offsets

    def commit(
        self,
        offsets: dict[TopicPartitionKey, int],
        metadata: dict[TopicPartitionKey, str] | None = None,
        on_done: Callable[[Exception | None], None] | None = None,
    ) -> None:
        """Commit explicit offsets (the next offset to read), each with its metadata string.

        Without ``on_done``: synchronous; raises :class:`CommitFailed` unless every partition succeeded.
        With it: asynchronous; librdkafka answers inside a later :meth:`consume` (its ``on_commit``
        callback, in the order the commits were made; synchronous commits do not call it), and
        ``on_done`` gets None or the :class:`CommitFailed`.
        """
        if not offsets:
            if on_done is not None:
                on_done(None)
            return
        metadata = metadata or {}
        tps = [TopicPartition(t, p, off, metadata.get((t, p), "")) for (t, p), off in offsets.items()]
        if on_done is not None:
            self._commit_answers.append(on_done)
            try:
                self._consumer.commit(offsets=tps, asynchronous=True)
            except KafkaException as exc:
                self._commit_answers.pop()
                on_done(CommitFailed(str(exc)))
            return
        try:
            result = self._consumer.commit(offsets=tps, asynchronous=False)
        except KafkaException as exc:
            raise CommitFailed(str(exc)) from exc
        failed = [f"{tp.topic}[{tp.partition}]: {tp.error}" for tp in result or [] if tp.error is not None]
        if failed:
            raise CommitFailed("; ".join(failed))

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """librdkafka's answer to an asynchronous commit (served inside consume())."""
        if not self._commit_answers:
            return
        on_done = self._commit_answers.popleft()
        failed = [f"{tp.topic}[{tp.partition}]: {tp.error}" for tp in partitions or [] if tp.error is not None]
        if err is not None:
            failed.insert(0, str(err))
        on_done(CommitFailed("; ".join(failed)) if failed else None)

    def group_metadata(self) -> Any:
        """For offsets committed in a transaction; only from the thread that consumes."""
        return self._consumer.consumer_group_metadata()

    def committed(
        self, tps: Sequence[TopicPartitionKey], timeout_s: float = 10.0
    ) -> dict[TopicPartitionKey, tuple[int | None, str]]:
        got = self._consumer.committed([TopicPartition(t, p) for t, p in tps], timeout=timeout_s)
        return {(tp.topic, tp.partition): (tp.offset if tp.offset >= 0 else None, tp.metadata or "") for tp in got}

    def watermarks(self, tp: TopicPartitionKey, timeout_s: float = 5.0) -> tuple[int, int]:
        low, high = self._consumer.get_watermark_offsets(TopicPartition(*tp), timeout=timeout_s, cached=False)
        return int(low), int(high)

    def position_lag(self) -> dict[TopicPartitionKey, int]:
        """Records between this member's position and the cached high watermark, per partition."""
        out: dict[TopicPartitionKey, int] = {}
        if not self._assigned:
            return out
        positions = self._consumer.position([TopicPartition(t, p) for t, p in self._assigned])
        for tp in positions:
            try:
                _low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            if high >= 0 and tp.offset >= 0:
                out[(tp.topic, tp.partition)] = max(0, high - tp.offset)
        return out

    def close(self) -> None:
        """Leave the group (a rebalance hands the partitions to the other members)."""
        self._consumer.close()
