from __future__ import annotations

from connector.batching import Batch, BatchPolicy
from connector.partition import BACKLOG_MAX, METADATA_BUDGET, Partition, backlog_limit, plan_dispatch
from connector.replay import parse_metadata

TP = ("t", 0)


def partition(max_items: int = 2, committed: int | None = None, metadata: str = "", cap: int = 1) -> Partition:
    return Partition(TP, BatchPolicy(max_items, 1_000_000, 1.0), 20, committed, metadata, max_in_flight=cap)


def send(p: Partition, now: float = 0.0, limit: int = 64) -> list[Batch]:
    """What the loop does: record ahead, and once the commit is confirmed send what may go."""
    for b in p.to_record(limit):
        assert p.recorded(b)
    return p.to_send(now, limit)


def test_with_a_cap_of_one_a_partition_sends_one_batch_at_a_time_in_order() -> None:
    p = partition(max_items=1)
    for off in range(3):
        p.add(off, b"{}", None, 0.0, key=f"e:{off}")
    [first] = send(p)
    assert first.first == 0
    assert send(p) == []
    p.answered(first, 0)
    [nxt] = send(p)
    assert nxt.first == 1


def test_disjoint_batches_go_together_and_a_shared_profile_waits() -> None:
    p = partition(max_items=2, cap=8)
    for off, key in enumerate(["e:a", "e:b", "e:c", "e:d", "e:a", "e:e", "e:f", "e:g"]):
        p.add(off, b"{}", None, 0.0, key=key)
    sent = send(p)
    # 0-1 (a, b) and 2-3 (c, d) go; 4-5 holds a again and waits for 0-1; 6-7 (f, g) overtakes it.
    assert [b.key_range for b in sent] == [(0, 1), (2, 3), (6, 7)]
    assert send(p) == []
    p.answered(sent[1], 0)
    assert send(p) == []  # 4-5 still waits for 0-1
    p.answered(sent[0], 0)
    assert [b.key_range for b in send(p)] == [(4, 5)]


def test_the_recording_commit_names_every_range_that_may_reach_the_api() -> None:
    p = partition(cap=4)
    for off in range(4):
        p.add(off, b"{}", None, 0.0, key=f"e:{off}")
    b0, b1 = p.to_record(8)
    assert p.metadata() == (0, "akc1:0-1;2-3")
    p.recorded(b0)
    p.recorded(b1)
    assert p.to_send(0.0, 8) == [b0, b1]
    p.answered(b1, dead_letters=0)
    assert p.to_commit() == (0, "akc1:0-1;2-3")  # 2-3 answered, but 0-1 is not: both stay recorded
    p.committed(0)
    p.answered(b0, dead_letters=1)  # a rejected item: its dead letter is on its way
    assert p.to_commit() is None
    p.dead_letter_confirmed(b0)
    assert p.to_commit() == (4, "akc1:")
    p.committed(4)
    assert p.to_commit() is None


def test_a_batch_whose_recording_commit_failed_is_recorded_again_before_it_is_sent() -> None:
    p = partition(cap=4)
    for off in range(4):
        p.add(off, b"{}", None, 0.0, key=f"e:{off}")
    b0, b1 = p.to_record(8)
    p.not_recorded(b0)
    p.recorded(b1)
    assert p.to_send(0.0, 8) == [b1]  # b0 is not recorded: it waits (b1's profiles are not b0's)
    assert p.to_record(8) == [b0]
    assert parse_metadata(p.metadata()[1]) == [(0, 1), (2, 3)]  # listed once
    p.recorded(b0)
    assert p.to_send(0.0, 8) == [b0]


def test_batches_are_recorded_ahead_of_the_senders_and_sent_without_another_commit() -> None:
    p = partition(max_items=1, cap=2)
    for off in range(6):
        p.add(off, b"{}", None, 0.0, key=f"e:{off}")
    assert [b.first for b in send(p)] == [0, 1]
    ahead = p.to_record(8)  # the next wave, while 0 and 1 are in flight
    assert [b.first for b in ahead] == [2, 3] and p.to_send(0.0, 8) == []
    assert p.to_record(8) == []  # one wave ahead at most
    for b in ahead:
        p.recorded(b)
    assert p.metadata() == (0, "akc1:0-0;1-1;2-2;3-3")
    assert p.to_send(0.0, 8) == []  # both requests taken
    [first, _] = p.inflight
    p.answered(first, 0)
    assert [b.first for b in p.to_send(0.0, 8)] == [2]  # at once: it is recorded already


def test_batches_of_skipped_records_need_no_request() -> None:
    p = partition(max_items=1)
    p.add(0, None, None, 0.0)
    p.add(1, None, None, 0.0)
    p.seal_if_due(5.0)
    assert p.to_record(8) == []
    assert p.to_commit() == (2, "akc1:")


def test_a_batch_given_back_by_its_sender_goes_back_in_its_place_and_is_recorded_once() -> None:
    p = partition()
    for off in range(4):
        p.add(off, b"{}", None, 0.0, key=f"e:{off}")
    for _ in range(50):
        [batch] = send(p, now=10.0)
        p.requeue(batch, pause_until=10.0)
        assert p.to_send(9.0, 8) == []  # the sender's own fault: wait before sending again
    [batch] = send(p, now=10.0)
    assert batch.key_range == (0, 1)
    assert parse_metadata(p.metadata()[1]) == [(0, 1)]


def test_late_answers_of_a_dropped_partition_change_nothing() -> None:
    p = partition()
    for off in range(2):
        p.add(off, b"{}", None, 0.0, key="e:x")
    chosen = p.to_record(8)
    p.dropped = True
    assert not p.recorded(chosen[0])
    assert not p.in_flight(chosen[0])


def test_many_ranges_in_flight_keep_the_metadata_within_the_broker_limit() -> None:
    p = partition(max_items=1, cap=64, committed=10**12)
    for off in range(10**12, 10**12 + 400):
        p.add(off, b"{}", None, 0.0, key=f"e:{off}")
    started: list[Batch] = []
    for _ in range(20):
        started += send(p)
        for b in started[1:]:  # everything answers but the oldest: the recorded ranges pile up
            if p.in_flight(b):
                p.answered(b, 0)
    offset, metadata = p.metadata()
    assert len(metadata) <= METADATA_BUDGET < 4096
    assert offset == 10**12 and len(parse_metadata(metadata)) == len(started) > 100
    p.answered(started[0], 0)
    assert p.to_commit() == (10**12 + len(started), "akc1:")
    assert send(p)  # room again


def test_a_partition_keeps_its_share_of_the_requests_in_flight_ready() -> None:
    assert backlog_limit(8, 8, 1, 2_000) == 8  # one partition behind a slow API: the next wave ready
    assert backlog_limit(8, 4, 1, 10_000) == 4  # never more than its own cap
    assert backlog_limit(4, 4, 8, 10_000) == 2  # eight partitions share four requests: two each at least
    assert backlog_limit(16, 8, 4, 10_000) == 4
    p = partition(max_items=1, cap=8)
    for off in range(5):
        p.add(off, b"{}", None, 0.0)
    assert not p.should_pause(0.0, halted=False, stopping=False, over_budget=False, backlog=8)
    assert p.should_pause(0.0, halted=False, stopping=False, over_budget=False, backlog=4)


def test_a_partition_of_small_batches_keeps_a_prefetch_worth_of_them_waiting() -> None:
    # Small batches that go one at a time: about BACKLOG_RECORDS records wait before the partition pauses,
    # in at most BACKLOG_MAX batches.
    assert backlog_limit(4, 4, 8, 2_000) == 5
    assert backlog_limit(4, 4, 8, 3_000) == 4  # rounded up
    assert backlog_limit(4, 4, 8, 5_000) == 2
    assert backlog_limit(4, 4, 8, 1_000) == BACKLOG_MAX == 8
    assert backlog_limit(4, 4, 8, 1) == BACKLOG_MAX  # however small: a stop finishes what waits
    assert backlog_limit(64, 64, 1, 100) == 64  # the share still decides when it is larger
    p = partition(max_items=1, cap=4)
    for off in range(7):
        p.add(off, b"{}", None, 0.0)
    limit = backlog_limit(4, 4, 8, 1_000)
    assert p.backlog == 7
    assert not p.should_pause(0.0, halted=False, stopping=False, over_budget=False, backlog=limit)
    assert p.should_pause(0.0, halted=False, stopping=False, over_budget=True, backlog=limit)  # the budget binds
    p.add(7, b"{}", None, 0.0)
    assert p.should_pause(0.0, halted=False, stopping=False, over_budget=False, backlog=limit)


def test_a_batch_in_flight_weighs_its_request_body_too() -> None:
    """The memory bound counts what a sent batch keeps alive: its records and items, and the request
    body its sender builds from the items (a second copy of them) until the answer comes."""
    p = partition(max_items=2)
    p.add(0, b'{"email":"a@x.ru"}', None, 0.0, weight=100, key="e:a")
    p.add(1, b'{"email":"b@x.ru"}', None, 0.0, weight=100, key="e:b")
    assert p.memory == 200  # sealed: the records and their items
    [batch] = send(p)
    body = len(b'{"email":"a@x.ru"},{"email":"b@x.ru"}')
    assert p.memory == 200 + 20 + body  # in flight: the body too (20: the request around the items)
    p.answered(batch, 0)
    assert p.memory == 0


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


def test_requests_are_shared_among_partitions_and_none_starves() -> None:
    parts = [Partition(("t", n), BatchPolicy(1, 1_000_000, 1.0), 20, None, "", max_in_flight=4) for n in range(4)]
    for part in parts:
        for off in range(20):
            part.add(off, b"{}", None, 0.0, key=f"e:{part.tp[1]}-{off}")
    served: list[int] = []
    for turn in range(8):  # two requests free at each dispatch; the earlier ones are answered meanwhile
        planned = plan_dispatch(parts, 2, turn, Partition.to_record)
        assert len(planned) == 2 and len({part.tp for part, _ in planned}) == 2, "one each before a second"
        for part, batch in planned:
            assert part.recorded(batch)
        sent = plan_dispatch(parts, 2, turn, lambda part, n: part.to_send(0.0, n))
        assert sent == planned
        for part, batch in sent:
            part.answered(batch, 0)
            served.append(part.tp[1])
    assert sorted(set(served)) == [0, 1, 2, 3] and max(served.count(n) for n in range(4)) == 4


def test_a_partition_alone_takes_every_free_request_its_cap_allows() -> None:
    part = partition(max_items=1, cap=3)
    for off in range(10):
        part.add(off, b"{}", None, 0.0, key=f"e:{off}")
    planned = plan_dispatch([part], 8, 0, Partition.to_record)
    assert [b.first for _, b in planned] == [0, 1, 2]
