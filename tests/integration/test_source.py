"""connector.source (KafkaSource + PartitionOffsets) against the real Kafka 4.1.1 broker.

Every test checks what a user of the connector would see: which records arrived (partition, offset,
value), and which offsets the group has committed on the broker (read back with the admin API).
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import pytest
from confluent_kafka import Message

from connector.source.consumer import Assigned, CommitFailed, KafkaSource
from connector.source.offsets import PartitionOffsets

if TYPE_CHECKING:
    from tests.conftest import KafkaHelper

Key = tuple[int, int]  # (partition, offset)


def _group() -> str:
    return f"source-test-{uuid.uuid4().hex[:12]}"


def _records(partitions: int, per_partition: int, tag: str = "v") -> list[dict[str, Any]]:
    """``per_partition`` records for each partition, value ``{tag}-{partition}-{n}``, interleaved."""
    return [
        {"value": f"{tag}-{p}-{n}", "key": f"k{n}", "partition": p}
        for n in range(per_partition)
        for p in range(partitions)
    ]


class OffsetTracker:
    """The offsets of every partition a test consumer holds, with what moved since the last commit."""

    def __init__(self) -> None:
        self._parts: dict[tuple[str, int], PartitionOffsets] = {}
        self._committed: dict[tuple[str, int], int | None] = {}

    def assign(self, tp: tuple[str, int], start: int | None) -> None:
        self._parts[tp] = PartitionOffsets(start)
        self._committed[tp] = start

    def revoke(self, tp: tuple[str, int]) -> None:
        self._parts.pop(tp, None)
        self._committed.pop(tp, None)

    def track(self, tp: tuple[str, int], first: int, last: int | None = None) -> None:
        self._parts[tp].track(first, last)

    def resolve(self, tp: tuple[str, int], first: int) -> None:
        if tp in self._parts:
            self._parts[tp].resolve(first)

    def to_commit(self) -> dict[tuple[str, int], int]:
        moved = {tp: p.committable() for tp, p in self._parts.items()}
        return {tp: off for tp, off in moved.items() if off is not None and off != self._committed.get(tp)}

    def mark_committed(self, offsets: dict[tuple[str, int], int]) -> None:
        self._committed.update(offsets)


class Recorder:
    """A KafkaSource plus what it delivered and what its rebalance callbacks saw."""

    def __init__(self, kafka: KafkaHelper, topic: str, group: str, **props: Any) -> None:
        self.topic = topic
        self.group = group
        self.assigned: list[Assigned] = []
        self.revoked: list[tuple[str, int]] = []
        self.batches: list[list[Message]] = []
        self.tracker = OffsetTracker()
        self.source = KafkaSource({"bootstrap.servers": kafka.bootstrap, "group.id": group, **props})
        self.source.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke)

    def _on_assign(self, assigned: list[Assigned]) -> None:
        self.assigned.extend(assigned)
        for a in assigned:
            # A new group starts at the beginning (auto.offset.reset=earliest on a fresh topic).
            self.tracker.assign(a.tp, a.committed if a.committed is not None else 0)

    def _on_revoke(self, tps: list[tuple[str, int]]) -> None:
        self.revoked.extend(tps)
        for tp in tps:
            self.tracker.revoke(tp)

    @property
    def messages(self) -> list[Message]:
        return [m for batch in self.batches for m in batch]

    def keys(self) -> list[Key]:
        return [(m.partition(), m.offset()) for m in self.messages]

    def poll(self, max_records: int = 1000, timeout_s: float = 0.2) -> list[Message]:
        batch = self.source.consume(max_records, timeout_s)
        if batch:
            self.batches.append(batch)
        return batch

    def poll_until(self, cond: Callable[[], bool], timeout: float = 60.0, what: str = "", **kw: Any) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                got = Counter(m.partition() for m in self.messages)
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what}; records per partition so far: "
                    f"{dict(sorted(got.items()))}; assignment {sorted(self.source.assignment)}"
                )
            self.poll(**kw)

    def poll_for(self, seconds: float, **kw: Any) -> list[Message]:
        """Keep polling for ``seconds``; returns what arrived meanwhile."""
        out: list[Message] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            out.extend(self.poll(**kw))
        return out

    def wait_assigned(self, partitions: int, timeout: float = 30.0) -> None:
        self.poll_until(lambda: len(self.source.assignment) == partitions, timeout, f"{partitions} partitions assigned")

    def close(self) -> None:
        self.source.close()


@pytest.fixture
def recorders() -> Iterable[list[Recorder]]:
    """Consumers created by a test; closed afterwards even when the test fails."""
    made: list[Recorder] = []
    yield made
    for r in made:
        with contextlib.suppress(Exception):
            r.close()


def _by_partition(messages: Iterable[Message]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = defaultdict(list)
    for m in messages:
        out[m.partition()].append(m.offset())
    return dict(out)


def _commit(rec: Recorder, metadata: str = "") -> dict[tuple[str, int], int]:
    offsets = rec.tracker.to_commit()
    rec.source.commit(offsets, {tp: metadata for tp in offsets} if metadata else None)
    rec.tracker.mark_committed(offsets)
    return offsets


# -- batches


def test_ten_thousand_records_from_four_partitions_arrive_in_batches(
    kafka: KafkaHelper, recorders: list[Recorder]
) -> None:
    topic = kafka.new_topic(partitions=4)
    sent = _records(4, 2500)
    kafka.produce(topic, sent)
    assert kafka.end_offsets(topic) == {0: 2500, 1: 2500, 2: 2500, 3: 2500}

    rec = Recorder(kafka, topic, _group())
    recorders.append(rec)
    rec.poll_until(lambda: len(rec.messages) >= 10_000, timeout=90, what="10,000 records", max_records=1000)
    rec.poll_for(1.0)  # nothing more may come

    keys = rec.keys()
    assert len(keys) == 10_000, "records delivered more than once"
    assert sorted(keys) == [(p, o) for p in range(4) for o in range(2500)]
    # Values and keys arrive intact, in offset order within each partition.
    for p, offsets in _by_partition(rec.messages).items():
        assert offsets == list(range(2500)), f"partition {p} out of order"
    for m in rec.messages:
        assert m.value() == f"v-{m.partition()}-{m.offset()}".encode()
        assert m.key() == f"k{m.offset()}".encode()
        assert m.topic() == topic

    sizes = [len(b) for b in rec.batches]
    assert max(sizes) <= 1000
    assert max(sizes) >= 100, f"consume() never returned a real batch: {sizes[:50]}"
    assert len(sizes) <= 200, f"{len(sizes)} consume() calls for 10,000 records: not batching"
    assert sorted(rec.source.assignment) == [(topic, p) for p in range(4)]

    # The consumer commits nothing by itself (auto commit and auto offset store are off) ...
    assert kafka.committed(rec.group, topic) == {}
    # ... and commits exactly what it is told, once everything is tracked and resolved.
    for m in rec.messages:
        rec.tracker.track((topic, m.partition()), m.offset())
    for m in rec.messages:
        rec.tracker.resolve((topic, m.partition()), m.offset())
    _commit(rec)
    assert kafka.committed(rec.group, topic) == {0: 2500, 1: 2500, 2: 2500, 3: 2500}


# -- commit only the resolved prefix


def test_out_of_order_resolution_commits_up_to_the_first_gap_per_partition(
    kafka: KafkaHelper, recorders: list[Recorder]
) -> None:
    topic = kafka.new_topic(partitions=4)
    kafka.produce(topic, _records(4, 40))
    rec = Recorder(kafka, topic, _group())
    recorders.append(rec)
    rec.poll_until(lambda: len(rec.messages) >= 160, what="160 records")
    assert sorted(rec.keys()) == [(p, o) for p in range(4) for o in range(40)]

    # Each consumed batch slice of 5 consecutive offsets is one unit, as the pipeline does.
    units: list[tuple[tuple[str, int], int]] = []
    for p, offsets in sorted(_by_partition(rec.messages).items()):
        for first in range(0, 40, 5):
            assert offsets[first : first + 5] == list(range(first, first + 5))
            rec.tracker.track((topic, p), first, first + 4)
            units.append(((topic, p), first))
    # The unit left unresolved in each partition (None: all resolved).
    gaps = {0: 0, 1: 10, 2: 25, 3: None}
    held = [(tp, first) for tp, first in units if gaps[tp[1]] == first]
    todo = [u for u in units if u not in held]
    random.Random(7).shuffle(todo)  # resolved in arbitrary order, across partitions
    for tp, first in todo:
        rec.tracker.resolve(tp, first)

    committed = _commit(rec, metadata="batch-42")
    assert committed == {(topic, 1): 10, (topic, 2): 25, (topic, 3): 40}
    # What the broker holds for the group: partition 0 has nothing (its first unit is unresolved).
    assert kafka.committed(rec.group, topic) == {1: 10, 2: 25, 3: 40}
    assert kafka.committed_with_metadata(rec.group, topic) == {
        1: (10, "batch-42"),
        2: (25, "batch-42"),
        3: (40, "batch-42"),
    }
    # The consumer's own view of the commits agrees with the broker.
    assert rec.source.committed([(topic, p) for p in range(4)]) == {
        (topic, 0): (None, ""),
        (topic, 1): (10, "batch-42"),
        (topic, 2): (25, "batch-42"),
        (topic, 3): (40, "batch-42"),
    }

    # Resolving the held units closes the gaps: everything is committed.
    for tp, first in held:
        rec.tracker.resolve(tp, first)
    assert _commit(rec) == {(topic, 0): 40, (topic, 1): 40, (topic, 2): 40}
    assert kafka.committed(rec.group, topic) == {0: 40, 1: 40, 2: 40, 3: 40}
    assert rec.tracker.to_commit() == {}


# -- restart of the consumer


def test_new_consumer_in_the_same_group_resumes_from_the_committed_offsets(
    kafka: KafkaHelper, recorders: list[Recorder]
) -> None:
    topic = kafka.new_topic(partitions=4)
    group = _group()
    kafka.produce(topic, _records(4, 100, tag="a"))

    first = Recorder(kafka, topic, group)
    recorders.append(first)
    first.poll_until(lambda: len(first.messages) >= 400, what="400 records")
    # The first consumer finished different amounts of work per partition, then went away.
    done = {0: 37, 1: 100, 2: 0, 3: 64}
    for p, upto in done.items():
        if upto:
            first.tracker.track((topic, p), 0, upto - 1)
            first.tracker.resolve((topic, p), 0)
    _commit(first, metadata="gen-1")
    first.close()
    recorders.remove(first)
    assert kafka.committed(group, topic) == {0: 37, 1: 100, 3: 64}

    kafka.produce(topic, _records(4, 20, tag="b"))  # more arrives while nobody consumes

    second = Recorder(kafka, topic, group)
    recorders.append(second)
    expected = {(p, o) for p in range(4) for o in range(done[p], 120)}
    second.poll_until(lambda: len(second.messages) >= len(expected), what=f"{len(expected)} records")
    second.poll_for(1.0)

    keys = second.keys()
    assert len(keys) == len(set(keys)), "a record arrived twice"
    assert set(keys) == expected  # nothing lost, nothing below the committed offsets replayed
    for m in second.messages:
        tag = "a" if m.offset() < 100 else "b"
        assert m.value() == f"{tag}-{m.partition()}-{m.offset() % 100}".encode()
    # The new member was told where the group left off, with the metadata of the commit.
    assert sorted((a.tp, a.committed, a.metadata) for a in second.assigned) == [
        ((topic, 0), 37, "gen-1"),
        ((topic, 1), 100, "gen-1"),
        ((topic, 2), None, ""),
        ((topic, 3), 64, "gen-1"),
    ]

    for m in second.messages:
        second.tracker.track((topic, m.partition()), m.offset())
        second.tracker.resolve((topic, m.partition()), m.offset())
    _commit(second, metadata="gen-2")
    assert kafka.committed_with_metadata(group, topic) == {p: (120, "gen-2") for p in range(4)}


# -- flow control


def test_paused_partitions_yield_nothing_while_the_others_flow_then_resume(
    kafka: KafkaHelper, recorders: list[Recorder]
) -> None:
    topic = kafka.new_topic(partitions=4)
    kafka.produce(topic, _records(4, 2000))
    rec = Recorder(kafka, topic, _group())
    recorders.append(rec)
    # Take a few records: the client has by then fetched far more than it delivered (one fetch holds
    # whole partitions), so pausing has to hold back records already sitting in its local queue.
    rec.poll_until(lambda: len(rec.messages) > 0, what="the first records", max_records=10)
    before_pause = _by_partition(rec.messages)
    started = next(iter(before_pause))  # delivered some, the rest is prefetched
    untouched = next(p for p in range(4) if p not in before_pause)
    paused_parts = {started, untouched}
    flowing = set(range(4)) - paused_parts
    paused = [(topic, p) for p in sorted(paused_parts)]
    rec.source.pause(paused)
    assert rec.source.paused == set(paused)

    mark = len(rec.messages)
    # The other partitions flow to their end while the paused ones deliver nothing.
    rec.poll_until(
        lambda: all(len(_by_partition(rec.messages).get(p, [])) == 2000 for p in flowing),
        what=f"partitions {sorted(flowing)} to their end",
        max_records=100,
    )
    during = rec.messages[mark:] + rec.poll_for(2.0)
    assert {m.partition() for m in during} == flowing
    assert len(during) == sum(2000 - len(before_pause.get(p, [])) for p in flowing)
    assert len(rec.source.assignment) == 4, "the paused partitions were taken away"
    assert rec.revoked == []

    # Resumed, they continue right after the last record delivered before the pause.
    rec.source.resume(paused)
    assert rec.source.paused == set()
    rec.poll_until(lambda: len(rec.messages) >= 8000, what="all 8000 records")
    rec.poll_for(1.0)
    final = _by_partition(rec.messages)
    for p in range(4):
        assert final[p] == list(range(2000)), f"partition {p}: gaps or duplicates"
    assert len(rec.messages) == 8000
    assert rec.revoked == []


def test_pause_ignores_unassigned_partitions_and_survives_new_records(
    kafka: KafkaHelper, recorders: list[Recorder]
) -> None:
    """Pausing a partition with nothing in it yet: new records are held back until resume."""
    topic = kafka.new_topic(partitions=2)
    rec = Recorder(kafka, topic, _group())
    recorders.append(rec)
    rec.wait_assigned(2)
    rec.source.pause([(topic, 0), (topic, 9), ("other-topic", 0)])
    assert rec.source.paused == {(topic, 0)}  # only assigned partitions can be paused

    kafka.produce(topic, _records(2, 30))
    rec.poll_until(lambda: len(rec.messages) >= 30, what="partition 1's 30 records")
    rec.poll_for(1.5)
    assert _by_partition(rec.messages) == {1: list(range(30))}

    rec.source.resume([(topic, 0)])
    rec.poll_until(lambda: len(rec.messages) >= 60, what="partition 0's records after resume")
    assert _by_partition(rec.messages) == {0: list(range(30)), 1: list(range(30))}


# -- broker restart


@pytest.mark.broker_restart
def test_consumer_survives_a_broker_restart_and_keeps_consuming(kafka: KafkaHelper, recorders: list[Recorder]) -> None:
    broker = kafka.require_broker()
    topic = kafka.new_topic(partitions=2)
    kafka.produce(topic, _records(2, 50, tag="a"))
    rec = Recorder(kafka, topic, _group())
    recorders.append(rec)
    rec.poll_until(lambda: len(rec.messages) >= 100, what="100 records before the restart")
    for m in rec.messages:
        rec.tracker.track((topic, m.partition()), m.offset())
        rec.tracker.resolve((topic, m.partition()), m.offset())
    _commit(rec)
    assert kafka.committed(rec.group, topic) == {0: 50, 1: 50}

    # Restart the broker while the consumer keeps polling (as the pipeline does).
    errors: list[BaseException] = []

    def restart() -> None:
        try:
            broker.restart()
        except BaseException as exc:  # reported below
            errors.append(exc)

    restarter = threading.Thread(target=restart, name="broker-restart")
    pid_before = broker.pid
    restarter.start()
    while restarter.is_alive():
        assert rec.poll(timeout_s=0.2) == []  # nothing new exists; the call must not raise either
    restarter.join()
    assert not errors, errors
    assert broker.pid != pid_before

    kafka.produce(topic, _records(2, 30, tag="b"))
    assert broker.running
    mark = len(rec.messages)
    rec.poll_until(lambda: len(rec.messages) >= mark + 60, timeout=90, what="60 records after the restart")
    rec.poll_for(1.0)
    after = rec.messages[mark:]
    assert sorted((m.partition(), m.offset()) for m in after) == [(p, o) for p in range(2) for o in range(50, 80)]
    assert all(m.value() == f"b-{m.partition()}-{m.offset() - 50}".encode() for m in after)

    for m in after:
        rec.tracker.track((topic, m.partition()), m.offset())
        rec.tracker.resolve((topic, m.partition()), m.offset())
    offsets = rec.tracker.to_commit()
    try:
        rec.source.commit(offsets)
    except CommitFailed as exc:  # pragma: no cover - reported with the reason
        pytest.fail(f"commit after the broker restart failed: {exc}")
    rec.tracker.mark_committed(offsets)
    assert kafka.committed(rec.group, topic) == {0: 80, 1: 80}
