from __future__ import annotations

from connector.batching import Batch, BatchPolicy, Lane

TP = ("t", 0)


def lane(max_items: int = 3, max_bytes: int = 1000, linger: float = 1.0, replay=None, sealed=None) -> Lane:
    return Lane(TP, BatchPolicy(max_items, max_bytes, linger), overhead=20, replay=replay or [],
                on_seal=(sealed.append if sealed is not None else None))  # fmt: skip


def ranges(batches: list[Batch]) -> list[tuple[int, int, int]]:
    return [(b.first, b.last, len(b.items)) for b in batches]


def test_batches_are_cut_by_count() -> None:
    sealed: list[Batch] = []
    ln = lane(max_items=3, sealed=sealed)
    for off in range(7):
        ln.add(off, b"{}", None, now=0.0)
    assert ranges(sealed) == [(0, 2, 3), (3, 5, 3)]
    assert ln.open is not None and ln.open.first == 6


def test_batches_are_cut_by_body_bytes_as_sent() -> None:
    ln = lane(max_items=100, max_bytes=20 + 10 + 1 + 10)  # overhead + two 10-byte items + comma
    for off in range(5):
        ln.add(off, b"x" * 10, None, now=0.0)
    assert ranges(list(ln.sealed)) == [(0, 1, 2), (2, 3, 2)]
    assert all(b.size <= 41 for b in ln.sealed)
    assert ln.sealed[0].size == 41


def test_batches_are_cut_by_age_only_when_due() -> None:
    ln = lane(linger=1.0)
    ln.add(0, b"{}", None, now=10.0)
    ln.seal_if_due(10.5)
    assert not ln.sealed
    ln.seal_if_due(11.0)
    assert ranges(list(ln.sealed)) == [(0, 0, 1)]


def test_partitions_opened_together_are_not_all_sealed_together() -> None:
    policy = BatchPolicy(10_000, 10_000_000, linger_s=1.0)
    lanes = [Lane(("t", p), policy, overhead=20, replay=[]) for p in range(8)]
    for ln in lanes:
        ln.add(0, b"{}", None, now=0.0)
    seal_times = []
    for ln in lanes:
        due_in = ln.due_in(0.0)
        assert due_in is not None and 0.8 <= due_in <= 1.0  # never later than the linger
        ln.seal_if_due(due_in - 0.001)
        assert not ln.sealed
        ln.seal_if_due(due_in)
        assert len(ln.sealed) == 1
        seal_times.append(due_in)
    gaps = [b - a for a, b in zip(sorted(seal_times), sorted(seal_times)[1:], strict=False)]
    assert min(gaps) > 0.01, seal_times


def test_skipped_records_extend_the_batch_range_without_items() -> None:
    ln = lane(max_items=2)
    ln.add(0, None, None, 0.0)
    ln.add(1, b"{}", None, 0.0)
    ln.add(2, None, None, 0.0)
    ln.add(3, b"{}", None, 0.0)
    assert ranges(list(ln.sealed)) == [(0, 3, 2)]


def test_replay_cuts_exactly_the_recorded_ranges_whatever_the_policy() -> None:
    # Before a crash, batches 0-4 and 5-6 were sent (recorded in the commit metadata).
    ln = lane(max_items=3, replay=[(0, 4), (5, 6)])
    for off in range(10):
        ln.add(off, b"{}", None, now=0.0)
    got = list(ln.sealed)
    assert [b.key_range for b in got[:2]] == [(0, 4), (5, 6)]
    assert [len(b.items) for b in got[:2]] == [5, 2]
    assert got[2].key_range == (7, 9)  # new data follows the normal policy


def test_replayed_range_keeps_its_key_when_its_first_record_is_gone() -> None:
    ln = lane(replay=[(3, 6)])
    ln.add(4, b"{}", None, 0.0)
    ln.add(6, b"{}", None, 0.0)
    assert [(b.key_range, b.first, b.last) for b in ln.sealed] == [((3, 6), 4, 6)]
