"""Exactly-once dead letters on the real broker (``dead_letter.exactly_once``, the default): a consumer of the
dead-letter topic with ``isolation.level=read_committed`` sees every invalid record exactly once, with its
stage and reason, whatever happens to the members and the broker meanwhile.

Each test ends with what a user checks (:meth:`Bed.assert_dead_letters_exactly_once` and
:meth:`Bed.assert_no_loss_no_double_engagement`, both reported when both fail): every invalid record once in
the dead-letter topic, no valid one, and every profile engaged as often as its events say.

A member SIGKILLed here is restarted with the same ``dead_letter.transactional_id``, as a container restarted
in its pod is (there the default id, ``<group>-<host name>-<process id>``, stays the same), so that, as
connector.transactions promises, the restart aborts the transaction its predecessor left open at once
(``test_a_restart_aborts_the_transaction_its_predecessor_left_open`` checks that promise on its own; the other
tests allow for a restart that waits for the broker to abort it). With another id the broker aborts it only
after ``transaction.timeout.ms`` (the letters' delivery timeout, 30 s by default, plus up to 10 s for the
broker's check), and readers of the dead-letter topic and the group's offsets wait that long. The graceful
rebalance and the broker restart use the default ids. The test bed and its checks are those of
``test_faults.py``.
"""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition

from connector.demo_data import generate
from tests.integration import test_faults as faults
from tests.integration.test_rebalance import assigned_now
from tests.support import ConnectorProcess, wait_until

make_bed = faults.make_bed  # the fixture
log_messages = faults.log_messages
Bed = faults.Bed

pytestmark = pytest.mark.timeout(150)

CONSUMED = "altcraft_connector_records_consumed_total"
DEAD_LETTERED = "altcraft_connector_records_dead_lettered_total"  # staged, with exactly_once


def settings_for(bed: Bed, member: str | None = None, *, exactly_once: bool = True, **kw: Any) -> dict[str, Any]:
    """The bed's settings; ``member``: a stable ``transactional.id`` for that member across its restarts."""
    dead_letter: dict[str, Any] = {"exactly_once": exactly_once}
    if member is not None:
        dead_letter["transactional_id"] = f"{bed.group}-{member}"
    return bed.settings(dead_letter=dead_letter, **kw)


def produce_more(bed: Bed, events: int, seed: int) -> None:
    more = generate(events, bed.partitions, invalid_share=0.03, seed=seed)
    records = [{"value": e.value, "key": e.key, "partition": e.partition} for e in more.events]
    bed.positions.extend(bed.kafka.produce(bed.topic, records))
    bed.stream.events.extend(more.events)
    bed.stream.engagements.update(more.engagements)
    bed.stream.outcomes.update(more.outcomes)


def committed_now(bed: Bed) -> dict[int, int] | None:
    """The group's committed offsets as they stand (None: not readable now). Unlike :meth:`Bed.committed`,
    this reader does not ask for stable offsets (``isolation.level=read_uncommitted``), so it does not wait
    while a transaction carrying offsets is open: those offsets count once that transaction commits."""
    consumer = Consumer(bed.kafka.config({"group.id": bed.group, "enable.auto.commit": False,
                                          "isolation.level": "read_uncommitted"}))  # fmt: skip
    try:
        parts = [TopicPartition(bed.topic, p) for p in range(bed.partitions)]
        return {tp.partition: max(0, tp.offset) for tp in consumer.committed(parts, timeout=10)}
    except KafkaException:
        return None
    finally:
        consumer.close()


def assert_unfinished(bed: Bed, before: str) -> None:
    engaged, total = bed.emu.stats()["engagements"], bed.stream.outcomes["engage"]
    assert engaged < total, f"every profile was engaged before {before}: the test would prove nothing"


def wait_reading(bed: Bed, proc: ConnectorProcess, timeout: float, what: str) -> None:
    """Until ``proc`` has read records; fails at once, with its log, if it exits meanwhile. The failure says
    whether a transaction is open on the dead-letter topic (its last stable offset behind its end offset)."""

    def reading() -> bool:
        if not proc.alive():
            raise AssertionError(f"{proc.log_path.name} exited while waiting for {what}:\n{proc.log_tail(15)}")
        return proc.metric_sum(CONSUMED) > 0

    try:
        wait_until(reading, timeout, what)
    except AssertionError as exc:
        dlq = f"dead-letter topic: end offsets {bed.kafka.end_offsets(bed.dlq)}, last stable offsets " + str(
            bed.kafka.end_offsets(bed.dlq, committed_only=True)
        )
        if proc.alive():
            tail = proc.log_tail(8)
            raise AssertionError(f"{exc}; {dlq}{stop_after_failure([proc])}; its log ended:\n{tail}") from None
        raise AssertionError(f"{exc}; {dlq}") from None


def letters_ahead_of_the_commit(bed: Bed) -> list[tuple[int, int]] | None:
    """Committed dead letters of records at or past their partition's committed offset (the group's offsets
    are read after the letters); None when the committed offsets cannot be read now."""
    letters = bed.committed_dead_letters(settle_s=0)
    committed = committed_now(bed)
    if committed is None:
        return None
    return [(p, off) for p, off, _h in letters if off >= committed.get(p, 0)]


def stop_after_failure(procs: list[ConnectorProcess]) -> str:
    """SIGTERM each member still running (SIGKILL after 20 s: the drain takes at most 10); says how they went."""
    notes = []
    for proc in procs:
        if not proc.alive():
            continue
        try:
            code, took = proc.terminate(timeout=20)
            notes.append(f"{proc.log_path.name} stopped on SIGTERM in {took:.0f} s (exit code {code})")
        except subprocess.TimeoutExpired:
            proc.kill()
            notes.append(f"{proc.log_path.name} did not stop within 20 s of SIGTERM: SIGKILLed")
    return "".join(f"; {n}" for n in notes)


def assert_outcome(bed: Bed, procs: list[ConnectorProcess], timeout: float) -> None:
    """Committed to the end; then both final checks, reported together."""
    try:
        bed.wait_committed(procs, timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}{stop_after_failure(procs)}") from None
    failures = []
    for check in (bed.assert_dead_letters_exactly_once, bed.assert_no_loss_no_double_engagement):
        try:
            check()
        except AssertionError as exc:
            failures.append(str(exc))
    assert not failures, "\n".join(failures)


# ----------------------------------------------------------------------------------------------- the scenarios


@pytest.mark.timeout(240)  # each restart may wait for a killed transaction to time out (see the module)
def test_sigkills_at_random_moments_write_each_dead_letter_once(make_bed: Callable[..., Bed]) -> None:
    """A member is SIGKILLed three times at random moments while it works the stream (batches in flight,
    letters staged, transactions open or on their way) and restarted each time: a read_committed reader of
    the dead-letter topic sees each invalid record once, and every profile is engaged once per event."""
    rng = random.Random(51)
    bed = make_bed(12_000, 4, invalid_share=0.03, seed=51)
    bed.emu.set_faults(latency_s=0.3)  # requests take a while: a kill meets batches in flight
    # At most one request per partition, four in all: the four partitions move together (requests are handed
    # out in partition order, so with fewer the last partitions would wait for the first ones to finish).
    one_each = {"max_in_flight_per_partition": 1}
    proc = bed.process(settings_for(bed, "member", max_items=50, max_in_flight=4, altcraft=one_each))
    proc.start()
    for kill in range(1, 4):
        # A restart waits for the killed member's session (6 s) to expire before it gets the partitions, and
        # for a transaction the kill left open to be aborted (at once, or after it times out: see the module).
        wait_reading(bed, proc, 60, f"run {proc.runs} to read records")
        delay = rng.uniform(0.3, 3.0)
        time.sleep(delay)
        assert_unfinished(bed, f"kill {kill}")
        proc.kill()
        print(f"kill {kill} {delay:.2f} s after run {proc.runs} read records; committed {committed_now(bed)}")
        proc.start()
    wait_reading(bed, proc, 60, f"run {proc.runs} to read records")
    assert_outcome(bed, [proc], timeout=90)
    code, _ = proc.terminate()
    assert code == 0, proc.log_tail()


def test_graceful_rebalance_writes_each_dead_letter_once(make_bed: Callable[..., Bed]) -> None:
    """A second member joins a busy one and later leaves with SIGTERM, both with a short drain (2 s): the
    partitions move twice with batches open, in flight and letters staged; what a revoke could not finish
    the next owner reads again and writes in its own transactions. The reader sees each invalid record once."""
    bed = make_bed(6_000, 8, invalid_share=0.03, seed=52)
    bed.emu.set_faults(latency_s=0.5)  # revokes meet batches open, sealed and in flight
    # The default transactional ids; a request per partition at once, so every partition has work in flight.
    settings = settings_for(bed, max_items=50, max_in_flight=8, altcraft={"max_in_flight_per_partition": 1})
    settings["shutdown"]["drain_timeout_s"] = 2
    a = bed.process(settings, name="member-a")
    b = bed.process(settings, name="member-b")
    a.start()
    wait_until(lambda: a.metric_sum(DEAD_LETTERED) > 0, 60, "member a to dead-letter records")
    b.start()
    wait_until(lambda: assigned_now(log_messages(b)) > 0, 60, "member b to get partitions")
    produce_more(bed, 6_000, seed=53)  # work for both members
    wait_until(lambda: b.metric_sum(DEAD_LETTERED) > 0, 60, "member b to dead-letter records")
    assert_unfinished(bed, "member b left")
    code, _ = b.terminate()
    assert code == 0, b.log_tail()
    wait_until(lambda: assigned_now(log_messages(a)) == 8, 30, "member a to own every partition again")
    assert_outcome(bed, [a], timeout=90)
    code, _ = a.terminate()
    assert code == 0, a.log_tail()


@pytest.mark.broker_restart
def test_broker_restart_mid_stream_writes_each_dead_letter_once(make_bed: Callable[..., Bed], kafka: Any) -> None:
    """The broker goes down mid-stream for longer than the session timeout: transactions in progress fail and
    are aborted (their letters go back to the stage), the member's partitions are lost and assigned afresh.
    The reader sees each invalid record once, and every profile is engaged once per event."""
    broker = kafka.require_broker()
    bed = make_bed(12_000, 4, invalid_share=0.03, seed=54)
    bed.emu.set_faults(latency_s=0.3)
    # The default transactional id; a request per partition at once, so every partition has work in flight.
    proc = bed.process(settings_for(bed, max_items=50, max_in_flight=4, altcraft={"max_in_flight_per_partition": 1}))
    proc.start()
    wait_until(lambda: bed.emu.stats()["engagements"] > bed.stream.outcomes["engage"] // 4, 60, "a quarter done")
    assert bed.dead_letter_count(settle_s=0) > 0, "no dead letter committed before the restart"
    broker.restart(downtime_s=8)  # down longer than the session timeout (6 s)
    assert proc.alive(), proc.log_tail()
    assert_unfinished(bed, "the broker came back")
    assert_outcome(bed, [proc], timeout=60)
    code, _ = proc.terminate()
    assert code == 0, proc.log_tail()


def read_ahead(bed: Bed, proc: ConnectorProcess, committed_at_start: int) -> int:
    """Records this run read and has not committed yet."""
    return int(proc.metric_sum(CONSUMED)) - (sum((committed_now(bed) or {}).values()) - committed_at_start)


def staged_ahead(bed: Bed, proc: ConnectorProcess, committed_at_start: int, letters_at_start: int, n: int) -> bool:
    """This run read at least ``n`` records ahead of the committed offset, and staged letters not committed yet."""
    assert proc.alive(), f"{proc.log_path.name} exited:\n{proc.log_tail(15)}"
    staged = proc.metric_sum(DEAD_LETTERED) - (bed.dead_letter_count(settle_s=0) - letters_at_start)
    return read_ahead(bed, proc, committed_at_start) >= n and staged > 0


@pytest.mark.timeout(240)  # each restart may wait for a killed transaction to time out (see the module)
def test_slow_api_with_a_large_read_ahead_and_sigkills_writes_each_dead_letter_once(
    make_bed: Callable[..., Bed],
) -> None:
    """A slow API (1 s a request) and big batches: thousands of records are read ahead of the committed
    offset, the letters of the invalid ones among them staged and not yet committed, when the member is
    SIGKILLed; restarted, it reads them again, and is SIGKILLed again as it replays. A committed letter is
    never ahead of its partition's committed offset, and the reader sees each invalid record once."""
    bed = make_bed(12_000, 2, invalid_share=0.03, seed=55)
    bed.emu.set_faults(latency_s=1.0)
    settings = settings_for(
        bed, "member", max_items=500, linger_s=1.0, max_in_flight=2,
        altcraft={"max_in_flight_per_partition": 1}, batching={"max_buffered_bytes": 500_000_000},
    )  # fmt: skip
    proc = bed.process(settings)
    for kill in range(1, 3):
        committed_at_start = sum((committed_now(bed) or {}).values())
        letters_at_start = bed.dead_letter_count(settle_s=0)
        proc.start()
        wait_until(lambda: staged_ahead(bed, proc, committed_at_start, letters_at_start, 1_500), 90,  # noqa: B023
                   f"run {proc.runs} to read 1,500 records ahead with letters staged")  # fmt: skip
        ahead = letters_ahead_of_the_commit(bed)
        assert not ahead, f"committed dead letters of records not yet committed past: {ahead[:10]}"
        assert_unfinished(bed, f"kill {kill}")
        print(f"kill {kill}: {read_ahead(bed, proc, committed_at_start)} records read ahead")
        proc.kill()
    proc.start()
    assert_outcome(bed, [proc], timeout=90)
    code, _ = proc.terminate()
    assert code == 0, proc.log_tail()


def test_without_exactly_once_a_sigkill_repeats_letters_the_reader_sees(make_bed: Callable[..., Bed]) -> None:
    """The contrast (``dead_letter.exactly_once: false``): letters are written as soon as their records are
    read, ahead of the committed offset; after a SIGKILL the restarted member reads those records again and
    writes their letters again. Every invalid record is still there and nobody is engaged twice, but the
    exactly-once check sees the copies: it is what the tests above rely on."""
    bed = make_bed(6_000, 2, invalid_share=0.03, seed=56)
    bed.emu.set_faults(latency_s=1.0)
    settings = settings_for(
        bed, exactly_once=False, max_items=500, linger_s=1.0, max_in_flight=2,
        altcraft={"max_in_flight_per_partition": 1},
    )  # fmt: skip
    proc = bed.process(settings)
    proc.start()

    def five_ahead() -> list[tuple[int, int]] | None:
        ahead = letters_ahead_of_the_commit(bed)
        return ahead if ahead is not None and len(ahead) >= 5 else None

    ahead = wait_until(five_ahead, 60, "five letters written ahead of the commit")
    assert_unfinished(bed, "the kill")
    proc.kill()
    proc.start()
    bed.assert_delivered([proc], timeout=90)  # every invalid record there (keyed), nobody engaged twice
    with pytest.raises(AssertionError, match="written more than once") as failed:
        bed.assert_dead_letters_exactly_once()
    print(f"{len(ahead)} letters ahead of the commit at the kill; {failed.value}")
    code, _ = proc.terminate()
    assert code == 0, proc.log_tail()


# The predecessor of test_a_restart_aborts_the_transaction_its_predecessor_left_open: a member's commit as
# connector.transactions makes it (a letter, then the offsets past its record, in one transaction), SIGKILLed
# before commit_transaction.
PREDECESSOR = """
import os, signal, sys
from confluent_kafka import Consumer, Producer, TopicPartition
bootstrap, group, topic, dlq, txn_id, partition, offset = sys.argv[1:8]
consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                     "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000,
                     "partition.assignment.strategy": "cooperative-sticky"})  # the connector's
consumer.subscribe([topic])
while not consumer.assignment():
    consumer.poll(0.2)
producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id})
producer.init_transactions(30)
producer.begin_transaction()
headers = {"__connect.errors.topic": topic, "__connect.errors.partition": partition,
           "__connect.errors.offset": offset, "__connect.errors.stage": "decode",
           "__connect.errors.exception.class.name": "Predecessor", "__connect.errors.exception.message": "aborted"}
producer.produce(dlq, b"written by a transaction that never commits", headers=headers)
past = TopicPartition(topic, int(partition), int(offset) + 1)
producer.send_offsets_to_transaction([past], consumer.consumer_group_metadata(), 30)
producer.flush(10)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_restart_aborts_the_transaction_its_predecessor_left_open(make_bed: Callable[..., Bed]) -> None:
    """A member is SIGKILLed inside a commit: its transaction holds a dead letter and the offset past that
    letter's record. Restarted with the same transactional.id (a container restarted in its pod), it aborts
    that transaction at once and carries on, rather than waiting for the broker to abort it after
    transaction.timeout.ms (30 s or more): the aborted letter is never seen, its record's letter is written once."""
    bed = make_bed(4_000, 2, invalid_share=0.03, seed=57)
    txn_id = f"{bed.group}-member"
    partition, offset = min(bed.expected_dead())  # the first invalid record of partition 0
    args = [bed.kafka.bootstrap, bed.group, bed.topic, bed.dlq, txn_id, str(partition), str(offset)]
    died = subprocess.run([sys.executable, "-c", textwrap.dedent(PREDECESSOR), *args], timeout=60, check=False)
    assert died.returncode == -9, "the predecessor did not get as far as its SIGKILL"
    assert bed.kafka.end_offsets(bed.dlq) != bed.kafka.end_offsets(bed.dlq, committed_only=True), (
        "no transaction left open on the dead-letter topic"
    )
    proc = bed.process(settings_for(bed, "member"), name="member")  # the same transactional.id
    proc.start()
    # The predecessor's session (6 s) expires first; then the member reads at once.
    wait_reading(bed, proc, 20, "the restarted member to read records (the transaction times out after 30 s)")
    assert_outcome(bed, [proc], timeout=60)
    code, _ = proc.terminate()
    assert code == 0, proc.log_tail()
