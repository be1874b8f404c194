"""The Avro decoder of a route: Confluent framing, writer schemas from the registry, Debezium envelopes
read like their JSON twins, the canonical profile-change event, reader schemas, and every kind of bad
input refused with a precise reason (dead letter) while registry trouble stays a transient fault."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastavro
import pytest

from connector.config import Format, RouteSettings, SchemaRegistrySettings
from connector.decode import build_decoder, open_registry
from connector.decode.avro import AvroDecoder, avro_decoder, encode
from connector.decode.json_events import decode_debezium_json, decode_plain_json
from connector.decode.registry import RegistryClient
from connector.errors import DecodeError, TransientError
from connector.models import ChangeEvent
from connector.schema_registry import RegistryServer
from connector.schema_registry.samples import (
    CUSTOMER_ENVELOPE,
    CUSTOMER_SUBJECT,
    PROFILE_CHANGE,
    customer_change,
    customer_row,
    debezium_json_twin,
    load_schema,
    with_added_field,
)

ENVELOPE = load_schema(CUSTOMER_ENVELOPE)
PARSED_ENVELOPE = fastavro.parse_schema(ENVELOPE)


@pytest.fixture
def registry() -> Iterator[RegistryServer]:
    with RegistryServer() as server:
        yield server


@pytest.fixture
def client(registry: RegistryServer) -> Iterator[RegistryClient]:
    with RegistryClient(SchemaRegistrySettings(url=registry.url, request_timeout_s=0.5)) as c:
        yield c


def route(fmt: Format = Format.DEBEZIUM_AVRO) -> RouteSettings:
    return RouteSettings.model_validate({"name": "r", "topics": ["t"], "format": fmt, "workflow_id": 1, "db_id": 7})


def debezium(client: RegistryClient) -> AvroDecoder:
    return AvroDecoder(Format.DEBEZIUM_AVRO, client)


# ---------------------------------------------------------------------------------------- Debezium


@pytest.mark.parametrize(
    ("op", "before", "after"),
    [
        ("c", None, customer_row(1)),
        ("r", None, customer_row(2, city=None, birth_date=None)),
        ("u", customer_row(3), customer_row(3, email="new@example.com", phone=None)),
        ("d", customer_row(4), None),
    ],
)
def test_debezium_envelopes_read_like_their_json_twins(
    registry: RegistryServer, client: RegistryClient, op: str, before: Any, after: Any
) -> None:
    schema_id = registry.register(CUSTOMER_SUBJECT, ENVELOPE)
    change = customer_change(op, before, after, ts_ms=1_700_000_000_456)
    event = debezium(client)(encode(schema_id, PARSED_ENVELOPE, change))
    assert event == decode_debezium_json(debezium_json_twin(change, ENVELOPE))
    assert event.op == op and event.source_ts_ms == 1_700_000_000_456
    if event.row is not None and event.row["birth_date"] is not None:
        assert len(event.row["birth_date"]) == 10  # YYYY-MM-DD


def test_tombstones_and_placeholders(registry: RegistryServer, client: RegistryClient) -> None:
    schema_id = registry.register(CUSTOMER_SUBJECT, ENVELOPE)
    decode = debezium(client)
    assert decode(None) == ChangeEvent("tombstone", None)
    change = customer_change("u", None, customer_row(5, last_name="__debezium_unavailable_value"))
    event = decode(encode(schema_id, PARSED_ENVELOPE, change))
    assert event.row is not None and "last_name" not in event.row


def test_flattened_debezium_records(registry: RegistryServer, client: RegistryClient) -> None:
    flat = {
        "type": "record",
        "name": "Value",
        "namespace": "dbserver1.inventory.customers",
        "fields": [
            {"name": "id", "type": "int"},
            {"name": "email", "type": ["null", "string"]},
            {"name": "birth_date", "type": ["null", {"type": "int", "connect.name": "io.debezium.time.Date"}]},
            {"name": "__op", "type": ["null", "string"], "default": None},
            {"name": "__deleted", "type": ["null", "string"], "default": None},
            {"name": "__source_ts_ms", "type": ["null", "long"], "default": None},
        ],
    }
    schema_id = registry.register("flat-value", flat)
    parsed = fastavro.parse_schema(flat)
    decode = debezium(client)
    base = {"id": 7, "email": "f@example.com", "birth_date": 0, "__source_ts_ms": 99}
    updated = decode(encode(schema_id, parsed, base | {"__op": "u", "__deleted": "false"}))
    assert updated == ChangeEvent("u", {"id": 7, "email": "f@example.com", "birth_date": "1970-01-01"}, 99)
    deleted = decode(encode(schema_id, parsed, base | {"__op": "d", "__deleted": "true"}))
    assert deleted.op == "d"
    snapshot = decode(encode(schema_id, parsed, base | {"__op": None, "__deleted": None}))
    assert snapshot.op == "r"  # as on the JSON path: a flattened row without __op is a read


# ---------------------------------------------------------------------------------------- plain avro


def test_canonical_profile_change(registry: RegistryServer, client: RegistryClient) -> None:
    schema = load_schema(PROFILE_CHANGE)
    schema_id = registry.register("profiles-value", schema)
    parsed = fastavro.parse_schema(schema)
    decode = AvroDecoder(Format.AVRO, client)
    record = {
        "op": "c",
        "ts_ms": 1_700_000_000_000,
        "profile": {"email": "p@example.com", "_fname": "Ann", "phones": ["+79001112233"], "age": 41, "vip": True},
    }
    assert decode(encode(schema_id, parsed, record)) == ChangeEvent("c", record["profile"], 1_700_000_000_000)
    deleted = decode(encode(schema_id, parsed, {"op": "d", "ts_ms": None, "profile": {"email": "p@example.com"}}))
    assert deleted == ChangeEvent("d", {"email": "p@example.com"}, None)


def test_any_other_record_is_a_plain_row_like_the_json_format(registry: RegistryServer, client: RegistryClient) -> None:
    row_schema = {
        "type": "record",
        "name": "Profile",
        "fields": [
            {"name": "email", "type": "string"},
            {"name": "born", "type": {"type": "int", "logicalType": "date"}},
            {"name": "__op", "type": ["null", "string"], "default": None},
        ],
    }
    schema_id = registry.register("rows-value", row_schema)
    parsed = fastavro.parse_schema(row_schema)
    decode = AvroDecoder(Format.AVRO, client)
    event = decode(encode(schema_id, parsed, {"email": "a@example.com", "born": 0, "__op": None}))
    assert event == decode_plain_json(b'{"email": "a@example.com", "born": "1970-01-01"}')
    assert event.op == "u"
    assert decode(encode(schema_id, parsed, {"email": "a@example.com", "born": 0, "__op": "c"})).op == "c"


# ---------------------------------------------------------------------------------------- reader schemas

V2_FIELD = {"name": "loyalty_tier", "type": "string", "default": "standard"}


def test_a_reader_schema_reads_older_and_newer_writers_alike(
    registry: RegistryServer, client: RegistryClient, tmp_path: Path
) -> None:
    v2 = with_added_field(ENVELOPE, "Value", V2_FIELD)
    v3 = with_added_field(v2, "Value", {"name": "nickname", "type": ["null", "string"], "default": None})
    id1 = registry.register(CUSTOMER_SUBJECT, ENVELOPE)
    id3 = registry.register(CUSTOMER_SUBJECT, v3)
    reader_file = tmp_path / "customers-v2.avsc"
    reader_file.write_text(json.dumps(v2))
    decode = avro_decoder(route(), client, reader_schema=reader_file)

    old = decode(encode(id1, PARSED_ENVELOPE, customer_change("c", None, customer_row(1))))
    new_row = customer_row(2) | {"loyalty_tier": "gold", "nickname": "Bob"}
    new = decode(encode(id3, fastavro.parse_schema(v3), customer_change("c", None, new_row)))
    assert old.row is not None and new.row is not None
    assert old.row["loyalty_tier"] == "standard"  # the reader's default
    assert new.row["loyalty_tier"] == "gold"
    assert "nickname" not in new.row  # unknown to the reader: skipped
    assert set(old.row) == set(new.row)


def test_without_a_reader_schema_records_come_out_as_written(registry: RegistryServer, client: RegistryClient) -> None:
    v2 = with_added_field(ENVELOPE, "Value", V2_FIELD)
    id2 = registry.register(CUSTOMER_SUBJECT, v2)
    event = debezium(client)(encode(id2, fastavro.parse_schema(v2), customer_change("c", None, customer_row(1))))
    assert event.row is not None and event.row["loyalty_tier"] == "standard"  # written by fastavro's default


def test_a_writer_the_reader_schema_cannot_read_is_a_dead_letter(
    registry: RegistryServer, client: RegistryClient
) -> None:
    reader = with_added_field(ENVELOPE, "Value", {"name": "required_new", "type": "int"})
    schema_id = registry.register(CUSTOMER_SUBJECT, ENVELOPE)
    decode = avro_decoder(route(), client, reader_schema=reader)
    reason = r"writer schema id \d+ .*cannot be read as the reader schema.*'required_new' has no default"
    with pytest.raises(DecodeError, match=reason):
        decode(encode(schema_id, PARSED_ENVELOPE, customer_change("c", None, customer_row(1))))


def test_an_unreadable_reader_schema_fails_at_start_up(client: RegistryClient, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read the file"):
        avro_decoder(route(), client, reader_schema=tmp_path / "missing.avsc")
    bad = tmp_path / "bad.avsc"
    bad.write_text('{"type": "record", "name": "X", "fields": [{"name": "a", "type": "nope"}]}')
    with pytest.raises(ValueError, match="not a valid Avro schema"):
        avro_decoder(route(), client, reader_schema=bad)


# ---------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"", "empty value"),
        (b"\x00\x00\x01", "3 bytes: too short for the Confluent wire format header"),
        (b'{"op": "c"}', "magic byte 0x7b, expected 0x00.*looks like JSON"),
        (b"\x01\x00\x00\x00\x01\x00", "magic byte 0x01"),
    ],
)
def test_framing_errors(client: RegistryClient, value: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        debezium(client)(value)


def test_payloads_that_do_not_match_their_schema(registry: RegistryServer, client: RegistryClient) -> None:
    schema_id = registry.register(CUSTOMER_SUBJECT, ENVELOPE)
    decode = debezium(client)
    good = encode(schema_id, PARSED_ENVELOPE, customer_change("c", None, customer_row(1)))
    with pytest.raises(DecodeError, match="truncated: the payload ends before the record"):
        decode(good[:-3])
    with pytest.raises(DecodeError, match="2 bytes left over after the record"):
        decode(good + b"\x00\x00")
    corrupt_union = bytearray(good)
    corrupt_union[5] = 0x08  # the "before" union: branch 4 of 2
    with pytest.raises(DecodeError, match="union branch 4 at before does not exist"):
        decode(bytes(corrupt_union))
    string_schema = registry.register(
        "other", {"type": "record", "name": "S", "fields": [{"name": "s", "type": "string"}]}
    )
    with pytest.raises(DecodeError, match="not valid UTF-8"):
        decode(bytes([0, 0, 0, 0, string_schema, 4, 0xFF, 0xFE]))


def test_an_unknown_schema_id_is_a_dead_letter(client: RegistryClient) -> None:
    with pytest.raises(DecodeError, match=r"schema id 4242 is not in the schema registry.*40403"):
        debezium(client)(b"\x00\x00\x00\x10\x92" + b"\x00" * 10)


def test_a_schema_that_is_not_a_record_is_a_dead_letter(registry: RegistryServer, client: RegistryClient) -> None:
    schema_id = registry.register("strings", '"string"')
    with pytest.raises(DecodeError, match="describes a string, not a record"):
        debezium(client)(bytes([0, 0, 0, 0, schema_id, 2, 65]))


def test_registry_outages_are_transient(registry: RegistryServer, client: RegistryClient) -> None:
    schema_id = registry.register(CUSTOMER_SUBJECT, ENVELOPE)
    decode = debezium(client)
    value = encode(schema_id, PARSED_ENVELOPE, customer_change("c", None, customer_row(1)))
    for outage in ("unavailable", "refuse", "slow"):
        registry.set_outage(outage, delay_s=2.0)  # type: ignore[arg-type]
        with pytest.raises(TransientError):
            decode(value)
    registry.set_outage(None)
    assert decode(value).op == "c"
    registry.set_outage("unavailable")
    assert decode(value).op == "c"  # cached: an outage only matters for schemas not seen yet


# ---------------------------------------------------------------------------------------- caching


def test_compiled_readers_are_cached_per_id_within_bounds(registry: RegistryServer) -> None:
    settings = SchemaRegistrySettings(url=registry.url, cache_size=2)
    with RegistryClient(settings) as client:
        decode = avro_decoder(route(), client)  # keeps compiled readers for as many ids as the client schemas
        assert isinstance(decode, AvroDecoder)
        ids = []
        for n in range(3):
            evolved = with_added_field(ENVELOPE, "Value", {"name": f"extra{n}", "type": "int", "default": n})
            ids.append((registry.register(CUSTOMER_SUBJECT, evolved), fastavro.parse_schema(evolved)))
        for _ in range(3):
            for schema_id, parsed in ids:
                decode(encode(schema_id, parsed, customer_change("c", None, customer_row(1) | {"extra0": 0})))
        assert len(decode._plans) == 2 and client.cached == 2
        fetches = [r for r in registry.requests if r.path.startswith("/schemas/ids/")]
        assert len(fetches) == 9  # a cycle of three ids through a cache of two misses every time
        registry.requests.clear()
        for _ in range(100):
            decode(encode(ids[2][0], ids[2][1], customer_change("c", None, customer_row(1) | {"extra0": 0})))
        assert registry.requests == []


def test_decoders_built_with_one_client_share_it_and_its_owner_closes_it(registry: RegistryServer) -> None:
    schema_id = registry.register(CUSTOMER_SUBJECT, ENVELOPE)
    value = encode(schema_id, PARSED_ENVELOPE, customer_change("c", None, customer_row(1)))
    routes = [route(), route(Format.AVRO)]
    client = open_registry(SchemaRegistrySettings(url=registry.url, request_timeout_s=0.5), routes)
    assert client is not None
    with client:
        first, second = (build_decoder(r, client) for r in routes)
        assert isinstance(first, AvroDecoder) and isinstance(second, AvroDecoder)
        assert first.client is client and second.client is client
        assert first(value).op == "c"
        assert client.cached == 1  # the second route finds the schema the first one fetched
    with pytest.raises(RuntimeError, match="closed"):  # closing the client closed its connections
        client.schema(schema_id + 1)


def test_only_avro_routes_need_a_registry_client() -> None:
    settings = SchemaRegistrySettings(url="http://127.0.0.1:9")
    json_routes = [route(Format.JSON), route(Format.DEBEZIUM_JSON)]
    assert open_registry(settings, json_routes) is None
    assert build_decoder(route(Format.JSON), None) is decode_plain_json
    assert build_decoder(route(Format.DEBEZIUM_JSON), None) is decode_debezium_json
    with pytest.raises(ValueError, match="route 'r' reads debezium-avro: its decoder needs a Schema Registry client"):
        build_decoder(route(), None)


def test_decoding_is_fast_enough(registry: RegistryServer, client: RegistryClient) -> None:
    """A floor far below the measured speed (about 200,000/s on one core); it catches a slow path."""
    schema_id = registry.register(CUSTOMER_SUBJECT, ENVELOPE)
    decode = debezium(client)
    values = [encode(schema_id, PARSED_ENVELOPE, customer_change("u", None, customer_row(i))) for i in range(1000)]
    decode(values[0])
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for value in values:
            decode(value)
        best = min(best, time.perf_counter() - started)
    rate = len(values) / best
    print(f"\nAvro decode (Debezium customer envelope): {rate:,.0f} events/s")
    assert rate > 30_000


def test_an_unusable_schema_is_asked_for_once(registry: RegistryServer, client: RegistryClient) -> None:
    registry.store.register("proto-value", "syntax = 'proto3';", "PROTOBUF")
    decode = debezium(client)
    for _ in range(3):
        with pytest.raises(DecodeError, match="schema id 1 is a PROTOBUF schema, not Avro"):
            decode(b"\x00\x00\x00\x00\x01\x02")
    assert [r.path for r in registry.requests] == ["/schemas/ids/1"]


def test_mangled_records_only_ever_raise_decode_errors(registry: RegistryServer, client: RegistryClient) -> None:
    schema_id = registry.register(CUSTOMER_SUBJECT, ENVELOPE)
    decode = debezium(client)
    good = encode(schema_id, PARSED_ENVELOPE, customer_change("u", customer_row(1), customer_row(1)))
    rng = random.Random(5)
    outcomes: Counter[str] = Counter()
    for _ in range(3000):
        mangled = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            mangled[rng.randrange(5, len(mangled))] = rng.randrange(256)
        try:
            decode(bytes(mangled[: rng.randint(5, len(mangled))]))
            outcomes["read"] += 1
        except DecodeError:
            outcomes["dead"] += 1
    assert outcomes["dead"] > 1000


def test_dates_and_times_beyond_the_representable_name_their_field(
    registry: RegistryServer, client: RegistryClient
) -> None:
    schema_id = registry.register(CUSTOMER_SUBJECT, ENVELOPE)
    decode = debezium(client)
    far = encode(schema_id, PARSED_ENVELOPE, customer_change("c", None, customer_row(1, birth_date=2**31 - 1)))
    with pytest.raises(
        DecodeError, match=r"after\.birth_date: day count 2147483647 is outside the representable dates"
    ):
        decode(far)
    row_schema = {
        "type": "record",
        "name": "Seen",
        "fields": [
            {"name": "email", "type": "string"},
            {"name": "seen", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        ],
    }
    row_id = registry.register("seen-value", row_schema)
    plain = AvroDecoder(Format.AVRO, client)
    value = encode(row_id, fastavro.parse_schema(row_schema), {"email": "a@b.co", "seen": 2**62})
    with pytest.raises(DecodeError, match=r"seen: 4611686018427387904 ms since the epoch is outside the representable"):
        plain(value)
