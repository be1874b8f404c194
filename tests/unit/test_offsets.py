from __future__ import annotations

import pytest

from connector.source.offsets import PartitionOffsets


def test_commit_stops_at_the_first_unresolved_offset() -> None:
    p = PartitionOffsets(start=100)
    for off in range(100, 110):
        p.track(off)
    for off in (100, 101, 103, 104, 109):
        p.resolve(off)
    assert p.committable() == 102
    p.resolve(102)
    assert p.committable() == 105
    for off in range(105, 109):
        p.resolve(off)
    assert p.committable() == 110
    assert p.pending == 0


def test_units_cover_ranges_and_gaps_in_offsets() -> None:
    p = PartitionOffsets(start=0)
    p.track(0, 9)
    p.track(15, 20)  # 10..14 were compacted away or are transaction markers
    p.resolve(15)
    assert p.committable() == 0
    p.resolve(0)
    assert p.committable() == 21


def test_nothing_committable_before_the_first_record_without_a_committed_offset() -> None:
    p = PartitionOffsets(start=None)
    assert p.committable() is None
    p.track(42)
    assert p.committable() == 42
    p.resolve(42)
    assert p.committable() == 43


def test_overlapping_or_unknown_units_are_refused() -> None:
    p = PartitionOffsets(start=0)
    p.track(0, 5)
    with pytest.raises(ValueError):
        p.track(5, 6)
    with pytest.raises(KeyError):
        p.resolve(3)
