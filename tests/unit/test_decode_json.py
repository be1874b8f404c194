from __future__ import annotations

import orjson
import pytest

from connector.decode.json_events import decode_debezium_json, decode_plain_json
from connector.errors import DecodeError

ROW = {"id": 1, "email": "a@example.com", "first_name": "Ann"}


def dumps(x: object) -> bytes:
    return orjson.dumps(x)


@pytest.mark.parametrize("op", ["c", "r", "u"])
def test_envelope_ops_carry_the_after_row(op: str) -> None:
    e = decode_debezium_json(dumps({"before": None, "after": ROW, "op": op, "ts_ms": 5, "source": {}}))
    assert (e.op, e.row, e.source_ts_ms) == (op, ROW, 5)


def test_delete_carries_the_before_row() -> None:
    e = decode_debezium_json(dumps({"before": ROW, "after": None, "op": "d"}))
    assert (e.op, e.row) == ("d", ROW)


def test_schema_payload_wrapper_and_temporal_logical_types() -> None:
    schema = {
        "type": "struct",
        "fields": [
            {"field": "before", "type": "struct", "fields": []},
            {"field": "after", "type": "struct", "fields": [
                {"field": "birth_date", "type": "int32", "name": "io.debezium.time.Date"},
                {"field": "updated", "type": "int64", "name": "io.debezium.time.Timestamp"},
            ]},
        ],
    }  # fmt: skip
    after = {**ROW, "birth_date": 19000, "updated": 1_700_000_000_000}
    e = decode_debezium_json(dumps({"schema": schema, "payload": {"before": None, "after": after, "op": "c"}}))
    assert e.row is not None
    assert e.row["birth_date"] == "2022-01-08"
    assert e.row["updated"] == "2023-11-14T22:13:20Z"


def test_tombstones_and_null_payloads() -> None:
    assert decode_debezium_json(None).op == "tombstone"
    assert decode_debezium_json(dumps({"schema": {}, "payload": None})).op == "tombstone"
    assert decode_plain_json(None).op == "tombstone"


def test_flattened_records_from_extract_new_record_state() -> None:
    e = decode_debezium_json(dumps({**ROW, "__op": "u", "__source_ts_ms": 9, "__deleted": "false"}))
    assert (e.op, e.row, e.source_ts_ms) == ("u", ROW, 9)
    d = decode_debezium_json(dumps({**ROW, "__deleted": "true"}))
    assert d.op == "d"


def test_unavailable_placeholder_is_dropped_from_the_row() -> None:
    e = decode_debezium_json(dumps({"op": "u", "after": {**ROW, "notes": "__debezium_unavailable_value"}}))
    assert e.row == ROW


def test_plain_json_is_an_upsert_of_the_row() -> None:
    e = decode_plain_json(dumps(ROW))
    assert (e.op, e.row) == ("u", ROW)


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (dumps({"op": "x", "after": ROW}), "unknown Debezium op"),
        (dumps({"op": "c", "after": [1]}), "after is not an object"),
        (dumps({"schema": {}, "payload": 3}), "payload is not an object"),
    ],
)
def test_unreadable_events_raise_a_decode_error_naming_the_problem(raw: bytes, needle: str) -> None:
    with pytest.raises(DecodeError, match=needle):
        decode_debezium_json(raw)
