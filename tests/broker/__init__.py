"""A real single-node Apache Kafka (KRaft) broker on loopback for the integration tests."""

from __future__ import annotations

from tests.broker.kafka import BrokerError, KafkaBroker, ensure_libs, free_port, libs_dir

__all__ = ["BrokerError", "KafkaBroker", "ensure_libs", "free_port", "libs_dir"]
