"""The one place that commits offsets (with their replay metadata) to the consumer group.

Two kinds of commit, both carrying every range a partition may have sent (:mod:`connector.replay`):

- a *recording* commit, before batches are sent: asynchronous in the loop (its answer, served inside a
  later ``consume``, hands the batches to the senders), synchronous inside a revoke;
- a *progress* commit, every ``COMMIT_INTERVAL_S``: the resolved prefix of the partitions that moved;
  asynchronous, and synchronous (``force``) before partitions are let go.

A failed commit is logged, and no batch is recorded (nor sent) for ``COMMIT_BACKOFF_S``.

With exactly-once dead letters (:mod:`connector.transactions`), every commit is a transaction that also
writes the dead letters of the records it passes, one at a time: while one is in progress the next
waits (:attr:`Commits.ready`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from confluent_kafka import KafkaException

from connector.metrics import Metrics
from connector.models import TopicPartitionKey
from connector.partition import Partition
from connector.ports import Source, TransactionalSink
from connector.source.consumer import CommitFailed

log = logging.getLogger(__name__)

COMMIT_INTERVAL_S = 0.5
COMMIT_BACKOFF_S = 1.0

Commit = dict[TopicPartitionKey, tuple[int, str]]  # partition -> (offset, metadata)


class Commits:
    def __init__(
        self,
        source: Source,
        partitions: dict[TopicPartitionKey, Partition],
        metrics: Metrics,
        clock: Callable[[], float],
        transactions: TransactionalSink | None = None,
    ) -> None:
        self._source = source
        self._txn = transactions
        self._partitions = partitions  # the loop's own dict: partitions come and go
        self._metrics = metrics
        self._clock = clock
        self._last_progress = 0.0
        self.backoff_until = 0.0

    @property
    def ready(self) -> bool:
        """Whether a commit can start now (a transaction in progress makes the next one wait)."""
        return self._txn is None or not self._txn.busy

    def progress(self, now: float, force: bool = False) -> None:
        """Commit the partitions whose resolved prefix moved since their last commit."""
        if not force and (now - self._last_progress < COMMIT_INTERVAL_S or not self.ready):
            return
        self._last_progress = now
        moved = {tp: c for tp, part in self._partitions.items() if (c := part.to_commit()) is not None}
        if moved:
            self.commit(moved, None if force else (lambda ok: None))

    def commit(self, commits: Commit, then: Callable[[bool], None] | None) -> bool:
        """Commit; ``then(ok)`` runs when an asynchronous commit is answered. ``then`` None: synchronous,
        and the result is returned."""
        started = time.perf_counter()

        def done(error: Exception | None) -> None:
            if error is not None:
                log.warning("commit failed, will retry: %s", error)
                self.backoff_until = self._clock() + COMMIT_BACKOFF_S
            else:
                self._metrics.commit_duration.observe(time.perf_counter() - started)
                for tp, (offset, _) in commits.items():
                    if (part := self._partitions.get(tp)) is not None:
                        part.committed(offset)
                self._metrics.last_progress.set(time.time())
            if then is not None:
                then(error is None)

        offsets, metadata = {tp: c[0] for tp, c in commits.items()}, {tp: c[1] for tp, c in commits.items()}
        txn = self._txn if offsets else None
        # The group metadata is read here, in the loop's thread: the consumer is not to be called from
        # the transaction's thread while it is polled.
        try:
            group = self._source.group_metadata() if txn is not None else None
        except KafkaException as exc:  # the consumer cannot say now (closing, not in a group): a failed commit
            done(CommitFailed(f"the consumer's group metadata: {exc}"))
            return False

        def write(answer: Callable[[Exception | None], None] | None = None) -> None:
            if txn is not None:
                txn.commit(offsets, metadata, group, answer)
            else:
                self._source.commit(offsets, metadata, answer)

        if then is not None:
            write(done)
            return True
        try:
            write()
        except CommitFailed as exc:
            done(exc)
            return False
        done(None)
        return True
