"""Key-ordered concurrency: several batches of one partition in flight at once, and still every profile's
changes applied in their Kafka order, each once.

The real broker, the connector as a process (``altcraft.max_in_flight_per_partition``), and the emulator
recording, per profile, the ``seq`` field of each change in the order it applied them
(``EmulatorConfig.order_field``). The stream is one partition: many changes of a few "hot" customers
(their e-mail written in varying case, which Altcraft matches case-insensitively) interleaved with
many distinct customers, in rounds of a stretch of distinct customers (batches that may go in
parallel) and a stretch where the hot ones change often (batches that must wait for each other).
The API takes 0.3-0.5 s per request, uniformly at random: two batches sharing a profile sent together
would be applied in either order.
"""

from __future__ import annotations

import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import KafkaException

from connector.emulator.config import EmulatorConfig
from connector.emulator.server import Emulator
from tests.support import ConnectorProcess, wait_until

TOKEN = "key-order-token"
WORKFLOW = 12
IN_FLIGHT = 8

pytestmark = pytest.mark.timeout(300)


@dataclass
class Stream:
    """The records of one partition and what the emulator should end up with."""

    records: list[dict[str, Any]] = field(default_factory=list)
    # Per lower-cased e-mail: the seq of each of its changes, in Kafka order.
    seqs: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))

    @property
    def engagements(self) -> Counter[str]:
        return Counter({email: len(s) for email, s in self.seqs.items()})


def key_order_stream(rounds: int, distinct: int, busy: int, hot: int = 10, seed: int = 1) -> Stream:
    """``rounds`` x (``distinct`` new customers, then ``busy`` changes half of which update one of the
    ``hot`` customers); every change carries ``seq``, its position in the partition."""
    rng = random.Random(seed)
    stream = Stream()
    next_id = hot

    def change(cid: int, email: str) -> None:
        seq = len(stream.records)
        row = {"id": cid, "email": email, "first_name": f"n{seq}", "seq": seq}
        envelope = {"before": None, "after": row, "op": "u", "ts_ms": 1_735_689_600_000 + seq}
        stream.records.append({"key": orjson.dumps({"id": cid}), "value": orjson.dumps(envelope), "partition": 0})
        stream.seqs[email.lower()].append(seq)

    for _ in range(rounds):
        for _ in range(distinct):
            change(next_id, f"customer{next_id}@example.com")
            next_id += 1
        for _ in range(busy):
            if rng.random() < 0.5:
                cid = rng.randrange(hot)
                local = "".join(c.upper() if rng.random() < 0.3 else c for c in f"hot{cid}")
                change(cid, f"{local}@Example.com" if rng.random() < 0.3 else f"{local}@example.com")
            else:
                change(next_id, f"customer{next_id}@example.com")
                next_id += 1
    return stream


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    config = EmulatorConfig(tokens=[TOKEN], workflows=[WORKFLOW], seed=5, order_field="seq", request_log_size=100_000)
    with Emulator(config) as emu:
        emu.set_faults(latency_s=0.3, latency_max_s=0.5)
        yield emu


def settings(kafka: Any, topic: str, dlq: str, url: str, group: str) -> dict[str, Any]:
    return {
        "kafka": {
            "bootstrap_servers": kafka.bootstrap,
            "group_id": group,
            # A killed member is noticed quickly, so restarts rebalance in seconds.
            "consumer": {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000},
        },
        "altcraft": {
            "base_url": url,
            "token": TOKEN,
            "max_in_flight": IN_FLIGHT,
            "max_in_flight_per_partition": IN_FLIGHT,
            "request_timeout_s": 10,
            "retry": {"initial_backoff_s": 0.05, "max_backoff_s": 1},
        },
        "batching": {"max_items": 50, "linger_s": 0.1},
        "routes": [
            {
                "name": "customers",
                "topics": [topic],
                "workflow_id": WORKFLOW,
                "db_id": 7,
                "ops": {"r": "engage"},
                "matching": "email",
                "fields": {"email": "email", "_fname": "first_name", "seq": "seq"},
            }
        ],
        "dead_letter": {"topic": dlq},
        "shutdown": {"drain_timeout_s": 10},
    }


@dataclass
class Bed:
    kafka: Any
    emu: Emulator
    topic: str
    dlq: str
    group: str
    stream: Stream
    proc: ConnectorProcess


@pytest.fixture
def make_bed(
    kafka: Any, emulator: Emulator, tmp_path: Path, free_port: Callable[[], int]
) -> Iterator[Callable[[Stream], Bed]]:
    procs: list[ConnectorProcess] = []

    def make(stream: Stream) -> Bed:
        topic, dlq = kafka.new_topic(1), kafka.new_topic(1, prefix="dlq")
        kafka.produce(topic, stream.records)
        group = f"g-{topic}"
        proc = ConnectorProcess(settings(kafka, topic, dlq, emulator.url, group), tmp_path, free_port())
        procs.append(proc)
        return Bed(kafka, emulator, topic, dlq, group, stream, proc)

    try:
        yield make
    finally:
        for proc in procs:
            proc.stop()


def wait_committed(bed: Bed, timeout: float) -> None:
    ends = bed.kafka.end_offsets(bed.topic)

    def done() -> bool:
        if not bed.proc.alive():
            raise AssertionError(f"the connector exited early:\n{bed.proc.log_tail()}")
        try:
            return bool(bed.kafka.committed(bed.group, bed.topic) == ends)
        except KafkaException:  # e.g. the group coordinator still loading
            return False

    try:
        wait_until(done, timeout, "committed offsets to reach the end offsets", interval=0.5)
    except AssertionError:
        print(bed.proc.log_tail(40))
        print("emulator", bed.emu.stats())
        raise


def applied_seqs(emu: Emulator) -> dict[str, list[int]]:
    """Per lower-cased e-mail, the seq values the emulator applied, in the order it applied them."""
    return {str(r["matching_value"]).lower(): r["values"] for r in emu.order()}


def engaged_by_email(emu: Emulator) -> Counter[str]:
    out: Counter[str] = Counter()
    for e in emu.engagements(workflow_id=WORKFLOW):
        out[str(e["matching_value"]).lower()] += e["count"]
    return out


def assert_in_kafka_order_once_each(bed: Bed) -> None:
    got, want = applied_seqs(bed.emu), bed.stream.seqs
    assert bed.emu.stats()["order_missing"] == 0
    out_of_order = {email: got[email] for email in want if email in got and got[email] != sorted(got[email])}
    assert not out_of_order, f"applied out of Kafka order: {dict(list(out_of_order.items())[:3])}"
    wrong = {email: (got.get(email), seqs) for email, seqs in want.items() if got.get(email) != seqs}
    assert not wrong, (
        f"{len(wrong)} profiles applied other changes than theirs (got, expected): {list(wrong.items())[:3]}"
    )
    assert got.keys() == want.keys()
    engaged = engaged_by_email(bed.emu)
    assert engaged == bed.stream.engagements, "a profile engaged other than once per change"


def assert_no_double_engagement(bed: Bed) -> None:
    engaged = engaged_by_email(bed.emu)
    over = {m: n for m, n in engaged.items() if n > bed.stream.engagements[m]}
    assert not over, f"engaged more often than their changes: {dict(list(over.items())[:5])}"


def test_batches_of_one_partition_go_in_parallel_and_each_profile_keeps_its_kafka_order(
    make_bed: Callable[[Stream], Bed],
) -> None:
    bed = make_bed(key_order_stream(rounds=6, distinct=600, busy=300))
    bed.proc.start()
    wait_committed(bed, timeout=180)
    code, _ = bed.proc.terminate()
    assert code == 0, bed.proc.log_tail()
    assert_in_kafka_order_once_each(bed)
    stats = bed.emu.stats()
    assert stats["requests_in_flight_max"] > 1, "never more than one request of the partition in flight"
    assert stats["duplicates"] == 0
    assert sum(bed.kafka.end_offsets(bed.dlq).values()) == 0
    hot = [email for email, seqs in bed.stream.seqs.items() if len(seqs) > 50]
    assert len(hot) == 10  # the test has teeth: ten profiles with dozens of changes each


def test_retries_and_lost_answers_keep_each_profiles_kafka_order(make_bed: Callable[[Stream], Bed]) -> None:
    """A batch retried (error 500, an answer lost after execution) still holds back the later batches
    that share a profile with it, until it is answered."""
    bed = make_bed(key_order_stream(rounds=3, distinct=400, busy=300, seed=2))
    bed.emu.set_faults(error_500_rate=0.15, reset_after_execute_rate=0.1)
    bed.proc.start()
    wait_committed(bed, timeout=180)
    code, _ = bed.proc.terminate()
    assert code == 0, bed.proc.log_tail()
    assert_in_kafka_order_once_each(bed)
    stats = bed.emu.stats()
    assert stats["requests_in_flight_max"] > 1
    assert stats["faults_injected"].get("error_500", 0) > 0
    assert stats["duplicates"] == stats["faults_injected"].get("reset_after_execute", 0) > 0


def test_sigkill_with_several_batches_of_a_partition_in_flight_loses_nothing_and_engages_nobody_twice(
    make_bed: Callable[[Stream], Bed],
) -> None:
    bed = make_bed(key_order_stream(rounds=8, distinct=500, busy=250, seed=3))
    total = sum(bed.stream.engagements.values())
    rng = random.Random(7)
    for _ in range(3):
        bed.proc.start()
        wait_until(lambda: bed.emu.stats()["requests_in_flight"] >= 2, 60,
                   "several requests of the partition in flight", interval=0.05)  # fmt: skip
        time.sleep(rng.uniform(0.0, 0.8))
        assert bed.proc.alive(), bed.proc.log_tail()
        bed.proc.kill()
        assert bed.emu.stats()["engagements"] < total, "finished before the crash"
        # The requests the dead process left behind are executed (their answers go nowhere) before the
        # next start, so that the next wait sees the new process's requests.
        wait_until(lambda: bed.emu.stats()["requests_in_flight"] == 0, 10, "the orphaned requests to end")
        assert_no_double_engagement(bed)
    bed.proc.start()
    wait_committed(bed, timeout=180)
    code, _ = bed.proc.terminate()
    assert code == 0, bed.proc.log_tail()
    assert_no_double_engagement(bed)
    assert engaged_by_email(bed.emu) == bed.stream.engagements, "a change lost"
    # The batches in flight at each crash were replayed under their Request-IDs and deduplicated.
    assert bed.emu.stats()["duplicates"] > 0
    # Replays are not applied again, so the order holds across the crashes too.
    assert_in_kafka_order_once_each(bed)
