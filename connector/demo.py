"""``altcraft-connector demo``: the whole pipeline on an embedded default, nothing else to install.

- Kafka: librdkafka's in-process mock cluster (``test.mock.num.brokers``), no Java needed. It keeps
  at most about 5 MiB per partition, so the demo spreads its stream over enough partitions.
- Altcraft: the bundled emulator, started as a child process on a free loopback port.
- Data: a reproducible Debezium stream of customer changes with a few percent of invalid events.

It prints progress while it runs and ends with a summary checked against what the emulator recorded.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import threading
import time
from collections import Counter
from typing import Any

import httpx
from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client import CollectorRegistry

from connector.app import Connector
from connector.config import Settings
from connector.demo_data import DEMO_FIELDS, generate
from connector.emulator import process as emulator_process

TOPIC = "shop.public.customers"
DLQ_TOPIC = "altcraft-connector-dlq"
TOKEN = "demo-token"
WORKFLOW = 12
PARTITIONS = 4  # the mock cluster creates topics with four partitions


def run_demo(events: int, seed: int, partitions: int = PARTITIONS) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    stream = generate(events, partitions, seed=seed, schemas=True)
    print(f"demo: {events} Debezium change events over {partitions} partitions "
          f"({sum(1 for e in stream.events if e.expect.startswith('dead'))} invalid on purpose)")  # fmt: skip

    holder = Producer({"test.mock.num.brokers": 1, "log_level": 2})
    brokers = holder.list_topics(timeout=10).brokers
    bootstrap = ",".join(f"{b.host}:{b.port}" for b in brokers.values())
    emulator, url = _start_emulator()
    try:
        _produce(bootstrap, stream.events, partitions)
        settings = Settings.model_validate(
            {
                "kafka": {"bootstrap_servers": bootstrap, "group_id": "altcraft-demo", "common": {"log_level": 2}},
                "altcraft": {"base_url": url, "token": TOKEN, "max_in_flight": 4},
                "batching": {"max_items": 2_000, "linger_s": 0.5},
                "routes": [
                    {
                        "name": "customers",
                        "topics": [TOPIC],
                        "format": "debezium-json",
                        "workflow_id": WORKFLOW,
                        "matching": "email",
                        "fields": DEMO_FIELDS,
                    }
                ],
                "dead_letter": {"topic": DLQ_TOPIC},
                "observability": {"port": 0},
            }
        )
        return _run_and_report(settings, url, events, stream.outcomes, bootstrap)
    finally:
        emulator_process.stop(emulator)
        del holder


def _start_emulator() -> tuple[subprocess.Popen[str], str]:
    return emulator_process.spawn(["--token", TOKEN, "--workflow", str(WORKFLOW), "--seed", "1"])


def _produce(bootstrap: str, events: list[Any], partitions: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.num.messages": 10_000,
                         "compression.type": "lz4", "log_level": 2})  # fmt: skip
    for i, e in enumerate(events):
        producer.produce(TOPIC, e.value, key=e.key, partition=e.partition % partitions)
        if i % 5_000 == 0:
            producer.poll(0)
    left = producer.flush(60)
    if left:
        raise RuntimeError(f"{left} demo events were not delivered to the embedded Kafka")
    stored = 0
    for p in range(partitions):
        _low, high = _watermarks(bootstrap, p)
        stored += high
    if stored != len(events):
        raise RuntimeError(f"the embedded Kafka kept {stored} of {len(events)} events (its per-partition limit)")


def _watermarks(bootstrap: str, partition: int) -> tuple[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "altcraft-demo-probe", "log_level": 2})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(TOPIC, partition), timeout=10)
        return int(low), int(high)
    finally:
        consumer.close()


def _run_and_report(settings: Settings, url: str, total: int, expected: Counter[str], bootstrap: str) -> int:
    registry = CollectorRegistry()
    connector = Connector(settings, registry=registry, serve_health=False)
    worker = threading.Thread(target=connector.run, name="connector")
    started = time.monotonic()
    worker.start()

    def value(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    def done_count() -> float:
        engaged = value("altcraft_connector_records_engaged_total", route="customers")
        skipped = sum(s.value for m in registry.collect() if m.name == "altcraft_connector_records_skipped"
                      for s in m.samples if s.name.endswith("_total"))  # fmt: skip
        dead = sum(s.value for m in registry.collect() if m.name == "altcraft_connector_records_dead_lettered"
                   for s in m.samples if s.name.endswith("_total"))  # fmt: skip
        return engaged + skipped + dead

    last_print = 0.0
    first_seen: float | None = None
    deadline = started + max(120.0, total / 500)
    while time.monotonic() < deadline and worker.is_alive():
        time.sleep(0.2)
        consumed = value("altcraft_connector_records_consumed_total", route="customers")
        if consumed and first_seen is None:
            first_seen = time.monotonic()
        finished = done_count()
        if time.monotonic() - last_print >= 1.0:
            last_print = time.monotonic()
            print(f"  consumed {int(consumed):>7} / {total}   resolved {int(finished):>7}", flush=True)
        if finished >= total:
            break
    elapsed = time.monotonic() - (first_seen or started)
    connector.request_stop()
    worker.join(60)
    ok = done_count() >= total
    ok = _summary(registry, url, total, expected, elapsed, bootstrap) and ok
    return 0 if ok else 1


def _summary(
    registry: CollectorRegistry, url: str, total: int, expected: Counter[str], elapsed: float, bootstrap: str
) -> bool:
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for m in registry.collect() for s in m.samples}

    def total_of(name: str) -> dict[tuple[tuple[str, str], ...], float]:
        return {labels: v for (n, labels), v in samples.items() if n == name and v}

    engaged = sum(total_of("altcraft_connector_records_engaged_total").values())
    skipped = total_of("altcraft_connector_records_skipped_total")
    dead = total_of("altcraft_connector_records_dead_lettered_total")
    requests = total_of("altcraft_connector_requests_total")
    emu = httpx.get(f"{url}/_emulator/stats", timeout=10).json()
    dlq_reasons = _read_dead_letters(bootstrap)
    p50, p99 = _quantiles(registry, "altcraft_connector_batch_latency_seconds", (0.5, 0.99))
    print()
    print("summary")
    print(f"  events consumed      {int(sum(total_of('altcraft_connector_records_consumed_total').values()))}")
    print(f"  engaged              {int(engaged)}   (expected {expected['engage']})")
    for labels, v in sorted(skipped.items()):
        print(f"  skipped              {int(v)}   ({dict(labels)['reason']})")
    for labels, v in sorted(dead.items()):
        print(f"  dead-lettered        {int(v)}   (stage {dict(labels)['stage']})")
    for reason, n in sorted(dlq_reasons.items()):
        print(f"    in the dead-letter topic: {n:>5}  {reason}")
    for labels, v in sorted(requests.items()):
        d = dict(labels)
        print(f"  requests             {int(v)}   ({d['endpoint'].rsplit('/', 1)[-1]}, {d['outcome']})")
    print(f"  throughput           {total / elapsed:,.0f} events/s over {elapsed:.1f} s")
    print(f"  batch latency        p50 <= {p50:.3f} s, p99 <= {p99:.3f} s (first record to answer, histogram bound)")
    print(
        f"  emulator recorded    {emu['requests']} requests ({emu['duplicates']} deduplicated), "
        f"{emu['items_accepted']} items accepted, {emu['items_rejected']} rejected, "
        f"{emu['engagements']} engagements of {emu['profiles_engaged']} profiles"
    )
    checks = {
        "every engaged event is an engagement at the emulator": int(engaged) == emu["engagements"],
        "every rejected item is in the dead-letter topic": emu["items_rejected"]
        == sum(n for r, n in dlq_reasons.items() if r.startswith("api:")),
        "every event was engaged, skipped or dead-lettered": int(engaged + sum(skipped.values()) + sum(dead.values()))
        == total,
        "the outcomes are the ones the data set was built to have": int(engaged) == expected["engage"]
        and int(sum(dead.values())) == sum(n for k, n in expected.items() if k.startswith("dead")),
    }
    for what, ok in checks.items():
        print(f"  {'ok  ' if ok else 'FAIL'} {what}")
    return all(checks.values())


def _read_dead_letters(bootstrap: str) -> Counter[str]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "altcraft-demo-dlq-reader",
                         "enable.auto.commit": False, "log_level": 2})  # fmt: skip
    reasons: Counter[str] = Counter()
    try:
        meta = consumer.list_topics(DLQ_TOPIC, timeout=10).topics.get(DLQ_TOPIC)
        if meta is None or meta.error is not None:
            return reasons
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
                headers = {k: _text(v) for k, v in pairs}
                stage = headers.get("__connect.errors.stage", "")
                code = headers.get("altcraft.error.code", "")
                text = headers.get("altcraft.error.text", "")
                exc = headers.get("__connect.errors.exception.class.name", "")
                reasons[f"{stage}: {exc}" + (f" {code} {text}" if code else "")] += 1
    finally:
        with contextlib.suppress(Exception):
            consumer.close()
    return reasons


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
