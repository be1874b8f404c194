"""One assigned partition: its batches from the first record to the committed offset. Pure.

A batch's life, owned here from end to end::

    open --seal--> sealed --start--> in flight --answered--> answered --dead letters confirmed--> resolved
                     ^                    |
                     +----requeue---------+   (the sender failed, or is stopping: same range, same key)

A partition sends one batch at a time, in offset order. A batch without items (every record skipped
or dead-lettered) needs no request: it is answered when its turn comes. A batch is resolved once
answered and every dead letter of it is confirmed; the committed offset is the end of the resolved
prefix (:class:`~connector.source.offsets.PartitionOffsets`). What the commit records, and what the
next owner replays, follows the rule of :mod:`connector.replay`.

No Kafka, no HTTP, no clock: the loop passes ``now`` in and does the I/O.
"""

from __future__ import annotations

from connector.batching import Batch, BatchPolicy, Lane
from connector.models import TopicPartitionKey
from connector.replay import Range, format_metadata, ranges_to_replay, record_before_send
from connector.source.offsets import PartitionOffsets

BACKLOG_PAUSE = 2  # sealed batches waiting in one partition before it is paused


class Partition:
    """The loop's view of one partition: what to send next, what to commit, whether to pause."""

    def __init__(
        self, tp: TopicPartitionKey, policy: BatchPolicy, overhead: int, committed: int | None, metadata: str
    ) -> None:
        self.tp = tp
        self.replay: list[Range] = ranges_to_replay(committed, metadata)
        self._offsets = PartitionOffsets(committed)
        self._committed = committed
        self._lane = Lane(tp, policy, overhead, self.replay, on_seal=self._sealed)
        self._inflight: Batch | None = None
        self._sent: list[Batch] = []  # sent (or about to be), not yet passed by the committed offset
        self._held_until: float | None = None
        self._send_paused_until: float | None = None
        self.dropped = False  # revoked or lost: answers and confirmations that arrive late change nothing

    # -- records

    def add(
        self, offset: int, item: bytes | None, source: object, now: float, weight: int = 0, dead: bool = False
    ) -> Batch:
        """One record's verdict: an item to send, or none (skipped, or ``dead``: a dead letter is on its
        way and the batch waits for its confirmation)."""
        batch = self._lane.add(offset, item, source, now, weight)
        if dead:
            batch.pending_dead_letters += 1
        return batch

    def dead_letter_confirmed(self, batch: Batch) -> None:
        batch.pending_dead_letters -= 1
        self._settle(batch)

    def hold(self, until: float) -> None:
        """A record could not be read for a passing reason: read nothing more of this partition until then."""
        self._held_until = until

    def held(self, now: float) -> bool:
        if self._held_until is not None and now >= self._held_until:
            self._held_until = None
        return self._held_until is not None

    # -- time

    def due_in(self, now: float) -> float | None:
        return self._lane.due_in(now)

    def seal_if_due(self, now: float) -> None:
        self._lane.seal_if_due(now)

    def seal_for_stop(self) -> None:
        self._lane.seal_for_stop()

    # -- sending

    def next_to_send(self, now: float) -> Batch | None:
        """The oldest sealed batch when nothing of this partition is in flight or paused. Batches
        without items are answered on the way (no request needed)."""
        if self._inflight is not None:
            return None
        if self._send_paused_until is not None:
            if now < self._send_paused_until:
                return None
            self._send_paused_until = None
        lane = self._lane
        while (batch := lane.peek()) is not None and not batch.items:
            lane.pop()
            batch.answered = True
            self._settle(batch)
        return batch

    def record(self, batch: Batch) -> tuple[int, str]:
        """The offset and metadata to commit before ``batch`` is sent (see :mod:`connector.replay`)."""
        recorded = [b.key_range for b in self._sent if b is not batch]
        return record_before_send(self._offsets.committable(), batch.first, recorded, batch.key_range)

    def start(self, batch: Batch) -> None:
        """``batch`` (the head of the sealed ones) goes to a sender; its range is recorded."""
        assert self._lane.peek() is batch and self._inflight is None
        self._lane.pop()
        self._inflight = batch
        if batch not in self._sent:  # a batch sent again after a failure is listed once
            self._sent.append(batch)

    def in_flight(self, batch: Batch) -> bool:
        return not self.dropped and self._inflight is batch

    @property
    def inflight(self) -> Batch | None:
        return self._inflight

    def requeue(self, batch: Batch, pause_until: float | None = None) -> None:
        """The sender gave ``batch`` back unanswered: it goes first again (same range, same key),
        after ``pause_until`` when the sender itself failed."""
        assert self._inflight is batch
        self._inflight = None
        self._lane.push_front(batch)
        self._send_paused_until = pause_until

    def answered(self, batch: Batch, dead_letters: int) -> list[object]:
        """The platform answered for every item; ``dead_letters`` of them are on their way to the
        dead-letter topic. Returns the records behind the items (by item index); the items are let go."""
        assert self._inflight is batch
        self._inflight = None
        batch.answered = True
        batch.pending_dead_letters += dead_letters
        sources = batch.sources
        batch.items = []
        batch.held = 0
        self._settle(batch)
        return sources

    def _sealed(self, batch: Batch) -> None:
        self._offsets.track(batch.first, batch.last)

    def _settle(self, batch: Batch) -> None:
        if batch.resolved and not self.dropped:
            self._offsets.resolve(batch.first)
            batch.sources = []

    # -- committing

    def to_commit(self) -> tuple[int, str] | None:
        """The offset and metadata to commit, when the resolved prefix moved since the last commit."""
        offset = self._offsets.committable()
        if offset is None or offset == self._committed:
            return None
        self._sent = [b for b in self._sent if b.last >= offset]
        return offset, format_metadata(b.key_range for b in self._sent)

    def committed(self, offset: int) -> None:
        self._committed = offset if self._committed is None else max(self._committed, offset)

    @property
    def committed_offset(self) -> int | None:
        return self._committed

    # -- state

    def should_pause(self, now: float, *, halted: bool, stopping: bool, over_budget: bool) -> bool:
        """Stop fetching: halted or stopping, backed up, waiting out a transient fault, or holding
        records while the connector is over its memory budget."""
        return (
            halted
            or stopping
            or self._lane.backlog >= BACKLOG_PAUSE
            or self.held(now)
            or (over_budget and not self.idle)
        )

    @property
    def idle(self) -> bool:
        """Nothing open, sealed or in flight."""
        return self._lane.empty and self._inflight is None

    @property
    def busy(self) -> bool:
        """A request in flight, or a batch sent and not resolved (its dead letters are on their way)."""
        return self._inflight is not None or any(not b.resolved for b in self._sent)

    @property
    def settled(self) -> bool:
        """Nothing left to send or to wait for."""
        return self.idle and not self.busy

    @property
    def memory(self) -> int:
        """Estimated bytes kept alive by this partition's open, sealed and in-flight batches."""
        held = self._lane.held
        return held + self._inflight.held if self._inflight is not None else held

    @property
    def backlog(self) -> int:
        return self._lane.backlog
