"""The one loop. Its parts are built by :mod:`connector.compose` and handed in through the ports
of :mod:`connector.ports`; each partition's state is a :class:`~connector.partition.Partition`.

Each turn of :meth:`Connector.step`:

1. serve dead-letter delivery reports; note that the loop is alive;
2. take up to ``consume_batch_size`` records from Kafka (rebalance callbacks run in here);
3. put each record through its route (decode -> op policy -> map -> serialize) into its partition;
4. take in the answers of finished requests: accepted items resolve, rejected ones become dead letters
   (:mod:`connector.answers`, with the breaker);
5. seal batches whose linger time is over;
6. send recorded batches to the sender threads (batches of one partition go in parallel only when
   their profiles are disjoint: :mod:`connector.ordering`), and record the next sealed ones ahead, one
   wave at most, in the commit metadata (the rule of :mod:`connector.replay`);
7. show halts; pause partitions that are backed up or halted, resume the others;
8. commit the contiguous resolved prefix of each partition, with its metadata (:mod:`connector.commits`);
9. every few seconds: lag and state gauges.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from connector.answers import Answers
from connector.batching import Batch, BatchPolicy
from connector.commits import Commits
from connector.config import Mode, Settings
from connector.errors import TransientError
from connector.health import HealthServer, HealthState
from connector.logs import HaltLog, UnexpectedLog
from connector.metrics import Metrics
from connector.models import ImportItem, SendOutcome, TopicPartitionKey, Unsent
from connector.partition import Partition, backlog_limit, plan_dispatch
from connector.ports import DeadLetterSink, Record, Source, TransactionalSink
from connector.replay import request_id
from connector.routing import Route
from connector.senders import Senders
from connector.sink.client import Abandoned, SendJob
from connector.sink.halt import HaltState
from connector.source.consumer import Assigned

log = logging.getLogger(__name__)

GAUGE_INTERVAL_S = 5.0
HOLD_S = 2.0  # pause of a partition whose next record hit a transient fault
RECORD_OVERHEAD = 400  # bytes a held record costs beyond its value and item (Message object, list slots)
SEND_FAULT_PAUSE_S = 5.0  # wait before resending a batch whose sender failed unexpectedly
BUSY_POLL_S = 0.02  # the longest a consume blocks while requests are out (a request's end cannot wake it)
RECORDING_CONSUME = 1_000  # the most records one consume takes while a recording commit awaits its answer


@dataclass
class Parts:
    """Everything the loop talks to, built by :func:`connector.compose.build` (or by a test)."""

    source: Source
    dead_letters: DeadLetterSink
    senders: Senders
    routes: dict[str, Route]  # by topic
    metrics: Metrics
    health: HealthState = field(default_factory=HealthState)
    halt: HaltState = field(default_factory=HaltState)
    health_server: HealthServer | None = None
    # Exactly-once dead letters: the same object as dead_letters, committing offsets in transactions.
    transactions: TransactionalSink | None = None
    tickers: list[Callable[[float], None]] = field(default_factory=list)  # called every GAUGE_INTERVAL_S
    closers: list[Callable[[], None]] = field(default_factory=list)  # called once, at the end of the shutdown


class Connector:
    """Turns the loop until :meth:`request_stop`."""

    def __init__(self, settings: Settings, parts: Parts, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:  # fmt: skip
        self.settings = settings
        self._p = parts
        self.metrics, self.health, self.halt = parts.metrics, parts.health, parts.halt
        self.registry = parts.metrics.registry
        self._clock, self._sleep = clock, sleep
        b = settings.batching
        self._policy = BatchPolicy(b.max_items, b.max_bytes, b.linger_s)
        self.partitions: dict[TopicPartitionKey, Partition] = {}
        self._stop_requested = threading.Event()
        self._stop_deadline: float | None = None  # set once, when the stop request is first seen
        self._answers = Answers(
            parts.routes, parts.dead_letters, parts.metrics, parts.halt, settings.dead_letter, clock
        )
        self._last_gauges = 0.0
        self._dispatches = 0
        self._commits = Commits(parts.source, self.partitions, parts.metrics, clock, parts.transactions)
        self._unexpected_log, self._halt_log = UnexpectedLog(), HaltLog()

    # ------------------------------------------------------------------ lifecycle

    def request_stop(self) -> None:
        """Safe from a signal handler: only sets a flag."""
        self._stop_requested.set()

    def _drain_deadline(self) -> float:
        """The one drain budget of the shutdown: ``drain_timeout_s`` from the moment the stop request
        was first seen, whichever phase sees it (the loop, a revoke's drain, the shutdown itself).
        Before a stop request, a revoke gets a budget of its own."""
        if not self._stop_requested.is_set():
            return self._clock() + self.settings.shutdown.drain_timeout_s
        if self._stop_deadline is None:
            self._stop_deadline = self._clock() + self.settings.shutdown.drain_timeout_s
        return self._stop_deadline

    def start(self) -> None:
        if self._p.health_server is not None:
            self._p.health_server.start()
        if self._p.transactions is not None:  # before joining: aborts what a predecessor left open
            self._p.transactions.init()
        self._p.source.subscribe(
            self.settings.topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        log.info("connector started: group %s, topics %s", self.settings.kafka.group_id, self.settings.topics)

    def run(self) -> int:
        self.start()
        try:
            while not self._stop_requested.is_set():
                self.step()
            return self.shutdown()
        finally:
            if self._p.health_server is not None:
                self._p.health_server.stop()

    # ------------------------------------------------------------------ the loop

    def step(self) -> None:
        p = self._p
        # 1. delivery reports, liveness
        p.dead_letters.poll()
        self.health.beat()
        # 2. consume (rebalance callbacks and commit answers run inside); while a recording commit waits
        # for its answer, take little (one batch's worth at most), so that the next consume, which serves
        # it, comes soon: the recorded batches wait less, and fewer records are held meanwhile. (Taking
        # that little whenever requests were out cost 5-15% more CPU per event at 1,000-item batches in
        # two measurements, for no more throughput: the batches recorded ahead keep the senders fed.)
        parts = self.partitions.values()
        size = self.settings.kafka.consume_batch_size
        if any(part.recording for part in parts):
            size = min(size, self.settings.batching.max_items, RECORDING_CONSUME)
        records = p.source.consume(size, self._poll_timeout())
        now = self._clock()
        # 3. route each record into its partition
        if records:
            self._ingest(records, now)
        # 4. answers of finished requests
        self._collect_results()
        # 5. linger
        for part in self.partitions.values():
            part.seal_if_due(now)
        # 6. send
        self._dispatch(now)
        # 7. halts, flow control
        self._flow_control(now)
        # 8. commit
        self._commits.progress(now)
        # 9. gauges
        self.metrics.flush_counts()
        if now - self._last_gauges >= GAUGE_INTERVAL_S:
            self._last_gauges = now
            self._update_gauges(now)

    def _poll_timeout(self) -> float:
        """How long the next consume may block: no longer than until the oldest open batch is due, so
        that a batch is sealed on time rather than up to a poll later, and :data:`BUSY_POLL_S` while an
        answer is awaited that nothing would wake the consume for: a request's end, or a commit's or a
        transaction's (the next transaction waits for it) while sealed batches wait (recorded or not:
        a batch stays in the backlog until it is sent)."""
        parts = self.partitions.values()
        busy = self._p.senders.inflight or not self._commits.ready or any(p.backlog for p in parts)
        timeout = min(self.settings.kafka.consume_timeout_s, BUSY_POLL_S if busy else 3600.0)
        now = self._clock()
        return min([timeout, *(d for part in parts if (d := part.due_in(now)) is not None)])

    # 3.
    def _ingest(self, records: Sequence[Record], now: float) -> None:
        parts, routes, metrics = self.partitions, self._p.routes, self.metrics
        # A poll returns runs of records from one partition: partition and route are looked up once per run.
        run: tuple[str | None, int | None] = (None, None)
        part: Partition | None = None
        route: Route | None = None
        consumed = 0
        for msg in records:
            key = (msg.topic(), msg.partition())
            if key != run:
                if route is not None:
                    metrics.count_consumed(route.name, consumed)
                run, consumed = key, 0
                part = parts.get((key[0] or "", key[1] or 0))
                if part is not None and part.held(now):
                    part = None
                route = routes[part.tp[0]] if part is not None else None
            if part is None or route is None:  # revoked in this very poll, or waiting out a transient fault
                continue
            value = msg.value()
            offset = msg.offset() or 0
            try:
                prepared = route.prepare(value)
            except TransientError as exc:
                log.warning("%s[%d] offset %d: %s; retrying in %.0f s", *part.tp, offset, exc, HOLD_S)
                part.hold(now + HOLD_S)  # read again from here, never dead-lettered
                self._p.source.pause([part.tp])
                self._p.source.seek(part.tp, offset)
                metrics.count_consumed(route.name, consumed)
                part = route = None
                consumed = 0
                continue
            consumed += 1
            if type(prepared) is bytes or type(prepared) is ImportItem:
                item = prepared if type(prepared) is bytes else prepared.item  # type: ignore[union-attr]
                weight = len(item) + len(value or b"") + RECORD_OVERHEAD
                part.add(offset, item, msg, now, weight, key=route.key, imports=item is not prepared)
                continue
            assert isinstance(prepared, Unsent)
            if prepared.dead is None:
                part.add(offset, None, msg, now)
                metrics.count_skipped(route.name, prepared.skip or "")
                continue
            batch = part.add_dead(offset, msg, now)
            if prepared.unexpected:
                self._unexpected_log.record(*part.tp, offset, prepared.dead, now)
            self._answers.dead_letter(part, batch, msg, prepared.dead, route.name)
            self._answers.judge(0, 1)
        if route is not None:
            metrics.count_consumed(route.name, consumed)

    # 4.
    def _collect_results(self) -> None:
        for batch, outcome in self._p.senders.results():
            part = self.partitions.get(batch.tp)
            if part is None or not part.in_flight(batch):
                continue  # revoked or lost meanwhile
            if isinstance(outcome, SendOutcome):
                self._answers.apply(part, batch, outcome)
                continue
            pause_until = None
            if not isinstance(outcome, Abandoned):
                # Not a decision of the classifier: a fault of the sender itself. The batch is sent again
                # with the same Request-ID, after a pause so that a fault that repeats does not spin.
                log.error("%s[%d]: sending batch %s failed unexpectedly; it will be sent again in %.0f s",
                          *batch.tp, batch.key_range, SEND_FAULT_PAUSE_S, exc_info=outcome)  # fmt: skip
                pause_until = self._clock() + SEND_FAULT_PAUSE_S
            part.requeue(batch, pause_until)

    # 6.
    def _dispatch(self, now: float, sync: bool = False) -> None:
        """Send the recorded batches that may go; record the next ones ahead of the senders."""
        if self.halt:
            return  # halted: the in-flight senders probe; nothing new goes out
        self._send(now)
        if now < self._commits.backoff_until or not (sync or self._commits.ready):
            return
        # One wave of batches recorded ahead: when a request ends, the next is sent at once.
        capacity = self.settings.altcraft.max_in_flight - sum(part.ahead for part in self.partitions.values())
        self._dispatches += 1
        planned = plan_dispatch(list(self.partitions.values()), capacity, self._dispatches, Partition.to_record)
        if not planned:
            return
        # Recorded before sent: one commit names every range that may be sent; its confirmation (served
        # inside a later consume; at once when ``sync``, in a revoke) lets them go.
        recorded = {part.tp: part.metadata() for part in {part for part, _ in planned}}
        if sync:
            self._recorded(planned, self._commits.commit(recorded, None))
        else:
            self._commits.commit(recorded, lambda ok: self._recorded(planned, ok))

    def _recorded(self, planned: list[tuple[Partition, Batch]], ok: bool) -> None:
        for part, batch in planned:
            if ok:
                part.recorded(batch)
            else:
                part.not_recorded(batch)
        if ok:
            self._send(self._clock())

    def _send(self, now: float) -> None:
        if self.halt:
            return
        capacity = self.settings.altcraft.max_in_flight - self._p.senders.inflight
        if capacity <= 0:
            return
        self._dispatches += 1
        parts = list(self.partitions.values())
        for _, batch in plan_dispatch(parts, capacity, self._dispatches, lambda p, n: p.to_send(now, n)):
            self._submit(batch)

    def _submit(self, batch: Batch) -> None:
        route = self._p.routes[batch.tp[0]]
        first, last = batch.key_range
        rid = request_id(self.settings.kafka.group_id, route.settings, batch.tp[0], batch.tp[1], first, last,
                         self.settings.altcraft.request_id_epoch, imports=batch.imports, piece=batch.piece)  # fmt: skip
        imported = route.import_shape if batch.imports else None
        mode, shape = (Mode.IMPORT, imported) if imported is not None else (route.settings.mode, route.shape)
        self._p.senders.submit(batch, SendJob(route.name, mode, shape, batch.items, rid))
        self.metrics.inflight.set(self._p.senders.inflight)

    # 7.
    def _flow_control(self, now: float) -> None:
        dlq_halt = self._p.dead_letters.halt_reason  # only the partitions waiting for those letters stall
        halts = set(self.halt.reasons()) | ({dlq_halt} if dlq_halt is not None else set())
        self.metrics.show_halts(halts)
        self.health.halted = bool(halts)
        self.metrics.dlq_stalled.set(1 if self._p.dead_letters.failing else 0)
        halted, stopping = bool(self.halt), self._stop_requested.is_set()
        over_budget = sum(p.memory for p in self.partitions.values()) > self.settings.batching.max_buffered_bytes
        a = self.settings.altcraft
        backlog = backlog_limit(
            a.max_in_flight, a.max_in_flight_per_partition, len(self.partitions), self.settings.batching.max_items
        )
        pausing = {
            tp: part.should_pause(now, halted=halted, stopping=stopping, over_budget=over_budget, backlog=backlog)
            for tp, part in self.partitions.items()
        }
        self._p.source.pause([tp for tp, yes in pausing.items() if yes])
        self._p.source.resume([tp for tp, yes in pausing.items() if not yes])

    # 9.
    def _update_gauges(self, now: float) -> None:
        self.metrics.inflight.set(self._p.senders.inflight)
        self.metrics.assigned_partitions.set(len(self.partitions))
        for tick in self._p.tickers:
            tick(now)
        self._answers.flush_log(now)
        reasons = self.halt.reasons()
        if (dlq_halt := self._p.dead_letters.halt_reason) is not None:
            reasons[dlq_halt] = f"the dead-letter topic {self.settings.dead_letter.topic} refuses letters"
        self._halt_log.remind(reasons, now)
        try:
            for (topic, part), lag in self._p.source.position_lag().items():
                self.metrics.lag.labels(topic, str(part)).set(lag)
        except Exception as exc:  # lag is informative only
            log.debug("lag not available: %s", exc)

    # ------------------------------------------------------------------ rebalances

    def _on_assign(self, assigned: list[Assigned]) -> None:
        self.health.joined = True
        for a in assigned:
            part = Partition(a.tp, self._policy, self._p.routes[a.tp[0]].shape.overhead, a.committed, a.metadata,
                             self.settings.altcraft.max_in_flight_per_partition)  # fmt: skip
            if part.replay:
                log.info("%s[%d]: replaying %d batch range(s) recorded before %s: %s",
                         *a.tp, len(part.replay), a.committed, part.replay)  # fmt: skip
            self.partitions[a.tp] = part

    def _on_revoke(self, tps: list[TopicPartitionKey]) -> None:
        """Finish the revoked partitions' batches, open ones included, within the drain deadline, commit,
        then let go: the next owner starts past every record read here, so no dead letter is written
        twice by a graceful rebalance."""
        deadline = self._drain_deadline()
        mine = [self.partitions[tp] for tp in tps if tp in self.partitions]
        for part in mine:
            part.let_go_of_recording()  # their recording commits are answered only in a later consume
            part.seal_for_stop()
        while self._clock() < deadline and not all(part.settled for part in mine):
            self._p.dead_letters.poll()
            self._collect_results()
            self._dispatch(self._clock(), sync=True)  # no consume in here: recorded synchronously
            self._sleep(0.01)
            deadline = min(deadline, self._drain_deadline())  # a SIGTERM meanwhile shortens the drain
        self._commits.progress(self._clock(), force=True)
        self._drop([part.tp for part in mine])

    def _on_lost(self, tps: list[TopicPartitionKey]) -> None:
        self._drop([tp for tp in tps if tp in self.partitions])
        if self._p.transactions is not None:
            self._p.transactions.lost()

    def _drop(self, tps: list[TopicPartitionKey]) -> None:
        for tp in tps:
            part = self.partitions.pop(tp)
            part.dropped = True
            self._p.dead_letters.forget(tp)
            for batch in part.inflight:
                self._p.senders.cancel(batch)
            with contextlib.suppress(KeyError):
                self.metrics.lag.remove(tp[0], str(tp[1]))

    # ------------------------------------------------------------------ shutdown

    def shutdown(self) -> int:
        """Stop fetching, finish open batches within the deadline, commit, leave the group."""
        p = self._p
        self.health.stopping = True
        deadline = self._drain_deadline()
        p.source.pause(list(self.partitions))
        for part in self.partitions.values():
            part.seal_for_stop()
        log.info("stopping: finishing open batches (deadline %.0f s)", self.settings.shutdown.drain_timeout_s)
        while self._clock() < deadline and any(not x.settled for x in self.partitions.values()):
            p.dead_letters.poll()
            p.source.consume(1, 0.05)  # keeps the membership and serves rebalances; partitions are paused
            self._collect_results()
            self._dispatch(self._clock())
            self._commits.progress(self._clock())
            self.metrics.flush_counts()
        unfinished = sorted(tp for tp, x in self.partitions.items() if not x.settled)
        p.senders.cancel_all()
        p.dead_letters.flush(max(0.0, deadline - self._clock()) + 1.0)
        p.dead_letters.poll()
        self._commits.progress(self._clock(), force=True)
        self.metrics.flush_counts()
        if unfinished:
            log.warning("stopped with unfinished batches in %s; the next owner resends them with the same "
                        "Request-IDs", unfinished)  # fmt: skip
        # Everything that could be committed is: forget the partitions, so that leaving the group does
        # not start a second drain in the revoke callback (one budget for the whole shutdown).
        self._drop(list(self.partitions))
        p.source.close()
        p.senders.close()
        for close in p.closers:
            close()
        log.info("stopped")
        return 0

    def senders_busy(self, timeout_s: float) -> bool:
        return self._p.senders.busy(timeout_s)
