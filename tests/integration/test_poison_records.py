"""Poison records on a real broker: every shape that once stopped the connector (and every shape of bad
input we know of) goes to the dead-letter topic with its stage and reason, the good records around them
are engaged, the process never exits, and the committed offsets reach the end."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fastavro
import orjson
import pytest
from confluent_kafka import KafkaException

from connector.decode.avro import encode
from connector.emulator.config import EmulatorConfig
from connector.emulator.server import Emulator
from connector.schema_registry import RegistryServer
from connector.schema_registry.samples import CUSTOMER_ENVELOPE, CUSTOMER_SUBJECT, customer_change, load_schema
from tests.support import ConnectorProcess, header_map, wait_until

TOKEN = "poison-token"
WORKFLOW = 21

pytestmark = pytest.mark.timeout(240)

Poison = tuple[bytes, str, str, str]  # value, stage, exception class, a part of the message


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(EmulatorConfig(tokens=[TOKEN], workflows=[WORKFLOW], seed=5)) as emu:
        yield emu


@pytest.fixture
def registry() -> Iterator[RegistryServer]:
    with RegistryServer() as server:
        yield server


def _row(email: str, **extra: Any) -> dict[str, Any]:
    return {"id": 1, "email": email, "first_name": "Ann", **extra}


def _envelope(row: Any, op: Any = "c") -> dict[str, Any]:
    return {"before": None, "after": row, "op": op, "ts_ms": 1_700_000_000_000, "source": {"db": "inventory"}}


def _wrapped(schema: Any, payload: Any) -> bytes:
    return orjson.dumps({"schema": schema, "payload": payload})


def _row_schema(*columns: Any) -> dict[str, Any]:
    after = {"type": "struct", "optional": True, "field": "after", "fields": list(columns)}
    return {"type": "struct", "fields": [{"type": "struct", "optional": True, "field": "before", "fields": []}, after]}


def _date(column: str) -> dict[str, Any]:
    return {"type": "int32", "optional": True, "field": column, "name": "io.debezium.time.Date", "version": 1}


def _deep(levels: int) -> bytes:
    return b'{"a":' * levels + b"1" + b"}" * levels


def json_poison(n: int) -> list[Poison]:
    email = f"poison{n}@example.com"
    good = _envelope(_row(email))
    return [
        (_wrapped({"fields": [_date("birth_date"), 7]}, good), "decode", "DecodeError",
         "schema.fields[1] is a number, not an object"),
        (_wrapped({"fields": 5}, good), "decode", "DecodeError", "schema.fields is a number, not a list"),
        (_wrapped({"fields": [{"field": "after", "type": "struct", "fields": "x"}]}, good), "decode", "DecodeError",
         "schema.fields[0].fields is a string, not a list"),
        (_wrapped(_row_schema({"field": ["id"], "name": "io.debezium.time.Date"}), good), "decode", "DecodeError",
         "schema.fields[1].fields[0].field is an array, not a string"),
        (_wrapped([1, 2], good), "decode", "DecodeError", "schema is an array, not an object"),
        (_wrapped(_row_schema(_date("born")), _envelope(_row(email, born=10**12))), "decode", "DecodeError",
         "born: day count 1000000000000 is outside the representable dates"),
        (_wrapped(_row_schema({"type": "int64", "field": "seen", "name": "io.debezium.time.Timestamp"}),
                  _envelope(_row(email, seen=2**63 - 1))), "decode", "DecodeError",
         "seen: Timestamp 9223372036854775807 is outside the representable times"),
        (b'{"op":"c","after":{"email":"' + email.encode() + b'","tree":' + _deep(500) + b"}}", "map", "MappingError",
         "column 'tree' nests objects more than 254 levels deep"),
        (b'{"op":"c","after":' + _deep(1100) + b"}", "decode", "DecodeError", "not valid JSON"),
        (b'{"op":"c","after":{"email":', "decode", "DecodeError", "not valid JSON"),
        (b'{"op":"c","after":{"email":"\xff\xfe"}}', "decode", "DecodeError", "not valid JSON"),
        (b"[1, 2, 3]", "decode", "DecodeError", "expected a JSON object, got list"),
        (b'{"op":"c","after":{"email":' + b"1" + b"0" * 400 + b"}}", "decode", "DecodeError", "not valid JSON"),
        (b'{"op":"c","after":{"email":18446744073709551616}}', "map", "MappingError",
         "matching field 'email' has the wrong type float"),
        (orjson.dumps(_envelope(_row(email), op="x")), "decode", "DecodeError", "unknown Debezium op 'x'"),
        (orjson.dumps(_envelope(_row(email), op=["c"])), "decode", "DecodeError", "unknown Debezium op of type list"),
        (orjson.dumps(_envelope([_row(email)])), "decode", "DecodeError", "Debezium after is not an object"),
        (orjson.dumps({"schema": {}, "payload": [good]}), "decode", "DecodeError", "payload is not an object"),
        (orjson.dumps(_envelope(_row(None))), "map", "MappingError", "missing matching field 'email'"),
    ]  # fmt: skip


ENVELOPE = load_schema(CUSTOMER_ENVELOPE)
PARSED = fastavro.parse_schema(ENVELOPE)


def _customer(n: int, **overrides: Any) -> dict[str, Any]:
    row = {"id": n, "email": f"avro{n}@example.com", "first_name": "Ann", "last_name": None, "phone": None,
           "birth_date": 19_000, "city": None}  # fmt: skip
    row.update(overrides)
    return customer_change("c", None, row)


def avro_poison(schema_id: int, n: int) -> list[Poison]:
    good = encode(schema_id, PARSED, _customer(n))
    email_at = good.index(f"avro{n}@example.com".encode())
    bad_utf8 = bytearray(good)
    bad_utf8[email_at] = 0xFF
    long_length = good[: email_at - 1] + b"\xfe\xff\xff\xff\x0f" + good[email_at:]  # a 2 GB string
    return [
        (good[:-7], "decode", "DecodeError", "truncated: the payload ends before the record"),
        (bytes(bad_utf8), "decode", "DecodeError", "not valid UTF-8"),
        (long_length, "decode", "DecodeError", "truncated"),
        (b"\x00\x00\x00\x10\x92" + good[5:], "decode", "SchemaNotFound", "schema id 4242 is not in the schema"),
        (b'{"op": "c"}', "decode", "DecodeError", "magic byte 0x7b"),
        (encode(schema_id, PARSED, _customer(n, birth_date=2**31 - 1)), "decode", "DecodeError",
         "after.birth_date: day count 2147483647 is outside the representable dates"),
        (encode(schema_id, PARSED, {**_customer(n), "op": "x"}), "decode", "DecodeError", "unknown Debezium op 'x'"),
    ]  # fmt: skip


def _settings(kafka: Any, group: str, json_topic: str, avro_topic: str, dlq: str, api: str, reg: str) -> dict[str, Any]:
    return {
        "kafka": {"bootstrap_servers": kafka.bootstrap, "group_id": group},
        "altcraft": {"base_url": api, "token": TOKEN, "retry": {"initial_backoff_s": 0.05, "max_backoff_s": 1}},
        "batching": {"max_items": 50, "linger_s": 0.2},
        "schema_registry": {"url": reg, "request_timeout_s": 2.0},
        "routes": [
            {"name": "json", "topics": [json_topic], "format": "debezium-json", "workflow_id": WORKFLOW,
             "db_id": 7, "ops": {"r": "engage"}, "fields": {"email": "email", "_fname": "first_name"},
             "unmapped": "pass"},
            {"name": "avro", "topics": [avro_topic], "format": "debezium-avro", "workflow_id": WORKFLOW,
             "db_id": 7, "ops": {"r": "engage"}, "fields": {"email": "email", "_fname": "first_name"}},
        ],
        # A third of the records are poison here: far from the misconfiguration the breaker guards against.
        "dead_letter": {"topic": dlq, "breaker_max_share": 0.9},
        "shutdown": {"drain_timeout_s": 20},
    }  # fmt: skip


def test_poison_records_are_dead_lettered_with_their_reason_and_the_rest_flows(
    kafka: Any, emulator: Emulator, registry: RegistryServer, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    json_topic, avro_topic = kafka.new_topic(2, prefix="poison-json"), kafka.new_topic(1, prefix="poison-avro")
    dlq = kafka.new_topic(1, prefix="dlq")
    schema_id = registry.register(CUSTOMER_SUBJECT, ENVELOPE)

    # Poison interleaved with good records: two good ones after each, on both partitions.
    json_records: list[dict[str, Any]] = []
    json_poisons: list[Poison] = []
    good_emails: list[str] = []
    for partition in (0, 1):
        for n, poison in enumerate(json_poison(partition)):
            json_records.append({"value": poison[0], "partition": partition})
            json_poisons.append(poison)
            for k in range(2):
                email = f"good-{partition}-{n}-{k}@example.com"
                json_records.append({"value": orjson.dumps(_envelope(_row(email))), "partition": partition})
                json_poisons.append((b"", "", "", ""))
                good_emails.append(email)
    avro_records: list[dict[str, Any]] = []
    avro_poisons: list[Poison] = []
    for n, poison in enumerate(avro_poison(schema_id, 10_000)):
        avro_records.append({"value": poison[0]})
        avro_poisons.append(poison)
        for k in range(2):
            number = 20_000 + 10 * n + k
            avro_records.append({"value": encode(schema_id, PARSED, _customer(number))})
            avro_poisons.append((b"", "", "", ""))
            good_emails.append(f"avro{number}@example.com")

    expected: dict[tuple[str, int, int], Poison] = {}
    for topic, records, poisons in ((json_topic, json_records, json_poisons), (avro_topic, avro_records, avro_poisons)):
        for (partition, offset), poison in zip(kafka.produce(topic, records), poisons, strict=True):
            if poison[1]:
                expected[(topic, partition, offset)] = poison

    assert len(expected) == 2 * len(json_poison(0)) + len(avro_poison(schema_id, 0))
    group = f"g-{json_topic}"
    settings = _settings(kafka, group, json_topic, avro_topic, dlq, emulator.url, registry.url)
    proc = ConnectorProcess(settings, tmp_path, free_port()).start()
    try:
        for topic in (json_topic, avro_topic):
            _wait_committed(kafka, group, topic, proc)
        dead = wait_until(lambda: _dead_letters(kafka, dlq, len(expected)), 60, "every poison record dead-lettered")
        assert proc.alive(), proc.log_tail()
    finally:
        proc.stop()

    assert set(dead) == set(expected)
    for position, (value, stage, exception, message) in expected.items():
        headers, original = dead[position]
        assert original == value, position  # the original bytes, untouched
        assert headers["__connect.errors.stage"] == stage, (position, headers)
        assert headers["__connect.errors.exception.class.name"] == exception, (position, headers)
        assert message in headers["__connect.errors.exception.message"], (position, headers)
    engaged = Counter({e["matching_value"]: e["count"] for e in emulator.engagements(workflow_id=WORKFLOW)})
    assert engaged == Counter(good_emails)


def _wait_committed(kafka: Any, group: str, topic: str, proc: ConnectorProcess) -> None:
    ends = kafka.end_offsets(topic)

    def done() -> bool:
        if not proc.alive():
            raise AssertionError(f"the connector exited:\n{proc.log_tail()}")
        try:
            return bool(kafka.committed(group, topic) == ends)
        except KafkaException:  # e.g. the group coordinator still loading
            return False

    wait_until(done, 120, f"committed offsets of {topic} to reach the end offsets", interval=0.5)


def _dead_letters(kafka: Any, dlq: str, wanted: int) -> dict[tuple[str, int, int], tuple[dict[str, str], bytes]]:
    out = {}
    for msg in kafka.read_all(dlq):
        h = header_map(msg)
        out[(h["__connect.errors.topic"], int(h["__connect.errors.partition"]), int(h["__connect.errors.offset"]))] = (
            h,
            msg.value() or b"",
        )
    return out if len(out) >= wanted else {}
