"""``altcraft-connector demo``: the whole pipeline on an embedded default, nothing else to install.

- Kafka: librdkafka's in-process mock cluster (``test.mock.num.brokers``), no Java needed. It keeps
  at most about 5 MiB per partition, so the demo spreads its stream over enough partitions.
- Altcraft: the bundled emulator, started as a child process on a free loopback port.
- Data: a reproducible Debezium stream of customer changes with a few percent of invalid events.

The run shows the guarantees a user picks the connector for, in four acts:

1. a connector reads the first 40% of the stream;
2. the emulator loses every answer after executing the request (``reset_after_execute``) while 10% more
   arrives: the connector retries with the same Request-ID and the emulator answers as duplicates;
3. the connector is stopped during that fault with batches unanswered (their ranges are in the commit
   metadata); the fault ends;
4. a new connector in the same group replays those batches under the same Request-IDs (answered as
   duplicates) and reads the rest.

It ends with a summary, one example dead letter per stage read back from the dead-letter topic, checks
against what the emulator recorded (every customer engaged exactly as often as it changed), and the
next steps.
"""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client import CollectorRegistry

from connector.app import Connector
from connector.compose import build as build_connector
from connector.config import Settings
from connector.demo_data import DEMO_FIELDS, Event, generate
from connector.emulator import process as emulator_process

TOPIC = "shop.public.customers"
DLQ_TOPIC = "altcraft-connector-dlq"
GROUP = "altcraft-demo"
TOKEN = "demo-token"
WORKFLOW = 12
DB = 2  # the database snapshot reads are imported into (ops.r: import, the default)
PARTITIONS = 4  # the mock cluster creates topics with four partitions
FIRST_SHARE = 0.4  # of the stream, read by the first connector before the fault
FAULT_SHARE = 0.1  # of the stream, produced while the API loses its answers
FAULT = {"reset_after_execute_rate": 1.0}
FAULT_MAX_S = 5.0  # the fault ends after a retry was answered as a duplicate, or after this long
STAGES = ("decode", "map", "op", "size", "api")
SHOWN_CHARS = 100  # of a dead letter's value and texts
SECRET_WORDS = ("token", "authorization", "password", "secret", "api-key", "apikey")


@dataclass(slots=True)
class _Run:
    """One connector on its thread, with its own metrics registry."""

    connector: Connector
    thread: threading.Thread
    registry: CollectorRegistry
    first_read: float | None = None
    last_progress: float | None = None

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def total(self, name: str) -> Counter[str]:
        """``name``'s samples summed by their last label (reason, stage, outcome), zero values left out."""
        out: Counter[str] = Counter()
        for metric in self.registry.collect():
            for s in metric.samples:
                if s.name == name and s.value:
                    label = list(s.labels.values())[-1] if s.labels else ""
                    out[label] += int(s.value)
        return out


@dataclass(slots=True)
class _Letter:
    headers: dict[str, str]
    key: bytes | None
    value: bytes | None

    @property
    def source(self) -> tuple[str, str, str]:
        h = self.headers
        return (
            h.get("__connect.errors.topic", ""),
            h.get("__connect.errors.partition", ""),
            h.get("__connect.errors.offset", ""),
        )


@dataclass(slots=True)
class _Letters:
    """The dead-letter topic read back: every letter, and the distinct source records they stand for."""

    all: list[_Letter] = field(default_factory=list)

    def distinct(self) -> dict[tuple[str, str, str], _Letter]:
        out: dict[tuple[str, str, str], _Letter] = {}
        for letter in self.all:
            out.setdefault(letter.source, letter)
        return out


def run_demo(events: int, seed: int, partitions: int = PARTITIONS) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Each dead letter is logged as it is written; the demo shows one per stage from the topic instead.
    logging.getLogger("connector.dead_letters").setLevel(logging.ERROR)
    print("demo: the whole pipeline on this machine (Kafka -> connector -> Altcraft), nothing to install")
    print(f"  generating {events} Debezium change events of a customers table (seed {seed}) ...", flush=True)
    stream = generate(events, partitions, seed=seed, schemas=True, snapshot_imports=True)
    invalid = sum(1 for e in stream.events if e.expect.startswith("dead"))
    print(f"  {events} events over {partitions} partitions, {invalid} of them invalid on purpose (dead letters)")
    print("  starting an embedded Kafka: librdkafka's in-process mock cluster, one broker, no Java ...", flush=True)
    holder = Producer({"test.mock.num.brokers": 1, "log_level": 2})
    brokers = holder.list_topics(timeout=10).brokers
    bootstrap = ",".join(f"{b.host}:{b.port}" for b in brokers.values())
    print(f"  Kafka is up at {bootstrap}")
    print("  starting the Altcraft emulator (the bundled stand-in for the API, a child process) ...", flush=True)
    emulator, url = _start_emulator()
    print(f"  the emulator listens on {url} (workflow {WORKFLOW})")
    try:
        settings = Settings.model_validate(
            {
                "kafka": {"bootstrap_servers": bootstrap, "group_id": GROUP, "common": {"log_level": 2},
                          # The mock cluster keeps a member that left until its session times out (the
                          # second connector waited the default 45 s for the first): a short session.
                          "consumer": {"session.timeout.ms": 3000, "heartbeat.interval.ms": 500}},
                "altcraft": {"base_url": url, "token": TOKEN, "max_in_flight": 4,
                             "retry": {"initial_backoff_s": 0.2, "max_backoff_s": 1.0}},
                "batching": {"max_items": 2_000, "linger_s": 0.5},
                "routes": [
                    {
                        "name": "customers",
                        "topics": [TOPIC],
                        "format": "debezium-json",
                        "workflow_id": WORKFLOW,
                        "db_id": DB,
                        "matching": "email",
                        "fields": DEMO_FIELDS,
                    }
                ],
                # librdkafka's mock cluster does not keep offsets committed in a transaction (measured: the
                # second connector started over and engaged again): at-least-once dead letters here.
                "dead_letter": {"topic": DLQ_TOPIC, "exactly_once": False},
                "observability": {"port": 0},
                # The first connector is stopped while the API loses its answers: it gives up on them soon.
                "shutdown": {"drain_timeout_s": 1.0},
            }
        )  # fmt: skip
        return _Demo(settings, url, bootstrap, stream.events, partitions).run(stream.engagements, stream.outcomes)
    finally:
        emulator_process.stop(emulator)
        del holder


def _start_emulator() -> tuple[subprocess.Popen[str], str]:
    return emulator_process.spawn(["--token", TOKEN, "--workflow", str(WORKFLOW), "--seed", "1"])


class _Demo:
    def __init__(self, settings: Settings, url: str, bootstrap: str, events: list[Event], partitions: int) -> None:
        self.settings = settings
        self.url = url
        self.bootstrap = bootstrap
        self.events = events
        self.partitions = partitions
        self.api = httpx.Client(base_url=url, timeout=10)
        self.probe = Consumer({"bootstrap.servers": bootstrap, "group.id": GROUP, "enable.auto.commit": False,
                               "log_level": 2})  # fmt: skip

    def run(self, engagements: Counter[str], outcomes: Counter[str]) -> int:
        total = len(self.events)
        first = int(total * FIRST_SHARE)
        during = first + max(1, int(total * FAULT_SHARE))
        try:
            print(f"  producing the first {first} events to {TOPIC} (the rest arrive as the demo goes on) ...",
                  flush=True)  # fmt: skip
            _produce(self.bootstrap, self.events[:first], self.partitions)

            print(f"\n1. a connector joins the consumer group {GROUP!r} and reads them")
            one = self._start()
            self._follow(one, first)

            print(f"\n2. the API loses its answers: POST {self.url}/_emulator/faults {json.dumps(FAULT)}")
            print("   every request is executed, then its connection is reset before the answer; "
                  f"{during - first} more events arrive")  # fmt: skip
            self._faults(FAULT)
            _produce(self.bootstrap, self.events[first:during], self.partitions)
            retried = self._await_retry(one)
            print(f"   the connector retried {retried} request(s) with the same Request-ID; the emulator answered "
                  f"{self._stats()['duplicates']} of them as duplicates instead of executing them again")  # fmt: skip

            print("\n3. the connector is stopped now, in the middle of the fault (as a rollout during an incident)")
            one.connector.request_stop()
            one.thread.join(60)
            self._faults({"clear": True})
            done = self._committed()
            print(f"   it committed up to {done} of {during} events; the ranges of its unanswered batches stay "
                  "recorded in the commit metadata. The fault is cleared.")  # fmt: skip

            print(f"\n4. a new connector in the same group replays those batches with the same Request-IDs, "
                  f"then reads the last {total - during} events")  # fmt: skip
            _produce(self.bootstrap, self.events[during:], self.partitions)
            stored = sum(_watermarks(self.bootstrap, p)[1] for p in range(self.partitions))
            if stored != total:
                raise RuntimeError(f"the embedded Kafka kept {stored} of {total} events (its per-partition limit)")
            two = self._start()
            self._follow(two, total)
            two.connector.request_stop()
            two.thread.join(60)
            return 0 if self._report(one, two, engagements, outcomes) else 1
        finally:
            with contextlib.suppress(Exception):
                self.probe.close()
            self.api.close()

    # -- driving

    def _start(self) -> _Run:
        registry = CollectorRegistry()
        connector = build_connector(self.settings, registry=registry, serve_health=False)
        thread = threading.Thread(target=connector.run, name="connector")
        thread.start()
        print("   joining the group and waiting for partitions (the embedded Kafka takes a few seconds) ...",
              flush=True)  # fmt: skip
        return _Run(connector, thread, registry)

    def _follow(self, run: _Run, target: int) -> None:
        """Print progress until the group's committed offsets reach ``target`` records."""
        started = time.monotonic()
        deadline = started + max(120.0, target / 500)
        last_print = 0.0
        shown: tuple[int, int] | None = None
        while time.monotonic() < deadline and run.thread.is_alive():
            time.sleep(0.2)
            read = int(run.value("altcraft_connector_records_consumed_total", route="customers"))
            if read and run.first_read is None:
                run.first_read = time.monotonic()
            committed = self._committed()
            if committed >= target:
                run.last_progress = time.monotonic()
                print(f"   read {read:>7}   committed {committed:>7} / {target}   done", flush=True)
                return
            if read and time.monotonic() - last_print >= 1.0 and (read, committed) != shown:
                last_print = time.monotonic()
                shown = (read, committed)
                print(f"   read {read:>7}   committed {committed:>7} / {target}", flush=True)
        run.last_progress = time.monotonic()
        print(f"   gave up waiting: {self._committed()} of {target} committed")

    def _await_retry(self, run: _Run) -> int:
        """Wait until a retry was answered as a duplicate (or ``FAULT_MAX_S``); the retries so far."""
        deadline = time.monotonic() + FAULT_MAX_S
        retried = 0
        while time.monotonic() < deadline:
            time.sleep(0.2)
            retried = sum(run.total("altcraft_connector_retries_total").values())
            if retried and self._stats()["duplicates"]:
                break
        return retried

    def _faults(self, changes: Mapping[str, object]) -> None:
        self.api.post("/_emulator/faults", json=changes).raise_for_status()

    def _stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.api.get("/_emulator/stats").json()
        return stats

    def _committed(self) -> int:
        parts = [TopicPartition(TOPIC, p) for p in range(self.partitions)]
        try:
            offsets = self.probe.committed(parts, timeout=10)
        except Exception:  # the group's coordinator is not known yet
            return 0
        return sum(max(0, tp.offset) for tp in offsets)

    # -- the report

    def _report(self, one: _Run, two: _Run, engagements: Counter[str], outcomes: Counter[str]) -> bool:
        emu = self._stats()
        at_emulator = self._engagements_by_email()
        letters = _read_dead_letters(self.bootstrap)
        distinct = letters.distinct()
        by_stage = Counter(letter.headers.get("__connect.errors.stage", "?") for letter in distinct.values())
        retries = one.total("altcraft_connector_retries_total") + two.total("altcraft_connector_retries_total")
        replayed = sum(two.total("altcraft_connector_requests_deduplicated_total").values())
        expected_dead = Counter({k.split(":", 1)[1]: n for k, n in outcomes.items() if k.startswith("dead:")})
        ends = {p: _watermarks(self.bootstrap, p)[1] for p in range(self.partitions)}

        print("\nsummary")
        rows: list[tuple[str, Callable[[_Run], str]]] = [
            ("records read", lambda r: str(int(r.value("altcraft_connector_records_consumed_total",
                                                         route="customers")))),
            ("engaged (accepted)", lambda r: str(int(r.value("altcraft_connector_records_engaged_total",
                                                               route="customers")))),
            ("imported, not engaged", lambda r: str(int(r.value("altcraft_connector_records_imported_total",
                                                                  route="customers")))),
            ("skipped", lambda r: _by(r.total("altcraft_connector_records_skipped_total"))),
            ("dead-lettered", lambda r: _by(r.total("altcraft_connector_records_dead_lettered_total"))),
            ("requests", lambda r: _by(r.total("altcraft_connector_requests_total"))),
            ("retried", lambda r: _by(r.total("altcraft_connector_retries_total"))),
            ("answered as duplicates", lambda r: str(sum(
                r.total("altcraft_connector_requests_deduplicated_total").values()))),
        ]  # fmt: skip
        print(f"  {'the connector counted':<26}{'first connector':<34}second connector")
        for label, show in rows:
            print(f"    {label:<24}{show(one):<34}{show(two)}")
        print("  (records after an unanswered batch are read again by the second connector, so some counts repeat)")
        print(f"  emulator recorded        {emu['requests']} requests, {emu['requests_executed']} executed, "
              f"{emu['duplicates']} answered as duplicates; {emu['items_accepted']} items accepted, "
              f"{emu['items_rejected']} rejected; {emu['engagements']} engagements of {emu['profiles_engaged']} "
              "profiles")  # fmt: skip
        print(f"  nobody engaged twice     a retry and a replay send the batch's bytes under its Request-ID, and "
              f"Altcraft answers a key it already executed with the first answer instead of running it again "
              f"({sum(retries.values())} retries, {replayed} replayed after the restart, "
              f"{emu['duplicates']} duplicates)")  # fmt: skip
        written_twice = len(letters.all) - len(distinct)
        print(f"  dead letters             {len(distinct)} records ({_by(by_stage)})"
              + (f"; {written_twice} written again after the restart (at-least-once: same source offset)"
                 if written_twice else ""))  # fmt: skip
        if two.first_read is not None and two.last_progress is not None:
            seconds = max(0.001, two.last_progress - two.first_read)
            read = two.value("altcraft_connector_records_consumed_total", route="customers")
            print(f"  throughput               {read / seconds:,.0f} events/s (the second connector: {int(read)} "
                  f"records in {seconds:.1f} s)")  # fmt: skip
        p50, p99 = _quantiles(two.registry, "altcraft_connector_batch_latency_seconds", (0.5, 0.99))
        print(f"  batch latency            p50 <= {p50:.3f} s, p99 <= {p99:.3f} s (second connector; first record "
              "to answer, histogram bound)")  # fmt: skip

        _show_examples(distinct)

        api_letters = sum(1 for x in distinct.values() if x.headers.get("__connect.errors.stage") == "api")
        checks = {
            f"each customer engaged exactly as often as it changed after the snapshot ({sum(at_emulator.values())} "
            f"engagements of {len(at_emulator)} profiles), despite the fault and the restart; the "
            f"{outcomes['import']} snapshot reads were imported into database {DB}, not engaged": at_emulator
            == engagements,
            "every invalid event is in the dead-letter topic, at its stage": by_stage == expected_dead,
            "every item Altcraft rejected is in the dead-letter topic": emu["items_rejected"] == api_letters,
            "the group's committed offsets reach the end of every partition": self._committed_by_partition() == ends,
            "the fault was retried and the restart replayed: both answered as duplicates": sum(retries.values()) > 0
            and replayed > 0
            and emu["duplicates"] > 0,
        }
        print("\nchecks")
        for what, ok in checks.items():
            print(f"  {'ok  ' if ok else 'FAIL'} {what}")

        print("\nnext steps")
        print("  1. copy config.example.yaml and set your brokers, topics, Altcraft URL, token and routes")
        print("  2. altcraft-connector check-config --config config.yaml   # validates; prints the settings, "
              "secrets masked")  # fmt: skip
        print("  3. altcraft-connector run --config config.yaml            # until SIGTERM / SIGINT")
        print("  README: \"Debezium values\" (what the Debezium converter settings change), \"Dead letters\", "
              "\"Running against your Kafka\"")  # fmt: skip
        return all(checks.values())

    def _engagements_by_email(self) -> Counter[str]:
        body = self.api.get("/_emulator/engagements", params={"workflow_id": WORKFLOW}).json()
        out: Counter[str] = Counter()
        for rec in body["engagements"]:
            out[str(rec["matching_value"])] += int(rec["count"])
        return out

    def _committed_by_partition(self) -> dict[int, int]:
        parts = [TopicPartition(TOPIC, p) for p in range(self.partitions)]
        return {tp.partition: tp.offset for tp in self.probe.committed(parts, timeout=10)}


def _by(counts: Counter[str]) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "0"


def _show_examples(letters: dict[tuple[str, str, str], _Letter]) -> None:
    first: dict[str, _Letter] = {}
    for letter in letters.values():
        first.setdefault(letter.headers.get("__connect.errors.stage", "?"), letter)
    print(f"\nexample dead letters (one per stage, read back from {DLQ_TOPIC}; values cut to {SHOWN_CHARS} "
          "characters)")  # fmt: skip
    for stage in sorted(first, key=lambda s: STAGES.index(s) if s in STAGES else len(STAGES)):
        letter = first[stage]
        topic, part, offset = letter.source
        print(f"  stage {stage}: {topic}[{part}] offset {offset}")
        for name in ("__connect.errors.stage", "__connect.errors.exception.class.name",
                     "__connect.errors.exception.message", *sorted(k for k in letter.headers
                                                                    if k.startswith("altcraft."))):  # fmt: skip
            if name in letter.headers and not any(w in name.lower() for w in SECRET_WORDS):
                print(f"    {name:<40} {_cut(letter.headers[name])}")
        print(f"    {'key':<40} {_cut(_text(letter.key))}")
        size = len(letter.value or b"")
        print(f"    {'value':<40} {_cut(_text(letter.value))} ({size} bytes)")


def _cut(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= SHOWN_CHARS else flat[: SHOWN_CHARS - 3] + "..."


def _produce(bootstrap: str, events: list[Event], partitions: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.num.messages": 10_000,
                         "compression.type": "lz4", "log_level": 2})  # fmt: skip
    for i, e in enumerate(events):
        producer.produce(TOPIC, e.value, key=e.key, partition=e.partition % partitions)
        if i % 5_000 == 0:
            producer.poll(0)
    left = producer.flush(60)
    if left:
        raise RuntimeError(f"{left} demo events were not delivered to the embedded Kafka")


def _watermarks(bootstrap: str, partition: int) -> tuple[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "altcraft-demo-probe", "log_level": 2})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(TOPIC, partition), timeout=10)
        return int(low), int(high)
    finally:
        consumer.close()


def _read_dead_letters(bootstrap: str) -> _Letters:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "altcraft-demo-dlq-reader",
                         "enable.auto.commit": False, "log_level": 2})  # fmt: skip
    letters = _Letters()
    try:
        meta = consumer.list_topics(DLQ_TOPIC, timeout=10).topics.get(DLQ_TOPIC)
        if meta is None or meta.error is not None:
            return letters
        parts = [TopicPartition(DLQ_TOPIC, p, 0) for p in meta.partitions]
        ends = {p.partition: consumer.get_watermark_offsets(p, timeout=10)[1] for p in parts}
        consumer.assign(parts)
        remaining = sum(ends.values())
        deadline = time.monotonic() + 30
        while remaining > 0 and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                if msg.error():
                    continue
                remaining -= 1
                raw = msg.headers() or []
                pairs = raw.items() if isinstance(raw, dict) else raw
                letters.all.append(_Letter({k: _text(v) for k, v in pairs}, msg.key(), msg.value()))
    finally:
        with contextlib.suppress(Exception):
            consumer.close()
    return letters


def _text(v: str | bytes | None) -> str:
    if v is None:
        return ""
    return v.decode(errors="replace") if isinstance(v, bytes) else v


def _quantiles(registry: CollectorRegistry, name: str, qs: tuple[float, ...]) -> list[float]:
    buckets = sorted(
        (float(s.labels["le"]), s.value) for m in registry.collect() for s in m.samples if s.name == name + "_bucket"
    )
    count = buckets[-1][1] if buckets else 0
    out = []
    for q in qs:
        bound = float("nan")
        for le, cumulative in buckets:
            if count and cumulative >= q * count:
                bound = le
                break
        out.append(bound)
    return out
