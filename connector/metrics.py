"""Every metric, defined once against an injected registry. Updated per batch, not per record.

Besides the connector's own metrics, the registry gets the standard process (``process_*``: memory,
CPU, open files), platform (``python_info``) and garbage-collector (``python_gc_*``) collectors, and
``altcraft_connector_build_info``.
"""

from __future__ import annotations

import platform
from collections import Counter as Tally
from collections.abc import Iterable
from importlib import metadata

import confluent_kafka
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BATCH_BUCKETS = (1, 10, 50, 100, 500, 1000, 2500, 5000, 7500, 10000)
# From seconds (a connector keeping up) to a day (a backfill, or a connector that was down).
_FRESHNESS_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 10800.0, 86400.0)
# The librdkafka clients whose errors and statistics are exported (label ``client``).
KAFKA_CLIENTS = ("consumer", "producer")
DISTRIBUTION = "altcraft-kafka-connector"


def version() -> str:
    """The installed package's version ("unknown" when run from a tree that was never installed)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        p = "altcraft_connector_"
        self.consumed = Counter(p + "records_consumed", "Records read from Kafka.", ["route"], registry=registry)
        self.engaged = Counter(
            p + "records_engaged", "Records the platform accepted (imported, and engaged unless mode is import).",
            ["route"], registry=registry,
        )  # fmt: skip
        self.imported = Counter(
            p + "records_imported", "Records the platform accepted to import without engaging (an op or otherwise "
            "set to import).", ["route"], registry=registry,
        )  # fmt: skip
        self.skipped = Counter(
            p + "records_skipped", "Records deliberately not sent (deletes, tombstones).", ["route", "reason"],
            registry=registry,
        )  # fmt: skip
        self.dead_lettered = Counter(
            p + "records_dead_lettered", "Records written to the dead-letter topic, by stage.", ["route", "stage"],
            registry=registry,
        )  # fmt: skip
        self.requests = Counter(
            p + "requests", "HTTP requests to Altcraft, by endpoint and outcome.", ["endpoint", "outcome"],
            registry=registry,
        )  # fmt: skip
        self.duplicates = Counter(
            p + "requests_deduplicated", "Requests Altcraft answered as duplicates of an earlier Request-ID.",
            ["endpoint"], registry=registry,
        )  # fmt: skip
        self.retries = Counter(p + "retries", "Requests retried, by reason.", ["endpoint", "reason"], registry=registry)
        self.request_duration = Histogram(
            p + "request_duration_seconds", "Duration of one HTTP request to Altcraft.", ["endpoint"],
            buckets=_LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.batch_records = Histogram(
            p + "batch_records", "Profiles per request.", buckets=_BATCH_BUCKETS, registry=registry
        )
        self.batch_latency = Histogram(
            p + "batch_latency_seconds", "From a batch's first record to the API's answer.",
            buckets=_LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.commit_duration = Histogram(
            p + "commit_duration_seconds", "Duration of one synchronous offset commit.",
            buckets=_LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.lag = Gauge(
            p + "consumer_lag", "Records behind the high watermark, per assigned partition.", ["topic", "partition"],
            registry=registry,
        )  # fmt: skip
        self.halted = Gauge(
            p + "halted", "1 while sending is halted for this reason (a configuration fault).", ["reason"],
            registry=registry,
        )  # fmt: skip
        self.paused_tariff = Gauge(
            p + "tariff_limit_reached", "1 while Altcraft answers 402 (tariff limit); data waits.", registry=registry
        )
        self.inflight = Gauge(p + "inflight_requests", "Batches being sent.", registry=registry)
        self.dlq_stalled = Gauge(
            p + "dead_letter_stalled", "1 while dead letters cannot be written (partitions stall).", registry=registry
        )
        self.tls_errors = Counter(
            p + "tls_errors", "TLS handshakes with Altcraft that failed, by reason (sink.tls.REASONS).", ["reason"],
            registry=registry,
        )  # fmt: skip
        self.last_progress = Gauge(
            p + "last_progress_timestamp_seconds", "Unix time of the last commit that moved an offset.",
            registry=registry,
        )  # fmt: skip
        self.assigned_partitions = Gauge(
            p + "assigned_partitions", "Partitions assigned to this member.", registry=registry
        )
        # -- what runs, and whether its neighbours answer
        self.build_info = Gauge(
            p + "build_info", "Always 1; the labels say which connector, Python and librdkafka run.",
            ["version", "python", "librdkafka"], registry=registry,
        )  # fmt: skip
        self.build_info.labels(version(), platform.python_version(), confluent_kafka.libversion()[0]).set(1)
        self.kafka_brokers_up = Gauge(
            p + "kafka_brokers_up", "Brokers this Kafka client is connected to (state UP in librdkafka's statistics).",
            ["client"], registry=registry,
        )  # fmt: skip
        self.kafka_errors = Counter(
            p + "kafka_errors", "Errors librdkafka reported, by client and librdkafka error name.", ["client", "code"],
            registry=registry,
        )  # fmt: skip
        self.kafka_auth_errors = Counter(
            p + "kafka_auth_errors",
            "Kafka refused this client's credentials (SASL, TLS) or permissions (topic, group, cluster ACLs).",
            ["client"], registry=registry,
        )  # fmt: skip
        for client in KAFKA_CLIENTS:  # brokers_up appears with the client's first statistics
            self.kafka_auth_errors.labels(client)
        self.altcraft_up = Gauge(
            p + "altcraft_up", "1 if the last request to Altcraft got an HTTP answer (any status), 0 if it failed "
            "to connect, time out or complete TLS; NaN before the first request.", registry=registry,
        )  # fmt: skip
        self.altcraft_up.set(float("nan"))
        self.event_freshness = Histogram(
            p + "event_freshness_seconds", "From a batch's oldest record's Kafka timestamp to Altcraft accepting "
            "the batch.", buckets=_FRESHNESS_BUCKETS, registry=registry,
        )  # fmt: skip
        # -- the process: memory, CPU, open files; Python's version and collector
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        self._halts_shown: set[str] = set()
        self._turn: Tally[tuple[str, ...]] = Tally()

    # -- per-record counts, added up during a loop turn and written once at its end

    def count_consumed(self, route: str, n: int) -> None:
        self._turn[("consumed", route)] += n

    def count_skipped(self, route: str, reason: str) -> None:
        self._turn[("skipped", route, reason)] += 1

    def count_dead_lettered(self, route: str, stage: str) -> None:
        self._turn[("dead", route, stage)] += 1

    def flush_counts(self) -> None:
        for key, n in self._turn.items():
            if key[0] == "consumed":
                self.consumed.labels(key[1]).inc(n)
            elif key[0] == "skipped":
                self.skipped.labels(key[1], key[2]).inc(n)
            else:
                self.dead_lettered.labels(key[1], key[2]).inc(n)
        self._turn.clear()

    def show_halts(self, reasons: Iterable[str]) -> None:
        """``halted{reason}``: 1 for each reason now, 0 for those shown before and over."""
        now = set(reasons)
        for reason in now - self._halts_shown:
            self.halted.labels(reason).set(1)
        for reason in self._halts_shown - now:
            self.halted.labels(reason).set(0)
        self._halts_shown = now

    def observe_freshness(self, timestamp: tuple[int, int], now: float) -> None:
        """One accepted batch: ``timestamp`` is its first (oldest) record's ``Message.timestamp()``, ``now``
        the wall-clock time of the acknowledgment. A record without a timestamp is not observed; a
        producer clock ahead of ours counts as 0."""
        kind, ts_ms = timestamp
        if kind == confluent_kafka.TIMESTAMP_NOT_AVAILABLE or ts_ms <= 0:
            return
        self.event_freshness.observe(max(0.0, now - ts_ms / 1000.0))
