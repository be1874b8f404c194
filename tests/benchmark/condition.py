"""``python -m tests.benchmark.condition``: what ``routes[].when`` costs per record in ``Route.prepare``.

The records are the demo's customers as Debezium's JSON converter writes them with schemas on (16
columns: dates, timestamps, decimals, jsonb, arrays, bytea, a ``tier``), a fifth of them vip, half of
the updates with a ``before`` (REPLICA IDENTITY FULL). Each line is the best of several passes over
the same records, in CPU µs per record of this process (not wall time: steadier on a busy host), with
no Kafka and no HTTP.
"""

from __future__ import annotations

import argparse
import copy
import random
import time
from typing import Any

import orjson

from connector.config import RouteSettings
from connector.demo_data import DEMO_FIELDS, SCHEMA, generate
from connector.routing import Route

EXAMPLE = 'after.tier == "vip" && (before == null || before.tier != "vip")'
TIERS = ("vip", "gold", "silver", "bronze", "basic")


def records(n: int, seed: int = 11) -> list[bytes]:
    """``n`` change records (creates, reads, updates) of the demo's table with a ``tier`` column."""
    rng = random.Random(seed)
    schema: Any = copy.deepcopy(SCHEMA)
    for side in schema["fields"][:2]:
        side["fields"].append({"field": "tier", "type": "string", "optional": True})
    out = []
    for event in generate(n * 2, partitions=1, invalid_share=0.0, schemas=True).events:
        if event.kind != "valid" or event.value is None:
            continue
        payload: dict[str, Any] = orjson.loads(event.value)["payload"]
        payload["after"]["tier"] = rng.choice(TIERS)
        if payload["op"] == "u" and rng.random() < 0.5:
            payload["before"] = {**payload["after"], "tier": rng.choice(TIERS)}
        out.append(orjson.dumps({"schema": schema, "payload": payload}))
        if len(out) == n:
            break
    return out


def route(when: str | None) -> Route:
    settings: dict[str, Any] = {"name": "customers", "topics": ["cdc.customers"], "workflow_id": 12, "db_id": 7,
                                "fields": DEMO_FIELDS}  # fmt: skip
    if when is not None:
        settings["when"] = when
    return Route(RouteSettings.model_validate(settings), max_body_bytes=10_000_000)


def per_record_us(r: Route, values: list[bytes], passes: int) -> float:
    prepare = r.prepare
    best = float("inf")
    for _ in range(passes):
        start = time.process_time()
        for v in values:
            prepare(v)
        best = min(best, time.process_time() - start)
    return best / len(values) * 1e6


def outcomes(r: Route, values: list[bytes]) -> str:
    sent = skipped = dead = 0
    for v in values:
        out = r.prepare(v)
        if isinstance(out, bytes):
            sent += 1
        elif out.skip:
            skipped += 1
        else:
            dead += 1
    return f"{sent} sent, {skipped} skipped, {dead} dead"


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.benchmark.condition", description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=5_000)
    ap.add_argument("--passes", type=int, default=9, help="passes over the records; the best is reported")
    args = ap.parse_args()
    values = records(args.records)
    cases = [
        ("no when", None),
        ('when: after.tier == "vip"', 'after.tier == "vip"'),
        (f"when: {EXAMPLE}", EXAMPLE),
    ]
    print(f"Route.prepare over {len(values)} Debezium JSON records (schemas on), best of {args.passes} passes")
    base = None
    for label, when in cases:
        r = route(when)
        us = per_record_us(r, values, args.passes)
        base = us if base is None else base
        extra = "" if when is None else f"  (+{us - base:.1f} µs)"
        print(f"  {us:7.1f} µs/record{extra:14s} {label}  [{outcomes(r, values)}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
