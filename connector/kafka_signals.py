"""What librdkafka says about the cluster, for one client, turned into metrics and log lines.

:meth:`KafkaSignals.props` are merged into the client's configuration (the operator's own
``statistics.interval.ms`` wins). librdkafka calls them from inside ``poll``/``consume``, on the
loop's thread:

- ``logger``: librdkafka's own lines go through Python logging (see :func:`connector.logs.librdkafka_logger`);
- ``error_cb``: every error counts in ``kafka_errors_total{client,code}`` (``code`` is librdkafka's
  error name, a closed set); refused credentials or permissions also in ``kafka_auth_errors_total``.
  Each error name is logged once a minute at most, with a count of the rest;
- ``stats_cb``: ``kafka_brokers_up{client}``, the brokers the client is connected to.

A client that cannot reach any broker shows ``brokers_up`` 0; one whose credentials are refused
shows it too, and its auth errors grow.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import KafkaError

from connector.logs import Throttle, librdkafka_logger
from connector.metrics import Metrics

log = logging.getLogger(__name__)

STATS_INTERVAL_MS = 15_000
ERROR_LOG_WINDOW_S = 60.0
# Kafka refused who the client is (SASL, TLS) or what it may do (ACLs).
AUTH_CODES = frozenset(
    {
        KafkaError._AUTHENTICATION,
        KafkaError._SSL,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError.ILLEGAL_SASL_STATE,
        KafkaError.UNSUPPORTED_SASL_MECHANISM,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    }
)


def brokers_up(stats: dict[str, Any]) -> int:
    """Brokers in state UP in one librdkafka statistics document, not counting logical ones
    (``GroupCoordinator``, which is one of the others under another name)."""
    brokers = stats.get("brokers")
    if not isinstance(brokers, dict):
        return 0
    return sum(
        1 for b in brokers.values() if isinstance(b, dict) and b.get("state") == "UP" and b.get("source") != "logical"
    )


class KafkaSignals:
    """The callbacks of one librdkafka client (``client``: one of :data:`connector.metrics.KAFKA_CLIENTS`)."""

    def __init__(self, metrics: Metrics, client: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._metrics = metrics
        self.client = client
        self._clock = clock
        self.logger, self._lines = librdkafka_logger(client, clock)
        self._errors: Throttle[int] = Throttle(1, ERROR_LOG_WINDOW_S)
        self._auth_errors = metrics.kafka_auth_errors.labels(client)

    def props(self) -> dict[str, Any]:
        return {
            "logger": self.logger,
            "error_cb": self.on_error,
            "stats_cb": self.on_stats,
            "statistics.interval.ms": STATS_INTERVAL_MS,
        }

    def on_error(self, err: KafkaError) -> None:
        name = err.name()
        self._metrics.kafka_errors.labels(self.client, name).inc()
        auth = err.code() in AUTH_CODES
        if auth:
            self._auth_errors.inc()
        now = self._clock()
        self._flush_errors(now)
        if not err.fatal() and not self._errors.allow(err.code(), now):
            return
        level = logging.ERROR if auth or err.fatal() else logging.WARNING
        hint = (
            "; Kafka refuses the client's credentials or permissions: check security.protocol, sasl.*, ssl.* "
            "and the user's ACLs" if auth else ""
        )  # fmt: skip
        log.log(level, "Kafka %s: %s (%s)%s", self.client, err.str(), name, hint,
                extra={"kafka_client": self.client, "error_code": name})  # fmt: skip

    def on_stats(self, text: str) -> None:
        try:
            stats = orjson.loads(text)
        except orjson.JSONDecodeError:
            log.debug("unreadable librdkafka statistics from the %s", self.client)
            return
        if isinstance(stats, dict):
            self._metrics.kafka_brokers_up.labels(self.client).set(brokers_up(stats))

    def tick(self, now: float) -> None:
        """Summaries of log lines held back whose minute is over."""
        self._flush_errors(now)
        self._lines.flush(now)

    def _flush_errors(self, now: float) -> None:
        for held in self._errors.ended(now):
            log.warning("Kafka %s: %s repeated %d more times in the last %.0f s", self.client,
                        KafkaError(held.key).name(), held.total, held.window_s,
                        extra={"kafka_client": self.client, "error_code": KafkaError(held.key).name()})  # fmt: skip
