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
    """A transaction whose answer comes only when the test lets it (a real one takes tens of ms)."""

    held = False

    def poll(self) -> None:
        if not self.held:
            super().poll()


def test_while_a_transaction_is_answered_the_loop_blocks_briefly_so_the_next_batch_is_recorded_at_once() -> None:
    # Found by the benchmark's steady-rate run: a progress transaction still unanswered kept the next
    # recording waiting, and the loop blocked in consume until the next open batch was due (a linger
    # later), which doubled the end-to-end latency with exactly-once dead letters.
    from connector.app import BUSY_POLL_S

    bed = TxnBed(kafka={"consume_timeout_s": 5.0}, batching={"max_items": 3, "linger_s": 2.0})
    bed.txn = SlowTransactions(bed.broker)
    bed.produce(3)
    c = bed.member()
    timeouts: list[float] = []
    src = source(c)
    consume = src.consume

    def spy(n: int, timeout_s: float) -> Any:
        timeouts.append(timeout_s)
        return consume(n, timeout_s)

    src.consume = spy  # type: ignore[method-assign]
    bed.turns(c, 2)  # recorded, sent, answered
    assert bed.sender.jobs
    bed.txn.held = True
    for _ in range(5):
        if bed.txn.busy:
            break
        bed.turns(c, 1)
    assert bed.txn.busy and bed.committed()[0] < 3  # the progress commit's transaction is under way
    bed.produce(1, start=3)
    timeouts.clear()
    bed.turns(c, 2, advance=0.0)  # one record in an open batch due in 2 s; the transaction unanswered
    assert timeouts == [BUSY_POLL_S, BUSY_POLL_S]
    bed.txn.held = False
    bed.clock.advance(2.0)  # the open batch is due
    timeouts.clear()
    for _ in range(6):  # sealed, recorded, sent: no consume on the way waits long
        if bed.emails()[-1] == "u3@example.com":
            break
        bed.turns(c, 1, advance=0.0)
    assert bed.emails()[-1] == "u3@example.com"
    assert max(timeouts) <= BUSY_POLL_S, timeouts
