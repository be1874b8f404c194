"""A realistic, reproducible Debezium stream of customer changes, with the outcome each event should have.

With ``schemas=True`` the records are what Debezium's JSON converter writes for a PostgreSQL table with
schemas on and its default settings: the schema block, dates as day counts (``io.debezium.time.Date``),
``timestamptz``-less timestamps as microseconds (``MicroTimestamp``), ``numeric(12,2)`` as the base64 of
its unscaled integer (Connect ``Decimal``), ``jsonb`` as text (``io.debezium.data.Json``), ``text[]`` and
``bytea`` columns, unchanged TOAST columns as ``__debezium_unavailable_value`` (in an array: an array
holding it; in ``bytea``: its base64), and updates that set columns to NULL. Without it (the default,
which the benchmark measures) the rows are as they always were: ISO dates, no schema block.

Used by the demo, the end-to-end tests and the benchmark. Most events are snapshot reads, inserts and
updates of customers; some are deletes (each followed by a tombstone, as Debezium does); a small,
configurable share is invalid in varied ways, each with the outcome a user should see:

| kind          | what is wrong                               | expected outcome                  |
|---------------|---------------------------------------------|-----------------------------------|
| bad_json      | the value is not JSON                       | dead letter, stage decode          |
| no_email      | the row has no email (the matching key)     | dead letter, stage map             |
| bad_email     | the email is not an address                 | dead letter, stage api (Altcraft)  |
| bad_phone     | the phone is not in international format    | dead letter, stage api (Altcraft)  |
| bad_date      | the birth date is not a date                | dead letter, stage api (Altcraft)  |
| bad_ip        | the registration IP is not IPv4             | dead letter, stage api (Altcraft)  |
"""

from __future__ import annotations

import base64
import datetime as dt
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

INVALID_KINDS = ("bad_json", "no_email", "bad_email", "bad_phone", "bad_date", "bad_ip")
STAGE_OF_KIND = {
    "bad_json": "decode",
    "no_email": "map",
    "bad_email": "api",
    "bad_phone": "api",
    "bad_date": "api",
    "bad_ip": "api",
}
FIRST_NAMES = ("Anna", "Boris", "Chloe", "Dmitri", "Elena", "Farid", "Greta", "Hugo", "Irina", "Jonas", "Kira", "Lev")
LAST_NAMES = ("Ivanova", "Smith", "Novak", "Garcia", "Kowalski", "Petrov", "Muller", "Rossi", "Sato", "Nielsen")
CITIES = ("Moscow", "Berlin", "Madrid", "Warsaw", "Riga", "Oslo", "Lisbon", "Prague", None)

_EPOCH = dt.date(1970, 1, 1)

# The route that maps this stream (the demo's and the tests' settings use it).
DEMO_FIELDS = {
    "email": "email",
    "_fname": "first_name",
    "_lname": "last_name",
    "phones": "phone",
    "_bdate": "birth_date",
    "_city": "city",
    "_regip": "signup_ip",
    "CRM_ID": "id",
    # Columns of the records written with schemas=True (absent from the others, so never sent for them).
    "balance": "balance",
    "_regdate": "created_at",
    "_tz": "preferences.tz",
    "tags": "tags",
}
UNAVAILABLE = "__debezium_unavailable_value"
UNAVAILABLE_B64 = base64.b64encode(UNAVAILABLE.encode()).decode("ascii")
TIMEZONES = ("Europe/Moscow", "Europe/Berlin", "Europe/Madrid", "Europe/Riga", "Asia/Almaty")
TAGS = ("vip", "newsletter", "b2b", "mobile", "returning")


def _col(name: str, kind: str, logical: str | None = None, optional: bool = True, **extra: object) -> dict[str, object]:
    col: dict[str, object] = {"field": name, "type": kind, "optional": optional}
    if logical:
        col["name"] = logical
        col["version"] = 1
    col.update(extra)
    return col


# The row schema Debezium's JSON converter writes for the demo's customers table.
_ROW_FIELDS = [
    _col("id", "int32", optional=False),
    _col("email", "string"),
    _col("first_name", "string"),
    _col("last_name", "string"),
    _col("phone", "string"),
    _col("birth_date", "int32", "io.debezium.time.Date"),
    _col("city", "string"),
    _col("signup_ip", "string"),
    _col("loyalty_points", "int32"),
    _col("notes", "string"),
    _col("balance", "bytes", "org.apache.kafka.connect.data.Decimal",
         parameters={"scale": "2", "connect.decimal.precision": "12"}),
    _col("created_at", "int64", "io.debezium.time.MicroTimestamp"),
    _col("preferences", "string", "io.debezium.data.Json"),
    _col("tags", "array", items={"type": "string", "optional": True}),
    _col("avatar", "bytes"),
]  # fmt: skip
_ROW_SCHEMA = {"type": "struct", "fields": _ROW_FIELDS, "optional": True, "name": "shop.public.customers.Value"}
SCHEMA = {
    "type": "struct",
    "name": "shop.public.customers.Envelope",
    "optional": False,
    "version": 2,
    "fields": [
        {**_ROW_SCHEMA, "field": "before"},
        {**_ROW_SCHEMA, "field": "after"},
        {"type": "struct", "field": "source", "optional": False, "name": "io.debezium.connector.postgresql.Source",
         "fields": [_col("version", "string", optional=False), _col("connector", "string", optional=False),
                    _col("name", "string", optional=False), _col("ts_ms", "int64", optional=False),
                    _col("db", "string", optional=False), _col("schema", "string", optional=False),
                    _col("table", "string", optional=False)]},
        _col("op", "string", optional=False),
        _col("ts_ms", "int64"),
    ],
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Event:
    key: bytes
    value: bytes | None
    partition: int
    # engage | skip | dead:<stage>
    expect: str
    kind: str  # valid, delete, tombstone, or one of INVALID_KINDS
    email: str | None


@dataclass(slots=True)
class Stream:
    events: list[Event]
    # How many times each email should end up engaged.
    engagements: Counter[str] = field(default_factory=Counter)
    # How many times each email should end up imported without engaging (snapshot reads, when they import).
    imports: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)


def generate(
    n_events: int,
    partitions: int,
    invalid_share: float = 0.02,
    seed: int = 7,
    *,
    schemas: bool = False,
    snapshot_imports: bool = False,
) -> Stream:
    """``n_events`` records (tombstones included) spread over ``partitions`` by customer id.

    ``schemas``: records as Debezium writes them with schemas on (see the module docstring).
    ``snapshot_imports``: snapshot reads (op r) are expected to be imported, not engaged (the default of
    ``routes[].ops.r``); otherwise every valid change is expected to engage (``ops.r: engage``).
    """
    rng = random.Random(seed)
    row_of = _debezium_row if schemas else _row
    dumps = _with_schema if schemas else orjson.dumps
    n_customers = max(1, n_events // 3)
    seen: set[int] = set()
    deleted: set[int] = set()
    events: list[Event] = []
    stream = Stream(events)
    ts = 1_735_689_600_000  # 2025-01-01T00:00:00Z
    while len(events) < n_events:
        cid = rng.randrange(n_customers)
        ts += rng.randrange(1, 50)
        part = cid % partitions
        key = orjson.dumps({"id": cid})
        email = f"customer{cid}@example.com"
        if rng.random() < invalid_share:
            kind = rng.choice(INVALID_KINDS)
            row = row_of(rng, cid, email)
            value = _broken(kind, row, ts, rng, dumps)
            expect = f"dead:{STAGE_OF_KIND[kind]}"
            events.append(Event(key, value, part, expect, kind, email))
            stream.outcomes[expect] += 1
            continue
        if cid in seen and cid not in deleted and rng.random() < 0.03 and len(events) + 2 <= n_events:
            before = row_of(rng, cid, email)
            value = dumps({"before": before, "after": None, "op": "d", "ts_ms": ts, "source": _source(ts)})
            events.append(Event(key, value, part, "skip", "delete", email))
            events.append(Event(key, None, part, "skip", "tombstone", email))
            stream.outcomes["skip"] += 2
            deleted.add(cid)
            continue
        op = "u" if cid in seen and cid not in deleted else ("r" if len(events) < n_events // 5 else "c")
        seen.add(cid)
        deleted.discard(cid)
        row = row_of(rng, cid, email)
        # Postgres' default replica identity leaves "before" empty on updates.
        value = dumps({"before": None, "after": row, "op": op, "ts_ms": ts, "source": _source(ts)})
        if op == "r" and snapshot_imports:
            events.append(Event(key, value, part, "import", "valid", email))
            stream.imports[email] += 1
            stream.outcomes["import"] += 1
            continue
        events.append(Event(key, value, part, "engage", "valid", email))
        stream.engagements[email] += 1
        stream.outcomes["engage"] += 1
    return stream


def _source(ts: int) -> dict[str, object]:
    return {"version": "2.7.0.Final", "connector": "postgresql", "name": "shop", "ts_ms": ts, "db": "shop",
            "schema": "public", "table": "customers"}  # fmt: skip


def _row(rng: random.Random, cid: int, email: str) -> dict[str, object]:
    birth = dt.date(1950, 1, 1) + dt.timedelta(days=rng.randrange(20_000))
    return {
        "id": cid,
        "email": email,
        "first_name": rng.choice(FIRST_NAMES),
        "last_name": rng.choice(LAST_NAMES),
        "phone": f"+7{9_000_000_000 + cid:010d}",
        "birth_date": birth.isoformat(),
        "city": rng.choice(CITIES),
        "signup_ip": f"10.{cid % 250}.{(cid // 250) % 250}.{rng.randrange(1, 250)}",
        "loyalty_points": rng.randrange(10_000),
        "notes": "__debezium_unavailable_value" if rng.random() < 0.05 else "vip" if rng.random() < 0.1 else None,
    }


def _with_schema(envelope: dict[str, object]) -> bytes:
    return orjson.dumps({"schema": SCHEMA, "payload": envelope})


def _debezium_row(rng: random.Random, cid: int, email: str) -> dict[str, object]:
    """A row as Debezium writes it with schemas on: see the module docstring."""
    row = _row(rng, cid, email)
    born = dt.date.fromisoformat(str(row["birth_date"]))
    row["birth_date"] = (born - _EPOCH).days
    cents = rng.randrange(-50_000, 10_000_000)
    row["balance"] = base64.b64encode(cents.to_bytes((cents.bit_length() + 8) // 8, "big", signed=True)).decode()
    row["created_at"] = 1_600_000_000_000_000 + cid * 1_000_003 + rng.randrange(1_000_000)
    row["preferences"] = orjson.dumps({"tz": rng.choice(TIMEZONES), "channels": ["email"]}).decode()
    row["tags"] = rng.sample(TAGS, rng.randrange(3))
    row["avatar"] = base64.b64encode(rng.randbytes(12)).decode()
    toast = rng.random()
    if toast < 0.04:  # an update that left these TOASTed columns alone
        row["preferences"] = UNAVAILABLE
        row["tags"] = [UNAVAILABLE]
        row["avatar"] = UNAVAILABLE_B64
    elif toast < 0.10:  # an update that set columns to NULL: their Altcraft fields are cleared
        row["balance"] = None
        row["preferences"] = None
        row["tags"] = None
    return row


def _broken(
    kind: str, row: dict[str, object], ts: int, rng: random.Random, dumps: Callable[[dict[str, object]], bytes]
) -> bytes:
    if kind == "bad_json":
        good = dumps({"before": None, "after": row, "op": "u", "ts_ms": ts})
        return good[: rng.randrange(5, len(good) - 5)]
    if kind == "no_email":
        row = {k: v for k, v in row.items() if k != "email"}
    elif kind == "bad_email":
        row = {**row, "email": str(row["email"]).replace("@", " at ")}
    elif kind == "bad_phone":
        row = {**row, "phone": "8 (900) 12-34"}
    elif kind == "bad_date":
        row = {**row, "birth_date": "31/02/1990"}
    elif kind == "bad_ip":
        row = {**row, "signup_ip": "300.1.2.3"}
    return dumps({"before": None, "after": row, "op": "u", "ts_ms": ts, "source": _source(ts)})
