"""The CDC test bed end to end: real SQL into PostgreSQL, what Debezium really writes to Kafka.

One table, four connectors on it at once (one per converter set-up the connector under test meets),
one series of changes: inserts, a column set to NULL, a TOASTed column updated and then left alone
while another column changes (Debezium's ``__debezium_unavailable_value`` placeholder), a delete. The
assertions pin the shapes the decoders rely on; ``CDC_WRITE_SAMPLES=1`` also saves the records as
tests/cdc/samples/*.json for unit tests (topic prefix normalised to ``dbserver1``).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cdc.bed import CdcBed, CdcRecord

SAMPLES_DIR = Path(__file__).resolve().parents[1] / "cdc" / "samples"
WRITE_SAMPLES_ENV = "CDC_WRITE_SAMPLES"
UNAVAILABLE = "__debezium_unavailable_value"
SAMPLE_PREFIX = "dbserver1"

TABLE_DDL = """
CREATE TABLE profiles (
    id serial PRIMARY KEY,
    email text,
    first_name text,
    birth_date date,
    balance numeric(12,2),
    created_at timestamptz,
    notes text,
    tags text[],
    attrs jsonb
)
"""

# name -> start_connector() keyword arguments, and how many records the changes below produce there.
SETUPS: dict[str, dict[str, Any]] = {
    # The envelope with JsonConverter's schema block; decimals as base64 unscaled bytes + scale.
    "schemas_precise": {"schemas": True, "decimal_handling_mode": "precise"},
    # Debezium's defaults with schemas off: decimals are base64 bytes whose scale is nowhere.
    "schemas_off_precise": {"schemas": False, "decimal_handling_mode": "precise"},
    # Schemas off as documented for the connector: decimals as text.
    "schemas_off_string": {"schemas": False, "decimal_handling_mode": "string"},
    # The flattened row (ExtractNewRecordState), op and source time added; deletes rewritten with
    # ``__deleted: "true"`` (Debezium's own tombstone kept).
    "unwrap": {
        "schemas": False,
        "decimal_handling_mode": "string",
        "unwrap": True,
        "props": {
            "transforms.unwrap.add.fields": "op,source.ts_ms",
            "transforms.unwrap.delete.tombstone.handling.mode": "rewrite-with-tombstone",
        },
    },
}
# 3 inserts, 3 updates, 1 delete and its tombstone.
EXPECTED_RECORDS = 8


@pytest.fixture(scope="module")
def cdc_bed(kafka: Any) -> Iterator[CdcBed]:
    """A bed for this module: PostgreSQL + Connect against the session's broker, stopped by PID at the end."""
    began = time.monotonic()
    bed = CdcBed(kafka.bootstrap)
    bed.start()  # stops what it started if it fails half-way
    try:
        timings = " ".join(f"{k}={v:.1f}" for k, v in bed.timings.items())
        print(f"\n[cdc] bed ready in {time.monotonic() - began:.1f}s ({timings}); postgres pid {bed.postgres.pid}, "
              f"connect pid {bed.connect.pid}", file=sys.stderr)  # fmt: skip
        yield bed
    finally:
        bed.stop()


def _decimal(b64: str, scale: int) -> float:
    unscaled = int.from_bytes(base64.b64decode(b64), "big", signed=True)
    return float(unscaled / 10**scale)


def _field_schema(envelope_schema: dict[str, Any], part: str, column: str) -> dict[str, Any]:
    struct = next(f for f in envelope_schema["fields"] if f["field"] == part)
    return next(f for f in struct["fields"] if f["field"] == column)


def _normalised(records: list[CdcRecord], prefix: str) -> list[dict[str, Any]]:
    text = json.dumps([{"key": r.key, "value": r.value} for r in records])
    result: list[dict[str, Any]] = json.loads(text.replace(prefix, SAMPLE_PREFIX))
    return result


def test_debezium_records_from_real_sql(cdc_bed: CdcBed) -> None:
    bed = cdc_bed
    began = time.monotonic()
    bed.sql(TABLE_DDL)
    bed.sql("ALTER TABLE profiles REPLICA IDENTITY DEFAULT")  # the default, stated: the test relies on it
    prefixes = {name: bed.start_connector(name, tables=["public.profiles"], **kw) for name, kw in SETUPS.items()}

    created = dt.datetime(2024, 5, 1, 10, 20, 30, 123456, tzinfo=dt.UTC)
    bed.sql(
        "INSERT INTO profiles (email, first_name, birth_date, balance, created_at, notes, tags, attrs) VALUES"
        " (%s, %s, %s, %s, %s, %s, %s, %s::jsonb), (%s, %s, %s, %s, %s, %s, %s, %s::jsonb),"
        " (%s, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
        ("ann@example.com", "Ann", dt.date(1987, 6, 5), "1234.56", created, "short note", ["vip", "beta"],
         '{"tier": "gold", "score": 7}',
         "bob@example.com", "Bob", dt.date(1970, 1, 2), "-0.05", created, "bob's note", [], "{}",
         "cy@example.com"),
    )  # fmt: skip
    bed.sql("UPDATE profiles SET first_name = NULL WHERE id = 1")
    # ~9.6 KB of md5 hex: over the TOAST threshold even after compression, so stored out of line.
    bed.sql("UPDATE profiles SET notes = (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 300) i) "
            "WHERE id = 2")  # fmt: skip
    toasted = bed.sql("SELECT pg_column_size(notes), octet_length(notes) FROM profiles WHERE id = 2")[0]
    assert toasted[1] > 8192, toasted
    bed.sql("UPDATE profiles SET email = 'bob@new.example.com' WHERE id = 2")  # notes unchanged: not in the WAL
    bed.sql("DELETE FROM profiles WHERE id = 3")

    got = {name: bed.wait_for_topic_records(f"{p}.public.profiles", EXPECTED_RECORDS) for name, p in prefixes.items()}
    print(f"\n[cdc] {len(SETUPS)} connectors, changes and read-back in {time.monotonic() - began:.1f}s",
          file=sys.stderr)  # fmt: skip

    # -- schemas on, decimal.handling.mode=precise: the full envelope with the schema block
    records = got["schemas_precise"]
    values = [r.value for r in records]
    assert all(v is None or set(v) == {"schema", "payload"} for v in values)
    payloads: list[Any] = [None if v is None else v["payload"] for v in values]
    assert [p and p["op"] for p in payloads] == ["c", "c", "c", "u", "u", "u", "d", None]
    schema = values[0]["schema"]
    assert schema["name"].endswith(".public.profiles.Envelope")
    balance_schema = _field_schema(schema, "after", "balance")
    assert balance_schema["name"] == "org.apache.kafka.connect.data.Decimal"
    assert balance_schema["parameters"]["scale"] == "2"
    assert _field_schema(schema, "after", "birth_date")["name"] == "io.debezium.time.Date"
    assert _field_schema(schema, "after", "created_at")["name"] == "io.debezium.time.ZonedTimestamp"
    assert _field_schema(schema, "after", "attrs")["name"] == "io.debezium.data.Json"
    assert _field_schema(schema, "after", "tags")["type"] == "array"
    ann = payloads[0]["after"]
    assert ann["email"] == "ann@example.com"
    assert _decimal(ann["balance"], 2) == 1234.56
    assert _decimal(payloads[1]["after"]["balance"], 2) == -0.05
    assert ann["birth_date"] == (dt.date(1987, 6, 5) - dt.date(1970, 1, 1)).days
    assert ann["created_at"] == "2024-05-01T10:20:30.123456Z"
    assert ann["tags"] == ["vip", "beta"]
    assert json.loads(ann["attrs"]) == {"tier": "gold", "score": 7}
    assert payloads[0]["before"] is None
    assert payloads[2]["after"]["first_name"] is None and payloads[2]["after"]["balance"] is None
    # UPDATE ... SET first_name = NULL: the column is there, null; REPLICA IDENTITY DEFAULT: no "before".
    assert payloads[3]["after"]["id"] == 1 and payloads[3]["after"]["first_name"] is None
    assert payloads[3]["after"]["email"] == "ann@example.com" and payloads[3]["before"] is None
    # The TOASTed column: its new value when it changes, the placeholder when another column changes.
    assert len(payloads[4]["after"]["notes"]) > 8192
    assert payloads[5]["after"]["email"] == "bob@new.example.com"
    assert payloads[5]["after"]["notes"] == UNAVAILABLE
    # The delete: "before" has the key only (REPLICA IDENTITY DEFAULT), then Debezium's tombstone.
    assert payloads[6]["before"]["id"] == 3 and payloads[6]["after"] is None
    assert payloads[6]["before"]["email"] is None
    assert records[7].raw_value is None and records[7].key["payload"] == {"id": 3}
    assert records[0].key == {"schema": records[0].key["schema"], "payload": {"id": 1}}

    # -- schemas off: the bare envelope; precise decimals lose their scale, string ones keep the text
    plain = [r.value for r in got["schemas_off_precise"]]
    assert "schema" not in plain[0] and plain[0]["op"] == "c"
    assert plain[0]["after"]["balance"] == ann["balance"]  # base64 of 123456: the scale is nowhere
    assert plain[5]["after"]["notes"] == UNAVAILABLE
    assert got["schemas_off_precise"][0].key == {"id": 1}
    text = [r.value for r in got["schemas_off_string"]]
    assert text[0]["after"]["balance"] == "1234.56" and text[1]["after"]["balance"] == "-0.05"
    assert text[0]["after"]["birth_date"] == ann["birth_date"]

    # -- ExtractNewRecordState: the row itself, __op/__source_ts_ms added, the delete rewritten
    rows = [r.value for r in got["unwrap"]]
    assert rows[0]["email"] == "ann@example.com" and rows[0]["balance"] == "1234.56"
    assert rows[0]["__op"] == "c" and isinstance(rows[0]["__source_ts_ms"], int)
    assert rows[0]["__deleted"] == "false"
    assert rows[5]["notes"] == UNAVAILABLE and rows[5]["__op"] == "u"
    assert rows[6]["id"] == 3 and rows[6]["__deleted"] == "true" and rows[6]["__op"] == "d"
    assert rows[7] is None

    # -- the saved samples: rewritten on request, else checked to still have the shapes Debezium writes
    for name, recs in got.items():
        path = SAMPLES_DIR / f"{name}.json"
        live = _normalised(recs, prefixes[name])
        if os.environ.get(WRITE_SAMPLES_ENV) == "1":
            SAMPLES_DIR.mkdir(exist_ok=True)
            doc = {"setup": SETUPS[name], "table": TABLE_DDL.strip(), "records": live}
            path.write_text(json.dumps(doc, indent=1) + "\n")
            continue
        saved = json.loads(path.read_text())["records"]
        assert [_shape(r) for r in live] == [_shape(r) for r in saved], (
            f"{path.name} no longer matches what Debezium writes: rerun with {WRITE_SAMPLES_ENV}=1"
        )

    for name in SETUPS:
        bed.stop_connector(name)
    assert bed.sql("SELECT count(*) FROM pg_replication_slots")[0][0] == 0 or _slots_dropped_eventually(bed)


def _shape(record: dict[str, Any]) -> Any:
    """What a sample must keep matching: field names at every level, schema blocks whole, no volatile values."""

    def walk(node: Any, in_schema: bool = False) -> Any:
        if isinstance(node, dict):
            return {k: walk(v, in_schema or k == "schema") for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, in_schema) for v in node] if in_schema else "list"
        return node if in_schema else type(node).__name__

    return walk(record)


def _slots_dropped_eventually(bed: CdcBed, timeout: float = 30.0) -> bool:
    """Connect stops a deleted connector's task asynchronously; the slot goes when the task has stopped."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if bed.sql("SELECT count(*) FROM pg_replication_slots")[0][0] == 0:
            return True
        time.sleep(0.2)
    return False
