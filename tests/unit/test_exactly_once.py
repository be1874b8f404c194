"""Exactly-once dead letters in the loop, over the fakes (connector.transactions, connector.ports):
a dead letter becomes visible only with the commit that passes its record, and once, whatever
crashes, losses, refused transactions and rebalances happen on the way."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from connector.app import Connector, Parts
from connector.metrics import Metrics
from connector.ports import FakeSource, FakeTransactions, reject
from connector.routing import Route
from connector.senders import Senders
from tests.unit.test_loop import TOPIC, Bed, source


class TxnBed(Bed):
    """The loop's test bed with the transactional sink: letters and offsets committed together."""

    def __init__(self, partitions: int = 1, answer: Any = None, **sections: Any) -> None:
        super().__init__(partitions, answer, **sections)
        self.txn = FakeTransactions(self.broker)

    def member(self, sender: Any = None, executor: Any = None) -> Connector:
        route = Route(self.settings.routes[0], self.settings.altcraft.max_body_bytes, self.decoder)
        parts = Parts(
            source=FakeSource(self.broker),
            dead_letters=self.txn,
            transactions=self.txn,
            senders=Senders(sender or self.sender, executor or self.executor),
            routes={TOPIC: route},
            metrics=Metrics(CollectorRegistry()),
        )
        c = Connector(self.settings, parts, clock=self.clock, sleep=self.sleep)
        c.start()
        return c

    def produce_mixed(self, n: int, bad: set[int], partition: int = 0) -> None:
        """``n`` records, those at the offsets in ``bad`` not JSON (dead-lettered at decode)."""
        for i in range(n):
            value = b"{not json" if i in bad else b'{"email": "u%d@example.com"}' % i
            self.broker.produce(TOPIC, partition, value)

    def visible(self) -> list[tuple[int, int, str]]:
        """(partition, offset, stage) of every letter a read_committed reader sees, in order."""
        return [(m.partition(), m.offset(), r.stage) for m, r in self.txn.letters]


def test_a_dead_letter_is_visible_only_with_the_commit_that_passes_its_record() -> None:
    bed = TxnBed()
    bed.produce_mixed(6, bad={1, 4})
    c = bed.member()
    c.step()  # read, staged, batches recorded: the recording commit's offset passes nothing yet
    assert bed.visible() == [] and bed.txn.staged == 2
    bed.turns(c, 6)
    assert bed.visible() == [(0, 1, "decode"), (0, 4, "decode")]
    assert bed.committed() == (6, [])
    assert bed.txn.staged == 0


def test_a_refused_transaction_shows_neither_letters_nor_offsets_and_the_next_writes_them_once() -> None:
    bed = TxnBed(answer=reject([0]))
    bed.produce_mixed(3, bad=set())
    c = bed.member()
    bed.turns(c, 2)  # recorded, sent, answered: item 0 rejected, its letter staged
    before = bed.committed()
    bed.broker.fail_commits = 1
    bed.turns(c, 2, advance=0.6)
    assert bed.visible() == [] and bed.committed() == before and [m.offset() for m, _ in bed.txn.aborted] == [0]
    bed.turns(c, 6, advance=1.1)  # past the commit back-off: the next transaction carries the letter
    assert bed.visible() == [(0, 0, "api")]
    assert bed.committed() == (3, [])


def test_a_lost_partition_leaves_its_staged_letters_to_the_next_owner_who_writes_each_once() -> None:
    bed = TxnBed(altcraft={"max_in_flight": 1})
    bed.produce_mixed(6, bad={0, 4})
    one = bed.member()
    bed.turns(one, 1, send=False)  # 0-2 recorded (offset 0 committed: the letter at 0 not passed), in flight
    assert bed.visible() == []
    bed.broker.lose(source(one), [(TOPIC, 0)])  # a crash, as far as the partition is concerned
    one.step()
    assert not one.partitions and bed.txn.staged == 0
    bed.executor.run()
    two = bed.member()
    bed.broker.rebalance([(TOPIC, 0)], to=source(two))
    bed.turns(two, 6)
    bed.turns(one, 2)
    assert bed.visible() == [(0, 0, "decode"), (0, 4, "decode")]
    assert bed.committed() == (6, [])


def test_a_revoke_commits_the_letters_it_passes_and_the_new_owner_writes_none_again() -> None:
    bed = TxnBed(partitions=2, batching={"linger_s": 30.0})
    bed.produce_mixed(4, bad={1}, partition=1)
    one = bed.member()
    one.step()
    two = bed.member(executor=bed.executor)
    bed.broker.rebalance([(TOPIC, 1)], to=source(two))
    one.step()  # the revoke: batches finished, one last transaction with the letter, let go
    assert bed.visible() == [(1, 1, "decode")]
    assert bed.committed(1) == (4, [])
    bed.turns(two, 3)
    bed.turns(one, 2)
    assert bed.visible() == [(1, 1, "decode")]


def test_a_consumer_that_cannot_give_its_group_metadata_fails_the_commit_and_the_loop_goes_on() -> None:
    from confluent_kafka import KafkaError, KafkaException

    bed = TxnBed()
    bed.produce_mixed(3, bad={1})
    c = bed.member()
    src = source(c)
    real = src.group_metadata

    def refuse() -> object:
        raise KafkaException(KafkaError(KafkaError._STATE, "not in a group"))

    src.group_metadata = refuse  # type: ignore[method-assign]
    bed.turns(c, 3)  # no exception out of the loop; nothing recorded, nothing sent
    assert bed.sender.jobs == [] and bed.visible() == []
    src.group_metadata = real  # type: ignore[method-assign]
    bed.turns(c, 6, advance=1.1)
    assert bed.visible() == [(0, 1, "decode")] and bed.committed() == (3, [])


class SlowTransactions(FakeTransactions):
    """Transactions answered ``LATENCY_S`` of the bed's clock after they start (a slow broker)."""

    LATENCY_S = 1.0

    def __init__(self, broker: Any, clock: Any) -> None:
        super().__init__(broker)
        self._clock = clock
        self._ready_at = 0.0

    def commit(self, offsets: Any, metadata: Any, group_metadata: Any, on_done: Any = None) -> None:
        if self._job is not None:  # the one before is waited for, as TransactionalDeadLetters does
            FakeTransactions.poll(self)
        self._ready_at = self._clock() + self.LATENCY_S
        super().commit(offsets, metadata, group_metadata, on_done)

    def poll(self) -> None:
        if self._clock() >= self._ready_at:
            super().poll()


def test_a_batch_due_during_a_transaction_is_sent_once_that_transaction_is_answered() -> None:
    # Found by the benchmark's steady-rate run: a progress transaction still unanswered kept the next
    # recording waiting, and nothing the loop counted as busy remained, so its consume blocked for its
    # whole timeout (in the benchmark, until the next open batch was due): with exactly-once dead
    # letters the end-to-end latency doubled.
    bed = TxnBed(kafka={"consume_timeout_s": 5.0}, batching={"max_items": 3, "linger_s": 0.5})
    bed.txn = SlowTransactions(bed.broker, bed.clock)
    bed.produce(3)
    c = bed.member()
    src = source(c)
    consume = src.consume

    def blocking(n: int, timeout_s: float) -> Any:  # a consume with nothing to read waits its timeout
        got = consume(n, timeout_s)
        if not got:
            bed.clock.advance(timeout_s)
        return got

    src.consume = blocking  # type: ignore[method-assign]

    def turn() -> None:
        c.step()
        bed.executor.run()

    while not bed.sender.jobs:  # the first batch: recorded (1 s), sent, answered
        turn()
    while not bed.txn.busy:  # its progress commit: a transaction of 1 s
        turn()
    started = bed.clock()
    bed.produce(1, start=3)  # read at once; its batch is due by the linger, within 0.5 s
    while bed.emails()[-1] != "u3@example.com" and bed.clock() - started < 30:
        turn()
    # Due at 0.4-0.5 s, recorded once the progress transaction is answered (1 s), sent when its own
    # recording transaction is (2 s), not a consume timeout later.
    assert bed.emails() == [f"u{i}@example.com" for i in range(4)]
    assert bed.clock() - started < 2.5
