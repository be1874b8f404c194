"""CDC fidelity end to end: what Altcraft holds per profile is the row PostgreSQL holds.

Real SQL into a real PostgreSQL, real Debezium through Kafka Connect into the broker, the connector as
a child process (``altcraft-connector run``), the Altcraft emulator behind it. One table, one series of
changes, and one Debezium connector per converter set-up, each with its own topic prefix, connector
process and emulator, all fed by the same changes at once:

- ``precise``: Debezium's defaults, schemas on (decimals as base64 with their scale in the schema);
- ``double``, ``string``: ``decimal.handling.mode=double`` / ``string``, schemas on;
- ``unwrap``: the ExtractNewRecordState SMT with Debezium's own defaults (flat rows, no op field,
  deletes turned into tombstones), schemas on;
- ``schemaless``: schemas off, the route declaring the column types (``routes[].column_types``);
- ``undeclared``: schemas off without declared types: every record holding a day count or a base64
  decimal is dead-lettered, the dead letter and the log naming the settings that fix it.

The changes: snapshot rows (one with TOASTed notes), inserts, a column set to NULL, numbers and dates
changed, multi-row and multi-statement transactions, a TOASTed notes update followed by an update of
another column (Debezium's unavailable-value placeholder in place of notes), a delete. Afterwards
each profile's fields must equal the row as the database holds it (``SELECT``, after the delete: as
it was before), and each profile must have been engaged exactly once per insert, snapshot read and
update of its row; deletes and tombstones are skipped. Profiles are matched by a custom field holding
the primary key (``CRM_ID``): the email changes, the id does not.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest

from connector.emulator.config import EmulatorConfig
from connector.emulator.server import Emulator
from tests.cdc.bed import CdcBed, CdcRecord
from tests.conftest import KafkaHelper
from tests.integration.test_faults import log_messages
from tests.procs import free_port
from tests.support import ConnectorProcess, header_map, wait_until

pytestmark = pytest.mark.timeout(180)

TOKEN = "fidelity-token"
WORKFLOW = 21
TABLE = "customers"
UNAVAILABLE = "__debezium_unavailable_value"
UNAVAILABLE_B64 = base64.b64encode(UNAVAILABLE.encode()).decode()  # its form in a bytea column
MATCH_FIELD = "CRM_ID"
# Altcraft field <- column. CRM_ID (the primary key) is what profiles are matched by.
FIELDS = {
    MATCH_FIELD: "id",
    "email": "email",
    "_fname": "first_name",
    "_lname": "last_name",
    "phones": "phone",
    "_bdate": "birth_date",
    "_city": "city",
    "balance": "balance",
    "_regdate": "created_at",
    "notes": "notes",
}
COLUMNS = ("id", "email", "first_name", "last_name", "phone", "birth_date", "city", "balance", "created_at", "notes")

TABLE_DDL = f"""
CREATE TABLE {TABLE} (
    id serial PRIMARY KEY,
    email text,
    first_name text,
    last_name text,
    phone text,
    birth_date date,
    city text,
    balance numeric(12,2),
    created_at timestamptz,
    notes text
)
"""
# ~9.6 KB of md5 hex: over the TOAST threshold even compressed, so stored out of line, and left out of
# the WAL by an update that does not change it.
TOASTED = "(SELECT string_agg(md5(i::text || '{salt}'), '') FROM generate_series(1, 300) i)"


@dataclass(frozen=True)
class Setup:
    """One converter set-up: how Debezium writes, what the route adds, what the topic holds afterwards."""

    name: str
    debezium: dict[str, Any]  # CdcBed.start_connector() keyword arguments
    route: dict[str, Any] = field(default_factory=dict)
    balance_as_text: bool = False  # decimal.handling.mode=string: the decimal's text, sent as it is
    # Records the changes (_make_changes) leave on the topic: 2 snapshot reads, 3 inserts, 11 updates,
    # then the delete and Debezium's tombstone.
    records: int = 18


SETUPS = {
    s.name: s
    for s in (
        Setup("precise", {"schemas": True}),
        Setup("double", {"schemas": True, "decimal_handling_mode": "double"}),
        Setup("string", {"schemas": True, "decimal_handling_mode": "string"}, balance_as_text=True),
        # ExtractNewRecordState's default (delete.tombstone.handling.mode=tombstone) writes the delete as a
        # tombstone (schema block, null payload) and drops Debezium's own: one record fewer.
        Setup("unwrap", {"schemas": True, "unwrap": True}, records=17),
        Setup(
            "schemaless",
            {"schemas": False},
            route={"column_types": {"birth_date": "date", "balance": "decimal(2)", "created_at": "zoned-timestamp"}},
        ),
        Setup("undeclared", {"schemas": False}),
    )
}
FIDELITY_SETUPS = [n for n in SETUPS if n != "undeclared"]


@dataclass
class Lane:
    """One set-up's pipeline: Debezium's topic, the connector process, its emulator and dead-letter topic."""

    setup: Setup
    topic: str
    dlq: str
    group: str
    emu: Emulator
    proc: ConnectorProcess


@dataclass
class Run:
    """Every lane, fed by one series of changes, and what the database says they must have led to."""

    kafka: KafkaHelper
    bed: CdcBed
    lanes: dict[str, Lane]
    engagements: Counter[int]  # row id -> inserts + snapshot reads + updates made to it
    deleted: dict[int, dict[str, Any]]  # id -> the row as it was before its delete
    final_rows: dict[int, dict[str, Any]] = field(default_factory=dict)  # id -> the row at the end


# ------------------------------------------------------------------------------------------------ the bed


@pytest.fixture(scope="module")
def cdc_bed(kafka: KafkaHelper) -> Iterator[CdcBed]:
    """PostgreSQL + Connect for this module, against the session's broker; stopped by PID at the end."""
    began = time.monotonic()
    bed = CdcBed(kafka.bootstrap)
    bed.start()  # stops what it started if it fails half-way
    try:
        print(f"\n[cdc-fidelity] bed ready in {time.monotonic() - began:.1f}s", file=sys.stderr)
        yield bed
    finally:
        bed.stop()


@pytest.fixture(scope="module")
def run(kafka: KafkaHelper, cdc_bed: CdcBed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """Snapshot rows, one Debezium connector and one connector process per set-up, then the changes."""
    bed = cdc_bed
    workdir = tmp_path_factory.mktemp("cdc-fidelity")
    bed.sql(TABLE_DDL)
    bed.sql(f"ALTER TABLE {TABLE} REPLICA IDENTITY DEFAULT")  # the default, stated: deletes carry the key only
    engaged: Counter[int] = Counter()
    # -- rows already there when Debezium starts: read by its snapshot (op r)
    bed.sql(
        f"INSERT INTO {TABLE} (email, first_name, last_name, phone, birth_date, city, balance, created_at, notes)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        ("ann@example.com", "Ann", "Lee", "+79160000001", dt.date(1987, 6, 5), "Moscow", Decimal("1234.56"),
         dt.datetime(2024, 5, 1, 10, 20, 30, 123456, tzinfo=dt.UTC), "short note"),
    )  # fmt: skip
    bed.sql(
        f"INSERT INTO {TABLE} (email, first_name, last_name, phone, birth_date, city, balance, created_at, notes)"
        f" VALUES (%s, %s, %s, %s, %s, %s, %s, %s, {TOASTED.format(salt='snapshot')})",
        ("bob@example.com", "Bob", "Ray", "+79160000002", dt.date(1970, 1, 2), "Kazan", Decimal("-0.05"),
         dt.datetime(2023, 12, 31, 23, 59, 59, tzinfo=dt.timezone(dt.timedelta(hours=3)))),
    )  # fmt: skip
    engaged.update([1, 2])
    assert bed.sql(f"SELECT octet_length(notes) > 8192 FROM {TABLE} WHERE id = 2") == [(True,)]

    lanes: dict[str, Lane] = {}
    emulators: list[Emulator] = []
    try:
        prefixes = {
            name: bed.start_connector(f"fid-{name}", tables=[f"public.{TABLE}"], snapshot_mode="initial", **s.debezium)
            for name, s in SETUPS.items()
        }
        ports: set[int] = set()
        for name, setup in SETUPS.items():
            topic = f"{prefixes[name]}.public.{TABLE}"
            bed.wait_for_topic_records(topic, 2)  # the snapshot is in: the topic exists for the consumer
            emu = Emulator(EmulatorConfig(tokens=[TOKEN], workflows=[WORKFLOW], dbs=[1], seed=5))
            emu.start()
            emulators.append(emu)
            dlq = kafka.new_topic(1, prefix=f"dlq-fidelity-{name}")
            group = f"fidelity-{name}-{uuid.uuid4().hex[:8]}"
            port = free_port(exclude=ports)
            ports.add(port)
            proc = ConnectorProcess(_settings(kafka, emu, setup, topic, dlq, group), workdir, port, name=name)
            lanes[name] = Lane(setup, topic, dlq, group, emu, proc.start())
        deleted = _make_changes(bed, engaged)
        yield Run(kafka, bed, lanes, engaged, deleted)
    finally:
        _stop_all([lane.proc for lane in lanes.values()])
        for emu in emulators:
            emu.stop()


def _settings(kafka: KafkaHelper, emu: Emulator, setup: Setup, topic: str, dlq: str, group: str) -> dict[str, Any]:
    return {
        "kafka": {"bootstrap_servers": kafka.bootstrap, "group_id": group},
        "altcraft": {
            "base_url": emu.url,
            "token": TOKEN,
            "request_timeout_s": 10,
            "retry": {"initial_backoff_s": 0.05, "max_backoff_s": 1},
        },
        "batching": {"max_items": 50, "linger_s": 0.1},
        "routes": [
            {
                "name": f"fidelity-{setup.name}",
                "topics": [topic],
                "format": "debezium-json",
                "mode": "engage",
                "workflow_id": WORKFLOW,
                "db_id": 7,
                "ops": {"r": "engage"},
                "matching": "custom",
                "field_name": MATCH_FIELD,
                "fields": FIELDS,
                **setup.route,
            }
        ],
        "dead_letter": {"topic": dlq},
        "shutdown": {"drain_timeout_s": 5},
    }


def _make_changes(bed: CdcBed, engaged: Counter[int]) -> dict[int, dict[str, Any]]:
    """The changes every set-up streams, counted into ``engaged`` per row id; returns the deleted rows
    as they were before their delete."""
    cols = "email, first_name, last_name, phone, birth_date, city, balance, created_at, notes"
    # Inserts: one with every column but the email NULL, one at the edges of the types.
    bed.sql(f"INSERT INTO {TABLE} (email) VALUES ('cy@example.com')")
    bed.sql(
        f"INSERT INTO {TABLE} ({cols}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        ("dee@example.com", "Dee", "Fox", "+442071234567", dt.date(1969, 12, 31), "London", Decimal("9999999999.99"),
         dt.datetime(2024, 2, 29, 23, 59, 59, 500000, tzinfo=dt.timezone(dt.timedelta(hours=-5))), "dee"),
    )  # fmt: skip
    bed.sql(
        f"INSERT INTO {TABLE} ({cols}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        ("eve@example.com", "Eve", "Moss", "+79160000005", dt.date(2000, 2, 29), "Tver", Decimal("7.00"),
         dt.datetime(2025, 1, 1, tzinfo=dt.UTC), "eve's note"),
    )  # fmt: skip
    engaged.update([3, 4, 5])
    # Columns set to NULL: their fields must be cleared.
    bed.sql(f"UPDATE {TABLE} SET phone = NULL, last_name = NULL WHERE id = 1")
    # Numbers and dates changed.
    bed.sql(f"UPDATE {TABLE} SET balance = balance + 0.01, birth_date = '1987-06-06' WHERE id = 1")
    engaged.update([1, 1])
    # Row 2's notes are TOASTed since the snapshot: this update carries the placeholder in their place.
    bed.sql(f"UPDATE {TABLE} SET city = 'Perm' WHERE id = 2")
    engaged.update([2])
    # Row 4: notes TOASTed by an update, then another column changes (the placeholder again).
    bed.sql(f"UPDATE {TABLE} SET notes = {TOASTED.format(salt='update')} WHERE id = 4")
    bed.sql(f"UPDATE {TABLE} SET email = 'dee@new.example.com' WHERE id = 4")
    engaged.update([4, 4])
    # Row 3, NULL everywhere so far: a decimal alone, then the rest.
    bed.sql(f"UPDATE {TABLE} SET balance = 0 WHERE id = 3")
    bed.sql(
        f"UPDATE {TABLE} SET first_name = 'Cy', birth_date = '1900-01-01', city = 'Omsk',"
        " created_at = '1999-12-31 23:59:59.999999+00' WHERE id = 3"
    )
    engaged.update([3, 3])
    # Two statements in one transaction, and one statement changing two rows.
    bed.sql(
        f"BEGIN; UPDATE {TABLE} SET city = 'Tula' WHERE id = 5;"
        f" UPDATE {TABLE} SET balance = -12.5, phone = NULL WHERE id = 5; COMMIT"
    )
    engaged.update([5, 5])
    bed.sql(f"UPDATE {TABLE} SET city = 'Sochi' WHERE id IN (1, 4)")
    engaged.update([1, 4])
    assert bed.sql(f"SELECT id FROM {TABLE} WHERE octet_length(notes) > 8192 ORDER BY id") == [(2,), (4,)]
    # The delete: skipped, so the profile keeps the row as it was.
    deleted = _select(bed, "id = 5")
    bed.sql(f"DELETE FROM {TABLE} WHERE id = 5")
    return deleted


def _select(bed: CdcBed, where: str = "true") -> dict[int, dict[str, Any]]:
    rows = bed.sql(f"SELECT {', '.join(COLUMNS)} FROM {TABLE} WHERE {where} ORDER BY id")
    return {r[0]: dict(zip(COLUMNS, r, strict=True)) for r in rows}


def _stop_all(procs: list[ConnectorProcess]) -> None:
    """SIGTERM to every connector at once, then wait for each (SIGKILL if one hangs)."""
    running = [p for p in procs if p.alive() and p.proc is not None]
    for p in running:
        os.kill(p.pid, signal.SIGTERM)
    for p in running:
        assert p.proc is not None
        try:
            p.proc.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()


# ------------------------------------------------------------------------------------------------ reading


def _delivered(run: Run, lane: Lane) -> list[CdcRecord]:
    """Wait until Debezium wrote every record of the changes and the connector committed past them all."""
    records = run.bed.wait_for_topic_records(lane.topic, lane.setup.records)
    ends = run.kafka.end_offsets(lane.topic)
    assert ends == {0: lane.setup.records}, f"{lane.topic} holds {ends}, expected {lane.setup.records} records"

    def committed() -> bool:
        if not lane.proc.alive():
            raise AssertionError(f"connector {lane.setup.name} exited:\n{lane.proc.log_tail()}")
        return run.kafka.committed(lane.group, lane.topic) == ends

    try:
        wait_until(committed, 60, f"connector {lane.setup.name} to commit {ends}", interval=0.2)
    except AssertionError:
        print(lane.proc.log_tail(40))
        raise
    return records


def _rows(run: Run) -> dict[int, dict[str, Any]]:
    """The rows as the database holds them now, by id; a deleted row as it was before its delete."""
    if not run.final_rows:
        now = _select(run.bed)
        assert not now.keys() & run.deleted.keys()
        run.final_rows = {**now, **run.deleted}
    return run.final_rows


def _expected_fields(row: dict[str, Any], balance_as_text: bool) -> dict[str, Any]:
    """The Altcraft fields of a row: dates as YYYY-MM-DD, timestamps compared as instants, decimals exact."""
    out = {dst: row[src] for dst, src in FIELDS.items()}
    if out["_bdate"] is not None:
        out["_bdate"] = out["_bdate"].isoformat()
    if out["balance"] is not None and balance_as_text:
        out["balance"] = str(out["balance"])
    return out


def _comparable(fields: dict[str, Any], balance_as_text: bool) -> dict[str, Any]:
    """A profile's fields as :func:`_expected_fields` writes them; a value of the wrong type stays as it is.

    ``_regdate`` text becomes the instant it names (the emulator, like Altcraft, refuses anything but
    YYYY-MM-DD or RFC 3339 there, which would have dead-lettered the record); a numeric ``balance``
    becomes the Decimal of its shortest text, which for a numeric(12,2) is its exact digits.
    """
    out = dict(fields)
    regdate = out.get("_regdate")
    if isinstance(regdate, str):
        out["_regdate"] = dt.datetime.fromisoformat(regdate)
    balance = out.get("balance")
    if not balance_as_text and type(balance) in (int, float):
        out["balance"] = Decimal(repr(balance))
    return out


def _holds_placeholder(value: Any) -> bool:
    text = json.dumps(value)
    return UNAVAILABLE in text or UNAVAILABLE_B64 in text


# ------------------------------------------------------------------------------------------------ the cases


@pytest.mark.parametrize("name", FIDELITY_SETUPS)
def test_each_profile_holds_its_row_and_was_engaged_once_per_change(run: Run, name: str) -> None:
    lane = run.lanes[name]
    records = _delivered(run, lane)
    rows = _rows(run)
    emu = lane.emu

    # The stream holds what this case is about: notes left out as the placeholder (rows 2 and 4).
    assert {row["id"] for r in records if (row := _row(r)) and row["notes"] == UNAVAILABLE} == {2, 4}

    # Deletes and tombstones were skipped, nothing was dead-lettered.
    skipped = sum(1 for r in records if _row(r) is None)
    assert skipped == lane.setup.records - sum(run.engagements.values())
    letters = run.kafka.read_all(lane.dlq)
    assert letters == [], [header_map(m) for m in letters]
    wait_until(lambda: lane.proc.metric_sum("altcraft_connector_records_skipped_total") == skipped, 10,
               f"{skipped} skipped records in the metrics")  # fmt: skip

    # Every change engaged its profile exactly once: per profile, as many engagements as changes.
    profiles = {p["fields"][MATCH_FIELD]: p for p in emu.profiles()}
    assert len(profiles) == len(emu.profiles()), "a row became more than one profile"
    engaged = Counter({e["matching_value"]: e["count"] for e in emu.engagements(workflow_id=WORKFLOW)})
    assert engaged == run.engagements

    # Every profile's fields are its row as the database holds it (the deleted one: as it was).
    assert sorted(profiles) == sorted(rows)
    for row_id, row in rows.items():
        fields = profiles[row_id]["fields"]
        assert not _holds_placeholder(fields), (row_id, fields)
        want = _expected_fields(row, lane.setup.balance_as_text)
        got = _comparable(fields, lane.setup.balance_as_text)
        assert got == want, _diff(got, want)


def _row(record: CdcRecord) -> dict[str, Any] | None:
    """The row a record carries (envelope or flattened, with or without a schema block); None for a
    delete or a tombstone (a null value, or a schema block with a null payload)."""
    value = record.value
    payload = value["payload"] if isinstance(value, dict) and "schema" in value else value
    if payload is None or payload.get("op") == "d" or payload.get("__deleted") == "true":
        return None
    row: dict[str, Any] = payload["after"] if "op" in payload else payload
    return row


def _diff(got: dict[str, Any], want: dict[str, Any]) -> str:
    keys = sorted(set(got) | set(want))
    return "; ".join(f"{k}: got {got.get(k, '<absent>')!r}, want {want.get(k, '<absent>')!r}"
                     for k in keys if got.get(k, ...) != want.get(k, ...))  # fmt: skip


def test_a_schemaless_stream_without_declared_types_is_dead_lettered_naming_the_settings(run: Run) -> None:
    lane = run.lanes["undeclared"]
    records = _delivered(run, lane)
    route = f"fidelity-{lane.setup.name}"

    # What the topic holds decides each record's fate, as the README ("Debezium values") says: a day count
    # for _bdate (birth_date, checked first) or padded base64 for a custom field (balance: a decimal)
    # without a declared type is dead-lettered; the rest is engaged.
    undeclared: dict[int, str] = {}  # offset -> the column named
    engaged: Counter[int] = Counter()
    for r in records:
        row = _row(r)
        if row is None:
            continue
        if type(row["birth_date"]) is int:
            undeclared[r.offset] = "birth_date"
        elif type(row["balance"]) is str and row["balance"].endswith("="):
            undeclared[r.offset] = "balance"
        else:
            engaged[row["id"]] += 1
    assert set(undeclared.values()) == {"birth_date", "balance"} and engaged, (undeclared, engaged)

    letters = run.kafka.read_all(lane.dlq)
    by_offset = {int(header_map(m)["__connect.errors.offset"]): m for m in letters}
    assert len(by_offset) == len(letters), "a record was dead-lettered twice"
    assert sorted(by_offset) == sorted(undeclared)
    first_message: dict[str, str] = {}
    raw = {r.offset: r.raw_value for r in records}
    for offset, column in sorted(undeclared.items()):
        msg = by_offset[offset]
        h = header_map(msg)
        assert msg.value() == raw[offset], "the dead letter must keep the original bytes"
        assert h["__connect.errors.topic"] == lane.topic
        assert h["__connect.errors.stage"] == "decode"
        assert h["__connect.errors.exception.class.name"] == "UndeclaredEncoding"
        text = h["__connect.errors.exception.message"]
        # The column, the Altcraft field, and the settings that fix it: the route's and Debezium's.
        assert "routes[].column_types" in text and "value.converter.schemas.enable=true" in text, text
        if column == "birth_date":
            assert text.startswith("column 'birth_date' (Altcraft field _bdate) is the number "), text
            assert "(birth_date: date," in text, text
        else:
            assert text.startswith("column 'balance' (Altcraft field balance) is "), text
            assert "(balance: decimal(<scale>);" in text and "decimal.handling.mode=string or double" in text, text
        first_message.setdefault(column, text)

    # Said once per column in the log, with the same words; the connector keeps going (no halt).
    warned = [m for m in log_messages(lane.proc) if m.startswith(f"route {route}: records are dead-lettered: ")]
    assert sorted(warned) == sorted(f"route {route}: records are dead-lettered: {t}" for t in first_message.values())
    wait_until(lambda: lane.proc.metric_sum("altcraft_connector_records_dead_lettered_total", stage="decode")
               == len(undeclared), 10, f"{len(undeclared)} dead letters in the metrics")  # fmt: skip
    assert lane.proc.metric_sum("altcraft_connector_halted") == 0
    got = Counter({e["matching_value"]: e["count"] for e in lane.emu.engagements(workflow_id=WORKFLOW)})
    assert got == engaged
