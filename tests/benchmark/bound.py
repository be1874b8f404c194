"""The latency-bound case's data: one partition of Debezium JSON changes whose profiles are mostly
distinct, as a CDC stream of a large customer table is (many customers, few changed twice close
together).

The table holds :data:`EXISTING` customers before the stream starts. A share ``update_share`` of the
changes updates one of them, drawn uniformly; the others insert a new customer. So the same customer
shows up twice only by chance, about as often whatever the length of the stream.
:func:`overlapping_batches` tells how many batches of the stream (cut every ``batch`` records, as the
connector cuts a backlog) hold a profile that is also in one of the batches before them that may still
be in flight: those are the batches that must wait for an earlier one to keep per-profile order.
"""

from __future__ import annotations

import random

import orjson

FIRST = ("Anna", "Boris", "Chloe", "Dmitri", "Elena", "Farid", "Greta", "Hugo", "Irina", "Jonas")
LAST = ("Ivanova", "Smith", "Novak", "Garcia", "Kowalski", "Petrov", "Muller", "Rossi")
CITIES = ("Moscow", "Berlin", "Madrid", "Warsaw", "Riga", "Oslo", "Lisbon", "Prague")
EXISTING = 1_000_000
_SOURCE = {"version": "2.7.0.Final", "connector": "postgresql", "name": "shop", "db": "shop",
           "schema": "public", "table": "customers"}  # fmt: skip


def changes(events: int, update_share: float, seed: int = 3) -> tuple[list[tuple[bytes, bytes]], list[int]]:
    """``events`` (key, value) records and the customer id of each, in order."""
    rng = random.Random(seed)
    records: list[tuple[bytes, bytes]] = []
    ids: list[int] = []
    ts = 1_735_689_600_000
    for i in range(events):
        update = rng.random() < update_share
        cid = rng.randrange(EXISTING) if update else EXISTING + i
        ts += rng.randrange(1, 5)
        row = {
            "id": cid,
            "email": f"customer{cid}@example.com",
            "first_name": FIRST[rng.randrange(len(FIRST))],
            "last_name": LAST[rng.randrange(len(LAST))],
            "phone": f"+7{9_000_000_000 + cid:010d}",
            "birth_date": f"{1950 + rng.randrange(55)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}",
            "city": CITIES[rng.randrange(len(CITIES))],
            "signup_ip": f"10.{cid % 250}.{cid // 250 % 250}.{rng.randrange(1, 250)}",
        }
        envelope = {"before": None, "after": row, "op": "u" if update else "c", "ts_ms": ts,
                    "source": {**_SOURCE, "ts_ms": ts}}  # fmt: skip
        records.append((orjson.dumps({"id": cid}), orjson.dumps(envelope)))
        ids.append(cid)
    return records, ids


def overlapping_batches(ids: list[int], batch: int, in_flight: int) -> tuple[int, int]:
    """``(batches sharing a profile with one of the in_flight - 1 batches before them, batches)``."""
    batches = [set(ids[i : i + batch]) for i in range(0, len(ids), batch)]
    window = max(0, in_flight - 1)
    overlapping = 0
    for n, profiles in enumerate(batches):
        if any(profiles & earlier for earlier in batches[max(0, n - window) : n]):
            overlapping += 1
    return overlapping, len(batches)
