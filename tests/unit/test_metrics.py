"""What /metrics tells an operator beyond the pipeline's counters: the process, the build, whether
Kafka and Altcraft answer, and how fresh delivered changes are."""

from __future__ import annotations

import logging
import math
import platform
from importlib import metadata

import confluent_kafka
import httpx
import orjson
import pytest
from confluent_kafka import KafkaError, KafkaException
from prometheus_client import CollectorRegistry

from connector.kafka_signals import KafkaSignals, brokers_up
from connector.metrics import Metrics
from connector.source.consumer import KafkaSource
from tests.unit.test_sink_client import make, ok_for_all


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_process_platform_and_build_metrics_are_on_the_connectors_own_registry() -> None:
    metrics = Metrics(CollectorRegistry())
    assert (value(metrics, "process_resident_memory_bytes") or 0) > 0
    assert value(metrics, "process_open_fds") is not None and value(metrics, "process_cpu_seconds_total") is not None
    assert value(metrics, "python_info", implementation=platform.python_implementation(), major="3",
                 minor=platform.python_version_tuple()[1], patchlevel=platform.python_version_tuple()[2],
                 version=platform.python_version()) == 1  # fmt: skip
    build = {
        "version": metadata.version("altcraft-kafka-connector"),
        "python": platform.python_version(),
        "librdkafka": confluent_kafka.libversion()[0],
    }
    assert value(metrics, "altcraft_connector_build_info", **build) == 1
    Metrics(CollectorRegistry())  # a second connector in the process: no clash, nothing global


def test_freshness_is_observed_from_the_kafka_timestamp_and_never_negative() -> None:
    metrics = Metrics(CollectorRegistry())
    now = 1_700_000_100.0
    metrics.observe_freshness((confluent_kafka.TIMESTAMP_CREATE_TIME, 1_700_000_097_000), now)  # 3 s old
    metrics.observe_freshness((confluent_kafka.TIMESTAMP_LOG_APPEND_TIME, 1_700_000_100_500), now)  # clock skew
    metrics.observe_freshness((confluent_kafka.TIMESTAMP_NOT_AVAILABLE, 0), now)
    name = "altcraft_connector_event_freshness_seconds"
    assert value(metrics, name + "_count") == 2
    assert value(metrics, name + "_sum") == pytest.approx(3.0)
    assert value(metrics, name + "_bucket", le="0.5") == 1 and value(metrics, name + "_bucket", le="5.0") == 2


def test_altcraft_up_follows_the_last_requests_transport_outcome() -> None:
    seen_by_the_retry: list[float | None] = []

    def script(request: httpx.Request) -> httpx.Response:
        if not seen_by_the_retry:
            seen_by_the_retry.append(None)
            raise httpx.ConnectError("connection refused", request=request)
        seen_by_the_retry.append(value(metrics, "altcraft_connector_altcraft_up"))
        return ok_for_all(request)

    client, _, job, _, metrics = make(script)
    assert math.isnan(value(metrics, "altcraft_connector_altcraft_up") or 0.0), "unknown before any request"
    client.send(job)
    assert seen_by_the_retry == [None, 0.0], "down after the refused connection"
    assert value(metrics, "altcraft_connector_altcraft_up") == 1


# ------------------------------------------------------------------------------------ librdkafka's signals


def stats(*brokers: tuple[str, str, str]) -> str:
    return orjson.dumps(
        {"name": "rdkafka#consumer-1", "brokers": {n: {"state": s, "source": src} for n, s, src in brokers}}
    ).decode()


def test_brokers_up_counts_connected_brokers_but_not_the_logical_coordinator() -> None:
    metrics = Metrics(CollectorRegistry())
    signals = KafkaSignals(metrics, "consumer")
    assert value(metrics, "altcraft_connector_kafka_brokers_up", client="consumer") is None, "none before statistics"
    signals.on_stats(stats(("b1:9092/1", "UP", "learned"), ("b2:9092/2", "UP", "learned"),
                           ("b3:9092/3", "CONNECT", "learned"), ("GroupCoordinator", "UP", "logical")))  # fmt: skip
    assert value(metrics, "altcraft_connector_kafka_brokers_up", client="consumer") == 2
    signals.on_stats(stats(("127.0.0.1:1/bootstrap", "INIT", "configured"), ("GroupCoordinator", "INIT", "logical")))
    assert value(metrics, "altcraft_connector_kafka_brokers_up", client="consumer") == 0
    signals.on_stats("{not json")
    assert value(metrics, "altcraft_connector_kafka_brokers_up", client="consumer") == 0
    assert brokers_up({"brokers": None}) == 0


def test_kafka_errors_are_counted_by_name_and_refused_credentials_apart(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    metrics = Metrics(CollectorRegistry())
    signals = KafkaSignals(metrics, "producer", clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="connector.kafka_signals"):
        for _ in range(3):
            signals.on_error(KafkaError(KafkaError._TRANSPORT, "b:9092/1: Connect failed: Connection refused"))
        signals.on_error(KafkaError(KafkaError._AUTHENTICATION, "SASL authentication error: Authentication failed"))
        signals.on_error(KafkaError(KafkaError._SSL, "SSL handshake failed: certificate verify failed"))
    errors = "altcraft_connector_kafka_errors_total"
    assert value(metrics, errors, client="producer", code="_TRANSPORT") == 3
    assert value(metrics, errors, client="producer", code="_AUTHENTICATION") == 1
    assert value(metrics, "altcraft_connector_kafka_auth_errors_total", client="producer") == 2
    assert value(metrics, "altcraft_connector_kafka_auth_errors_total", client="consumer") == 0
    # One line per error name a minute; credentials refused at ERROR, with what to check.
    levels = [(r.levelname, r.error_code) for r in caplog.records]  # type: ignore[attr-defined]
    assert levels == [("WARNING", "_TRANSPORT"), ("ERROR", "_AUTHENTICATION"), ("ERROR", "_SSL")]
    assert "sasl.*" in caplog.records[1].getMessage()
    caplog.clear()
    now[0] = 60.0
    with caplog.at_level(logging.WARNING, logger="connector.kafka_signals"):
        signals.tick(now[0])
    assert [r.getMessage() for r in caplog.records] == [
        "Kafka producer: _TRANSPORT repeated 2 more times in the last 60 s"
    ]


def test_signals_configure_the_client_and_the_operators_interval_wins() -> None:
    signals = KafkaSignals(Metrics(CollectorRegistry()), "consumer")
    props = {**signals.props(), "statistics.interval.ms": 1000}
    assert props["logger"].name == "librdkafka.consumer" and props["statistics.interval.ms"] == 1000
    assert props["error_cb"] == signals.on_error and props["stats_cb"] == signals.on_stats


def test_a_fatal_error_ends_consume_even_when_the_error_callback_takes_the_errors() -> None:
    seen: list[KafkaError] = []
    source = KafkaSource({"bootstrap.servers": "127.0.0.1:1", "group.id": "g", "error_cb": seen.append, "log_level": 0})
    source.subscribe(["t"])
    try:
        assert source.consume(1, 0) == []
        source._on_error(KafkaError(KafkaError._FENCED, "fenced by another instance", fatal=True))
        with pytest.raises(KafkaException):
            source.consume(1, 0)
        assert KafkaError._FENCED in [e.code() for e in seen]
    finally:
        source.close()
