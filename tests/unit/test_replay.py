"""The rule of connector.replay, walked in memory: record, crash, replay under the same keys."""

from __future__ import annotations

from connector.batching import Batch, BatchPolicy
from connector.config import RouteSettings
from connector.partition import Partition
from connector.replay import (
    format_metadata,
    parse_metadata,
    ranges_to_replay,
    record_before_send,
    request_id,
    resend_request_id,
    rest_request_id,
    sub_request_id,
)

TP = ("orders", 3)
ROUTE = RouteSettings.model_validate({"name": "r", "topics": ["orders"], "workflow_id": 9, "db_id": 7})


def key(first: int, last: int, epoch: str = "") -> str:
    return request_id("g", ROUTE, TP[0], TP[1], first, last, epoch)


def owner(committed: int | None, metadata: str, max_items: int) -> Partition:
    return Partition(TP, BatchPolicy(max_items, 10_000_000, 1.0), 20, committed, metadata, max_in_flight=4)


def test_crash_and_replay_story() -> None:
    broker: dict[str, tuple[int | None, str]] = {"committed": (None, "")}
    api: list[str] = []  # Request-IDs that reached Altcraft, in order

    def send(p: Partition, now: float) -> list[Batch]:
        recorded = p.to_record(8)
        broker["committed"] = p.metadata()  # recorded before sent
        for batch in recorded:
            assert p.recorded(batch)
        chosen = p.to_send(now, 8)
        api.extend(key(*batch.key_range) for batch in chosen)
        return chosen

    # The first owner reads offsets 0..9 in batches of 4; 0-3 and 4-7 go out together.
    first = owner(*broker["committed"], max_items=4)
    for off in range(10):
        first.add(off, b"{}", None, 0.0, key=f"e:{off}")
    b0, _in_flight = send(first, 0.0)
    first.answered(b0, 0)
    assert first.to_commit() == (4, "akc1:4-7")  # committed past 0-3; 4-7 in flight when the process dies
    broker["committed"] = (4, "akc1:4-7")
    assert api == [key(0, 3), key(4, 7)]

    # The next owner, with another batch size, cuts 4-7 exactly again, then batches the rest afresh.
    second = owner(*broker["committed"], max_items=100)
    assert second.replay == [(4, 7)]
    for off in range(4, 10):
        second.add(off, b"{}", None, 20.0, key=f"e:{off}")
    second.seal_if_due(30.0)
    for batch in send(second, 30.0):
        second.answered(batch, 0)
    assert api[2:] == [key(4, 7), key(8, 9)]  # 4-7 again under its key: Altcraft deduplicates it
    assert second.to_commit() == (10, "akc1:")


def test_keys_depend_on_the_range_route_and_epoch_only() -> None:
    assert key(0, 9) == key(0, 9)
    assert len({key(0, 9), key(0, 8), key(1, 9), key(0, 9, epoch="2026-12")}) == 4
    other = RouteSettings.model_validate({"name": "r", "topics": ["orders"], "workflow_id": 10, "db_id": 7})
    assert request_id("g", other, TP[0], TP[1], 0, 9) != key(0, 9)


def test_keys_of_parts_are_derived_from_the_parent() -> None:
    parent = key(0, 9)
    assert sub_request_id(parent, 1) == parent + ".1of2"
    assert resend_request_id(sub_request_id(parent, 2), 1) == parent + ".2of2.resend1"
    assert rest_request_id(parent, 3) == parent + ".from3"


def test_metadata_round_trips_and_ignores_what_it_did_not_write() -> None:
    ranges = [(0, 4), (5, 9), (10, 10)]
    assert parse_metadata(format_metadata(ranges)) == ranges
    assert parse_metadata("written by another tool") == []
    assert parse_metadata("akc1:5-3;x-y;7-8") == [(7, 8)]
    assert ranges_to_replay(6, "akc1:5-9;0-4;10-12") == [(5, 9), (10, 12)]
    assert ranges_to_replay(None, "akc1:3-4;0-2") == [(0, 2), (3, 4)]


def test_the_recording_commit_never_passes_the_resolved_prefix_nor_lists_what_it_passed() -> None:
    assert record_before_send(10, [(0, 9), (10, 19), (20, 29)]) == (10, "akc1:10-19;20-29")
    assert record_before_send(None, [(40, 49), (50, 59)]) == (40, "akc1:40-49;50-59")


def test_ranges_still_to_be_replayed_stay_recorded_until_passed_whatever_crashes_come_between() -> None:
    api: list[str] = []
    # The first owner had three batches out (cap 4) when it died: 0-3, 4-7, 8-11.
    first = owner(None, "", max_items=4)
    for off in range(12):
        first.add(off, b"{}", None, 0.0, key=f"e:{off}")
    for batch in first.to_record(8):
        first.recorded(batch)
    api += [key(*b.key_range) for b in first.to_send(0.0, 8)]
    committed = first.metadata()
    assert committed == (0, "akc1:0-3;4-7;8-11")

    # The second owner sends one batch at a time: it records 0-3 again, and 4-7 and 8-11 stay listed.
    second = Partition(TP, BatchPolicy(100, 10_000_000, 1.0), 20, *committed, max_in_flight=1)
    for off in range(12):
        second.add(off, b"{}", None, 0.0, key=f"e:{off}")
    [again] = second.to_record(8)
    assert again.key_range == (0, 3)
    assert second.metadata() == (0, "akc1:0-3;4-7;8-11")
    second.recorded(again)
    [sent] = second.to_send(0.0, 8)
    api.append(key(*sent.key_range))
    second.answered(sent, 0)
    assert second.to_commit() == (4, "akc1:4-7;8-11")  # 0-3 passed; the others still to be resent
    second.committed(4)

    # It dies too; the third owner, with yet another batch size, still cuts 4-7 and 8-11 exactly.
    third = owner(4, "akc1:4-7;8-11", max_items=100)
    assert third.replay == [(4, 7), (8, 11)]
    for off in range(4, 12):
        third.add(off, b"{}", None, 0.0, key=f"e:{off}")
    while batches := third.to_record(8):
        for batch in batches:
            third.recorded(batch)
        for batch in third.to_send(0.0, 8):
            api.append(key(*batch.key_range))
            third.answered(batch, 0)
    assert set(api) == {key(0, 3), key(4, 7), key(8, 11)}  # every range under one key only
