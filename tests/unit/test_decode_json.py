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


def _wrapped(schema: object, after: object, op: str = "c") -> bytes:
    return dumps({"schema": schema, "payload": {"before": None, "after": after, "op": op}})


def _row_schema(*fields: object) -> dict[str, object]:
    return {"type": "struct", "fields": [{"field": "after", "type": "struct", "fields": list(fields)}]}


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (_wrapped({"fields": [{"field": "after"}, 1, {}]}, ROW), r"^schema\.fields\[1\] is a number, not an object$"),
        (_wrapped({"fields": "after"}, ROW), r"^schema\.fields is a string, not a list$"),
        (_wrapped({"fields": {"field": "after"}}, ROW), r"^schema\.fields is an object, not a list$"),
        (_wrapped({"fields": [{"field": "after", "type": "struct", "fields": 7}]}, ROW),
         r"^schema\.fields\[0\]\.fields is a number, not a list$"),
        (_wrapped(_row_schema({"field": "id"}, [1]), ROW), r"^schema\.fields\[0\]\.fields\[1\] is an array"),
        (_wrapped(_row_schema({"field": ["id"], "name": "io.debezium.time.Date"}), ROW),
         r"^schema\.fields\[0\]\.fields\[0\]\.field is an array, not a string$"),
        (_wrapped([1, 2], ROW), r"^schema is an array, not an object$"),
        (_wrapped(_row_schema({"field": "born", "name": "io.debezium.time.Date"}), {**ROW, "born": 10**12}),
         r"^born: day count 1000000000000 is outside the representable dates$"),
        (_wrapped(_row_schema({"field": "born", "name": "io.debezium.time.Date"}), {**ROW, "born": -(10**6)}),
         r"^born: day count -1000000 is outside the representable dates$"),
        (_wrapped(_row_schema({"field": "seen", "name": "io.debezium.time.Timestamp"}), {**ROW, "seen": 10**18}),
         r"^seen: Timestamp 1000000000000000000 is outside the representable times$"),
        (_wrapped(_row_schema({"field": "seen", "name": "io.debezium.time.MicroTimestamp"}), {**ROW, "seen": -(2**62)}),
         r"^seen: MicroTimestamp -4611686018427387904 is outside the representable times$"),
        (dumps({"op": ["c"], "after": ROW}), r"^unknown Debezium op of type list$"),
        (dumps({"op": 3, "after": ROW}), r"^unknown Debezium op 3$"),
        (dumps({**ROW, "__op": {"c": 1}}), r"^unknown __op of type dict$"),
    ],
)  # fmt: skip
def test_malformed_schemas_ops_and_out_of_range_temporals_are_decode_errors_naming_the_spot(
    raw: bytes, needle: str
) -> None:
    with pytest.raises(DecodeError, match=needle):
        decode_debezium_json(raw)


def test_schema_entries_without_a_logical_type_may_be_anything_readable() -> None:
    schema = _row_schema({"field": "id", "type": "int32"}, {"field": 5, "name": "io.debezium.time.Date"}, {"x": 1})
    assert decode_debezium_json(_wrapped(schema, ROW)).row == ROW
    assert decode_debezium_json(_wrapped(None, ROW)).row == ROW
