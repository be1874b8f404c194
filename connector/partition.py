"""One assigned partition: its batches from the first record to the committed offset. Pure.

A batch's life, owned here from end to end::

    open -seal-> sealed -record-> recording -confirmed-> recorded -send-> in flight -answered-> answered
                   ^                  |                    ^                 |                     |
                   +--commit failed---+                    +-sender failed---+   dead letters confirmed
                                                             or stopping                         |
                                                           (same range, same key)             resolved

Batches are recorded ahead of the senders (up to a partition's cap, while earlier ones are in flight),
so that a request that ends is followed at once by a recorded batch, without waiting for a commit.
Several batches of a partition may be in flight at once, up to the cap, when the ordering rule of
:mod:`connector.ordering` lets them (their profiles are disjoint from those of earlier batches still
unanswered); a sealed batch stays in its lane, in offset order, until it is sent. A batch without
items (every record skipped or dead-lettered) needs no request: it is answered when sealed. A batch
is resolved once answered and every dead letter of it is confirmed; the committed offset is the end
of the resolved prefix (:class:`~connector.source.offsets.PartitionOffsets`). What the commit
records, and what the next owner replays, follows the rule of :mod:`connector.replay`.

No Kafka, no HTTP, no clock: the loop passes ``now`` in and does the I/O.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable

from connector.batching import Batch, BatchPolicy, Lane
from connector.models import TopicPartitionKey
from connector.ordering import choose
from connector.replay import Range, format_metadata, ranges_to_replay, record_before_send
from connector.source.offsets import PartitionOffsets

# Sealed batches waiting in one partition before it is paused: at least this many (see backlog_limit).
BACKLOG_PAUSE = 2
# ... and at least this many records' worth of batches: what librdkafka keeps prefetched for a partition
# (queued.min.messages, connector.source.consumer), so that a partition of small batches that go one at a
# time has work sealed when its request ends instead of waiting for a fetch after each resume. At most
# BACKLOG_MAX batches from this rule: a stop or a revoke finishes the waiting batches too, and the
# ordering rule walks them each time it is asked.
BACKLOG_RECORDS = 10_000
BACKLOG_MAX = 8


def backlog_limit(max_in_flight: int, per_partition: int, partitions: int, max_items: int) -> int:
    """How many sealed batches a partition may keep waiting before it is paused: its share of the
    requests in flight (at most its own cap), and batches of :data:`BACKLOG_RECORDS` records (at most
    :data:`BACKLOG_MAX`); at least :data:`BACKLOG_PAUSE`.

    One partition behind a slow API keeps the next wave of requests ready (8 in flight: 8 sealed), while
    many partitions sharing few requests keep two each, so memory does not grow with the partition
    count. With 1,000-item batches a partition keeps eight: consecutive batches of a partition often share
    a profile and go one after another, and with two waiting the partition was paused and resumed after
    every request, the loop waiting for a fetch each time (measured at 1,000-item batches, 8 partitions,
    4 in flight: 28,300 events/s keeping two, 29,800 four, 32,100 eight, 32,600 sixteen; medians of 4,
    side by side). That is fewer records than two batches of 10,000 hold, and the memory budget
    (``batching.max_buffered_bytes``) bounds all partitions together as before."""
    share = min(per_partition, max_in_flight // max(1, partitions))
    depth = min(BACKLOG_MAX, -(-BACKLOG_RECORDS // max(1, max_items)))
    return max(BACKLOG_PAUSE, share, depth)


def plan_dispatch(
    parts: list[Partition], capacity: int, turn: int, take: Callable[[Partition, int], list[Batch]]
) -> list[tuple[Partition, Batch]]:
    """Share ``capacity`` among the partitions: ``take(part, n)`` gives (and marks) at most ``n`` of a
    partition's batches, to record (:meth:`Partition.to_record`) or to send (:meth:`Partition.to_send`).

    Fair shares: first one batch per partition, then the rest of the capacity; the partition that goes
    first turns with ``turn``. (In assignment order, the first partitions took every free request and
    the last ones starved while those had batches ready: measured with 4 partitions, 2 in flight and a
    0.15 s API, committed offsets after 6 s were 2,648 / 2,591 / 100 / 0.)"""
    if parts:
        k = turn % len(parts)
        parts = parts[k:] + parts[:k]
    planned: list[tuple[Partition, Batch]] = []
    for share in (1, capacity):
        for part in parts:
            if capacity <= 0:
                break
            chosen = take(part, min(share, capacity))
            capacity -= len(chosen)
            planned += [(part, batch) for batch in chosen]
    return planned


# Commit metadata is kept within the broker's default offset.metadata.max.bytes (4,096): a partition
# starts no new batch while the ranges it records would not fit (about 180 ranges); they shrink as the
# oldest batches resolve.
METADATA_BUDGET = 4000


class Partition:
    """The loop's view of one partition: what to send next, what to commit, whether to pause."""

    def __init__(
        self,
        tp: TopicPartitionKey,
        policy: BatchPolicy,
        overhead: int,
        committed: int | None,
        metadata: str,
        max_in_flight: int = 1,
    ) -> None:
        self.tp = tp
        self.replay: list[Range] = ranges_to_replay(committed, metadata)
        self._offsets = PartitionOffsets(committed)
        self._committed = committed
        self._lane = Lane(tp, policy, overhead, self.replay, on_seal=self._sealed)
        self._max_in_flight = max_in_flight
        # Sealed batches stay in the lane until sent; some of them are
        self._recording: list[Batch] = []  # named in a commit not confirmed yet,
        self._recorded: list[Batch] = []  # or in a confirmed one: they may be sent.
        self._inflight: list[Batch] = []  # with a sender
        self._sent: list[Batch] = []  # recorded (or being recorded), not yet passed by the committed offset
        # Ranges the previous owner recorded and this one has not passed: listed in every commit until
        # passed, recorded again or not, so that a crash before they are resent loses none of them.
        self._replaying: list[Range] = list(self.replay)
        self._held_until: float | None = None
        self._send_paused_until: float | None = None
        self._changed = True  # something the ordering rule looks at changed since the last choice
        self.dropped = False  # revoked or lost: answers and confirmations that arrive late change nothing
        # One record's verdict (Lane.add, called directly: once per record): an item to send, about the
        # profile ``key``, imported or engaged, or none (a skipped record, ``item`` None).
        self.add = self._lane.add

    # -- records

    def add_dead(self, offset: int, source: object, now: float) -> Batch:
        """A record whose dead letter is on its way: its batch waits for the broker's confirmation."""
        batch = self._lane.add(offset, None, source, now)
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

    def to_record(self, limit: int) -> list[Batch]:
        """Sealed batches to name in the next recording commit, oldest first, at most ``limit`` and this
        partition's cap of batches recorded ahead of the senders (being recorded, or recorded and
        waiting); the metadata budget decides too. Each is marked as being recorded."""
        n = min(limit, self._max_in_flight - len(self._recording) - len(self._recorded))
        if n <= 0:
            return []
        room = METADATA_BUDGET - len(format_metadata(self._listed()))
        out: list[Batch] = []
        for batch in self._lane.sealed:
            if len(out) >= n:
                break
            if batch in self._recording or batch in self._recorded:
                continue
            if batch not in self._sent:  # a batch recorded before (its commit failed since) is listed once
                if batch.key_range not in self._replaying:  # a replayed range is listed already
                    first, last = batch.key_range
                    room -= len(f"{first}-{last};")
                    if room < 0:
                        break
                self._sent.append(batch)
            self._recording.append(batch)
            out.append(batch)
        return out

    def recorded(self, batch: Batch) -> bool:
        """The commit naming ``batch`` is confirmed: it may be sent (True) unless let go meanwhile."""
        if self.dropped or batch not in self._recording:
            return False
        self._recording.remove(batch)
        self._recorded.append(batch)
        self._changed = True
        return True

    def not_recorded(self, batch: Batch) -> None:
        """The commit naming ``batch`` failed: it is recorded again before it is sent (its range stays in
        the metadata meanwhile: it may have reached the broker)."""
        if batch in self._recording:
            self._recording.remove(batch)
            self._changed = True

    def to_send(self, now: float, limit: int) -> list[Batch]:
        """Recorded batches that go to the senders now, at most ``limit`` and this partition's cap of
        requests in flight; the ordering rule and the sender-fault pause decide. Each is marked in flight."""
        if self._send_paused_until is not None:
            if now < self._send_paused_until:
                return []
            self._send_paused_until = None
            self._changed = True
        if not self._changed or not self._recorded:
            return []
        self._changed = False
        n = min(limit, self._max_in_flight - len(self._inflight))
        if n <= 0:
            return []
        recorded = self._recorded
        out = choose(self._lane.sealed, self._inflight, n, lambda b: b in recorded)
        if len(out) == limit:
            self._changed = True  # more may go in the loop's next pass
        for batch in out:
            self._lane.take(batch)
            self._recorded.remove(batch)
            self._inflight.append(batch)
        return out

    def metadata(self) -> tuple[int, str]:
        """The offset and metadata every commit carries now: the resolved prefix (or, before anything
        is resolved, the first offset recorded), and every range that may reach the API."""
        return record_before_send(self._offsets.committable(), self._listed())

    def _listed(self) -> list[Range]:
        """Every range that may reach (or may have reached) the API: those recorded here, and those of the
        previous owner still to be resent. In offset order, each once."""
        ranges = [b.key_range for b in self._sent]
        if self._replaying:
            ranges = sorted({*ranges, *self._replaying})
        return ranges

    def in_flight(self, batch: Batch) -> bool:
        return not self.dropped and batch in self._inflight

    @property
    def inflight(self) -> list[Batch]:
        return list(self._inflight)

    @property
    def recording(self) -> int:
        """Batches named in a commit not confirmed yet."""
        return len(self._recording)

    @property
    def ahead(self) -> int:
        """Batches recorded ahead of the senders: being recorded, or recorded and waiting for a request."""
        return len(self._recording) + len(self._recorded)

    def requeue(self, batch: Batch, pause_until: float | None = None) -> None:
        """The sender gave ``batch`` back unanswered: it waits again in its place (same range, same key,
        still recorded), and the partition sends nothing before ``pause_until`` when the sender itself
        failed."""
        self._inflight.remove(batch)
        self._lane.put_back(batch)
        self._recorded.append(batch)
        if pause_until is not None:
            self._send_paused_until = pause_until
        self._changed = True

    def answered(self, batch: Batch, dead_letters: int) -> list[object]:
        """The platform answered for every item; ``dead_letters`` of them are on their way to the
        dead-letter topic. Returns the records behind the items (by item index); the items are let go."""
        self._inflight.remove(batch)
        self._changed = True
        batch.answered = True
        batch.pending_dead_letters += dead_letters
        sources = batch.sources
        batch.items = []
        batch.keys = array("q")  # the ordering rule looks at unanswered batches only
        batch.held = 0
        self._settle(batch)
        return sources

    def let_go_of_recording(self) -> None:
        """Revoked: batches whose recording commit is not confirmed are not sent by this member before
        they are recorded again (the confirmation is served only in a later consume)."""
        self._recording.clear()
        self._changed = True

    def _sealed(self, batch: Batch) -> None:
        self._offsets.track(batch.first, batch.last)
        self._changed = True
        if not batch.items:  # nothing to send: answered at once, resolved once its dead letters are
            self._lane.take(batch)
            batch.answered = True
            self._settle(batch)

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
        self._replaying = [r for r in self._replaying if r[1] >= offset]
        return offset, format_metadata(self._listed())

    def committed(self, offset: int) -> None:
        self._committed = offset if self._committed is None else max(self._committed, offset)

    @property
    def committed_offset(self) -> int | None:
        return self._committed

    # -- state

    def should_pause(
        self, now: float, *, halted: bool, stopping: bool, over_budget: bool, backlog: int = BACKLOG_PAUSE
    ) -> bool:
        """Stop fetching: halted or stopping, ``backlog`` sealed batches waiting, waiting out a transient
        fault, or holding records while the connector is over its memory budget."""
        return halted or stopping or self._lane.backlog >= backlog or self.held(now) or (over_budget and not self.idle)

    @property
    def idle(self) -> bool:
        """Nothing open, sealed (recorded or not) or in flight."""
        return self._lane.empty and not self._inflight

    @property
    def busy(self) -> bool:
        """A request in flight or being recorded, or a batch sent and not resolved (its dead letters
        are on their way)."""
        return bool(self._inflight or self._recording) or any(not b.resolved for b in self._sent)

    @property
    def settled(self) -> bool:
        """Nothing left to send or to wait for."""
        return self.idle and not self.busy

    @property
    def memory(self) -> int:
        """Estimated bytes kept alive by this partition's open, sealed (recorded or not) and in-flight
        batches; an in-flight batch also has its request body, a copy of its items, built by its sender."""
        return self._lane.held + sum(b.held + b.size for b in self._inflight)

    @property
    def backlog(self) -> int:
        return self._lane.backlog
