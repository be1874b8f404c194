"""A realistic, reproducible Debezium stream of customer changes, with the outcome each event should have.

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

import datetime as dt
import random
from collections import Counter
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
}


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
    outcomes: Counter[str] = field(default_factory=Counter)


def generate(n_events: int, partitions: int, invalid_share: float = 0.02, seed: int = 7) -> Stream:
    """``n_events`` records (tombstones included) spread over ``partitions`` by customer id."""
    rng = random.Random(seed)
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
            row = _row(rng, cid, email)
            value = _broken(kind, row, ts, rng)
            expect = f"dead:{STAGE_OF_KIND[kind]}"
            events.append(Event(key, value, part, expect, kind, email))
            stream.outcomes[expect] += 1
            continue
        if cid in seen and cid not in deleted and rng.random() < 0.03 and len(events) + 2 <= n_events:
            before = _row(rng, cid, email)
            value = orjson.dumps({"before": before, "after": None, "op": "d", "ts_ms": ts, "source": _source(ts)})
            events.append(Event(key, value, part, "skip", "delete", email))
            events.append(Event(key, None, part, "skip", "tombstone", email))
            stream.outcomes["skip"] += 2
            deleted.add(cid)
            continue
        op = "u" if cid in seen and cid not in deleted else ("r" if len(events) < n_events // 5 else "c")
        seen.add(cid)
        deleted.discard(cid)
        row = _row(rng, cid, email)
        # Postgres' default replica identity leaves "before" empty on updates.
        value = orjson.dumps({"before": None, "after": row, "op": op, "ts_ms": ts, "source": _source(ts)})
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


def _broken(kind: str, row: dict[str, object], ts: int, rng: random.Random) -> bytes:
    if kind == "bad_json":
        good = orjson.dumps({"before": None, "after": row, "op": "u", "ts_ms": ts})
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
    return orjson.dumps({"before": None, "after": row, "op": "u", "ts_ms": ts, "source": _source(ts)})
