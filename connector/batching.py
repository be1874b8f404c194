"""Micro-batching: the batch policy, and the lane that cuts one partition's records into batches.

Batches are drawn from one partition each and cut at offsets that can be replayed: a lane can be
given the offset ranges of batches that a previous owner of the partition may already have sent
(:func:`connector.replay.ranges_to_replay`), and it then cuts exactly those ranges again, so that
they get the same Request-ID and Altcraft deduplicates them. What happens to a batch once sealed
belongs to :class:`connector.partition.Partition`.

Pure: no Kafka, no HTTP, no clock (``now`` is passed in).
"""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from connector.models import TopicPartitionKey
from connector.ordering import ProfileKeys
from connector.replay import Range

LINGER_SPREAD = 0.2
_GOLDEN = 0.6180339887498949


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """When a batch is full or due: by item count, by body bytes as sent, by age."""

    max_items: int
    max_bytes: int
    linger_s: float

    # Lane.add applies the count and byte limits itself (once per record, without a call).

    def linger_of(self, partition: int) -> float:
        """The linger of one partition's batches: from 80% to 100% of ``linger_s``, spread over partitions.

        Partitions that receive records together open their batches together; with one linger they
        would also be sealed and sent together, every time, and their requests would queue behind each
        other at the API (measured at 20,000 events/s over 8 partitions with a 1 s linger: p99
        produced -> acknowledged 1.39 s with one linger, 1.06 s spread). Spread by the golden-ratio
        sequence, which keeps any set of partition numbers apart, their sealing times drift past each
        other instead.
        """
        return self.linger_s * (1.0 - LINGER_SPREAD * ((partition * _GOLDEN) % 1.0))


@dataclass(slots=True, eq=False)
class Batch:
    """Consecutive records of one partition; some became items, others were skipped or dead-lettered.

    Written only by its :class:`Lane` (while open) and its :class:`~connector.partition.Partition`."""

    tp: TopicPartitionKey
    first: int
    last: int
    opened_at: float
    size: int  # bytes of the request body if it were sent now
    # The offset range the Request-ID is derived from; differs from first..last only on replay.
    id_range: Range | None = None
    items: list[bytes] = field(default_factory=list)
    sources: list[object] = field(default_factory=list)  # the record behind each item
    replayed: bool = False
    # The profiles of its items (connector.ordering): ``keys``, and ``barrier`` when an item's is unknown.
    # Each key is kept as its hash, 8 bytes in an array, repeats and all: a set of 10,000 key strings
    # took 1.27 MB per batch, the array takes 0.08 MB. Two profiles whose hashes collide are only
    # ordered as if they were one.
    keys: array[int] = field(default_factory=lambda: array("q"))
    barrier: bool = False
    imports: bool = False  # its items are imported without engaging (profiles/import_batch)
    piece: int = 0  # the n-th batch cut from one replayed range (its records now of two kinds)
    held: int = 0  # estimated bytes of memory the batch keeps alive (items and their records)
    pending_dead_letters: int = 0
    answered: bool = False  # the API's outcome (or no request needed) is known

    @property
    def key_range(self) -> Range:
        return self.id_range or (self.first, self.last)

    @property
    def resolved(self) -> bool:
        return self.answered and self.pending_dead_letters == 0


class Lane:
    """Cuts the records of one partition into batches: open -> sealed, replayed ranges exactly."""

    __slots__ = ("_on_seal", "_open", "_overhead", "_policy", "_ready", "_replay", "linger_s", "tp")

    def __init__(
        self,
        tp: TopicPartitionKey,
        policy: BatchPolicy,
        overhead: int,
        replay: Iterable[Range] = (),
        on_seal: Callable[[Batch], None] | None = None,
    ):
        self.tp = tp
        self._policy = policy
        self.linger_s = policy.linger_of(tp[1])
        self._overhead = overhead  # body bytes of an empty request
        self._open: Batch | None = None
        self._ready: deque[Batch] = deque()
        self._replay = deque(sorted(replay))
        self._on_seal = on_seal

    def add(
        self,
        offset: int,
        item: bytes | None,
        source: object,
        now: float,
        weight: int = 0,
        key: ProfileKeys = None,
        imports: bool = False,
    ) -> Batch:
        """Append one record and return its batch; ``item`` is None for a record that will not be sent.

        ``weight``: the memory the record keeps alive while its batch is held (for the memory bound);
        ``key``: the profile(s) the item is about (None: unknown); ``imports``: the item is imported
        without engaging. A batch holds items of one kind: a change of kind cuts it."""
        replay = self._replay
        while replay and offset > replay[0][1]:
            self._seal_replayed(replay.popleft())
        if replay and offset >= replay[0][0]:
            rng = replay[0]
            batch = self._open
            if (
                batch is None
                or batch.id_range != rng
                or (item is not None and batch.items and batch.imports != imports)
            ):
                piece = batch.piece + 1 if batch is not None and batch.id_range == rng else 0
                self.seal()
                batch = self._open = Batch(self.tp, offset, offset, now, self._overhead, id_range=rng, replayed=True,
                                           imports=imports, piece=piece)  # fmt: skip
            elif item is not None and not batch.items:
                batch.imports = imports
            batch.last = offset
            if item is not None:
                batch.size += len(item) + (1 if batch.items else 0)
                batch.items.append(item)
                batch.sources.append(source)
                _note_key(batch, key)
            batch.held += weight
            if offset == rng[1]:
                replay.popleft()
                self.seal()
            return batch
        # A batch is cut before an item that would take it past max_items or max_bytes (as sent, with
        # the commas), and sealed as soon as it holds max_items.
        policy = self._policy
        current = self._open
        if (
            current is not None
            and item is not None
            and current.items
            and (
                len(current.items) >= policy.max_items
                or current.size + len(item) + 1 > policy.max_bytes
                or current.imports != imports
            )
        ):
            self.seal()
            current = None
        if current is None:
            current = self._open = Batch(self.tp, offset, offset, now, self._overhead, imports=imports)
        elif item is not None and not current.items:
            current.imports = imports
        current.last = offset
        current.held += weight
        if item is not None:
            items = current.items
            current.size += len(item) + 1 if items else len(item)
            items.append(item)
            current.sources.append(source)
            if type(key) is str:
                current.keys.append(hash(key))
            else:
                _note_key(current, key)
            if len(items) >= policy.max_items:
                self.seal()
        return current

    def _seal_replayed(self, rng: Range) -> None:
        if self._open is not None and self._open.id_range == rng:
            self.seal()

    def seal(self) -> Batch | None:
        batch, self._open = self._open, None
        if batch is not None:
            self._ready.append(batch)
            if self._on_seal is not None:
                self._on_seal(batch)
        return batch

    def due_in(self, now: float) -> float | None:
        """Seconds until the open batch is due by age; None when no batch is waiting for its time."""
        batch = self._open
        if batch is None or batch.replayed:
            return None
        return max(0.0, batch.opened_at + self.linger_s - now)

    def seal_if_due(self, now: float) -> None:
        batch = self._open
        if batch is not None and not batch.replayed and now - batch.opened_at >= self.linger_s:
            self.seal()

    def seal_for_stop(self) -> None:
        """Seal the open batch, unless it is a recorded range read only in part: sent now, it would not
        match its first answer; dropped unsent, it stays uncommitted and is replayed whole next time."""
        if self._open is not None and self._open.replayed:
            self._open = None
        else:
            self.seal()

    # -- the sealed batches, in offset order

    def take(self, batch: Batch) -> None:
        """Take a sealed batch out (it is being sent)."""
        if self._ready[0] is batch:
            self._ready.popleft()
        else:
            self._ready.remove(batch)

    def put_back(self, batch: Batch) -> None:
        """Put a batch taken by :meth:`take` back in its place (it is sent again later)."""
        ready = self._ready
        at = next((i for i, b in enumerate(ready) if b.first > batch.first), len(ready))
        ready.insert(at, batch)

    @property
    def open(self) -> Batch | None:
        return self._open

    @property
    def sealed(self) -> tuple[Batch, ...]:
        return tuple(self._ready)

    @property
    def empty(self) -> bool:
        return self._open is None and not self._ready

    @property
    def held(self) -> int:
        """Estimated memory kept alive by the open and sealed batches."""
        total = sum(b.held for b in self._ready)
        if self._open is not None:
            total += self._open.held
        return total

    @property
    def backlog(self) -> int:
        """Sealed batches waiting for their turn."""
        return len(self._ready)


def _note_key(batch: Batch, key: ProfileKeys) -> None:
    if key is None:
        batch.barrier = True
    elif type(key) is str:
        batch.keys.append(hash(key))
    else:
        batch.keys.extend(map(hash, key))
