"""The product end to end: a real Kafka broker, the connector as a process, the emulator over HTTP."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaException

from connector.demo_data import DEMO_FIELDS, Stream, generate
from connector.emulator.config import EmulatorConfig
from connector.emulator.server import Emulator
from tests.support import ConnectorProcess, header_map, wait_until

TOKEN = "pipeline-token"
WORKFLOW = 12


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(EmulatorConfig(tokens=[TOKEN], workflows=[WORKFLOW], seed=3)) as emu:
        yield emu


def connector_settings(kafka: Any, topic: str, dlq: str, url: str, group: str, **batching: Any) -> dict[str, Any]:
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
            "max_in_flight": 4,
            "retry": {"initial_backoff_s": 0.05, "max_backoff_s": 1},
        },
        "batching": {"max_items": 2000, "linger_s": 0.3, **batching},
        "routes": [
            {
                "name": "customers",
                "topics": [topic],
                "workflow_id": WORKFLOW,
                "db_id": 7,
                "ops": {"r": "engage"},
                "matching": "email",
                "fields": DEMO_FIELDS,
            }
        ],
        "dead_letter": {"topic": dlq},
        "shutdown": {"drain_timeout_s": 20},
    }


def produce_stream(kafka: Any, topic: str, stream: Stream) -> list[tuple[int, int]]:
    records = [{"value": e.value, "key": e.key, "partition": e.partition} for e in stream.events]
    return list(kafka.produce(topic, records))


def engaged_by_email(emu: Emulator) -> Counter[str]:
    return Counter({e["matching_value"]: e["count"] for e in emu.engagements(workflow_id=WORKFLOW)})


def expected_dead(stream: Stream, positions: list[tuple[int, int]]) -> dict[tuple[int, int], str]:
    return {pos: e.expect.split(":", 1)[1] for e, pos in zip(stream.events, positions, strict=True)
            if e.expect.startswith("dead")}  # fmt: skip


def wait_committed(kafka: Any, group: str, topic: str, proc: ConnectorProcess, timeout: float) -> None:
    ends = kafka.end_offsets(topic)

    def done() -> bool:
        if not proc.alive():
            raise AssertionError(f"the connector exited early:\n{proc.log_tail()}")
        try:
            return kafka.committed(group, topic) == ends
        except KafkaException:  # e.g. the group coordinator still loading
            return False

    try:
        wait_until(done, timeout, "committed offsets to reach the end offsets", interval=0.5)
    except AssertionError:
        print(proc.log_tail())
        raise


def dead_letters_by_position(kafka: Any, dlq: str) -> dict[tuple[int, int], dict[str, str]]:
    out = {}
    for msg in kafka.read_all(dlq):
        h = header_map(msg)
        out[(int(h["__connect.errors.partition"]), int(h["__connect.errors.offset"]))] = h
    return out


def test_every_valid_event_engaged_once_and_only_invalid_ones_dead_lettered(
    kafka: Any, emulator: Emulator, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    topic, dlq = kafka.new_topic(8), kafka.new_topic(1, prefix="dlq")
    stream = generate(100_000, 8, invalid_share=0.02, seed=11)
    positions = produce_stream(kafka, topic, stream)
    group = f"g-{topic}"
    proc = ConnectorProcess(connector_settings(kafka, topic, dlq, emulator.url, group), tmp_path, free_port())
    proc.start()
    try:
        wait_committed(kafka, group, topic, proc, timeout=300)
        # The metrics agree with what Kafka and the emulator show.
        wait_until(lambda: proc.metric_sum("altcraft_connector_records_dead_lettered_total")
                   == stream.outcomes["dead:decode"] + stream.outcomes["dead:map"] + stream.outcomes["dead:api"],
                   30, "dead-letter metrics")  # fmt: skip
        metrics = proc
        assert metrics.metric_sum("altcraft_connector_records_consumed_total") == 100_000
        assert metrics.metric_sum("altcraft_connector_records_engaged_total") == stream.outcomes["engage"]
        assert metrics.metric_sum("altcraft_connector_records_skipped_total") == stream.outcomes["skip"]
        for stage in ("decode", "map", "api"):
            assert (
                metrics.metric_sum("altcraft_connector_records_dead_lettered_total", stage=stage)
                == (stream.outcomes[f"dead:{stage}"])
            ), stage
        requests = emulator.stats()["requests"]
        assert metrics.metric_sum("altcraft_connector_requests_total") == requests
        code, _ = proc.terminate()
        assert code == 0
    finally:
        proc.stop()

    # Every valid event's profile engaged exactly as many times as it had events.
    assert engaged_by_email(emulator) == stream.engagements
    # The dead-letter topic holds exactly the invalid records, with their reason and original bytes.
    expected = expected_dead(stream, positions)
    got = dead_letters_by_position(kafka, dlq)
    assert {pos: h["__connect.errors.stage"] for pos, h in got.items()} == expected
    by_pos = {pos: e for e, pos in zip(stream.events, positions, strict=True)}
    api_codes = Counter()
    for msg in kafka.read_all(dlq):
        h = header_map(msg)
        pos = (int(h["__connect.errors.partition"]), int(h["__connect.errors.offset"]))
        assert msg.value() == by_pos[pos].value and msg.key() == by_pos[pos].key
        assert h["__connect.errors.topic"] == topic
        assert h["__connect.errors.exception.message"]
        if h["__connect.errors.stage"] == "api":
            assert h["altcraft.request.id"].startswith("akc-")
            api_codes[h["altcraft.error.code"]] += 1
            assert h["altcraft.error.text"]
    assert sum(api_codes.values()) == stream.outcomes["dead:api"]
    assert TOKEN not in proc.log_path.read_text()


def test_sigkill_at_random_moments_loses_nothing_and_engages_nobody_twice(
    kafka: Any, emulator: Emulator, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    topic, dlq = kafka.new_topic(8), kafka.new_topic(1, prefix="dlq")
    stream = generate(40_000, 8, invalid_share=0.02, seed=12)
    positions = produce_stream(kafka, topic, stream)
    group = f"g-{topic}"
    # Small batches and a slow API (about 20 s of work): requests are in flight whenever the process dies.
    emulator.set_faults(latency_s=0.3)
    settings = connector_settings(kafka, topic, dlq, emulator.url, group, max_items=300, linger_s=0.1)
    settings["altcraft"]["max_in_flight"] = 2
    proc = ConnectorProcess(settings, tmp_path, free_port())
    rng = random.Random(5)
    try:
        for _ in range(5):
            proc.start()
            wait_until(lambda: proc.metric_sum("altcraft_connector_records_consumed_total") > 0, 60, "consumption")
            engaged_before = emulator.stats()["engagements"]
            wait_until(lambda b=engaged_before: emulator.stats()["engagements"] > b, 60, "progress")
            time.sleep(rng.uniform(0.0, 1.5))
            proc.kill()
            assert emulator.stats()["engagements"] < stream.outcomes["engage"], "finished before the crash"
            assert_no_double_engagement(emulator, stream)
        proc.start()
        wait_committed(kafka, group, topic, proc, timeout=300)
        proc.terminate()
    finally:
        proc.stop()
    assert engaged_by_email(emulator) == stream.engagements
    assert emulator.stats()["duplicates"] > 0  # replays happened, and were deduplicated
    got = dead_letters_by_position(kafka, dlq)
    assert {pos: h["__connect.errors.stage"] for pos, h in got.items()} == expected_dead(stream, positions)


def assert_no_double_engagement(emu: Emulator, stream: Stream) -> None:
    over = {m: n for m, n in engaged_by_email(emu).items() if n > stream.engagements[m]}
    assert not over, f"engaged more often than their events: {dict(list(over.items())[:5])}"


def test_sigterm_drains_within_the_deadline_and_a_restart_sends_nothing_twice(
    kafka: Any, emulator: Emulator, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    topic, dlq = kafka.new_topic(4), kafka.new_topic(1, prefix="dlq")
    # More than a member holds at once, so that the stop leaves work for the restart: up to 8 sealed
    # 500-item batches per partition wait (backlog_limit), with the open one and those in flight about
    # 6,500 records of each partition's 15,000.
    stream = generate(60_000, 4, invalid_share=0.02, seed=13)
    produce_stream(kafka, topic, stream)
    group = f"g-{topic}"
    emulator.set_faults(latency_s=0.05)
    settings = connector_settings(kafka, topic, dlq, emulator.url, group, max_items=500, linger_s=0.2)
    proc = ConnectorProcess(settings, tmp_path, free_port())
    try:
        proc.start()
        wait_until(lambda: emulator.stats()["engagements"] > 2000, 60, "the stream to be half-way")
        code, took = proc.terminate(timeout=60)
        assert code == 0, proc.log_tail()
        assert took < 20 + 10  # drain deadline plus process start-up slack
        assert emulator.stats()["engagements"] < stream.outcomes["engage"], "stopped too late to test anything"
        requests_before = emulator.stats()["requests"]
        proc.start()
        wait_committed(kafka, group, topic, proc, timeout=300)
        proc.terminate()
    finally:
        proc.stop()
    assert requests_before > 0
    assert engaged_by_email(emulator) == stream.engagements
    assert emulator.stats()["duplicates"] == 0
    assert not [r for r in emulator.requests() if r["duplicate"]]
