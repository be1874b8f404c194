"""The test bed itself: the session broker survives a restart on the same address with its data."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from confluent_kafka import Consumer, TopicPartition

if TYPE_CHECKING:
    from tests.conftest import KafkaHelper

pytestmark = pytest.mark.broker_restart


def test_produce_restart_produce_read_same_address(kafka: KafkaHelper) -> None:
    broker = kafka.require_broker()
    topic = kafka.new_topic(partitions=2)
    group = f"restart-bed-{topic}"
    before = [({"value": f"before-{i}", "key": f"k{i}", "partition": i % 2}) for i in range(100)]
    kafka.produce(topic, before)

    # A group commit before the restart must be readable after it (the __consumer_offsets topic persists).
    consumer = Consumer(kafka.config({"group.id": group, "enable.auto.commit": False}))
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, 7, "meta-0")], asynchronous=False)
    finally:
        consumer.close()

    address, pid = broker.bootstrap, broker.pid
    broker.restart()
    assert broker.bootstrap == address == kafka.bootstrap
    assert broker.pid != pid and broker.running

    # The session-wide producer and admin client reconnect by themselves to the same address.
    after = [{"value": f"after-{i}", "partition": i % 2} for i in range(50)]
    kafka.produce(topic, after)

    messages = kafka.read_all(topic)
    values = sorted(m.value().decode() for m in messages)
    assert values == sorted([r["value"] for r in before] + [r["value"] for r in after])
    assert kafka.end_offsets(topic) == {0: 75, 1: 75}
    by_partition = {p: [m.offset() for m in messages if m.partition() == p] for p in (0, 1)}
    assert by_partition == {0: list(range(75)), 1: list(range(75))}
    assert kafka.committed_with_metadata(group, topic) == {0: (7, "meta-0")}


def test_hard_kill_and_restart_keeps_acknowledged_records(kafka: KafkaHelper) -> None:
    broker = kafka.require_broker()
    topic = kafka.new_topic(partitions=1)
    kafka.produce(topic, [f"r{i}" for i in range(20)])
    broker.restart(hard=True)  # SIGKILL: the log is recovered on start
    kafka.produce(topic, ["last"])
    assert [m.value() for m in kafka.read_all(topic)] == [f"r{i}".encode() for i in range(20)] + [b"last"]
