"""Avro end to end: Debezium changes written by a producer with a registered schema travel through the real
Kafka broker and the connector into the Altcraft emulator exactly as their JSON twins do, across a schema
evolution; bad Avro ends in the dead-letter topic with its reason while what follows flows on; a
Schema Registry outage pauses the partition and loses nothing."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import fastavro
import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from prometheus_client import CollectorRegistry

from connector.compose import build as build_connector
from connector.config import SchemaRegistrySettings, Settings
from connector.decode.avro import encode
from connector.decode.registry import RegistryClient
from connector.emulator.config import EmulatorConfig
from connector.emulator.server import Emulator
from connector.schema_registry import RegistryServer
from connector.schema_registry.samples import (
    CUSTOMER_ENVELOPE,
    CUSTOMER_SUBJECT,
    customer_change,
    customer_row,
    debezium_json_twin,
    load_schema,
    with_added_field,
)
from tests.support import header_map, wait_until

TOKEN = "avro-token"
WORKFLOW = 21
FIELDS = {
    "email": "email",
    "_fname": "first_name",
    "_lname": "last_name",
    "phones": "phone",
    "_bdate": "birth_date",
    "_city": "city",
    "CRM_ID": "id",
    "loyalty": "loyalty_tier",
}
V1 = load_schema(CUSTOMER_ENVELOPE)
# The table gains a column with a default mid-stream: the writer schema evolves (BACKWARD compatible).
V2 = with_added_field(V1, "Value", {"name": "loyalty_tier", "type": "string", "default": "standard"})
P1, P2 = fastavro.parse_schema(V1), fastavro.parse_schema(V2)


@pytest.fixture
def registry() -> Iterator[RegistryServer]:
    with RegistryServer() as server:
        yield server


def new_emulator() -> Emulator:
    return Emulator(EmulatorConfig(tokens=[TOKEN], workflows=[WORKFLOW], seed=3))


def settings(kafka: Any, fmt: str, topic: str, dlq: str, api_url: str, registry_url: str) -> Settings:
    return Settings.model_validate(
        {
            "kafka": {"bootstrap_servers": kafka.bootstrap, "group_id": f"g-{topic}", "consume_timeout_s": 0.05},
            "altcraft": {"base_url": api_url, "token": TOKEN, "retry": {"initial_backoff_s": 0.05, "max_backoff_s": 1}},
            "batching": {"max_items": 500, "linger_s": 0.2},
            "routes": [
                {
                    "name": "customers",
                    "topics": [topic],
                    "format": fmt,
                    "workflow_id": WORKFLOW,
                    "db_id": 7,
                    "ops": {"r": "engage"},
                    "matching": "email",
                    "fields": FIELDS,
                }
            ],
            "dead_letter": {"topic": dlq},
            "shutdown": {"drain_timeout_s": 15},
            "schema_registry": {"url": registry_url, "request_timeout_s": 1.0},
        }
    )


class Running:
    """A connector (:func:`connector.compose.build`) turning in a thread; leaving the block stops it and
    re-raises its failure."""

    def __init__(self, settings: Settings) -> None:
        self.connector = build_connector(settings, registry=CollectorRegistry(), serve_health=False)
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="connector", daemon=True)

    def _run(self) -> None:
        try:
            self.connector.run()
        except BaseException as exc:
            self.failure = exc

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.connector.request_stop()
        self.thread.join(60)
        assert not self.thread.is_alive(), "the connector did not stop within 60 s"
        if self.failure is not None:
            raise self.failure

    def check(self) -> None:
        if self.failure is not None:
            raise AssertionError(f"the connector failed: {self.failure!r}") from self.failure


def committed(kafka: Any, group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets, read by a consumer of that group that never joins it.

    Not ``kafka.committed()``: librdkafka's admin ListConsumerGroupOffsets crashes the process
    (SIGSEGV in rd_kafka_cgrp_op) when the coordinator answers NOT_COORDINATOR, as it may for a young
    group (confluentinc/librdkafka#5040).
    """
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        parts = consumer.committed([TopicPartition(topic, p) for p in kafka.partitions(topic)], timeout=10)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in parts if tp.offset >= 0}


def wait_committed(kafka: Any, running: Running, topic: str, timeout: float = 120) -> None:
    ends = kafka.end_offsets(topic)
    group = running.connector.settings.kafka.group_id

    def done() -> bool:
        running.check()
        try:
            return committed(kafka, group, topic) == ends
        except KafkaException:
            return False

    wait_until(done, timeout, f"the committed offsets of {topic} to reach {ends}", interval=0.3)


def engaged(emu: Emulator) -> Counter[str]:
    return Counter({e["matching_value"]: e["count"] for e in emu.engagements(workflow_id=WORKFLOW)})


def profiles(emu: Emulator) -> dict[str, dict[str, Any]]:
    return {p["fields"]["email"]: p["fields"] for p in emu.profiles()}


# ---------------------------------------------------------------------------------------- the story


def change_stream(rng: random.Random) -> list[tuple[int, str, dict[str, Any] | None, dict[str, Any] | None, int]]:
    """(customer id, op, before, after, schema version) in production order: a snapshot, updates and deletes
    (each followed by its tombstone) under v1, then new customers and updates under v2."""
    changes: list[tuple[int, str, dict[str, Any] | None, dict[str, Any] | None, int]] = []
    rows = {i: customer_row(i) for i in range(1, 121)}
    for i, row in rows.items():
        changes.append((i, "r", None, row, 1))
    for _ in range(150):
        i = rng.choice(list(rows))
        if rng.random() < 0.1:
            changes.append((i, "d", rows.pop(i), None, 1))
            changes.append((i, "tombstone", None, None, 1))
        else:
            after = rows[i] | {"city": rng.choice(["Omsk", "Tver", None]), "phone": f"+7911{rng.randrange(10**7):07d}"}
            changes.append((i, "u", rows[i], after, 1))
            rows[i] = after
    for i in range(121, 171):
        rows[i] = customer_row(i) | {"loyalty_tier": rng.choice(["standard", "gold"])}
        changes.append((i, "c", None, rows[i], 2))
    for i in rng.sample(sorted(rows), 40):
        after = rows[i] | {"loyalty_tier": "platinum", "last_name": "Renamed"}
        changes.append((i, "u", rows[i] | {"loyalty_tier": "standard"}, after, 2))
        rows[i] = after
    return changes


def test_avro_changes_engage_exactly_as_their_json_twins_across_a_schema_evolution(
    kafka: Any, registry: RegistryServer
) -> None:
    avro_topic, json_topic = kafka.new_topic(2, prefix="avro"), kafka.new_topic(2, prefix="json")
    avro_dlq, json_dlq = kafka.new_topic(1, prefix="dlq"), kafka.new_topic(1, prefix="dlq")
    with RegistryClient(SchemaRegistrySettings(url=registry.url)) as producer:
        ids = {1: producer.register(CUSTOMER_SUBJECT, V1)}
        avro_records, json_records = [], []
        for i, op, before, after, version in change_stream(random.Random(8)):
            key, partition = str(i).encode(), i % 2
            if op == "tombstone":
                avro_records.append({"value": None, "key": key, "partition": partition})
                json_records.append({"value": None, "key": key, "partition": partition})
                continue
            if version not in ids:
                ids[version] = producer.register(CUSTOMER_SUBJECT, V2)  # mid-stream, as a producer would
            schema, parsed = (V1, P1) if version == 1 else (V2, P2)
            change = customer_change(op, before, after, ts_ms=1_700_000_000_000 + len(avro_records))
            avro_records.append({"value": encode(ids[version], parsed, change), "key": key, "partition": partition})
            json_records.append({"value": debezium_json_twin(change, schema), "key": key, "partition": partition})
    assert ids == {1: 1, 2: 2}
    kafka.produce(avro_topic, avro_records)
    kafka.produce(json_topic, json_records)

    with new_emulator() as avro_api, new_emulator() as json_api:
        avro_settings = settings(kafka, "debezium-avro", avro_topic, avro_dlq, avro_api.url, registry.url)
        json_settings = settings(kafka, "debezium-json", json_topic, json_dlq, json_api.url, registry.url)
        with Running(avro_settings) as avro_run, Running(json_settings) as json_run:
            wait_committed(kafka, avro_run, avro_topic)
            wait_committed(kafka, json_run, json_topic)
        assert engaged(avro_api) == engaged(json_api)
        assert profiles(avro_api) == profiles(json_api)
        by_email = profiles(avro_api)
        expected = Counter(
            customer_row(i)["email"] for i, op, _b, _a, _v in change_stream(random.Random(8)) if op in ("r", "c", "u")
        )
        assert engaged(avro_api) == expected
    # Values converted on the way: Debezium dates as YYYY-MM-DD, the evolved column where it was written.
    assert by_email["customer1@example.com"]["_bdate"] == "1978-03-21"
    assert by_email["customer150@example.com"]["loyalty"] in ("standard", "gold", "platinum")
    assert any(p.get("loyalty") == "platinum" for p in by_email.values())
    assert kafka.read_all(avro_dlq) == [] and kafka.read_all(json_dlq) == []


# ---------------------------------------------------------------------------------------- bad input


def test_each_kind_of_bad_avro_is_dead_lettered_with_its_reason_and_the_rest_flows_on(
    kafka: Any, registry: RegistryServer
) -> None:
    topic, dlq = kafka.new_topic(1, prefix="avro"), kafka.new_topic(1, prefix="dlq")
    schema_id = registry.register(CUSTOMER_SUBJECT, V1)

    def good(i: int) -> bytes:
        return encode(schema_id, P1, customer_change("c", None, customer_row(i)))

    mismatched = bytearray(good(103))
    mismatched[5] = 0x08  # the "before" union says branch 4 of 2
    bad = {
        "wrong magic byte": (debezium_json_twin(customer_change("c", None, customer_row(100)), V1),
                             "magic byte 0x7b, expected 0x00"),
        "truncated": (good(101)[:-6], "truncated: the payload ends before the record"),
        "unknown schema id": (b"\x00\x00\x00\x03\xe7" + good(102)[5:], "schema id 999 is not in the schema registry"),
        "not matching its schema": (bytes(mismatched), "union branch 4 at before does not exist"),
        "trailing bytes": (good(104) + b"\x02\x04", "2 bytes left over after the record"),
        "empty": (b"", "empty value"),
    }  # fmt: skip
    records: list[bytes] = [good(i) for i in range(1, 6)]
    bad_offsets: dict[int, str] = {}
    for n, (value, reason) in enumerate(bad.values()):
        bad_offsets[len(records)] = reason
        records.append(value)
        records.append(good(10 + n))
    records += [good(i) for i in range(20, 25)]
    kafka.produce(topic, records)

    with new_emulator() as api:
        with Running(settings(kafka, "debezium-avro", topic, dlq, api.url, registry.url)) as running:
            wait_committed(kafka, running, topic)
        good_ids = [*range(1, 6), *range(10, 10 + len(bad)), *range(20, 25)]
        assert engaged(api) == Counter(customer_row(i)["email"] for i in good_ids)

    letters = kafka.read_all(dlq)
    assert len(letters) == len(bad)
    for msg in letters:
        h = header_map(msg)
        offset = int(h["__connect.errors.offset"])
        assert offset in bad_offsets, offset
        assert h["__connect.errors.stage"] == "decode"
        assert bad_offsets[offset] in h["__connect.errors.exception.message"]
        assert (msg.value() or b"") == records[offset]  # the original bytes
    unknown = [header_map(m) for m in letters if "schema id 999" in header_map(m)["__connect.errors.exception.message"]]
    assert unknown[0]["__connect.errors.exception.class.name"] == "SchemaNotFound"


# ---------------------------------------------------------------------------------------- registry outage


def test_a_registry_outage_mid_stream_pauses_and_resumes_without_loss_or_dead_letters(
    kafka: Any, registry: RegistryServer
) -> None:
    topic, dlq = kafka.new_topic(1, prefix="avro"), kafka.new_topic(1, prefix="dlq")
    id1 = registry.register(CUSTOMER_SUBJECT, V1)
    # Registered now, but first needed by the connector during an outage (one new schema per outage).
    v3 = with_added_field(V2, "Value", {"name": "nickname", "type": ["null", "string"], "default": None})
    later = {"unavailable": (registry.register(CUSTOMER_SUBJECT, V2), P2),
             "refuse": (registry.register(CUSTOMER_SUBJECT, v3), fastavro.parse_schema(v3))}  # fmt: skip
    kafka.produce(topic, [encode(id1, P1, customer_change("c", None, customer_row(i))) for i in range(1, 51)])

    with new_emulator() as api:
        with Running(settings(kafka, "debezium-avro", topic, dlq, api.url, registry.url)) as running:
            wait_until(lambda: sum(engaged(api).values()) == 50, 60, "the first 50 changes to be engaged")
            total = 50
            for outage, (schema_id, parsed) in later.items():
                registry.set_outage(outage)  # type: ignore[arg-type]
                asked = len(registry.requests)
                rows = [customer_row(i) | {"email": f"{outage}-{i}@example.com", "loyalty_tier": "gold"}
                        for i in range(1, 26)]  # fmt: skip
                kafka.produce(topic, [encode(schema_id, parsed, customer_change("u", None, r)) for r in rows])
                time.sleep(5)  # a few rounds of "rewind, pause 2 s, try again"
                running.check()
                assert sum(engaged(api).values()) == total, "nothing after the unreadable record may go out"
                if outage == "unavailable":
                    assert len(registry.requests) - asked >= 2, "the connector keeps asking"
                registry.set_outage(None)
                wait_committed(kafka, running, topic)
                total += 25
                assert sum(engaged(api).values()) == total
        counts = engaged(api)
    assert len(counts) == 100 and set(counts.values()) == {1}, "everyone engaged exactly once"
    assert kafka.read_all(dlq) == []
