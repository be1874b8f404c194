"""The decoders' short way (``JsonDecoder.quick``, ``AvroDecoder.quick``) gives every record the verdict
the general way gives.

``Route.prepare`` reads the commonest record of a ``debezium-json`` route (an envelope without a schema
block, of an op the route engages) without making a change event. For any bytes, the item (to the
byte), the profile key, the dead letter's reason or the skip must be those of the general way. The
inputs are the record fuzzer's structure-aware mutants of every JSON shape and of Avro records in the
Confluent wire format (envelopes, flattened rows, other records, unknown and unreachable schema ids),
through routes that
differ where the short way takes decisions: the ops engaged, the undeclared-encoding checks of date
and custom fields, nulls, matching modes, passed-through columns, per-item content.

The run prints its seed; ``QUICK_FUZZ_SEED=<seed>`` repeats it exactly.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from typing import Any

import orjson
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from connector.config import RouteSettings
from connector.decode.avro import AvroDecoder
from connector.decode.json_events import UndeclaredEncoding
from connector.models import ImportItem
from connector.routing import Route
from tests.unit.test_record_properties import (
    JSON_KINDS,
    FakeRegistry,
    _avro,
    _avro_record,
    _frame,
    _mutate_avro,
    _mutate_bytes,
    _mutate_doc,
    _serialize,
)

EXAMPLES = 120
MUTANTS_PER_EXAMPLE = 150


def _route(**kw: Any) -> RouteSettings:
    base: dict[str, Any] = {"name": "quick", "topics": ["t"], "workflow_id": 7, "db_id": 7}
    base.update(kw)
    return RouteSettings.model_validate(base)


ROUTES = [
    # the benchmark's shape: top-level columns, email, the undeclared-date and -decimal checks armed
    (
        _route(
            fields={
                "email": "email",
                "_fname": "first_name",
                "_bdate": "birth_date",
                "balance": "balance",
                "phones": "phone",
                "CRM_ID": "id",
            },
            ops={"r": "engage"},
        ),
        10_000_000,
    ),
    # nulls ignored, phone matching, nested paths, columns passed through, snapshot reads imported
    (
        _route(
            matching="phone",
            nulls="ignore",
            unmapped="pass",
            fields={"phone": "phone", "_city": "address.city", "_regdate": "day"},
        ),
        10_000_000,
    ),
    # per-item content and custom_data, every op engaged, a small body limit
    (
        _route(
            fields={"email": "email", "seen": "seen"},
            content={"c": "address.city"},
            custom_data={"id": "id"},
            ops={"c": "engage", "r": "engage", "u": "engage", "d": "engage"},
        ),
        700,
    ),
    # updates only, custom matching, declared column types (the short way stands aside)
    (
        _route(
            matching="custom",
            field_name="CRM_ID",
            fields={"CRM_ID": "id", "_bdate": "birth_date"},
            column_types={"birth_date": "date"},
            ops={"c": "skip", "r": "dead-letter"},
        ),
        10_000_000,
    ),
]


def _verdict(route: Route, value: bytes | None) -> tuple[Any, ...]:
    try:
        out = route.prepare(value)
    except Exception as exc:  # compared, not judged, here (test_record_properties judges)
        return ("raised", type(exc).__name__, str(exc))
    if type(out) is ImportItem:
        return ("import", out.item, route.key)
    if type(out) is bytes:
        return ("engage", out, route.key)
    return ("unsent", out)


def _pairs(routes: list[tuple[RouteSettings, int]], decoder: Any = None) -> list[tuple[Route, Route]]:
    """Each route twice: as built (the short way where it applies), and held to the general way."""
    pairs = []
    for s, limit in routes:
        general = Route(s, limit, decoder(s) if decoder else None)
        general._quick = None  # the general way: decode to a change event, then the op policy
        pairs.append((Route(s, limit, decoder(s) if decoder else None), general))
    return pairs


def _compare(pairs: list[tuple[Route, Route]], value: bytes | None, counts: Counter[str], where: str) -> None:
    """Both ways give ``value`` one verdict, through every route; counts what the short way ended in."""
    for i, (quick, general) in enumerate(pairs):
        got, want = _verdict(quick, value), _verdict(general, value)
        assert got == want, f"{where}, route {i}: {value!r}"
        if quick._quick is not None and value is not None:
            try:
                short = type(quick._quick(value)) is dict
            except UndeclaredEncoding:  # raised only once the row is read on the short way
                short = True
            except Exception:
                short = False
            if short:
                counts[f"short:{got[0]}"] += 1
        counts[got[0]] += 1


def _run_seed(what: str) -> int:
    run_seed = int(os.environ.get("QUICK_FUZZ_SEED") or random.randrange(2**32))
    print(f"\n{what} fuzz: seed {run_seed} (QUICK_FUZZ_SEED={run_seed} repeats this run)")
    return run_seed


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    print_blob=True,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=[HealthCheck.too_slow],
)


def test_the_short_way_gives_the_general_ways_verdict_for_every_mutant() -> None:
    run_seed = _run_seed("quick decoding")
    pairs = _pairs(ROUTES)
    assert [q._quick is not None for q, _ in pairs] == [True, True, True, False]
    counts: Counter[str] = Counter()

    @seed(run_seed)
    @FUZZ
    @given(kind=st.sampled_from(list(JSON_KINDS)), example_seed=st.integers(0, 2**64 - 1))
    def one_example(kind: str, example_seed: int) -> None:
        rng = random.Random(example_seed)
        base = _serialize(JSON_KINDS[kind](rng))
        for n in range(MUTANTS_PER_EXAMPLE):
            doc = orjson.loads(base)
            for _ in range(rng.randint(0, 3)):
                doc = _mutate_doc(doc, rng)
            value: bytes | None = _serialize(doc)
            if rng.random() < 0.1:
                value = _mutate_bytes(value or b"", rng)
            _compare(pairs, value, counts, f"{kind} example seed {example_seed}, mutant {n}")

    one_example()
    print(f"quick decoding fuzz: {dict(sorted(counts.items()))}")
    # The short way was taken, and ended in items and in dead letters (undeclared encodings, mapping).
    assert counts["short:engage"] > 1_000 and counts["short:unsent"] > 200, counts


AVRO_ROUTES = [
    (_route(format="debezium-avro", fields={"email": "email", "_bdate": "birth_date"}, ops={"r": "engage"}), 10**7),
    (_route(format="debezium-avro", matching="phone", unmapped="pass", fields={"phone": "phone"}), 10**7),
    (_route(format="debezium-avro", fields={"email": "email"}, content={"c": "city"}, ops={"c": "skip"}), 600),
    (_route(format="avro", fields={"email": "email"}), 10**7),  # not Debezium: the short way stands aside
]


def test_the_avro_short_way_gives_the_general_ways_verdict_for_every_mutant() -> None:
    run_seed = _run_seed("quick Avro decoding")
    registry = FakeRegistry()
    pairs = _pairs(AVRO_ROUTES, lambda s: AvroDecoder(s.format, registry))
    assert [q._quick is not None for q, _ in pairs] == [True, True, True, False]
    counts: Counter[str] = Counter()

    @seed(run_seed)
    @FUZZ
    @given(schema_id=st.sampled_from([1, 1, 1, 2, 3, 4]), example_seed=st.integers(0, 2**64 - 1))
    def one_example(schema_id: int, example_seed: int) -> None:
        rng = random.Random(example_seed)
        bases = [_frame(schema_id, _avro(schema_id, _avro_record(schema_id, rng))) for _ in range(4)]
        for n in range(MUTANTS_PER_EXAMPLE):
            value: bytes | None = rng.choice(bases)
            for _ in range(rng.choice([0, 0, 1, 2])):
                value = _mutate_avro(value, rng) if value is not None else None
            _compare(pairs, value, counts, f"schema {schema_id} example seed {example_seed}, mutant {n}")

    one_example()
    print(f"quick Avro decoding fuzz: {dict(sorted(counts.items()))}")
    assert counts["short:engage"] > 300 and counts["short:unsent"] > 50, counts
