"""Delivery across changes of ownership: a member SIGKILLed and restarted in a two-member group, and the
broker itself restarted mid-stream. The test bed and the final checks are those of ``test_faults.py``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from connector.demo_data import generate
from tests.integration import test_faults as faults
from tests.support import wait_until

make_bed = faults.make_bed  # the fixture
log_messages = faults.log_messages

pytestmark = pytest.mark.timeout(150)


def assigned_now(messages: list[str]) -> int:
    """Partitions a member holds according to its log (assigned minus revoked/lost), cooperative protocol."""
    held = 0
    for m in messages:
        for prefix, sign in (("partitions assigned: ", 1), ("partitions revoked: ", -1), ("partitions lost", -1)):
            if m.startswith(prefix):
                held += sign * m.count("(")
    return held


def test_second_member_sigkilled_and_restarted_loses_nothing_and_engages_nobody_twice(
    make_bed: Callable[..., faults.Bed],
) -> None:
    """A second replica joins a busy member, is SIGKILLed mid-stream, the first carries on alone with every
    partition (some of which it held, backed up, before the second joined), then the second comes back."""
    bed = make_bed(20_000, 8, seed=41)
    bed.emu.set_faults(latency_s=0.4)  # the API is the bottleneck: partitions back up and get paused
    settings = bed.settings(max_items=200, max_in_flight=2)
    # A revoke finishes what the member read of the partitions it gives up, within the drain budget: with
    # 2 s, member a hands most of its read-ahead over unsent, and member b has work left when it is killed.
    settings["shutdown"]["drain_timeout_s"] = 2
    a = bed.process(settings, name="member-a")
    b = bed.process(settings, name="member-b")
    a.start()
    wait_until(lambda: assigned_now(log_messages(a)) == 8, 60, "member a to own every partition")
    wait_until(lambda: a.metric_sum("altcraft_connector_records_engaged_total") > 0, 60, "member a to deliver")
    b.start()
    wait_until(lambda: assigned_now(log_messages(b)) > 0, 60, "member b to get partitions")
    wait_until(lambda: b.metric_sum("altcraft_connector_records_engaged_total") > 0, 60, "member b to deliver")
    wait_until(lambda: b.metric_sum("altcraft_connector_inflight_requests") > 0, 30, "member b to have requests out")
    b.kill()
    assert bed.emu.stats()["engagements"] < bed.stream.outcomes["engage"], "finished before the crash"
    assert not bed.over_engaged()
    # The survivor takes over the dead member's partitions once its session expires, and works on all of them.
    # A transaction the dead member left open withholds its partitions' committed offsets (and so the
    # takeover) until the broker aborts it: the transaction timeout (30 s here) and the broker's scan for
    # timed-out transactions (every 10 s by default).
    wait_until(lambda: assigned_now(log_messages(a)) == 8, 60, "member a to take every partition back")
    at_takeover = bed.committed()
    ends = bed.end_offsets()

    def every_partition_moves() -> bool:
        now = bed.committed()
        return all(now.get(p, 0) > at_takeover.get(p, 0) or now.get(p, 0) == ends[p] for p in ends)

    try:
        wait_until(every_partition_moves, 30, "member a to make progress on every partition")
    except AssertionError:
        now = bed.committed()
        stuck = {p: now.get(p) for p in ends if now.get(p, 0) == at_takeover.get(p, 0) != ends[p]}
        raise AssertionError(
            f"partitions stuck on the survivor: {stuck} (committed offsets; end offsets {ends})\n{a.log_tail(30)}"
        ) from None
    b.start()
    wait_until(lambda: assigned_now(log_messages(b)) > 0, 60, "the restarted member to get partitions back")
    bed.assert_delivered([a, b], timeout=60)
    # The batches the dead member had sent were replayed under the same Request-IDs and deduplicated.
    assert bed.emu.stats()["duplicates"] > 0
    deduplicated = sum(p.metric_sum("altcraft_connector_requests_deduplicated_total") for p in (a, b))
    assert deduplicated > 0
    for proc in (a, b):
        code, _ = proc.terminate()
        assert code == 0, proc.log_tail()


@pytest.mark.broker_restart
def test_broker_restart_mid_stream_loses_nothing_and_engages_nobody_twice(
    make_bed: Callable[..., faults.Bed], kafka: Any
) -> None:
    broker = kafka.require_broker()
    bed = make_bed(20_000, 4, seed=42)
    bed.emu.set_faults(latency_s=0.2)
    proc = bed.process(bed.settings(max_items=200, max_in_flight=2))
    proc.start()
    wait_until(lambda: bed.emu.stats()["engagements"] > bed.stream.outcomes["engage"] // 4, 60, "a quarter done")
    # Down for longer than the session timeout (6 s): the member's partitions are lost and assigned afresh.
    broker.restart(downtime_s=8)
    assert proc.alive(), proc.log_tail()
    assert bed.emu.stats()["engagements"] < bed.stream.outcomes["engage"], "finished before the broker came back"
    bed.assert_delivered([proc], timeout=60)
    code, _ = proc.terminate()
    assert code == 0, proc.log_tail()


def test_graceful_rebalances_write_each_dead_letter_once(make_bed: Callable[..., faults.Bed]) -> None:
    """A second member joins a busy one, and later leaves with SIGTERM: every revoked partition's batches,
    open ones included, are finished and committed before it is let go, so its next owner starts past
    every record read, and no dead letter is written twice (no transactions involved)."""
    bed = make_bed(20_000, 8, invalid_share=0.03, seed=43)
    bed.emu.set_faults(latency_s=0.3)  # requests take a while: revokes meet batches open, sealed and in flight
    settings = bed.settings(max_items=200, max_in_flight=4)
    a = bed.process(settings, name="member-a")
    b = bed.process(settings, name="member-b")
    a.start()
    wait_until(lambda: a.metric_sum("altcraft_connector_records_dead_lettered_total") > 0, 60, "member a to work")
    b.start()
    wait_until(lambda: assigned_now(log_messages(b)) > 0, 60, "member b to get partitions")
    # More events, for both members (member a finished what it had read of the partitions it gave up).
    more = generate(20_000, 8, invalid_share=0.03, seed=44)
    records = [{"value": e.value, "key": e.key, "partition": e.partition} for e in more.events]
    bed.positions.extend(bed.kafka.produce(bed.topic, records))
    bed.stream.events.extend(more.events)
    bed.stream.engagements.update(more.engagements)
    bed.stream.outcomes.update(more.outcomes)
    wait_until(lambda: b.metric_sum("altcraft_connector_records_dead_lettered_total") > 0, 60, "member b to work")
    assert bed.emu.stats()["engagements"] < bed.stream.outcomes["engage"], "finished before member b left"
    code, _ = b.terminate()
    assert code == 0
    bed.assert_delivered([a], timeout=120)
    a.stop()
    bed.assert_no_loss_no_double_engagement()
    expected = bed.expected_dead()
    assert bed.dead_letter_count() == len(expected), (
        f"{bed.dead_letter_count() - len(expected)} dead letters written twice across graceful rebalances"
    )
