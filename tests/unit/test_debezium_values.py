"""What Debezium's values become on their way to Altcraft: NULLs, logical types, placeholders, declared
column types for schemaless streams, and the loud failure when a schemaless stream declares nothing."""

from __future__ import annotations

import base64
import decimal
import io
import logging
from collections import Counter
from typing import Any

import fastavro
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from connector.config import RouteSettings
from connector.config.sections import COLUMN_TYPE_NAMES
from connector.decode.avro import compile_reader
from connector.decode.envelope import UNAVAILABLE, UNAVAILABLE_B64
from connector.decode.json_events import decode_debezium_json
from connector.decode.logical import COLUMN_TYPES, column_type_converter, decimal_number
from connector.demo_data import DEMO_FIELDS, generate
from connector.emulator.validation import check_fields
from connector.models import ImportItem, Unsent
from connector.routing import Route

EMAIL = "a@example.com"


def route(**kw: object) -> Route:
    base: dict[str, object] = {"name": "r", "topics": ["t"], "workflow_id": 7, "db_id": 7, "fields": {"email": "email"}}
    base.update(kw)
    return Route(RouteSettings.model_validate(base), max_body_bytes=1_000_000)


def sent(r: Route, value: bytes) -> dict[str, Any]:
    """The profile fields of the item a record becomes (fails the test if it becomes none)."""
    out = r.prepare(value)
    assert isinstance(out, bytes), out
    data: dict[str, Any] = orjson.loads(out)["data"]
    return data


def envelope(after: dict[str, Any], op: str = "u") -> bytes:
    return orjson.dumps({"before": None, "after": {"email": EMAIL, **after}, "op": op, "ts_ms": 1})


def col(name: str, kind: str, logical: str | None = None, **extra: object) -> dict[str, object]:
    return {"field": name, "type": kind, "optional": True, **({"name": logical} if logical else {}), **extra}


def with_schema(after: dict[str, Any], *columns: dict[str, object]) -> bytes:
    row = {"type": "struct", "fields": [col("email", "string"), *columns]}
    schema = {"type": "struct", "fields": [{**row, "field": "before"}, {**row, "field": "after"}, col("op", "string")]}
    payload = {"before": None, "after": {"email": EMAIL, **after}, "op": "u"}
    return orjson.dumps({"schema": schema, "payload": payload})


def b64_decimal(unscaled: int) -> str:
    return base64.b64encode(unscaled.to_bytes(unscaled.bit_length() // 8 + 1, "big", signed=True)).decode()


DECIMAL_2 = {"parameters": {"scale": "2", "connect.decimal.precision": "12"}}


# ---------------------------------------------------------------------------------------------- NULLs


def test_a_column_set_to_null_clears_its_field_and_an_absent_column_is_left_alone() -> None:
    r = route(fields={"email": "email", "_city": "city", "_fname": "first_name", "tier": "prefs.tier"})
    fields = sent(r, envelope({"city": None, "prefs": None}))
    assert fields == {"email": EMAIL, "_city": None, "tier": None}  # first_name absent: not sent


def test_nulls_ignore_keeps_the_fields_as_they_were() -> None:
    r = route(fields={"email": "email", "_city": "city"}, unmapped="pass", nulls="ignore")
    assert sent(r, envelope({"city": None, "notes": None, "tier": "gold"})) == {"email": EMAIL, "tier": "gold"}


def test_unmapped_columns_passed_through_clear_too() -> None:
    r = route(unmapped="pass")
    assert sent(r, envelope({"notes": None})) == {"email": EMAIL, "notes": None}


def test_matching_fields_and_email_are_never_sent_as_null() -> None:
    r = route(matching="phone", fields={"phones": "phone", "email": "email2", "_city": "city"})
    value = orjson.dumps({"op": "u", "after": {"phone": "+79001234567", "email2": None, "city": None}})
    assert sent(r, value) == {"phones": "+79001234567", "_city": None}
    refused = route().prepare(envelope({"email": None}))
    assert isinstance(refused, Unsent) and refused.dead is not None
    assert "missing matching field 'email'" in refused.dead.message


def test_content_and_custom_data_leave_nulls_out() -> None:
    r = route(content={"plan": "plan"}, custom_data={"crm": "crm"})
    item = r.prepare(envelope({"plan": None, "crm": 5}))
    assert isinstance(item, bytes)
    assert orjson.loads(item) == {"data": {"email": EMAIL}, "custom_data": {"crm": 5}}


# ---------------------------------------------------------------------------------------------- decimals


def test_a_precise_decimal_is_sent_as_a_json_number_with_its_exact_digits() -> None:
    r = route(fields={"email": "email", "balance": "balance"})
    value = with_schema(
        {"balance": "AOQ="}, col("balance", "bytes", "org.apache.kafka.connect.data.Decimal", **DECIMAL_2)
    )
    item = r.prepare(value)
    assert isinstance(item, bytes) and b'"balance":2.28' in item


@given(unscaled=st.integers(min_value=-(10**40), max_value=10**40), scale=st.integers(min_value=-5, max_value=30))
def test_decimal_round_trip_is_exact(unscaled: int, scale: int) -> None:
    expected = decimal.Decimal(unscaled).scaleb(-scale, decimal.Context(prec=100))
    written = orjson.dumps({"n": decimal_number(unscaled, scale)})
    text = written[len(b'{"n":') : -1].decode()
    assert decimal.Decimal(text) == expected
    assert "e" not in text.lower()  # plain digits: what Altcraft's numeric fields parse
    from_base64 = column_type_converter(f"decimal({scale})")
    assert from_base64 is not None
    assert orjson.dumps(from_base64(b64_decimal(unscaled))) == orjson.dumps(decimal_number(unscaled, scale))


def test_variable_scale_decimals_and_other_decimal_modes() -> None:
    r = route(fields={"email": "email", "a": "a", "b": "b", "c": "c"})
    value = with_schema(
        {"a": {"scale": 3, "value": b64_decimal(-12345)}, "b": "12.50", "c": 12.5},
        col("a", "struct", "io.debezium.data.VariableScaleDecimal"),
        col("b", "string"),  # decimal.handling.mode=string: text, left as it is
        col("c", "double"),  # decimal.handling.mode=double
    )
    item = r.prepare(value)
    assert isinstance(item, bytes) and b'"a":-12.345,"b":"12.50","c":12.5' in item


def test_text_that_is_not_base64_in_a_decimal_column_is_a_decode_error() -> None:
    value = with_schema(
        {"balance": "2.28?"}, col("balance", "bytes", "org.apache.kafka.connect.data.Decimal", **DECIMAL_2)
    )
    out = route().prepare(value)
    assert isinstance(out, Unsent) and out.dead is not None and not out.unexpected
    assert (out.dead.stage, out.dead.message) == ("decode", "balance: '2.28?' is not the base64 of a decimal")


# ---------------------------------------------------------------------------------------------- temporal, JSON


TEMPORALS = [
    ("io.debezium.time.Date", "int32", 19_000, "2022-01-08"),
    ("org.apache.kafka.connect.data.Date", "int32", 19_000, "2022-01-08"),
    ("io.debezium.time.Timestamp", "int64", 1_700_000_000_123, "2023-11-14T22:13:20.123000Z"),
    ("org.apache.kafka.connect.data.Timestamp", "int64", 1_700_000_000_123, "2023-11-14T22:13:20.123000Z"),
    ("io.debezium.time.MicroTimestamp", "int64", 1_700_000_000_123_456, "2023-11-14T22:13:20.123456Z"),
    ("io.debezium.time.NanoTimestamp", "int64", 1_700_000_000_123_456_789, "2023-11-14T22:13:20.123457Z"),
    ("io.debezium.time.Time", "int32", 3_723_004, "01:02:03.004000"),
    ("org.apache.kafka.connect.data.Time", "int32", 3_723_004, "01:02:03.004000"),
    ("io.debezium.time.MicroTime", "int64", 3_723_000_005, "01:02:03.000005"),
    ("io.debezium.time.NanoTime", "int64", 3_723_000_000_000, "01:02:03"),
    ("io.debezium.time.ZonedTimestamp", "string", "2023-11-14T22:13:20.123+03:00", "2023-11-14T22:13:20.123+03:00"),
]


@pytest.mark.parametrize(("logical", "kind", "raw", "text"), TEMPORALS)
def test_debezium_and_connect_temporal_types_become_text(logical: str, kind: str, raw: object, text: str) -> None:
    r = route(fields={"email": "email", "when": "when"})
    assert sent(r, with_schema({"when": raw}, col("when", kind, logical)))["when"] == text


def test_arrays_of_logical_types_are_converted_item_by_item() -> None:
    items = {"type": "int32", "name": "io.debezium.time.Date"}
    event = decode_debezium_json(with_schema({"days": [0, 19_000, None]}, col("days", "array", items=items)))
    assert event.row is not None and event.row["days"] == ["1970-01-01", "2022-01-08", None]


def test_jsonb_is_a_document_that_fields_reach_into() -> None:
    r = route(fields={"email": "email", "_tz": "prefs.tz", "prefs": "prefs"})
    value = with_schema(
        {"prefs": '{"tz": "Europe/Riga", "n": [1, 2]}'}, col("prefs", "string", "io.debezium.data.Json")
    )
    assert sent(r, value) == {"email": EMAIL, "_tz": "Europe/Riga", "prefs": {"tz": "Europe/Riga", "n": [1, 2]}}


# ---------------------------------------------------------------------------------------------- placeholders


def test_placeholders_are_never_sent_in_arrays_bytea_or_nested_objects() -> None:
    r = route(unmapped="pass")
    value = envelope(
        {
            "tags": ["a", UNAVAILABLE],
            "avatar": UNAVAILABLE_B64,
            "doc": {"x": UNAVAILABLE, "y": [1, UNAVAILABLE, {"z": UNAVAILABLE_B64}]},
            "notes": UNAVAILABLE,
            "kept": "yes",
        }
    )
    assert sent(r, value) == {"email": EMAIL, "doc": {"y": [1, {}]}, "kept": "yes"}
    assert base64.b64encode(b"__debezium_unavailable_value").decode() == UNAVAILABLE_B64


def test_a_toasted_jsonb_column_is_absent_not_parsed() -> None:
    r = route(fields={"email": "email", "_tz": "prefs.tz", "prefs": "prefs"})
    assert sent(r, with_schema({"prefs": UNAVAILABLE}, col("prefs", "string", "io.debezium.data.Json"))) == {
        "email": EMAIL
    }


# ---------------------------------------------------------------------------------------------- column_types


def test_declared_column_types_convert_schemaless_records_as_a_schema_would() -> None:
    fields = {"email": "email", "_bdate": "born", "seen": "seen", "balance": "balance", "_tz": "prefs.tz"}
    declared = {"born": "date", "seen": "micro-timestamp", "balance": "decimal(2)", "prefs": "json"}
    after = {"born": 19_000, "seen": 1_700_000_000_123_456, "balance": "AOQ=", "prefs": '{"tz": "UTC"}'}
    schemaless = route(fields=fields, column_types=declared).prepare(envelope(after))
    schema = with_schema(
        after,
        col("born", "int32", "io.debezium.time.Date"),
        col("seen", "int64", "io.debezium.time.MicroTimestamp"),
        col("balance", "bytes", "org.apache.kafka.connect.data.Decimal", **DECIMAL_2),
        col("prefs", "string", "io.debezium.data.Json"),
    )
    assert schemaless == route(fields=fields).prepare(schema)
    assert isinstance(schemaless, bytes)
    assert orjson.loads(schemaless)["data"] == {
        "email": EMAIL, "_bdate": "2022-01-08", "seen": "2023-11-14T22:13:20.123456Z", "balance": 2.28, "_tz": "UTC",
    }  # fmt: skip


def test_plain_json_routes_take_column_types_too() -> None:
    r = route(format="json", fields={"email": "email", "_bdate": "born"}, column_types={"born": "date"})
    assert sent(r, orjson.dumps({"email": EMAIL, "born": 0})) == {"email": EMAIL, "_bdate": "1970-01-01"}
    unchecked = route(format="json", fields={"email": "email", "_bdate": "born"})  # not Debezium: not checked
    assert sent(unchecked, orjson.dumps({"email": EMAIL, "born": 5})) == {"email": EMAIL, "_bdate": 5}


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"column_types": {"a": "decimal", "b": "dates"}}, "unknown column types (a: decimal; b: dates)"),
        ({"format": "debezium-avro", "column_types": {"a": "date"}}, "column_types applies to JSON formats"),
        ({"nulls": "drop"}, "'clear' or 'ignore'"),
    ],
)
def test_settings_refuse_unknown_column_types_and_null_policies(kw: dict[str, object], needle: str) -> None:
    with pytest.raises(ValidationError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        RouteSettings.model_validate({"name": "r", "topics": ["t"], "workflow_id": 7, "db_id": 7, **kw})


def test_every_column_type_the_settings_accept_has_a_converter() -> None:
    assert set(COLUMN_TYPE_NAMES) == set(COLUMN_TYPES)
    for name in (*COLUMN_TYPE_NAMES, "decimal(0)", "decimal(-2)", "io.debezium.time.Date", "io.debezium.data.Json"):
        base = {"name": "r", "topics": ["t"], "workflow_id": 7, "db_id": 7}
        RouteSettings.model_validate({**base, "column_types": {"c": name}})
        column_type_converter(name)  # raises for a name it does not know


# ---------------------------------------------------------------------------------------------- undeclared


def test_a_schemaless_day_count_for_a_date_field_is_dead_lettered_naming_the_settings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    r = route(fields={"email": "email", "_bdate": "born"})
    with caplog.at_level(logging.WARNING, logger="connector.routing"):
        outs = [r.prepare(envelope({"born": 19_000})) for _ in range(3)]
    for out in outs:
        assert isinstance(out, Unsent) and out.dead is not None and not out.unexpected
        assert out.dead.stage == "decode" and out.dead.exception == "UndeclaredEncoding"
        assert "routes[].column_types (born: date" in out.dead.message
        assert "value.converter.schemas.enable=true" in out.dead.message
    assert len(caplog.records) == 1  # once per column, not per record
    assert "value.converter.schemas.enable=true" in caplog.records[0].getMessage()


def test_a_schemaless_base64_decimal_for_a_custom_field_is_dead_lettered_naming_the_settings() -> None:
    out = route(fields={"email": "email", "balance": "balance"}).prepare(envelope({"balance": "AOQ="}))
    assert isinstance(out, Unsent) and out.dead is not None
    assert "decimal(<scale>)" in out.dead.message and "decimal.handling.mode=string" in out.dead.message


@pytest.mark.parametrize(
    ("kw", "after"),
    [
        ({"fields": {"email": "email", "_bdate": "born"}}, {"born": "1990-02-03"}),  # already text
        ({"fields": {"email": "email", "balance": "balance"}}, {"balance": 2.28}),  # decimal.handling.mode=double
        ({"fields": {"email": "email", "balance": "balance"}}, {"balance": "Anna"}),  # base64-shaped, unpadded
        ({"fields": {"email": "email", "code": "code"}, "column_types": {"code": "text"}}, {"code": "AOQ="}),
        ({"fields": {"email": "email", "_fname": "name"}}, {"name": "Zoe="}),  # a system text field
    ],
)
def test_what_the_undeclared_check_lets_through(kw: dict[str, Any], after: dict[str, Any]) -> None:
    fields = sent(route(**kw), envelope(after))
    assert set(fields) == {"email", *kw["fields"]}


def test_records_with_a_schema_are_never_checked() -> None:
    r = route(fields={"email": "email", "_bdate": "born"})
    assert sent(r, with_schema({"born": 19_000}, col("born", "int32")))["_bdate"] == 19_000


# ---------------------------------------------------------------------------------------------- Avro


def test_avro_reads_variable_scale_decimals_jsonb_and_bytea_placeholders_like_json() -> None:
    vsd = {"type": "record", "name": "VariableScaleDecimal", "namespace": "io.debezium.data",
           "connect.name": "io.debezium.data.VariableScaleDecimal",
           "fields": [{"name": "scale", "type": "int"}, {"name": "value", "type": "bytes"}]}  # fmt: skip
    schema = {
        "type": "record",
        "name": "Row",
        "fields": [
            {"name": "amount", "type": vsd},
            {"name": "prefs", "type": {"type": "string", "connect.name": "io.debezium.data.Json"}},
            {"name": "avatar", "type": "bytes"},
        ],
    }
    parsed = fastavro.parse_schema(schema)
    record = {"amount": {"scale": 2, "value": (228).to_bytes(2, "big")}, "prefs": '{"tz": "UTC"}',
              "avatar": UNAVAILABLE.encode()}  # fmt: skip
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, record)
    got, _ = compile_reader(parsed)(buf.getvalue(), 0)
    assert orjson.dumps(got["amount"]) == b"2.28"
    assert got["prefs"] == {"tz": "UTC"}
    assert got["avatar"] == UNAVAILABLE  # left out with the other placeholders


# ---------------------------------------------------------------------------------------------- the demo's data


def test_the_demo_stream_with_schemas_has_the_outcomes_it_was_built_to_have() -> None:
    r = route(fields=DEMO_FIELDS)
    stream = generate(3_000, 4, seed=5, schemas=True, snapshot_imports=True)
    outcomes: Counter[str] = Counter()
    cleared = 0
    for e in stream.events:
        out = r.prepare(e.value)
        if isinstance(out, Unsent):
            outcome = "skip" if out.skip else f"dead:{out.dead.stage if out.dead else '?'}"
        else:
            item = out.item if isinstance(out, ImportItem) else out
            fields = orjson.loads(out.item) if isinstance(out, ImportItem) else orjson.loads(out)["data"]
            kind = "import" if isinstance(out, ImportItem) else "engage"
            outcome = kind if check_fields(fields) is None else "dead:api"
            assert UNAVAILABLE.encode() not in item and UNAVAILABLE_B64.encode() not in item
            cleared += fields.get("balance", 0) is None
        assert outcome == e.expect, (e.kind, out)
        outcomes[outcome] += 1
    assert outcomes == stream.outcomes
    assert cleared > 0
