"""What the loop relies on from its ports (connector.ports), written once and run twice: against the
in-memory fakes (tests/unit/test_ports_contract.py) and against the real adapters on the broker
(tests/integration/test_ports_contract.py). A fake that passes here behaves, for the loop, like Kafka.

A subclass provides a fresh two-partition topic per test and the means to produce to it, to open a
group member, and to read the dead-letter topic.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from connector.models import Reason, TopicPartitionKey
from connector.ports import DeadLetterSink, Record, Source
from connector.source.consumer import Assigned

PARTITIONS = 2


class Member:
    """A group member with what its callbacks saw and what it consumed."""

    def __init__(self, source: Source, topic: str) -> None:
        self.source = source
        self.assigned: list[Assigned] = []
        self.revoked: list[TopicPartitionKey] = []
        self.records: list[Record] = []
        source.subscribe([topic], on_assign=self.assigned.extend, on_revoke=self.revoked.extend,
                         on_lost=self.revoked.extend)  # fmt: skip

    def poll_until(self, cond: Callable[[], bool], timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not cond():
            assert time.monotonic() < deadline, "timed out"
            self.records.extend(self.source.consume(100, 0.1))

    def values(self, partition: int) -> list[tuple[int, bytes | None]]:
        return [(r.offset() or 0, r.value()) for r in self.records if r.partition() == partition]


class SourceContract:
    topic: str

    def produce(self, partition: int, values: list[bytes]) -> None:
        raise NotImplementedError

    def member(self) -> Member:
        raise NotImplementedError

    def test_each_partition_is_read_in_order_with_its_offsets(self) -> None:
        self.produce(0, [b"a", b"b", b"c"])
        self.produce(1, [b"x"])
        m = self.member()
        m.poll_until(lambda: len(m.records) == 4)
        assert m.values(0) == [(0, b"a"), (1, b"b"), (2, b"c")]
        assert m.values(1) == [(0, b"x")]
        assert sorted(a.tp for a in m.assigned) == [(self.topic, 0), (self.topic, 1)]
        assert all(a.committed is None and a.metadata == "" for a in m.assigned)
        m.source.close()

    def test_a_commit_with_metadata_is_what_the_next_member_starts_from(self) -> None:
        self.produce(0, [b"a", b"b", b"c"])
        first = self.member()
        first.poll_until(lambda: len(first.records) == 3)
        first.source.commit({(self.topic, 0): 2}, {(self.topic, 0): "akc1:2-2"})
        first.source.close()
        second = self.member()
        second.poll_until(lambda: len(second.records) >= 1 and len(second.assigned) == PARTITIONS)
        got = {a.tp: (a.committed, a.metadata) for a in second.assigned}
        assert got[(self.topic, 0)] == (2, "akc1:2-2")
        assert got[(self.topic, 1)] == (None, "")
        assert second.values(0) == [(2, b"c")]
        second.source.close()

    def test_asynchronous_commits_are_answered_in_order_inside_consume(self) -> None:
        self.produce(0, [b"a", b"b", b"c"])
        m = self.member()
        m.poll_until(lambda: len(m.records) == 3)
        answers: list[tuple[str, Exception | None]] = []
        tp = (self.topic, 0)
        m.source.commit({tp: 1}, {tp: "akc1:1-1"}, on_done=lambda e: answers.append(("first", e)))
        m.source.commit({tp: 2}, {tp: "akc1:2-2"}, on_done=lambda e: answers.append(("second", e)))
        assert answers == []  # not before the next consume
        m.poll_until(lambda: len(answers) == 2)
        assert answers == [("first", None), ("second", None)]
        m.source.close()
        nxt = self.member()
        nxt.poll_until(lambda: len(nxt.assigned) == PARTITIONS)
        assert {a.tp: (a.committed, a.metadata) for a in nxt.assigned}[tp] == (2, "akc1:2-2")
        nxt.source.close()

    def test_a_paused_partition_delivers_nothing_until_resumed(self) -> None:
        m = self.member()
        m.poll_until(lambda: len(m.assigned) == PARTITIONS)
        m.source.pause([(self.topic, 0)])
        self.produce(0, [b"held"])
        self.produce(1, [b"flows"])
        m.poll_until(lambda: len(m.values(1)) == 1)
        for _ in range(5):
            m.records.extend(m.source.consume(100, 0.1))
        assert m.values(0) == []
        m.source.resume([(self.topic, 0)])
        m.poll_until(lambda: len(m.values(0)) == 1)
        assert m.values(0) == [(0, b"held")]
        m.source.close()

    def test_seek_reads_again_from_an_offset(self) -> None:
        self.produce(0, [b"a", b"b", b"c"])
        m = self.member()
        m.poll_until(lambda: len(m.values(0)) == 3)
        m.source.seek((self.topic, 0), 1)
        m.poll_until(lambda: len(m.values(0)) == 5)
        assert m.values(0)[3:] == [(1, b"b"), (2, b"c")]
        m.source.close()

    def test_closing_revokes_what_the_member_holds(self) -> None:
        m = self.member()
        m.poll_until(lambda: len(m.assigned) == PARTITIONS)
        m.source.close()
        assert sorted(m.revoked) == [(self.topic, 0), (self.topic, 1)]


class DeadLetterSinkContract:
    """A letter counts once confirmed: ``done`` runs in poll() or flush(), and the letter is readable."""

    dead_letter_topic: str

    def sink(self) -> DeadLetterSink:
        raise NotImplementedError

    def read_letters(self, expected: int) -> list[tuple[bytes | None, dict[str, str]]]:
        """The value and headers of the first ``expected`` letters of the dead-letter topic."""
        raise NotImplementedError

    def record(self, value: bytes, offset: int = 7) -> Any:
        from connector.ports import FakeRecord

        return FakeRecord("profiles", 1, offset, value, b"k", [("trace", b"abc")])

    def test_a_letter_is_confirmed_once_and_carries_the_record_and_its_reason(self) -> None:
        sink = self.sink()
        confirmed: list[str] = []
        reason = Reason("map", "MappingError", "missing matching field 'email'")
        tag = uuid.uuid4().hex.encode()
        sink.publish(self.record(tag), reason, lambda: confirmed.append("one"))
        deadline = time.monotonic() + 30
        while not confirmed and time.monotonic() < deadline:
            sink.poll()
            time.sleep(0.01)
        assert sink.flush(10) == 0
        assert confirmed == ["one"]
        assert sink.halt_reason is None and not sink.failing
        [(value, headers)] = self.read_letters(1)
        assert value == tag
        assert headers["__connect.errors.topic"] == "profiles"
        assert headers["__connect.errors.offset"] == "7"
        assert headers["__connect.errors.stage"] == "map"
        assert headers["__connect.errors.exception.message"] == "missing matching field 'email'"
        assert headers["trace"] == "abc"


class TransactionalSinkContract:
    """Exactly-once dead letters (connector.transactions): a letter is staged, and becomes visible to a
    read_committed reader together with the commit that passes its record, once; a transaction that is
    refused (a stale member: fenced) makes neither its letters nor its offsets visible, and the letters
    wait for the next one. Commit metadata survives the transactional path."""

    topic: str

    def produce(self, partition: int, values: list[bytes]) -> None:
        raise NotImplementedError

    def member(self) -> Member:
        raise NotImplementedError

    def sink(self) -> Any:
        raise NotImplementedError

    def read_letters(self) -> list[tuple[bytes | None, dict[str, str]]]:
        """Every letter a read_committed reader sees now."""
        raise NotImplementedError

    def letters_once(self, expected: int) -> list[tuple[str, str]]:
        """(source offset, stage) of every letter visible, once ``expected`` are: a transaction's markers
        reach the topic shortly after it commits, and in order, so once the last letter is visible, what
        earlier transactions wrote is too."""
        deadline = time.monotonic() + 30
        while len(got := self.read_letters()) < expected and time.monotonic() < deadline:
            time.sleep(0.05)
        return [(h["__connect.errors.offset"], h["__connect.errors.stage"]) for _, h in got]

    def committed(self, tp: TopicPartitionKey) -> tuple[int | None, str]:
        """What the group has committed for ``tp`` (offset, metadata), as its next member reads it."""
        m = self.member()
        m.poll_until(lambda: any(a.tp == tp for a in m.assigned))
        got = {a.tp: (a.committed, a.metadata) for a in m.assigned}[tp]
        m.source.close()
        return got

    def _read(self, m: Member) -> list[Record]:
        m.poll_until(lambda: len(m.values(0)) == 3)
        return [r for r in m.records if r.partition() == 0]

    def test_a_letter_is_visible_once_with_the_commit_that_passes_its_record_and_its_metadata(self) -> None:
        self.produce(0, [b"ok", b"bad", b"worse"])
        m = self.member()
        records = self._read(m)
        sink = self.sink()
        tp = (self.topic, 0)
        done: list[str] = []
        sink.publish(
            records[1], Reason("map", "MappingError", "missing matching field 'email'"), lambda: done.append("x")
        )
        assert done == ["x"], "a staged letter lets the offset pass it at once"
        sink.commit({tp: 1}, {tp: "akc1:1-2"}, m.source.group_metadata())  # does not pass offset 1
        sink.commit({tp: 2}, {tp: "akc1:2-2"}, m.source.group_metadata())  # passes it
        assert self.letters_once(1) == [("1", "map")]
        sink.publish(records[2], Reason("decode", "DecodeError", "not JSON"), lambda: None)
        sink.commit({tp: 3}, {tp: "akc1:"}, m.source.group_metadata())
        assert self.letters_once(2) == [("1", "map"), ("2", "decode")], "each letter written by one transaction"
        m.source.close()
        assert self.committed(tp) == (3, "akc1:")

    def test_an_asynchronous_transaction_is_answered_in_poll(self) -> None:
        self.produce(0, [b"bad", b"ok", b"ok"])
        m = self.member()
        records = self._read(m)
        sink = self.sink()
        tp = (self.topic, 0)
        sink.publish(records[0], Reason("decode", "DecodeError", "not JSON"), lambda: None)
        answers: list[Exception | None] = []
        sink.commit({tp: 3}, {tp: "akc1:0-2"}, m.source.group_metadata(), answers.append)
        assert sink.busy
        deadline = time.monotonic() + 30
        while not answers and time.monotonic() < deadline:
            sink.poll()
            time.sleep(0.005)
        assert answers == [None] and not sink.busy and not sink.failing
        assert self.letters_once(1) == [("0", "decode")]
        m.source.close()
        assert self.committed(tp) == (3, "akc1:0-2")

    def test_a_fenced_transaction_writes_nothing_and_its_letter_goes_with_the_next(self) -> None:
        self.produce(0, [b"bad", b"ok", b"ok"])
        stale = self.member()
        records = self._read(stale)
        group = stale.source.group_metadata()
        stale.source.close()  # it left the group: its metadata is stale
        current = self.member()
        current.poll_until(lambda: len(current.assigned) == PARTITIONS)
        sink = self.sink()
        tp = (self.topic, 0)
        sink.publish(records[0], Reason("decode", "DecodeError", "not JSON"), lambda: None)
        try:
            sink.commit({tp: 3}, {tp: "akc1:0-2"}, group)
        except Exception as exc:  # CommitFailed
            assert type(exc).__name__ == "CommitFailed", exc
        else:
            raise AssertionError("a transaction with a stale member's group metadata was accepted")
        assert sink.failing
        sink.commit({tp: 3}, {tp: "akc1:"}, current.source.group_metadata())
        assert not sink.failing
        assert self.letters_once(1) == [("0", "decode")], "the refused transaction's letter is not visible"
        current.source.close()
        assert self.committed(tp) == (3, "akc1:")
