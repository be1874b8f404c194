"""What an operator sees of a running connector process: JSON log lines only (librdkafka's included),
the process and build metrics, whether Kafka is reachable and accepts the credentials, and freshness.

The connector runs as a process (``altcraft-connector run``, ``log_format: json``, stdout and stderr in
one log file); librdkafka's statistics come every second instead of every 15 s, to keep the tests short.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration import test_faults as faults
from tests.support import ConnectorProcess, wait_until

make_bed = faults.make_bed  # the fixture

pytestmark = pytest.mark.timeout(150)

FAST_STATS = {"statistics.interval.ms": 1000}
SASL_PASSWORD = "pw-that-must-never-be-logged"


def lines(proc: ConnectorProcess) -> list[dict[str, Any]]:
    """Every line of the process's output, each parsed as JSON (a line that is not fails the test)."""
    docs = []
    for n, line in enumerate(proc.log_path.read_text(errors="replace").splitlines(), 1):
        try:
            doc = json.loads(line)
        except ValueError:
            raise AssertionError(f"{proc.log_path.name} line {n} is not JSON: {line!r}") from None
        assert isinstance(doc, dict) and {"ts", "level", "logger", "msg"} <= doc.keys(), line
        docs.append(doc)
    return docs


def sample(proc: ConnectorProcess, name: str, **labels: str) -> float | None:
    wanted = set(labels.items())
    found = [v for (n, lab), v in proc.metrics().items() if n == name and wanted <= set(lab)]
    return sum(found) if found else None


def offline_settings(bootstrap: str, **kafka: Any) -> dict[str, Any]:
    """Settings for a connector that will never get a record: Altcraft is never called."""
    return {
        "kafka": {"bootstrap_servers": bootstrap, "group_id": "g-signals", "consumer": FAST_STATS, **kafka},
        "altcraft": {"base_url": "http://127.0.0.1:9", "token": "t"},
        "routes": [{"name": "customers", "topics": ["signals-topic"], "workflow_id": 1, "db_id": 7}],
        "dead_letter": {"topic": "signals-dlq"},
        "shutdown": {"drain_timeout_s": 5},
    }


def run_until(proc: ConnectorProcess, cond: Callable[[], Any], what: str, timeout: float = 30) -> None:
    def check() -> Any:
        if not proc.alive():
            raise AssertionError(f"the connector exited:\n{proc.log_tail()}")
        try:
            return cond()
        except Exception:  # /metrics not served yet
            return None

    try:
        wait_until(check, timeout, what, interval=0.3)
    except AssertionError:
        print(proc.log_tail())
        raise


def test_kafka_unreachable_every_line_is_json_and_metrics_say_so(tmp_path: Path, free_port: Callable[[], int]) -> None:
    closed = free_port()  # nothing listens there
    proc = ConnectorProcess(offline_settings(f"127.0.0.1:{closed}"), tmp_path, free_port(), name="unreachable")
    proc.start()
    try:
        run_until(proc, lambda: sample(proc, "altcraft_connector_kafka_brokers_up", client="consumer") == 0,
                  "brokers_up 0 for the consumer")  # fmt: skip
        run_until(proc, lambda: (sample(proc, "altcraft_connector_kafka_errors_total", client="consumer") or 0) > 0,
                  "Kafka errors counted")  # fmt: skip
        assert (sample(proc, "process_resident_memory_bytes") or 0) > 10_000_000
        assert (sample(proc, "process_open_fds") or 0) > 0
        assert sample(proc, "altcraft_connector_build_info", version="0.1.0") == 1
        assert sample(proc, "altcraft_connector_kafka_auth_errors_total", client="consumer") == 0
        code, _ = proc.terminate(30)
        assert code == 0
    finally:
        proc.stop()
    docs = lines(proc)
    kafka_lines = [d for d in docs if d["logger"] == "librdkafka.consumer"]
    assert kafka_lines, "librdkafka's own lines are missing"
    fail = [d for d in kafka_lines if d.get("facility") == "FAIL"]
    assert fail and f"127.0.0.1:{closed}" in fail[0]["msg"] and fail[0]["level"] == "ERROR"
    assert any(d["logger"] == "connector.kafka_signals" and d.get("error_code") == "_TRANSPORT" for d in docs)


def test_refused_credentials_are_counted_and_logged_without_the_password(
    kafka: Any, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    """SASL against the broker's plaintext listener: the login is refused (librdkafka's _AUTHENTICATION)."""
    settings = offline_settings(
        kafka.bootstrap,
        common={"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN", "sasl.username": "connector"},
        sasl_password=SASL_PASSWORD,
    )
    proc = ConnectorProcess(settings, tmp_path, free_port(), name="refused")
    proc.start()
    try:
        run_until(proc, lambda: (sample(proc, "altcraft_connector_kafka_auth_errors_total", client="consumer") or 0)
                  > 0, "auth errors counted")  # fmt: skip
        run_until(proc, lambda: sample(proc, "altcraft_connector_kafka_brokers_up", client="consumer") == 0,
                  "brokers_up 0")  # fmt: skip
        refusals = sample(proc, "altcraft_connector_kafka_errors_total", client="consumer", code="_AUTHENTICATION")
        assert (refusals or 0) > 0
        proc.terminate(30)
    finally:
        proc.stop()
    docs = lines(proc)
    refused = [d for d in docs if d.get("error_code") == "_AUTHENTICATION"]
    assert refused and refused[0]["level"] == "ERROR" and "credentials" in refused[0]["msg"]
    assert SASL_PASSWORD not in proc.log_path.read_text()


def test_with_the_broker_brokers_are_up_freshness_is_observed_and_dead_letters_are_logged(
    make_bed: Callable[..., faults.Bed],
) -> None:
    bed = make_bed(3_000, 2, seed=51)
    proc = bed.process(bed.settings(consumer=FAST_STATS))
    proc.start()
    bed.assert_delivered([proc], timeout=60)
    run_until(proc, lambda: (sample(proc, "altcraft_connector_kafka_brokers_up", client="consumer") or 0) >= 1,
              "brokers_up >= 1")  # fmt: skip
    # The dead-letter producer reports at the default interval (15 s).
    run_until(proc, lambda: (sample(proc, "altcraft_connector_kafka_brokers_up", client="producer") or 0) >= 1,
              "the producer's brokers_up >= 1")  # fmt: skip
    batches = sample(proc, "altcraft_connector_batch_records_count") or 0
    assert batches > 0 and sample(proc, "altcraft_connector_event_freshness_seconds_count") == batches
    # Produced seconds ago: every batch is fresher than a minute.
    assert sample(proc, "altcraft_connector_event_freshness_seconds_bucket", le="60.0") == batches
    assert sample(proc, "altcraft_connector_altcraft_up") == 1
    proc.terminate(30)
    docs = lines(proc)
    dead = [d for d in docs if d["logger"] == "connector.dead_letters"]
    expected = bed.expected_dead()
    assert len(dead) == min(10, len(expected)), "the first ten of the minute, one by one"
    for d in dead:
        assert (d["partition"], d["offset"]) in expected and d["topic"] == bed.topic
        assert d["stage"] == expected[(d["partition"], d["offset"])] and d["level"] == "WARNING"
