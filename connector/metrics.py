"""Every metric, defined once against an injected registry. Updated per batch, not per record."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BATCH_BUCKETS = (1, 10, 50, 100, 500, 1000, 2500, 5000, 7500, 10000)


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        p = "altcraft_connector_"
        self.consumed = Counter(p + "records_consumed", "Records read from Kafka.", ["route"], registry=registry)
        self.engaged = Counter(
            p + "records_engaged", "Records the platform accepted (imported, and engaged unless mode is import).",
            ["route"], registry=registry,
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
        self.retries = Counter(
            p + "retries", "Requests retried, by reason.", ["endpoint", "reason"], registry=registry
        )
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
