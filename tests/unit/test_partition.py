from __future__ import annotations

from connector.batching import BatchPolicy
from connector.partition import Partition
from connector.replay import parse_metadata

TP = ("t", 0)


def partition(max_items: int = 2, committed: int | None = None, metadata: str = "") -> Partition:
    return Partition(TP, BatchPolicy(max_items, 1_000_000, 1.0), 20, committed, metadata)


def test_one_batch_at_a_time_in_offset_order() -> None:
    p = partition(max_items=1)
    for off in range(3):
        p.add(off, b"{}", None, 0.0)
    first = p.next_to_send(0.0)
    assert first is not None and first.first == 0
    p.start(first)
    assert p.next_to_send(0.0) is None
    p.answered(first, 0)
    nxt = p.next_to_send(0.0)
    assert nxt is not None and nxt.first == 1


def test_the_recording_commit_names_every_range_that_may_reach_the_api() -> None:
    p = partition()
    for off in range(4):
        p.add(off, b"{}", None, 0.0)
    b0 = p.next_to_send(0.0)
    assert b0 is not None
    assert p.record(b0) == (0, "akc1:0-1")
    p.start(b0)
    p.answered(b0, dead_letters=1)  # a rejected item: its dead letter is on its way
    b1 = p.next_to_send(0.0)
    assert b1 is not None
    offset, metadata = p.record(b1)
    assert (offset, parse_metadata(metadata)) == (0, [(0, 1), (2, 3)])
    p.start(b1)
    p.answered(b1, 0)
    assert p.to_commit() == (0, "akc1:0-1;2-3")  # nothing resolved past 0 yet: both ranges stay recorded
    p.committed(0)
    p.dead_letter_confirmed(b0)
    assert p.to_commit() == (4, "akc1:")
    p.committed(4)
    assert p.to_commit() is None


def test_batches_of_skipped_records_need_no_request() -> None:
    p = partition(max_items=1)
    p.add(0, None, None, 0.0)
    p.add(1, None, None, 0.0)
    p.seal_if_due(5.0)
    assert p.next_to_send(5.0) is None
    assert p.to_commit() == (2, "akc1:")


def test_a_batch_given_back_by_its_sender_goes_first_again_and_is_recorded_once() -> None:
    p = partition()
    for off in range(4):
        p.add(off, b"{}", None, 0.0)
    batch = p.next_to_send(0.0)
    assert batch is not None
    for _ in range(50):
        p.start(batch)
        p.requeue(batch, pause_until=10.0)
        assert p.next_to_send(9.0) is None  # the sender's own fault: wait before sending again
        assert p.next_to_send(10.0) is batch
    p.start(batch)
    assert parse_metadata(p.record(batch)[1]) == [(0, 1)]


def test_late_answers_of_a_dropped_partition_change_nothing() -> None:
    p = partition()
    for off in range(2):
        p.add(off, b"{}", None, 0.0)
    batch = p.next_to_send(0.0)
    assert batch is not None
    p.start(batch)
    p.dropped = True
    assert not p.in_flight(batch)


def test_pauses_when_backed_up_held_or_over_the_memory_budget() -> None:
    p = partition(max_items=1)
    assert not p.should_pause(0.0, halted=False, stopping=False, over_budget=True)  # idle: nothing to free
    p.add(0, b"{}", None, 0.0)
    assert p.should_pause(0.0, halted=False, stopping=False, over_budget=True)
    assert not p.should_pause(0.0, halted=False, stopping=False, over_budget=False)
    p.add(1, b"{}", None, 0.0)
    assert p.backlog == 2 and p.should_pause(0.0, halted=False, stopping=False, over_budget=False)
    q = partition()
    q.hold(until=2.0)
    assert q.should_pause(1.0, halted=False, stopping=False, over_budget=False)
    assert not q.should_pause(2.0, halted=False, stopping=False, over_budget=False)
