"""Delivery under faults: the real broker, the connector as a process, the emulator injecting faults.

Every test ends with the checks a user would make, where they apply:

- no event lost and nobody engaged twice: the emulator's engagements per email equal the stream's;
- the dead-letter topic holds exactly the invalid records (by source partition and offset, with their stage);
- the committed offsets reach the end offsets;
- the connector's metrics agree with what the emulator recorded.

The helpers here (:class:`Bed` and friends) are shared by ``test_rebalance.py`` and ``test_task_mode.py``.
"""

from __future__ import annotations

import itertools
import json
import statistics
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition

from connector.demo_data import DEMO_FIELDS, Stream, generate
from connector.emulator.config import EmulatorConfig
from connector.emulator.server import Emulator
from tests.conftest import FAST_RECONNECT
from tests.support import ConnectorProcess, header_map, wait_until

TOKEN = "faults-token"
WORKFLOW = 12
DB = 7
ROUTE = "customers"
HALT_PROBE_S = 15.0  # connector.sink.client.HALT_PROBE_S: a halted sender tries again this often

pytestmark = pytest.mark.timeout(150)


# ----------------------------------------------------------------------------------------------- test bed


@dataclass
class Bed:
    """One test's topic, dead-letter topic, group, stream and emulator; starts connectors and checks outcomes."""

    kafka: Any
    emu: Emulator
    tmp_path: Path
    free_port: Callable[[], int]
    topic: str
    dlq: str
    group: str
    stream: Stream
    positions: list[tuple[int, int]]
    partitions: int
    procs: list[ConnectorProcess] = field(default_factory=list)

    def settings(
        self,
        *,
        max_items: int = 200,
        linger_s: float = 0.1,
        max_in_flight: int = 4,
        consumer: dict[str, Any] | None = None,
        route: dict[str, Any] | None = None,
        altcraft: dict[str, Any] | None = None,
        dead_letter: dict[str, Any] | None = None,
        batching: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        return {
            "kafka": {
                "bootstrap_servers": self.kafka.bootstrap,
                "group_id": self.group,
                # A killed member is noticed quickly, so restarts rebalance in seconds.
                "consumer": {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000, **(consumer or {})},
            },
            "altcraft": {
                "base_url": self.emu.url,
                "token": TOKEN,
                "max_in_flight": max_in_flight,
                "request_timeout_s": 10,
                "retry": {"initial_backoff_s": 0.05, "max_backoff_s": 1},
                **(altcraft or {}),
            },
            "batching": {"max_items": max_items, "linger_s": linger_s, **(batching or {})},
            "routes": [
                {
                    "name": ROUTE,
                    "topics": [self.topic],
                    "workflow_id": WORKFLOW,
                    "db_id": 7,
                    "ops": {"r": "engage"},
                    "matching": "email",
                    "fields": DEMO_FIELDS,
                    **(route or {}),
                }
            ],
            "dead_letter": {"topic": self.dlq, **(dead_letter or {})},
            "shutdown": {"drain_timeout_s": 10},
        }

    def process(self, settings: dict[str, Any], name: str = "connector") -> ConnectorProcess:
        proc = ConnectorProcess(settings, self.tmp_path, self.free_port(), name=name)
        self.procs.append(proc)
        return proc

    # -- reading the outcome

    def committed(self) -> dict[int, int]:
        """The group's committed offsets, read through a throwaway consumer that never joins the group.

        Not through ``kafka.committed()`` (the admin ListConsumerGroupOffsets): librdkafka crashes the
        process (SIGSEGV in rd_kafka_cgrp_op from rd_kafka_handle_OffsetFetch) when the coordinator answers
        NOT_COORDINATOR, as it does right after a broker restart (confluentinc/librdkafka#5040). A fresh
        client per call also avoids a coordinator cached from before a restart.
        """
        consumer = Consumer(self.kafka.config({**FAST_RECONNECT, "group.id": self.group, "enable.auto.commit": False}))
        try:
            parts = [TopicPartition(self.topic, p) for p in range(self.partitions)]
            return {tp.partition: tp.offset for tp in consumer.committed(parts, timeout=10) if tp.offset >= 0}
        except KafkaException:  # e.g. the group coordinator is still loading
            return {}
        finally:
            consumer.close()

    def end_offsets(self) -> dict[int, int]:
        def read() -> dict[int, int] | None:
            try:
                return dict(self.kafka.end_offsets(self.topic))
            except KafkaException:  # e.g. leader epochs settling after a broker restart
                return None

        ends: dict[int, int] = wait_until(read, 30, "the end offsets", interval=0.5)
        return ends

    def wait_committed(self, procs: list[ConnectorProcess], timeout: float) -> None:
        """Committed offsets reach the end offsets (the connectors must stay up meanwhile)."""
        ends = self.end_offsets()

        def done() -> bool:
            for p in procs:
                if not p.alive():
                    raise AssertionError(f"{p.log_path.name} exited early:\n{p.log_tail()}")
            return self.committed() == ends

        try:
            wait_until(done, timeout, "committed offsets to reach the end offsets", interval=0.5)
        except AssertionError:
            for p in procs:
                print(f"--- {p.log_path.name}\n{p.log_tail(40)}")
            print("committed", self.committed(), "ends", ends, "emulator", self.emu.stats())
            raise

    def engaged_by_email(self) -> Counter[str]:
        return Counter({e["matching_value"]: e["count"] for e in self.emu.engagements(workflow_id=WORKFLOW)})

    def over_engaged(self) -> dict[str, int]:
        return {m: n for m, n in self.engaged_by_email().items() if n > self.stream.engagements[m]}

    def expected_dead(self) -> dict[tuple[int, int], str]:
        return {pos: e.expect.split(":", 1)[1] for e, pos in zip(self.stream.events, self.positions, strict=True)
                if e.expect.startswith("dead")}  # fmt: skip

    def dead_letter_topic_settled(self) -> bool:
        """No transaction is open on the dead-letter topic: its last stable offset is its end offset, so a
        ``read_committed`` reader sees every letter of every transaction that ended."""
        try:
            stable = self.kafka.end_offsets(self.dlq, committed_only=True)
            return stable == self.kafka.end_offsets(self.dlq)
        except KafkaException:  # e.g. leader epochs settling after a broker restart
            return False

    def committed_dead_letter_messages(self, settle_s: float = 75.0) -> list[Any]:
        """The dead-letter topic as a consumer with ``isolation.level=read_committed`` reads it, in the order
        read (by partition and offset: the records of aborted transactions and the markers are skipped).

        First waits up to ``settle_s`` for the transactions open on the topic to end (``settle_s`` 0: reads
        what is committed now). 75 s covers a transaction left open by a SIGKILLed member whose successor has
        another ``transactional.id``: the broker aborts it after ``transaction.timeout.ms`` (the connector's is
        at most librdkafka's default, 60 s) plus its abort check interval (10 s)."""
        if settle_s > 0:
            try:
                wait_until(self.dead_letter_topic_settled, settle_s, "the transactions open on the dead-letter "
                           "topic to end (its last stable offset to reach its end offset)", interval=0.5)  # fmt: skip
            except AssertionError as exc:
                ends, stable = self.kafka.end_offsets(self.dlq), self.kafka.end_offsets(self.dlq, committed_only=True)
                raise AssertionError(f"{exc}: end offsets {ends}, last stable offsets {stable}") from None
        return self.kafka.read_all(self.dlq)

    def committed_dead_letters(self, settle_s: float = 75.0) -> list[tuple[int, int, dict[str, str]]]:
        """(source partition, source offset, headers) of each letter a ``read_committed`` reader sees, in the
        order read; duplicates are kept (see :meth:`committed_dead_letter_messages`)."""
        out = []
        for msg in self.committed_dead_letter_messages(settle_s):
            h = header_map(msg)
            assert h.get("__connect.errors.topic") == self.topic, h
            out.append((int(h["__connect.errors.partition"]), int(h["__connect.errors.offset"]), h))
        return out

    def dead_letters(self) -> dict[tuple[int, int], dict[str, str]]:
        """Committed dead letters by source (partition, offset); keyed, so a letter written twice (at least
        once: ``dead_letter.exactly_once`` false) counts once (:meth:`assert_dead_letters_exactly_once` does not)."""
        out: dict[tuple[int, int], dict[str, str]] = {}
        for partition, offset, h in self.committed_dead_letters():
            pos = (partition, offset)
            assert pos not in out or out[pos]["__connect.errors.stage"] == h["__connect.errors.stage"], pos
            out[pos] = h
        return out

    def dead_letter_count(self, settle_s: float = 75.0) -> int:
        """Dead letters a ``read_committed`` reader sees, copies included (not the end offsets: those count
        the letters of aborted transactions and the transaction markers too)."""
        return len(self.committed_dead_letter_messages(settle_s))

    # -- the final checks

    def assert_no_loss_no_double_engagement(self) -> None:
        engaged = self.engaged_by_email()
        missing = {m: n - engaged[m] for m, n in self.stream.engagements.items() if engaged[m] < n}
        assert not missing, f"{len(missing)} profiles engaged less often than their events: {list(missing.items())[:5]}"
        over = self.over_engaged()
        assert not over, f"{len(over)} profiles engaged more often than their events: {list(over.items())[:5]}"
        assert engaged == self.stream.engagements

    def assert_dead_letters_as_expected(self) -> None:
        got = {pos: h["__connect.errors.stage"] for pos, h in self.dead_letters().items()}
        expected = self.expected_dead()
        assert got.keys() - expected.keys() == set(), "records dead-lettered that are valid"
        assert expected.keys() - got.keys() == set(), "invalid records missing from the dead-letter topic"
        assert got == expected

    def assert_dead_letters_exactly_once(self, settle_s: float = 75.0) -> None:
        """What a ``read_committed`` reader of the dead-letter topic sees: every invalid record exactly once
        (its own bytes, its stage, a reason), and no valid record."""
        expected = self.expected_dead()
        value_at = {pos: e.value for e, pos in zip(self.stream.events, self.positions, strict=True)}
        copies: Counter[tuple[int, int]] = Counter()
        wrong_stage: dict[tuple[int, int], tuple[str | None, str | None]] = {}
        no_reason: list[tuple[int, int]] = []
        wrong_value: list[tuple[int, int]] = []
        letters = self.committed_dead_letter_messages(settle_s)
        for msg in letters:
            h = header_map(msg)
            assert h.get("__connect.errors.topic") == self.topic, h
            pos = (int(h["__connect.errors.partition"]), int(h["__connect.errors.offset"]))
            copies[pos] += 1
            if pos in expected and h.get("__connect.errors.stage") != expected[pos]:
                wrong_stage[pos] = (h.get("__connect.errors.stage"), expected[pos])
            if not h.get("__connect.errors.exception.class.name") or not h.get("__connect.errors.exception.message"):
                no_reason.append(pos)
            if msg.value() != value_at.get(pos):
                wrong_value.append(pos)
        doubled = {pos: n for pos, n in sorted(copies.items()) if n > 1}
        missing = sorted(expected.keys() - copies.keys())
        valid = sorted(copies.keys() - expected.keys())
        problems = []
        if doubled:
            extra = sum(doubled.values()) - len(doubled)
            problems.append(f"{len(doubled)} invalid records written more than once ({extra} extra copies): "
                            f"{list(doubled.items())[:10]}")  # fmt: skip
        if missing:
            problems.append(f"{len(missing)} invalid records missing: {missing[:10]}")
        if valid:
            problems.append(f"{len(valid)} records dead-lettered that are valid: {valid[:10]}")
        if wrong_stage:
            problems.append(f"{len(wrong_stage)} letters with the wrong stage (got, expected): "
                            f"{list(wrong_stage.items())[:10]}")  # fmt: skip
        if no_reason:
            problems.append(f"{len(no_reason)} letters without a reason (exception class name and message): "
                            f"{no_reason[:10]}")  # fmt: skip
        if wrong_value:
            problems.append(f"{len(wrong_value)} letters whose value is not their record's: {wrong_value[:10]}")
        assert not problems, (
            f"read_committed reader of {self.dlq}: {len(letters)} letters for {len(expected)} invalid records; "
            + "; ".join(problems)
        )

    def assert_delivered(self, procs: list[ConnectorProcess], timeout: float = 60) -> None:
        self.wait_committed(procs, timeout)
        self.assert_no_loss_no_double_engagement()
        self.assert_dead_letters_as_expected()

    def assert_metrics_match_emulator(self, proc: ConnectorProcess, *, requests: bool = True) -> None:
        """For one uninterrupted run: what the connector counted is what the emulator saw."""
        s = self.stream.outcomes
        dead = s["dead:decode"] + s["dead:map"] + s["dead:api"]
        wait_until(lambda: proc.metric_sum("altcraft_connector_records_dead_lettered_total") == dead, 20,
                   f"{dead} dead letters in the metrics")  # fmt: skip
        stats = self.emu.stats()
        assert proc.metric_sum("altcraft_connector_records_consumed_total") == len(self.stream.events)
        assert proc.metric_sum("altcraft_connector_records_engaged_total") == stats["items_accepted"] == s["engage"]
        assert proc.metric_sum("altcraft_connector_records_skipped_total") == s["skip"]
        for stage in ("decode", "map", "api"):
            assert proc.metric_sum("altcraft_connector_records_dead_lettered_total", stage=stage) == s[f"dead:{stage}"]
        if requests:
            assert proc.metric_sum("altcraft_connector_requests_total") == stats["requests"]


@pytest.fixture
def make_bed(kafka: Any, tmp_path: Path, free_port: Callable[[], int]) -> Iterator[Callable[..., Bed]]:
    """``make_bed(events, partitions, ...)``: topics, the emulator, the stream produced; everything it started
    (connector processes, the emulator) is stopped at the end of the test."""
    beds: list[Bed] = []
    emulators: list[Emulator] = []

    def make(
        events: int = 10_000,
        partitions: int = 4,
        *,
        invalid_share: float = 0.02,
        seed: int = 21,
        emulator: dict[str, Any] | None = None,
        dlq: str | None = None,
    ) -> Bed:
        config = EmulatorConfig(
            tokens=[TOKEN], workflows=[WORKFLOW], dbs=[DB], seed=seed, request_log_size=100_000, **(emulator or {})
        )
        emu = Emulator(config)
        emu.start()
        emulators.append(emu)
        topic = kafka.new_topic(partitions)
        dlq_topic = dlq if dlq is not None else kafka.new_topic(1, prefix="dlq")
        stream = generate(events, partitions, invalid_share=invalid_share, seed=seed)
        records = [{"value": e.value, "key": e.key, "partition": e.partition} for e in stream.events]
        positions = list(kafka.produce(topic, records))
        bed = Bed(kafka, emu, tmp_path, free_port, topic, dlq_topic, f"g-{topic}", stream, positions, partitions)
        beds.append(bed)
        return bed

    try:
        yield make
    finally:
        for bed in beds:
            for proc in bed.procs:
                proc.stop()
        for emu in emulators:
            emu.stop()


def log_messages(proc: ConnectorProcess) -> list[str]:
    out = []
    for line in proc.log_path.read_text(errors="replace").splitlines():
        try:
            out.append(str(json.loads(line)["msg"]))
        except (ValueError, KeyError, TypeError):
            out.append(line)
    return out


def readyz(proc: ConnectorProcess) -> int:
    try:
        return httpx.get(f"http://127.0.0.1:{proc.port}/readyz", timeout=5).status_code
    except httpx.HTTPError:
        return -1


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


# ----------------------------------------------------------------------------------------------- the scenarios


def test_30_percent_error_500_with_random_latency_delivers_everything_once(make_bed: Callable[..., Bed]) -> None:
    bed = make_bed(20_000, 4, seed=31)
    bed.emu.set_faults(error_500_rate=0.3, latency_s=0.0, latency_max_s=0.15)
    proc = bed.process(bed.settings(max_items=250))
    proc.start()
    bed.assert_delivered([proc], timeout=80)
    bed.assert_metrics_match_emulator(proc)
    injected = bed.emu.stats()["faults_injected"].get("error_500", 0)
    assert injected > 0.2 * bed.emu.stats()["requests"]
    # Every error 500 was retried, none was taken for an answer.
    assert proc.metric_sum("altcraft_connector_retries_total", reason="server_error") == injected
    assert bed.emu.stats()["duplicates"] == 0


def test_connection_resets_and_proxy_5xx_deliver_everything_once(make_bed: Callable[..., Bed]) -> None:
    bed = make_bed(15_000, 4, seed=30)
    # Resets before and after the request was executed (the answer is lost: the retry must be deduplicated).
    bed.emu.set_faults(reset_rate=0.1, reset_after_execute_rate=0.15, http_502_rate=0.05, http_503_rate=0.05)
    proc = bed.process(bed.settings(max_items=250))
    proc.start()
    bed.assert_delivered([proc], timeout=80)
    bed.assert_metrics_match_emulator(proc)
    stats = bed.emu.stats()
    injected = stats["faults_injected"]
    assert injected.get("reset", 0) > 0 and injected.get("reset_after_execute", 0) > 0
    # Each executed request whose answer was lost came back under its Request-ID and was answered as a duplicate.
    assert stats["duplicates"] == injected["reset_after_execute"]
    assert proc.metric_sum("altcraft_connector_retries_total", reason="transport") == (
        injected["reset"] + injected["reset_after_execute"]
    )
    retried_5xx = sum(
        proc.metric_sum("altcraft_connector_retries_total", reason=r) for r in ("http_5xx", "server_error")
    )
    assert retried_5xx == injected.get("http_502", 0) + injected.get("http_503", 0) > 0


def test_429_storm_retry_after_is_honoured_and_the_request_rate_drops(make_bed: Callable[..., Bed]) -> None:
    bed = make_bed(20_000, 4, seed=32)
    storm_s, storm_retry_after = 6.0, 2
    bed.emu.set_faults(rate_limit_rate=1.0, retry_after_s=storm_retry_after)
    max_in_flight = 4
    proc = bed.process(bed.settings(max_items=200, max_in_flight=max_in_flight))
    proc.start()
    wait_until(lambda: bed.emu.stats()["requests"] > 0, 30, "the first request")
    storm_started = time.monotonic()
    time.sleep(storm_s)  # the storm lasts this long: every request is answered 429 meanwhile
    storm_requests = bed.emu.stats()["requests"]
    storm_ended = time.monotonic()
    # Then a lighter throttling for a while (30 % of the requests, Retry-After 1 s), then none.
    bed.emu.set_faults(rate_limit_rate=0.3, retry_after_s=1)
    time.sleep(4)
    light_requests = bed.emu.stats()["requests"]
    bed.emu.clear_faults()
    cleared = time.monotonic()
    bed.assert_delivered([proc], timeout=80)
    bed.assert_metrics_match_emulator(proc)

    log = bed.emu.requests()
    assert len(log) == bed.emu.stats()["requests"], "the request log must hold every request"
    # During the storm no sender asked again before Retry-After: at most one request per sender per 2 s.
    assert all(r["fault"] == "http_429" for r in log if r["seq"] <= storm_requests)
    assert storm_requests <= max_in_flight * (storm_s / storm_retry_after + 2)
    storm_rate = storm_requests / (storm_ended - storm_started)
    after = [r for r in log if r["seq"] > light_requests and r["at"] > cleared]
    assert len(after) > 20, "too little work left after the storm to compare rates"
    after_rate = len(after) / max(0.001, after[-1]["at"] - cleared)
    assert after_rate > 3 * storm_rate, (storm_rate, after_rate)
    # Per batch (Request-ID), the request after a 429 came no earlier than its Retry-After.
    by_rid: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in log:
        by_rid[r["request_id"]].append(r)
    gaps = []
    for attempts in by_rid.values():
        for prev, nxt in itertools.pairwise(attempts):
            if prev["http_status"] == 429:
                wanted = storm_retry_after if prev["seq"] <= storm_requests else 1
                gaps.append((nxt["at"] - prev["at"], wanted))
    assert gaps, "no batch was retried after a 429"
    early = [(round(g, 3), w) for g, w in gaps if g < w - 0.005]
    assert not early, f"{len(early)} retries came before Retry-After: {early[:5]}"
    throttled = bed.emu.stats()["faults_injected"]["http_429"]
    assert proc.metric_sum("altcraft_connector_retries_total", reason="throttled") == throttled


def test_outage_longer_than_max_poll_interval_keeps_the_assignment_and_memory_flat(
    make_bed: Callable[..., Bed], kafka: Any
) -> None:
    bed = make_bed(10_000, 4, invalid_share=0.0, seed=33)
    bed.emu.set_faults(latency_s=0.05)
    settings = bed.settings(
        max_items=200, max_in_flight=2,
        consumer={"max.poll.interval.ms": 10_000, "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000},
    )  # fmt: skip
    proc = bed.process(settings)
    proc.start()
    wait_until(lambda: bed.emu.stats()["engagements"] > 500, 40, "the stream to get going")
    outage_s = 20.0
    bed.emu.set_faults(outage_s=outage_s)
    outage_ends = time.monotonic() + outage_s
    # More events arrive while the API is out: they wait in Kafka, not in memory.
    more = generate(10_000, 4, invalid_share=0.0, seed=34)
    records = [{"value": e.value, "key": e.key, "partition": e.partition} for e in more.events]
    bed.positions.extend(bed.kafka.produce(bed.topic, records))
    bed.stream.events.extend(more.events)
    bed.stream.engagements.update(more.engagements)
    bed.stream.outcomes.update(more.outcomes)
    engaged_at_start = bed.emu.stats()["items_accepted"]
    samples: list[tuple[float, int]] = []
    while time.monotonic() < outage_ends - 1:  # the connector retries when the outage ends (its Retry-After)
        samples.append((time.monotonic(), rss_kb(proc.pid)))
        assert proc.alive(), proc.log_tail()
        time.sleep(0.5)
    assert bed.emu.stats()["items_accepted"] == engaged_at_start, "the outage let requests through"
    assert bed.dead_letter_count() == 0
    # Memory: flat once the partitions are paused (after the first few seconds of the outage).
    settled = [kb for t, kb in samples if t > outage_ends - outage_s + 4]
    baseline = statistics.median(settled[:4])
    assert max(settled) - baseline < 10_000, (
        f"RSS grew during the outage: {baseline} kB -> {max(settled)} kB: {samples}"
    )
    assert proc.metric_sum("altcraft_connector_assigned_partitions") == 4
    bed.assert_delivered([proc], timeout=60)
    bed.assert_metrics_match_emulator(proc)
    messages = log_messages(proc)
    assert not [m for m in messages if "partitions lost" in m or "partitions revoked" in m]
    assert len([m for m in messages if m.startswith("partitions assigned")]) == 1
    assert bed.dead_letter_count() == 0
    assert bed.emu.stats()["faults_injected"].get("outage", 0) > 0


def test_oversize_batches_are_split_and_all_delivered(make_bed: Callable[..., Bed]) -> None:
    limit = 30_000
    bed = make_bed(10_000, 4, seed=35, emulator={"max_body_bytes": limit})
    proc = bed.process(bed.settings(max_items=500, linger_s=0.3))
    proc.start()
    bed.assert_delivered([proc], timeout=60)
    bed.assert_metrics_match_emulator(proc)
    log = bed.emu.requests()
    too_large = [r for r in log if r["body_bytes"] > limit]
    assert too_large and all(r["http_status"] == 400 and r["error"] == 400 for r in too_large)
    assert proc.metric_sum("altcraft_connector_requests_total", outcome="split") == len(too_large)
    # Each part carries its own key derived from its parent's.
    assert any(".1of2" in (r["request_id"] or "") for r in log)
    assert bed.emu.stats()["duplicates"] == 0


def test_strict_mode_poisoned_batches_dead_letter_only_the_bad_records(make_bed: Callable[..., Bed]) -> None:
    bed = make_bed(8_000, 4, seed=36)
    bed.emu.set_faults(strict=True)
    proc = bed.process(bed.settings(max_items=100))
    proc.start()
    bed.assert_delivered([proc], timeout=80)
    bed.assert_metrics_match_emulator(proc)
    api_dead = [h for h in bed.dead_letters().values() if h["__connect.errors.stage"] == "api"]
    assert len(api_dead) == bed.stream.outcomes["dead:api"] > 0
    assert {h["altcraft.error.code"] for h in api_dead} == {"400"}
    assert proc.metric_sum("altcraft_connector_requests_total", outcome="bisect") > 0


def test_401_halts_without_dead_letters_or_commits_then_recovers_by_itself(make_bed: Callable[..., Bed]) -> None:
    bed = make_bed(10_000, 4, seed=37)
    bed.emu.set_faults(latency_s=0.2)
    proc = bed.process(bed.settings(max_items=200, max_in_flight=2))
    proc.start()
    wait_until(lambda: bed.emu.stats()["engagements"] > 1000, 40, "the stream to get going")
    bed.emu.set_faults(tokens=["rotated-token"], latency_s=0.0)
    halted_at = time.monotonic()
    wait_until(lambda: proc.metric_sum("altcraft_connector_halted", reason="unauthorized") == 1, 20, "the halt")
    assert readyz(proc) == 503
    # Let the answers that came before the halt be committed, then watch: nothing moves while halted.
    time.sleep(1.5)
    committed, dead, accepted = bed.committed(), bed.dead_letter_count(), bed.emu.stats()["items_accepted"]
    assert sum(committed.values()) < sum(bed.end_offsets().values())
    while time.monotonic() < halted_at + 8:
        assert readyz(proc) == 503
        assert proc.metric_sum("altcraft_connector_halted", reason="unauthorized") == 1
        time.sleep(0.5)
    assert bed.committed() == committed, "offsets were committed while halted"
    assert bed.dead_letter_count() == dead, "records were dead-lettered while halted"
    assert bed.emu.stats()["items_accepted"] == accepted
    unauthorized = [r for r in bed.emu.requests() if r["error"] == 401]
    assert unauthorized
    # The token is accepted again: the next probe (every 15 s) resumes by itself.
    bed.emu.set_faults(tokens=None)
    wait_until(lambda: readyz(proc) == 200, HALT_PROBE_S + 10, "readiness after the token works again")
    assert proc.metric_sum("altcraft_connector_halted", reason="unauthorized") == 0
    bed.assert_delivered([proc], timeout=60)
    bed.assert_metrics_match_emulator(proc)
    assert any("halted" in m for m in log_messages(proc))


def test_unwritable_dead_letter_topic_stalls_the_partition_then_recovers(
    make_bed: Callable[..., Bed], kafka: Any
) -> None:
    # The dead-letter topic does not exist yet, and the test broker does not create topics on demand.
    dlq = f"dlq-missing-{uuid.uuid4().hex[:12]}"
    bed = make_bed(6_000, 2, seed=38, dlq=dlq)
    expected = bed.expected_dead()
    first_dead = {p: min(off for (pp, off) in expected if pp == p) for p, _ in expected}
    assert set(first_dead) == {0, 1}
    proc = bed.process(bed.settings(max_items=200, dead_letter={"delivery_timeout_s": 2}))
    proc.start()
    wait_until(lambda: proc.metric_sum("altcraft_connector_dead_letter_stalled") == 1, 30, "the stall")
    wait_until(lambda: bed.emu.stats()["items_accepted"] > 0, 30, "some deliveries")
    stall_seen = time.monotonic()
    while time.monotonic() < stall_seen + 6:  # stays stalled: no offset passes a record whose fate is open
        for p, off in bed.committed().items():
            assert off <= first_dead[p], f"partition {p} committed {off} past its dead record at {first_dead[p]}"
        assert proc.metric_sum("altcraft_connector_dead_letter_stalled") == 1
        time.sleep(0.5)
    assert proc.alive(), proc.log_tail()
    assert any("cannot write to the dead-letter topic" in m for m in log_messages(proc))
    # What an operator sees: the named halt and a pod that is not ready.
    wait_until(lambda: proc.metric_sum("altcraft_connector_halted", reason="dead_letter_missing_topic") == 1, 30,
               "the halt naming the missing topic")  # fmt: skip
    assert httpx.get(f"http://127.0.0.1:{proc.port}/readyz", timeout=5).status_code == 503
    kafka.create_topic(dlq, 1)
    bed.assert_delivered([proc], timeout=60)
    wait_until(lambda: proc.metric_sum("altcraft_connector_dead_letter_stalled") == 0, 10, "the stall to clear")
    assert proc.metric_sum("altcraft_connector_halted", reason="dead_letter_missing_topic") == 0
    assert httpx.get(f"http://127.0.0.1:{proc.port}/readyz", timeout=5).status_code == 200
    bed.assert_metrics_match_emulator(proc)


def test_import_only_mode_imports_profiles_and_engages_nobody(make_bed: Callable[..., Bed]) -> None:
    bed = make_bed(8_000, 4, seed=39)
    proc = bed.process(bed.settings(route={"mode": "import", "db_id": DB, "workflow_id": None}))
    proc.start()
    bed.wait_committed([proc], timeout=60)
    assert bed.emu.engagements() == []
    assert bed.emu.stats()["engagements"] == 0
    emails = {p["fields"].get("email") for p in bed.emu.profiles()}
    assert emails == set(bed.stream.engagements)
    assert {r["endpoint"] for r in bed.emu.requests()} == {"profiles/import_batch"}
    bed.assert_dead_letters_as_expected()
    bed.assert_metrics_match_emulator(proc)
