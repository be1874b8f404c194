"""A route with a condition (``routes[].when``) on a real broker: exactly the records it holds for are
engaged, once; the others are counted skipped with reason ``condition``; a record it cannot be evaluated
on goes to the dead-letter topic with stage ``condition``; offsets reach the end."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import KafkaException

from connector.emulator.config import EmulatorConfig
from connector.emulator.server import Emulator
from tests.support import ConnectorProcess, header_map, wait_until

TOKEN = "conditions-token"
WORKFLOW = 31
WHEN = 'after.tier == "vip" && (before == null || before.tier != "vip")'

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(EmulatorConfig(tokens=[TOKEN], workflows=[WORKFLOW], seed=9)) as emu:
        yield emu


def _row(email: str, tier: str | None) -> dict[str, Any]:
    return {"id": 1, "email": email, "first_name": "Ann", **({"tier": tier} if tier is not None else {})}


def _change(op: str, before: dict[str, Any] | None, after: dict[str, Any] | None, schema: bool) -> bytes:
    source = {"connector": "postgresql", "db": "shop", "schema": "public", "table": "customers"}
    payload = {"op": op, "before": before, "after": after, "ts_ms": 1_700_000_000_000, "source": source}
    if not schema:
        return orjson.dumps(payload)
    side = {"type": "struct", "optional": True, "fields": [
        {"field": "id", "type": "int32"}, {"field": "email", "type": "string"},
        {"field": "first_name", "type": "string", "optional": True},
        {"field": "tier", "type": "string", "optional": True}]}  # fmt: skip
    envelope = {"type": "struct", "fields": [{**side, "field": "before"}, {**side, "field": "after"},
                                             {"field": "op", "type": "string"}]}  # fmt: skip
    return orjson.dumps({"schema": envelope, "payload": payload})


def _records(n: int) -> tuple[list[tuple[bytes | None, str]], list[str]]:
    """Records of customer ``n`` with the outcome each must have, and the emails the condition engages."""
    schema = n % 2 == 0  # half with Debezium's schema block, half without
    email = f"c{n}-{{}}@example.com"
    out: list[tuple[bytes | None, str]] = [
        (_change("c", None, _row(email.format("new-vip"), "vip"), schema), "engage"),
        (_change("c", None, _row(email.format("new-gold"), "gold"), schema), "condition"),
        (_change("u", _row(email.format("up"), "gold"), _row(email.format("up"), "vip"), schema), "engage"),
        (_change("u", _row(email.format("still"), "vip"), _row(email.format("still"), "vip"), schema), "condition"),
        (_change("u", None, _row(email.format("nobefore"), "vip"), schema), "engage"),
        (_change("u", None, _row(email.format("down"), "basic"), schema), "condition"),
        (_change("u", None, _row(email.format("notier"), None), schema), "dead"),
        (_change("d", _row(email.format("gone"), "vip"), None, schema), "op_d"),  # the op policy comes first
        (None, "tombstone"),
    ]
    return out, [email.format(kind) for kind in ("new-vip", "up", "nobefore")]


def test_a_condition_engages_exactly_its_records_and_counts_or_dead_letters_the_rest(
    kafka: Any, emulator: Emulator, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    topic, dlq = kafka.new_topic(2, prefix="conditions"), kafka.new_topic(1, prefix="dlq")
    specs: list[dict[str, Any]] = []
    outcomes: list[str] = []
    engaged: list[str] = []
    for n in range(40):
        records, emails = _records(n)
        engaged += emails
        for value, outcome in records:
            specs.append({"value": value, "key": f"customer-{n}".encode(), "partition": n % 2})
            outcomes.append(outcome)
    positions = kafka.produce(topic, specs)
    dead_at = {(topic, *position) for position, outcome in zip(positions, outcomes, strict=True) if outcome == "dead"}
    expected = Counter(outcomes)

    group = f"g-{topic}"
    settings = {
        "kafka": {"bootstrap_servers": kafka.bootstrap, "group_id": group},
        "altcraft": {"base_url": emulator.url, "token": TOKEN, "retry": {"initial_backoff_s": 0.05}},
        "batching": {"max_items": 50, "linger_s": 0.2},
        "routes": [{"name": "vip", "topics": [topic], "format": "debezium-json", "workflow_id": WORKFLOW,
                    "db_id": 7, "ops": {"r": "engage"}, "fields": {"email": "email", "_fname": "first_name"},
                    "when": WHEN}],
        # Many records here are meant to fail the condition: far from what the breaker guards against.
        "dead_letter": {"topic": dlq, "breaker_max_share": 0.9},
        "shutdown": {"drain_timeout_s": 20},
    }  # fmt: skip
    proc = ConnectorProcess(settings, tmp_path, free_port()).start()
    try:
        ends = kafka.end_offsets(topic)

        def committed_to_the_end() -> bool:
            if not proc.alive():
                raise AssertionError(f"the connector exited:\n{proc.log_tail()}")
            try:
                return bool(kafka.committed(group, topic) == ends)
            except KafkaException:  # the group coordinator still loading
                return False

        wait_until(committed_to_the_end, 120, "committed offsets to reach the end", interval=0.5)

        def skipped(reason: str) -> float:
            return proc.metric_sum("altcraft_connector_records_skipped_total", route="vip", reason=reason)

        wait_until(lambda: skipped("condition") == expected["condition"], 30,
                   f"{expected['condition']} records counted skipped by the condition")  # fmt: skip
        assert skipped("op_d") == expected["op_d"] and skipped("tombstone") == expected["tombstone"]
        dead_total = proc.metric_sum("altcraft_connector_records_dead_lettered_total", stage="condition")
        assert dead_total == expected["dead"]
        assert proc.alive(), proc.log_tail()
    finally:
        proc.stop()

    letters = wait_until(lambda: _dead_letters(kafka, dlq, len(dead_at)), 60, "the dead letters")
    assert set(letters) == dead_at
    for headers in letters.values():
        assert headers["__connect.errors.stage"] == "condition", headers
        assert headers["__connect.errors.exception.class.name"] == "ConditionFailed", headers
        assert 'Key not found in map : "tier"' in headers["__connect.errors.exception.message"], headers
    got = Counter({e["matching_value"]: e["count"] for e in emulator.engagements(workflow_id=WORKFLOW)})
    assert got == Counter(engaged)  # exactly the records the condition holds for, each once


def _dead_letters(kafka: Any, dlq: str, wanted: int) -> dict[tuple[str, int, int], dict[str, str]]:
    out = {}
    for msg in kafka.read_all(dlq):
        h = header_map(msg)
        out[(h["__connect.errors.topic"], int(h["__connect.errors.partition"]), int(h["__connect.errors.offset"]))] = h
    return out if len(out) >= wanted else {}
