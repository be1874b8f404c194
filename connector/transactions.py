"""Exactly-once dead letters: a record's dead letter and the offset past it are written in one Kafka
transaction, so a ``read_committed`` reader of the dead-letter topic sees each letter once, whatever
crashes, restarts and rebalances happen (``dead_letter.exactly_once``, on by default).

How it works:

- :meth:`TransactionalDeadLetters.publish` only *stages* a letter, under its source partition and
  offset, and says at once that the offset may pass it (``done``): the letter will be written by the
  transaction that commits an offset past its record, and by no other.
- Every commit of the loop (:mod:`connector.commits`: the recording commits before batches are sent,
  the progress commits, the forced ones of a revoke and of the shutdown) is one transaction here:
  ``begin``, the staged letters below each partition's new offset, ``send_offsets_to_transaction``
  (offsets *with their replay metadata*, which the broker keeps as a plain commit does), ``commit``.
  A transaction that fails is aborted: neither its letters nor its offsets become visible, the letters
  go back to the stage, and the next commit carries them again.
- One transaction at a time, in a worker thread (a transaction takes a few milliseconds of broker
  round trips; the loop does not wait for them). The consumer's group metadata is taken in the loop's
  thread (the consumer cannot be called from another thread while it is being polled) and handed over.
- Fencing: the broker refuses a transaction whose group metadata is stale (the member was evicted, or a
  rebalance moved on; KIP-447), so a zombie writes nothing; the loop commits only the partitions it
  owns, and a revoke commits synchronously before it lets its partitions go. ``transactional.id`` is
  stable per instance (by default the group, the host name and the process id: the same across
  restarts of a container, unique among processes on one host), so a restarted instance aborts the
  transaction its predecessor left open at once instead of leaving ``read_committed`` readers waiting
  for ``transaction.timeout.ms``.
- When a partition is let go without a final commit (lost), its staged letters are dropped: its next
  owner reads those records again and stages them itself.

Refusals are judged as by :mod:`connector.dlq` (too large: written as its head; missing topic, no
authorization, fatal producer: a halt label for the loop to show; anything else passes).
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition

from connector.dlq import (
    CUT,
    DEFAULT_PRODUCER_PROPS,
    FATAL,
    HEAD_BYTES,
    METADATA_TIMEOUT_S,
    MISSING_TOPIC,
    PASSING,
    UNAUTHORIZED,
    Letter,
    close_producer,
    cut_to_fit,
    headers_for,
    judge,
    message_max_bytes,
    original_headers,
    provenance,
)
from connector.models import Reason, TopicPartitionKey
from connector.source.consumer import CommitFailed

log = logging.getLogger(__name__)

# librdkafka retries a transaction's offset commit after retry.backoff.ms when the broker is still
# completing the previous transaction (CONCURRENT_TRANSACTIONS): 100 ms by default, which made
# back-to-back transactions take about 110 ms on a local broker; at 10 ms they take about 15 ms.
TRANSACTION_PRODUCER_PROPS: dict[str, Any] = {"retry.backoff.ms": 10, "linger.ms": 5}
TRANSACTION_TIMEOUT_MS = 10_000  # at least; see TransactionalDeadLetters.__init__
TIMEOUT_S = 20.0  # one call of the transactional API (init, send offsets, commit, abort)
COMMIT_RETRIES = 1  # a commit_transaction that fails with a retriable error is called again this often
STUCK_S = 30.0  # a transaction not finished by then is given up (a healthy one takes milliseconds)

Done = Callable[[], None]
Answer = Callable[[Exception | None], None]


def default_transactional_id(group_id: str) -> str:
    """Stable across restarts of one container (same host name, same process id), unique among the
    processes of one host."""
    return f"{group_id}-{socket.gethostname()}-{os.getpid()}"


# ------------------------------------------------------------------------------------- the stage


@dataclass(slots=True, eq=False)
class Staged:
    offset: int
    msg: Any
    reason: Reason
    cut: bool = False  # written as its head: the whole letter was refused for its size


class Stage:
    """Letters waiting for the transaction that commits an offset past their record. Pure."""

    def __init__(self) -> None:
        self._by_tp: dict[TopicPartitionKey, list[Staged]] = defaultdict(list)

    def add(self, tp: TopicPartitionKey, letter: Staged) -> None:
        self._by_tp[tp].append(letter)

    def take(self, offsets: dict[TopicPartitionKey, int]) -> list[tuple[TopicPartitionKey, Staged]]:
        """The letters of records below each partition's new offset, in offset order; they leave the stage."""
        out: list[tuple[TopicPartitionKey, Staged]] = []
        for tp, offset in offsets.items():
            staged = self._by_tp.get(tp)
            if not staged:
                continue
            below = sorted((s for s in staged if s.offset < offset), key=lambda s: s.offset)
            if below:
                self._by_tp[tp] = [s for s in staged if s.offset >= offset]
                out += [(tp, s) for s in below]
        return out

    def put_back(self, letters: Sequence[tuple[TopicPartitionKey, Staged]]) -> None:
        """A transaction failed: its letters wait for the next one."""
        for tp, s in letters:
            self._by_tp[tp].append(s)

    def forget(self, tp: TopicPartitionKey) -> int:
        return len(self._by_tp.pop(tp, []))

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_tp.values())


# ------------------------------------------------------------------------------------- the writer


@dataclass(slots=True, eq=False)
class _Job:
    offsets: list[TopicPartition]
    letters: list[tuple[TopicPartitionKey, Staged]]
    group_metadata: Any
    answer: Answer | None
    producer: Any  # the producer it runs on (a stuck one is replaced; its job keeps the old one)
    started: float = 0.0
    done: threading.Event = field(default_factory=threading.Event)
    error: Exception | None = None
    delivery_errors: list[tuple[Staged, KafkaError]] = field(default_factory=list)
    topic_missing: bool = False  # the transaction failed and the broker says the dead-letter topic is missing
    timed_out: bool = False  # it failed on a request that timed out
    # Partitions let go while the transaction ran: if it fails, their letters are not put back (the next
    # owner writes them; put back, they would be written twice should the partition come back here).
    forgotten: set[TopicPartitionKey] = field(default_factory=set)


class TransactionalDeadLetters:
    """The dead-letter sink and the committer of offsets, as Kafka transactions (see the module).

    Transactions run in a daemon thread, one at a time. One that hangs inside librdkafka (seen after a
    broker restart: ``send_offsets_to_transaction`` past its timeout) can be given up: after
    :data:`STUCK_S` the job counts as failed, its letters go back to the stage, its thread is left to
    end on its own, and a new thread and a new producer with the same ``transactional.id`` take over
    (its ``init_transactions`` fences the stuck one). (A thread per transaction cost the loop about a
    millisecond each on a busy host: starting one waits until it runs.)"""

    transactional = True

    def __init__(self, props: dict[str, Any], topic: str, transactional_id: str, *,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        merged = {
            **DEFAULT_PRODUCER_PROPS,
            **TRANSACTION_PRODUCER_PROPS,
            **props,
            "transactional.id": transactional_id,
            "enable.idempotence": True,
            "acks": "all",
        }
        # A transaction lasts milliseconds; one left open by a killed instance (whose successor has another
        # transactional.id) holds up read_committed readers of the dead-letter topic and the next owner's
        # committed offsets until it times out: not the 60 s default, but the letters' delivery timeout
        # (librdkafka refuses a message timeout longer than the transaction's), at least 10 s.
        timeout_ms = int(merged.get("message.timeout.ms", 30_000))
        merged.setdefault("transaction.timeout.ms", max(TRANSACTION_TIMEOUT_MS, timeout_ms))
        merged["transaction.timeout.ms"] = max(int(merged["transaction.timeout.ms"]), timeout_ms)
        self._props = merged
        self._producer = Producer(merged)
        self._max_bytes = message_max_bytes(merged)
        self._topic = topic
        self._id = transactional_id
        self._clock = clock
        self._stage = Stage()
        self._job: _Job | None = None  # the transaction running, until its answer is served
        self._jobs: queue.SimpleQueue[_Job | None] | None = None  # the worker thread's, None: none started
        self._initialized = False
        self.failing = False  # the last transaction failed and none succeeded since
        self._halt_reason: str | None = None
        self._refusal: str | None = None  # what the last refused letter was refused for (logged once a change)

    def init(self) -> None:
        """``init_transactions`` before the group is joined: it aborts what a predecessor with this id left
        open, which would otherwise withhold the group's committed offsets from the next owner until it
        times out. A failure is logged; the first commit tries again."""
        try:
            self._producer.init_transactions(TIMEOUT_S)
            self._initialized = True
        except KafkaException as exc:
            log.warning("initialising transactions (transactional.id %s) failed: %s; retried at the first "
                        "commit", self._id, exc.args[0])  # fmt: skip

    def lost(self) -> None:
        """The group's partitions were lost, the broker or the coordinator away longer than the session:
        the next transaction starts on a new producer (its ``init_transactions`` fences this one). After a
        broker restart, librdkafka 2.16 hung in the first ``send_offsets_to_transaction`` of the producer
        that lived through it until :data:`STUCK_S` gave it up (measured: 45 s without progress)."""
        log.info("partitions lost: the next transaction starts on a new producer (transactional.id %s)", self._id)
        self._renew()

    # -- the sink

    @property
    def halt_reason(self) -> str | None:
        return self._halt_reason

    def publish(self, msg: Message, reason: Reason, done: Done) -> None:
        """Staged; the offset may pass it now: it is written with the commit that does."""
        self._stage.add((msg.topic() or "", msg.partition() or 0), Staged(msg.offset() or 0, msg, reason))
        done()

    def forget(self, tp: TopicPartitionKey) -> None:
        """``tp`` was let go without a final commit: its next owner stages its letters again."""
        dropped = self._stage.forget(tp)
        if self._job is not None:
            self._job.forgotten.add(tp)
        if dropped:
            log.info("%s[%d]: %d dead letter(s) not committed here; the next owner writes them", *tp, dropped)

    def poll(self) -> None:
        """Serve the answer of a finished transaction (``answer`` runs in the caller's thread); give up on
        one that overran :data:`STUCK_S`."""
        job = self._job
        if job is None:
            self._producer.poll(0)  # the client's statistics and error callbacks (kafka_signals), when idle
        elif job.done.is_set():
            self._finish(job)
        elif self._clock() - job.started > STUCK_S:
            self._give_up(job)
            self._finish(job)

    def flush(self, timeout_s: float) -> int:
        """Wait for the transaction in progress (at most ``timeout_s``); returns the letters still staged."""
        job = self._job
        if job is not None:
            if not job.done.wait(max(0.0, timeout_s)):
                return len(self._stage) + len(job.letters)
            self._finish(job)
        return len(self._stage)

    @property
    def staged(self) -> int:
        return len(self._stage)

    # -- the committer

    @property
    def busy(self) -> bool:
        """A transaction is in progress (or its answer not yet served): the next commit waits."""
        return self._job is not None

    def commit(
        self,
        offsets: dict[TopicPartitionKey, int],
        metadata: dict[TopicPartitionKey, str],
        group_metadata: Any,
        on_done: Answer | None = None,
    ) -> None:
        """One transaction: the staged letters below ``offsets``, then the offsets with their metadata.

        With ``on_done``: ``on_done(None | CommitFailed)`` runs inside a later :meth:`poll`. Without: after
        the transaction in progress, waiting for it at most :data:`STUCK_S`; raises :class:`CommitFailed`."""
        if self._job is not None:
            self.flush(STUCK_S)
            if self._job is not None:
                self._give_up(self._job)
                self._finish(self._job)
        tps = [TopicPartition(t, p, off, metadata=metadata.get((t, p), "")) for (t, p), off in offsets.items()]
        job = _Job(tps, self._stage.take(offsets), group_metadata, on_done, self._producer, self._clock())
        self._job = job
        self._hand(job)
        if on_done is not None:
            return
        if not job.done.wait(STUCK_S):
            self._give_up(job)
        self._finish(job)
        if job.error is not None:
            raise job.error if isinstance(job.error, CommitFailed) else CommitFailed(str(job.error))

    def close(self) -> None:
        """Wait a little for the transaction in progress; never for a stuck one (its thread is a daemon,
        and its producer is left to it: closing a producer under a transactional call could hang)."""
        self.flush(TIMEOUT_S)
        self._retire_worker()
        if self._job is None:
            close_producer(self._producer, 5.0)

    # -- inside (the loop's thread)

    def _finish(self, job: _Job) -> None:
        self._job = None
        self._settle(job, job.error)
        if job.answer is not None:
            job.answer(job.error)

    def _give_up(self, job: _Job) -> None:
        """A transaction overran: failed, as far as anyone waits for it; its producer is replaced."""
        log.error("a transaction (transactional.id %s) has not finished in %.0f s: giving up on it and starting "
                  "a new producer with the same id (it fences the stuck one)", self._id, STUCK_S)  # fmt: skip
        job.error = CommitFailed(f"the transaction did not finish in {STUCK_S:.0f} s")
        self._retire_worker()  # stuck in librdkafka: it ends if that ever returns; the next job starts another
        self._renew()

    def _renew(self) -> None:
        """A new producer with the same ``transactional.id``: its ``init_transactions`` (at the next commit)
        fences the old one and aborts what it left open."""
        self._producer = Producer(self._props)
        self._initialized = False

    def _settle(self, job: _Job, error: Exception | None) -> None:
        if error is None:
            if self.failing:
                log.warning("transactions succeed again (dead-letter topic %s)", self._topic)
            self.failing = False
            self._halt_reason = None
            self._refusal = None
            return
        self._stage.put_back([(tp, staged) for tp, staged in job.letters if tp not in job.forgotten])
        self.failing = True
        if job.timed_out and job.producer is self._producer:
            # After a broker restart librdkafka 2.16 can keep timing out on a transaction coordinator it no
            # longer reaches (every attempt, for good: measured): a new producer finds the coordinator again.
            log.warning("a transaction timed out: the next one starts on a new producer (transactional.id %s)",
                        self._id)  # fmt: skip
            self._renew()
        if job.letters and self._halt_reason is None and job.topic_missing:
            self._halt_reason = MISSING_TOPIC
        # A refusal of the letters themselves (not a rebalance, not a broker away): logged once a change.
        refused = bool(job.letters) and bool(self._halt_reason or job.delivery_errors or job.topic_missing)
        refusal = self._halt_reason or type(error).__name__
        if refused and refusal != self._refusal:
            (t, part), halt = job.letters[0][0], f", {self._halt_reason}" if self._halt_reason else ""
            log.error("cannot write to the dead-letter topic %s (%s%s); %s[%d] stalls at offset %d, and with it "
                      "every commit, until it works; retrying with each commit", self._topic, error, halt, t, part,
                      job.letters[0][1].offset)  # fmt: skip
        self._refusal = refusal if refused else self._refusal

    def _hand(self, job: _Job) -> None:
        """To the worker thread (started on first use, or after one was given up)."""
        if self._jobs is None:
            self._jobs = queue.SimpleQueue()
            threading.Thread(target=self._work, args=(self._jobs,), name="transactions", daemon=True).start()
        self._jobs.put(job)

    def _retire_worker(self) -> None:
        if self._jobs is not None:
            self._jobs.put(None)
            self._jobs = None

    # -- inside (the transactions' thread)

    def _work(self, jobs: queue.SimpleQueue[_Job | None]) -> None:
        while (job := jobs.get()) is not None:
            self._run(job)

    def _run(self, job: _Job) -> None:
        try:
            job.error = self._transaction(job)
        except Exception as exc:  # a bug must not leave the loop waiting for ever
            log.exception("a transaction failed unexpectedly")
            job.error = CommitFailed(f"unexpected: {exc!r}")
        finally:
            job.done.set()

    def _transaction(self, job: _Job) -> Exception | None:
        """Returns None or what failed."""
        p = job.producer
        try:
            if not self._initialized or p is not self._producer:
                p.init_transactions(TIMEOUT_S)  # aborts what a predecessor with this id left open
                if p is self._producer:
                    self._initialized = True
            p.begin_transaction()
        except KafkaException as exc:  # a transaction left in an abortable state is aborted (then retried)
            err = exc.args[0]
            return self._refused_transaction(p, err, "starting a transaction", abort=err.txn_requires_abort())
        try:
            for tp, staged in job.letters:
                self._produce(job, tp, staged)
            p.send_offsets_to_transaction(job.offsets, job.group_metadata, TIMEOUT_S)
            for attempt in range(COMMIT_RETRIES + 1):
                try:
                    p.commit_transaction(TIMEOUT_S)
                    break
                except KafkaException as exc:
                    if not exc.args[0].retriable() or attempt == COMMIT_RETRIES:
                        raise
        except KafkaException as exc:
            job.timed_out = exc.args[0].code() in (KafkaError._TIMED_OUT, KafkaError.REQUEST_TIMED_OUT)
            self._judge_deliveries(job)
            if job.letters:  # librdkafka reports a missing topic as a timeout: the broker is asked
                job.topic_missing = self._topic_exists(p) is False
            return self._refused_transaction(p, exc.args[0], "committing a transaction", abort=True)
        return None

    def _produce(self, job: _Job, tp: TopicPartitionKey, staged: Staged) -> None:
        msg = staged.msg
        kind, ts = msg.timestamp()
        while True:
            if staged.cut:
                letter = cut_to_fit(msg.key(), msg.value(), original_headers(msg), provenance(msg, staged.reason),
                                    self._max_bytes)  # fmt: skip
            else:
                letter = Letter(msg.key(), msg.value(), headers_for(msg, staged.reason))

            def report(err: KafkaError | None, _m: Message, staged: Staged = staged) -> None:
                if err is not None:
                    job.delivery_errors.append((staged, err))

            try:
                job.producer.produce(self._topic, value=letter.value, key=letter.key, headers=letter.headers,
                                     timestamp=ts if kind else 0, on_delivery=report)  # fmt: skip
                return
            except BufferError:
                job.producer.poll(0.5)
            except KafkaException as exc:  # the letter refused before it was queued
                err = exc.args[0]
                verdict = judge(err.code(), retriable=err.retriable(), fatal=err.fatal(), cut=staged.cut)
                if verdict == CUT:
                    self._note_cut(tp, staged, err)
                    continue
                if verdict != PASSING:
                    self._halt_reason = verdict
                raise

    def _note_cut(self, tp: TopicPartitionKey, staged: Staged, err: KafkaError) -> None:
        staged.cut = True
        log.warning("dead letter of %s[%d] offset %d is too large for the dead-letter topic %s (%s): writing at "
                    "most its first %d bytes", *tp, staged.offset, self._topic, err.name(), HEAD_BYTES)  # fmt: skip

    def _judge_deliveries(self, job: _Job) -> None:
        """Letters the broker refused inside the failed transaction: those too large are cut next time."""
        for staged, err in job.delivery_errors:
            verdict = judge(err.code(), retriable=err.retriable(), fatal=err.fatal(), cut=staged.cut)
            if verdict == CUT:
                self._note_cut((staged.msg.topic() or "", staged.msg.partition() or 0), staged, err)
            elif verdict != PASSING:
                self._halt_reason = verdict

    def _topic_exists(self, producer: Any) -> bool | None:
        """Whether the broker knows the dead-letter topic (None: it cannot be asked now)."""
        try:
            meta = producer.list_topics(self._topic, timeout=METADATA_TIMEOUT_S)
        except KafkaException:
            return None
        topic = meta.topics.get(self._topic)
        return topic is not None and topic.error is None

    def _refused_transaction(self, p: Any, err: KafkaError, doing: str, *, abort: bool) -> CommitFailed:
        """A transaction refused as a whole. Only a fatal producer or a refused authorization is a halt:
        the rest passes (a stale member after a rebalance, a coordinator moving, a broker restarting), and
        what a letter itself was refused for was judged when it was produced or delivered."""
        verdict = judge(err.code(), retriable=err.retriable(), fatal=err.fatal())
        if verdict in (FATAL, UNAUTHORIZED):
            self._halt_reason = verdict
        if abort and not err.fatal():
            try:
                p.abort_transaction(TIMEOUT_S)
            except KafkaException as exc:  # the next begin_transaction reports what is left
                log.warning("aborting a transaction failed: %s", exc.args[0])
        if not self.failing:
            log.warning("%s failed (transactional.id %s): %s; letters and offsets are written again with the next "
                        "commit", doing, self._id, err)  # fmt: skip
        return CommitFailed(f"{doing}: {err.name()}: {err.str()}")
