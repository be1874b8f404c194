"""offsets show|reset without a broker: where --to lands, what is shown, and what the reset says."""

from __future__ import annotations

import pytest

from connector.tools.kafka_admin import GroupInfo, Member, read_ranges
from connector.tools.offsets import (
    PartitionState,
    ResetStep,
    Target,
    describe_metadata,
    is_active,
    parse_target,
    plan_reset,
    render_after,
    render_plan,
    render_show,
    rewound,
)
from connector.tools.timespec import parse_time

NOW = 1_714_558_830.0
T = "cdc.customers"


def state(p: int, committed: int | None, low: int = 0, high: int = 500, metadata: str = "") -> PartitionState:
    return PartitionState(T, p, committed, metadata, low, high)


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ("earliest", Target("earliest")),
        ("LATEST", Target("latest")),
        ("1200", Target("offset", 1200)),
        ("0", Target("offset", 0)),
        ("2h", Target("timestamp", parse_time("2h", NOW))),
        ("2024-05-01T00:00:00Z", Target("timestamp", 1_714_521_600_000)),
    ],
)
def test_to_takes_earliest_latest_an_offset_or_a_time(text: str, target: Target) -> None:
    assert parse_target(text, NOW) == target


@pytest.mark.parametrize("text", ["-5", "begin", "", "12abc"])
def test_to_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="earliest, latest, an offset"):
        parse_target(text, NOW)


def test_each_partition_lands_where_asked_within_what_it_keeps() -> None:
    states = [state(0, 400, low=100, high=500), state(1, None, low=0, high=50)]
    assert [s.new for s in plan_reset(Target("earliest"), states, {})] == [100, 0]
    assert [s.new for s in plan_reset(Target("latest"), states, {})] == [500, 50]
    by_offset = plan_reset(Target("offset", 70), states, {})
    assert [(s.new, s.note) for s in by_offset] == [
        (100, "offset 70 is no longer kept: the first kept"),
        (50, "offset 70 is past the end: the end"),
    ]
    by_time = plan_reset(Target("timestamp", 1), states, {(T, 0): 250, (T, 1): None})
    assert [(s.new, s.note) for s in by_time] == [(250, ""), (50, "no record at or after that time: the end")]


def test_records_read_again_count_only_what_was_committed_past() -> None:
    states = [state(0, 400, low=100), state(1, None), state(2, 10)]
    assert rewound(plan_reset(Target("earliest"), states, {}), states) == 300 + 0 + 10
    assert rewound(plan_reset(Target("latest"), states, {}), states) == 0


def test_the_recorded_ranges_are_shown_with_their_count() -> None:
    assert describe_metadata("") == "-"
    assert describe_metadata("akc1:100-199;200-299") == "akc1:100-199;200-299 (2 range(s), 200 offsets)"
    assert describe_metadata("akc1:") == "akc1: (no range recorded)"
    assert describe_metadata("someone\x1b[2J else") == "(not the connector's) someone\\x1b[2J else"


def test_show_prints_committed_end_lag_and_metadata_per_partition() -> None:
    lines = render_show(
        GroupInfo("g", "Empty", ()), [state(0, 1200, high=1500, metadata="akc1:1200-1399;1400-1499"), state(1, None)]
    )
    assert lines[0] == "group g: Empty, no active members"
    assert lines[1].split() == ["topic", "partition", "committed", "end", "lag", "replay", "metadata"]
    assert lines[2].split()[:5] == [T, "0", "1200", "1500", "300"]
    assert lines[2].endswith("akc1:1200-1399;1400-1499 (2 range(s), 300 offsets)")
    assert lines[3].split()[:5] == [T, "1", "-", "500", "-"]
    assert "nothing committed" in lines[3]
    assert lines[4].startswith("total lag 300; 1 partition(s) with recorded batch ranges")


def test_a_group_with_members_or_rebalancing_is_active() -> None:
    assert not is_active(GroupInfo("g", "Empty", ()))
    assert not is_active(GroupInfo("g", "Dead", ()))
    assert is_active(GroupInfo("g", "Stable", (Member("altcraft-connector", "/10.0.0.7"),)))
    assert is_active(GroupInfo("g", "PreparingRebalance", ()))


def test_the_plan_says_what_metadata_is_cleared() -> None:
    steps = [ResetStep(T, 0, 1500, 0, "akc1:1400-1499"), ResetStep(T, 1, None, 0, ""), ResetStep(T, 2, 9, 0, "akc1:")]
    lines = render_plan("g", Target("earliest"), steps)
    assert lines[0] == "reset group g to earliest:"
    assert lines[2].split()[:4] == [T, "0", "1500", "0"]
    assert lines[2].endswith("cleared: akc1:1400-1499 (1 range(s), 100 offsets)")
    assert lines[3].split() == [T, "1", "-", "0", "-"]
    assert lines[4].split() == [T, "2", "9", "0", "-"]  # nothing recorded: nothing lost


def test_after_a_reset_it_says_the_metadata_was_cleared_on_purpose_and_what_the_epoch_does() -> None:
    steps = [ResetStep(T, 0, 1500, 0, "akc1:1400-1499"), ResetStep(T, 1, 10, 0, "akc1:")]
    text = "\n".join(render_after("g", steps, again=1500, epoch=""))
    assert "with empty commit metadata" in text
    assert "cleared on purpose (1 partition(s) had ranges recorded)" in text
    assert "1500 record(s) will be read again" in text
    assert "altcraft.request_id_epoch (now empty)" in text
    assert "set a new altcraft.request_id_epoch" in text
    assert "read again" not in "\n".join(render_after("g", steps, again=0, epoch="2"))


def test_reading_starts_at_the_first_kept_offset_or_at_a_time() -> None:
    marks = {0: (10, 100), 1: (0, 0), 2: (5, 50)}
    assert read_ranges(marks, None) == {0: (10, 100), 1: (0, 0), 2: (5, 50)}
    assert read_ranges(marks, {0: 40, 1: None, 2: None}) == {0: (40, 100), 1: (0, 0), 2: (50, 50)}
