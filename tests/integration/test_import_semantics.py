"""Import without engaging, on a real broker: a Debezium snapshot (op r, imported by default) imports every
row and engages nobody; then updates where some customers become VIP engage exactly those, once, while
the others are imported (``otherwise: import``); each profile's changes reach Altcraft in Kafka order,
across the two kinds of request, with several batches of a partition in flight."""

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
from tests.support import ConnectorProcess, wait_until

TOKEN = "import-token"
WORKFLOW = 41
DB = 5
WHEN = 'after.tier == "vip" && (before == null || before.tier != "vip")'
CUSTOMERS = 300

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    config = EmulatorConfig(tokens=[TOKEN], workflows=[WORKFLOW], dbs=[DB], seed=5, order_field="seq")
    with Emulator(config) as emu:
        yield emu


def _row(n: int, tier: str, seq: int) -> dict[str, Any]:
    return {"id": n, "email": f"Customer{n}@Example.com", "tier": tier, "seq": seq}


def _change(op: str, before: dict[str, Any] | None, after: dict[str, Any]) -> bytes:
    source = {"connector": "postgresql", "db": "shop", "schema": "public", "table": "customers", "snapshot": op == "r"}
    return orjson.dumps({"op": op, "before": before, "after": after, "ts_ms": 1_700_000_000_000, "source": source})


def test_a_snapshot_imports_and_only_customers_becoming_vip_are_engaged(
    kafka: Any, emulator: Emulator, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    topic, dlq = kafka.new_topic(2, prefix="imports"), kafka.new_topic(1, prefix="dlq")
    snapshot = [
        {"value": _change("r", None, _row(n, "basic", 0)), "key": f"{n}".encode(), "partition": n % 2}
        for n in range(CUSTOMERS)
    ]
    kafka.produce(topic, snapshot)
    group = f"g-{topic}"
    settings = {
        "kafka": {"bootstrap_servers": kafka.bootstrap, "group_id": group},
        "altcraft": {"base_url": emulator.url, "token": TOKEN, "max_in_flight": 8, "max_in_flight_per_partition": 4},
        "batching": {"max_items": 25, "linger_s": 0.2},
        "routes": [{"name": "customers", "topics": [topic], "format": "debezium-json", "workflow_id": WORKFLOW,
                    "db_id": DB, "fields": {"email": "email", "tier": "tier", "seq": "seq"},
                    "when": WHEN, "otherwise": "import"}],
        "dead_letter": {"topic": dlq},
    }  # fmt: skip
    # Several batches of a partition in flight at once, answered in any order.
    emulator.set_faults(latency_s=0.05, latency_max_s=0.6)
    proc = ConnectorProcess(settings, tmp_path, free_port()).start()

    def committed_to(ends: dict[int, int]) -> Callable[[], bool]:
        def check() -> bool:
            if not proc.alive():
                raise AssertionError(f"the connector exited:\n{proc.log_tail()}")
            try:
                return bool(kafka.committed(group, topic) == ends)
            except KafkaException:
                return False

        return check

    try:
        wait_until(committed_to(kafka.end_offsets(topic)), 120, "the snapshot to be committed", interval=0.5)
        assert emulator.stats()["engagements"] == 0, "a snapshot row was engaged"
        assert len(emulator.profiles()) == CUSTOMERS
        assert proc.metric_sum("altcraft_connector_records_imported_total") == CUSTOMERS

        # Updates: every customer changes twice; every seventh becomes vip on its first change and stays
        # vip on the second (engaged once), the others change tier without becoming vip (imported twice).
        vip = {n for n in range(CUSTOMERS) if n % 7 == 0}
        updates = []
        for seq, chunk in ((seq, chunk) for chunk in range(0, CUSTOMERS, 10) for seq in (1, 2)):
            for n in range(chunk, chunk + 10):  # a customer's two changes close together, in different batches
                before_tier = "basic" if seq == 1 else ("vip" if n in vip else "silver")
                after_tier = "vip" if n in vip else ("silver" if seq == 1 else "gold")
                value = _change("u", _row(n, before_tier, seq - 1), _row(n, after_tier, seq))
                updates.append({"value": value, "key": f"{n}".encode(), "partition": n % 2})
        kafka.produce(topic, updates)
        wait_until(committed_to(kafka.end_offsets(topic)), 120, "the updates to be committed", interval=0.5)
        assert proc.metric_sum("altcraft_connector_records_imported_total") == CUSTOMERS + 2 * CUSTOMERS - len(vip)
        assert proc.metric_sum("altcraft_connector_records_engaged_total") == len(vip)
        assert emulator.stats()["requests_in_flight_max"] > 1
    finally:
        proc.stop()

    engaged = Counter({e["matching_value"].lower(): e["count"] for e in emulator.engagements(workflow_id=WORKFLOW)})
    assert engaged == Counter({f"customer{n}@example.com": 1 for n in vip})
    order = {p["matching_value"].lower(): p["values"] for p in emulator.order()}
    assert len(order) == CUSTOMERS
    assert all(values == [0, 1, 2] for values in order.values()), [v for v in order.values() if v != [0, 1, 2]][:5]
