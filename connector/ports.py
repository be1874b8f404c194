"""What the loop needs from the outside world, and in-memory stand-ins for each.

The loop (:mod:`connector.app`) talks to Kafka and to the API through these protocols only:

- :class:`Source`: the consumer (records, rebalances, pause/resume/seek, commits with metadata);
  real: :class:`connector.source.consumer.KafkaSource`;
- :class:`DeadLetterSink`: the dead-letter producer (publish, delivery confirmations, halts);
  real: :class:`connector.dlq.DeadLetters`;
- :class:`Sender`: one batch to its end, in a sender thread; real: :class:`connector.sink.client.AltcraftClient`.

The fakes below (:class:`FakeBroker` with its :class:`FakeSource` members, :class:`FakeDeadLetters`,
:class:`ScriptedSender`, :class:`ManualExecutor`) let the loop be driven turn by turn without a
broker, a thread or a clock. ``tests/contract.py`` holds the behaviour both the fakes and the real
adapters must show; it runs against the fakes in the unit suite and against the real adapters on a
broker in the integration suite.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

from connector.models import ItemRejection, Reason, SendOutcome, TopicPartitionKey
from connector.source.consumer import Assigned, CommitFailed
from connector.transactions import Stage, Staged  # the fake stages letters as the real sink does

AssignCallback = Callable[[list[Assigned]], None]
RevokeCallback = Callable[[list[TopicPartitionKey]], None]
Done = Callable[[], None]


class Record(Protocol):
    """The read side of a consumed record (``confluent_kafka.Message`` has it)."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def value(self) -> bytes | None: ...
    def key(self) -> bytes | None: ...
    def headers(self) -> Any: ...
    def timestamp(self) -> tuple[int, int]: ...


class Source(Protocol):
    def subscribe(
        self, topics: Sequence[str], *, on_assign: AssignCallback, on_revoke: RevokeCallback, on_lost: RevokeCallback
    ) -> None: ...
    def consume(self, max_records: int, timeout_s: float) -> Sequence[Record]: ...
    def pause(self, tps: Sequence[TopicPartitionKey]) -> None: ...
    def resume(self, tps: Sequence[TopicPartitionKey]) -> None: ...
    def seek(self, tp: TopicPartitionKey, offset: int) -> None: ...
    def commit(
        self,
        offsets: dict[TopicPartitionKey, int],
        metadata: dict[TopicPartitionKey, str],
        on_done: Callable[[Exception | None], None] | None = None,
    ) -> None:
        """Without ``on_done``: synchronous, raises :class:`~connector.source.consumer.CommitFailed` unless
        every partition succeeded. With it: asynchronous; ``on_done(error or None)`` runs inside a later
        :meth:`consume`, in the order the commits were made."""

    def group_metadata(self) -> Any:
        """The member's group metadata, for offsets committed in a transaction (read in the loop's thread)."""

    def position_lag(self) -> dict[TopicPartitionKey, int]: ...
    def close(self) -> None: ...


class DeadLetterSink(Protocol):
    def publish(self, msg: Any, reason: Reason, done: Done) -> None:
        """``done`` runs once the letter is safe: confirmed by the broker (inside :meth:`poll` or
        :meth:`flush`), or, for a transactional sink, staged for the commit that passes its record (at once)."""

    def poll(self) -> None: ...
    def flush(self, timeout_s: float) -> int: ...
    def forget(self, tp: TopicPartitionKey) -> None:
        """``tp`` was let go: letters not written yet are its next owner's to write (transactional only)."""

    @property
    def halt_reason(self) -> str | None: ...
    @property
    def failing(self) -> bool: ...


class TransactionalSink(DeadLetterSink, Protocol):
    """A dead-letter sink that also commits offsets: each commit one transaction with the staged letters
    below the new offsets (real: :class:`connector.transactions.TransactionalDeadLetters`)."""

    def init(self) -> None:
        """Before the group is joined: abort what a predecessor with the same transactional id left open."""

    def lost(self) -> None:
        """The group's partitions were lost (the broker or the coordinator away longer than the session)."""

    @property
    def busy(self) -> bool: ...
    def commit(
        self,
        offsets: dict[TopicPartitionKey, int],
        metadata: dict[TopicPartitionKey, str],
        group_metadata: Any,
        on_done: Callable[[Exception | None], None] | None = None,
    ) -> None: ...


class Sender(Protocol):
    def send(self, job: Any, cancel: threading.Event | None = None) -> SendOutcome: ...
    def close(self) -> None: ...


# ------------------------------------------------------------------------------------------ fakes


@dataclass(slots=True)
class FakeRecord:
    """A record of the :class:`FakeBroker`, read like a ``confluent_kafka.Message``."""

    _topic: str
    _partition: int
    _offset: int
    _value: bytes | None
    _key: bytes | None = None
    _headers: list[tuple[str, bytes]] | None = None
    _timestamp: int = 0

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return (1, self._timestamp)


@dataclass
class FakeBroker:
    """Partition logs and one group's committed offsets, shared by the :class:`FakeSource` members.

    Partitions go to members when they subscribe (on their next consume), and move on
    :meth:`FakeSource.close` or when a test calls :meth:`rebalance`/:meth:`lose`."""

    partitions: int = 1
    logs: dict[TopicPartitionKey, list[FakeRecord]] = field(default_factory=lambda: defaultdict(list))
    committed: dict[TopicPartitionKey, tuple[int, str]] = field(default_factory=dict)
    commits: list[dict[TopicPartitionKey, tuple[int, str]]] = field(default_factory=list)  # in order
    members: list[FakeSource] = field(default_factory=list)
    fail_commits: int = 0  # the next N commits raise CommitFailed

    def produce(self, topic: str, partition: int, value: bytes | None, key: bytes | None = None) -> int:
        log = self.logs[(topic, partition)]
        log.append(FakeRecord(topic, partition, len(log), value, key, None, len(log)))
        return len(log) - 1

    def owner(self, tp: TopicPartitionKey) -> FakeSource | None:
        return next((m for m in self.members if tp in m.assignment), None)

    def rebalance(self, tps: Sequence[TopicPartitionKey], to: FakeSource) -> None:
        """Move ``tps`` to member ``to``: revoked from their owner at its next consume, then assigned."""
        for tp in tps:
            owner = self.owner(tp)
            if owner is not None and owner is not to:
                owner._events.append(("revoke", [tp]))
            to._events.append(("assign", [tp]))

    def lose(self, member: FakeSource, tps: Sequence[TopicPartitionKey]) -> None:
        """``member`` loses ``tps`` (its session expired): at its next consume, without a chance to commit."""
        member._events.append(("lost", list(tps)))


class FakeSource:
    """One member of the :class:`FakeBroker`'s group."""

    def __init__(self, broker: FakeBroker) -> None:
        self._broker = broker
        self._positions: dict[TopicPartitionKey, int] = {}
        self._paused: set[TopicPartitionKey] = set()
        self._events: list[tuple[str, list[TopicPartitionKey]]] = []
        self._callbacks: tuple[AssignCallback, RevokeCallback, RevokeCallback] | None = None
        self._answers: list[tuple[Callable[[Exception | None], None], Exception | None]] = []
        self.closed = False

    def subscribe(
        self, topics: Sequence[str], *, on_assign: AssignCallback, on_revoke: RevokeCallback, on_lost: RevokeCallback
    ) -> None:
        self._callbacks = (on_assign, on_revoke, on_lost)
        self._broker.members.append(self)
        free = [(t, p) for t in topics for p in range(self._broker.partitions)]
        self._events.append(("assign", [tp for tp in free if self._broker.owner(tp) is None]))

    @property
    def assignment(self) -> set[TopicPartitionKey]:
        return set(self._positions)

    @property
    def paused(self) -> set[TopicPartitionKey]:
        return set(self._paused)

    def _rebalance(self) -> None:
        assert self._callbacks is not None
        on_assign, on_revoke, on_lost = self._callbacks
        events, self._events = self._events, []
        for kind, tps in events:
            if kind == "assign":
                tps = [tp for tp in tps if tp not in self._positions]
                for tp in tps:
                    self._positions[tp] = self._broker.committed.get(tp, (0, ""))[0]
                if tps:
                    on_assign([Assigned(tp, *self._committed(tp)) for tp in tps])
                continue
            mine = [tp for tp in tps if tp in self._positions]
            if mine:
                (on_revoke if kind == "revoke" else on_lost)(mine)
            for tp in mine:
                self._positions.pop(tp, None)
                self._paused.discard(tp)

    def _committed(self, tp: TopicPartitionKey) -> tuple[int | None, str]:
        got = self._broker.committed.get(tp)
        return (None, "") if got is None else got

    def consume(self, max_records: int, timeout_s: float) -> list[FakeRecord]:
        answers, self._answers = self._answers, []
        for on_done, error in answers:
            on_done(error)
        self._rebalance()
        out: list[FakeRecord] = []
        for tp in sorted(self._positions):  # in runs per partition, as librdkafka hands them out
            if tp in self._paused or len(out) >= max_records:
                continue
            pos = self._positions[tp]
            got = self._broker.logs[tp][pos : pos + max_records - len(out)]
            self._positions[tp] = pos + len(got)
            out.extend(got)
        return out

    def pause(self, tps: Sequence[TopicPartitionKey]) -> None:
        self._paused.update(tp for tp in tps if tp in self._positions)

    def resume(self, tps: Sequence[TopicPartitionKey]) -> None:
        self._paused.difference_update(tps)

    def seek(self, tp: TopicPartitionKey, offset: int) -> None:
        self._positions[tp] = offset

    def commit(
        self,
        offsets: dict[TopicPartitionKey, int],
        metadata: dict[TopicPartitionKey, str],
        on_done: Callable[[Exception | None], None] | None = None,
    ) -> None:
        error: Exception | None = None
        if self._broker.fail_commits > 0:
            self._broker.fail_commits -= 1
            error = CommitFailed("the fake broker refuses this commit")
        elif foreign := [tp for tp in offsets if tp not in self._positions]:
            error = CommitFailed(f"not assigned to this member: {foreign}")
        else:
            done = {tp: (off, metadata.get(tp, "")) for tp, off in offsets.items()}
            self._broker.committed.update(done)
            self._broker.commits.append(done)
        if on_done is not None:
            self._answers.append((on_done, error))  # answered at the next consume, as librdkafka does
        elif error is not None:
            raise error

    def group_metadata(self) -> FakeGroupMetadata:
        return FakeGroupMetadata(self, frozenset(self._positions))

    def position_lag(self) -> dict[TopicPartitionKey, int]:
        return {tp: len(self._broker.logs[tp]) - pos for tp, pos in self._positions.items()}

    def close(self) -> None:
        """Leave the group: revoke what is left (as librdkafka does), hand it to another member."""
        if self.closed:
            return
        self._events.append(("revoke", list(self._positions)))
        left = list(self._positions)
        self._rebalance()
        self.closed = True
        self._broker.members.remove(self)
        if self._broker.members and left:
            self._broker.rebalance(left, self._broker.members[0])


@dataclass(frozen=True)
class FakeGroupMetadata:
    """Who commits, and what it owned when it asked: a transaction naming another partition is fenced."""

    member: FakeSource
    owned: frozenset[TopicPartitionKey]


class FakeDeadLetters:
    """Letters are confirmed at the next :meth:`poll`, unless :attr:`refusing` names a halt label."""

    def __init__(self) -> None:
        self.letters: list[tuple[Any, Reason]] = []  # confirmed, in order
        self._waiting: list[tuple[Any, Reason, Done]] = []
        self.refusing: str | None = None

    def publish(self, msg: Any, reason: Reason, done: Done) -> None:
        self._waiting.append((msg, reason, done))

    def poll(self) -> None:
        if self.refusing is not None:
            return
        waiting, self._waiting = self._waiting, []
        for msg, reason, done in waiting:
            self.letters.append((msg, reason))
            done()

    def flush(self, timeout_s: float) -> int:
        self.poll()
        return len(self._waiting)

    def forget(self, tp: TopicPartitionKey) -> None:
        pass  # letters are published as they come

    @property
    def halt_reason(self) -> str | None:
        return self.refusing if self._waiting else None

    @property
    def failing(self) -> bool:
        return self.refusing is not None and bool(self._waiting)


class FakeTransactions:
    """Letters and offsets written together, as :class:`connector.transactions.TransactionalDeadLetters`
    does: a letter is staged until a commit passes its record; the commit (answered at the next
    :meth:`poll`, or at once when synchronous) makes its letters and offsets visible together, or,
    refused, neither. Refused when the broker's ``fail_commits`` says so, or when it names a partition
    its member no longer owns (fencing)."""

    transactional = True

    def __init__(self, broker: FakeBroker) -> None:
        self._broker = broker
        self._stage = Stage()
        self.letters: list[tuple[Any, Reason]] = []  # visible to a read_committed reader, in order
        self.aborted: list[tuple[Any, Reason]] = []  # written in transactions that were refused
        self._job: tuple[Any, ...] | None = None
        self._forgotten: set[TopicPartitionKey] = set()  # let go while the job waited for its answer
        self.failing = False
        self.halt_reason: str | None = None

    def publish(self, msg: Any, reason: Reason, done: Done) -> None:
        self._stage.add((msg.topic(), msg.partition()), Staged(msg.offset(), msg, reason))
        done()

    def init(self) -> None:
        pass

    def lost(self) -> None:
        pass  # no producer to renew

    def forget(self, tp: TopicPartitionKey) -> None:
        self._stage.forget(tp)
        if self._job is not None:
            self._forgotten.add(tp)

    @property
    def staged(self) -> int:
        return len(self._stage)

    @property
    def busy(self) -> bool:
        return self._job is not None

    def commit(
        self,
        offsets: dict[TopicPartitionKey, int],
        metadata: dict[TopicPartitionKey, str],
        group_metadata: Any,
        on_done: Callable[[Exception | None], None] | None = None,
    ) -> None:
        if self._job is not None:
            self.poll()
        job = (offsets, metadata, group_metadata, self._stage.take(offsets), on_done)
        if on_done is not None:
            self._job = job
            return
        error = self._run(job)
        if error is not None:
            raise error

    def _run(self, job: tuple[Any, ...]) -> Exception | None:
        offsets, metadata, group, letters, _ = job
        error: Exception | None = None
        if self._broker.fail_commits > 0:
            self._broker.fail_commits -= 1
            error = CommitFailed("the fake broker refuses this transaction")
        elif not isinstance(group, FakeGroupMetadata) or group.member not in self._broker.members:
            error = CommitFailed("fenced: the member left the group")
        elif foreign := [tp for tp in offsets if tp not in group.member.assignment]:
            error = CommitFailed(f"fenced: not assigned to this member: {foreign}")
        forgotten, self._forgotten = self._forgotten, set()
        if error is not None:
            self.aborted += [(s.msg, s.reason) for _, s in letters]
            self._stage.put_back([(tp, s) for tp, s in letters if tp not in forgotten])
            self.failing = True
            return error
        self.letters += [(s.msg, s.reason) for _, s in letters]
        done = {tp: (off, metadata.get(tp, "")) for tp, off in offsets.items()}
        self._broker.committed.update(done)
        self._broker.commits.append(done)
        self.failing = False
        return None

    def poll(self) -> None:
        job, self._job = self._job, None
        if job is not None:
            error = self._run(job)
            job[-1](error)

    def flush(self, timeout_s: float) -> int:
        self.poll()
        return len(self._stage)

    def close(self) -> None:
        self.poll()


class ScriptedSender:
    """Answers each job with ``answer(job)`` (default: every item accepted); keeps every job it got."""

    def __init__(self, answer: Callable[[Any], SendOutcome] | None = None) -> None:
        self.jobs: list[Any] = []
        self._answer = answer or accept_all
        self.closed = False

    def send(self, job: Any, cancel: threading.Event | None = None) -> SendOutcome:
        self.jobs.append(job)
        return self._answer(job)

    def close(self) -> None:
        self.closed = True


def accept_all(job: Any) -> SendOutcome:
    return SendOutcome(len(job.items), (), job.request_id, 1, 0)


def reject(indexes: Sequence[int], code: int = 400, text: str = "Invalid value") -> Callable[[Any], SendOutcome]:
    """An answer that rejects the items at ``indexes`` of every job (those that exist)."""

    def answer(job: Any) -> SendOutcome:
        rejected = tuple(ItemRejection(i, code, text) for i in indexes if i < len(job.items))
        return SendOutcome(len(job.items) - len(rejected), rejected, job.request_id, 1, 0)

    return answer


class ManualExecutor:
    """An executor whose submitted calls run only when a test says so: requests stay "in flight"."""

    def __init__(self) -> None:
        self._calls: list[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self._calls.append((future, fn, args))
        return future

    @property
    def waiting(self) -> int:
        return len(self._calls)

    def run(self, n: int | None = None) -> int:
        """Run the first ``n`` waiting calls (all by default) in this thread; returns how many ran."""
        calls = self._calls if n is None else self._calls[:n]
        self._calls = self._calls[len(calls) :]
        for future, fn, args in calls:
            future.set_result(fn(*args))
        return len(calls)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if cancel_futures:
            self._calls.clear()
