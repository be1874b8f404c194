"""The ports' contract (tests/contract.py) against the real adapters on the broker: KafkaSource,
DeadLetters and TransactionalDeadLetters. The same tests pass against the in-memory fakes
(tests/unit/test_ports_contract.py)."""

from __future__ import annotations

import contextlib
import uuid
from typing import TYPE_CHECKING

import pytest

from connector.dlq import DeadLetters
from connector.source.consumer import KafkaSource
from connector.transactions import TransactionalDeadLetters
from tests.contract import PARTITIONS, DeadLetterSinkContract, Member, SourceContract, TransactionalSinkContract
from tests.support import header_map

if TYPE_CHECKING:
    from tests.conftest import KafkaHelper


class TestKafkaSource(SourceContract):
    @pytest.fixture(autouse=True)
    def _topic(self, kafka: KafkaHelper) -> object:
        self.kafka = kafka
        self.topic = kafka.new_topic(PARTITIONS, prefix="contract")
        self.group = f"contract-{uuid.uuid4().hex[:10]}"
        self.members: list[Member] = []
        yield
        for m in self.members:
            with contextlib.suppress(Exception):
                m.source.close()

    def produce(self, partition: int, values: list[bytes]) -> None:
        self.kafka.produce(self.topic, [{"value": v, "partition": partition} for v in values])

    def member(self) -> Member:
        props = self.kafka.config({"group.id": self.group, "session.timeout.ms": 6000})
        m = Member(KafkaSource(props), self.topic)
        self.members.append(m)
        return m


class TestDeadLetters(DeadLetterSinkContract):
    @pytest.fixture(autouse=True)
    def _topic(self, kafka: KafkaHelper) -> object:
        self.kafka = kafka
        self.dead_letter_topic = kafka.new_topic(1, prefix="contract-dlq")
        self.made: list[DeadLetters] = []
        yield
        for sink in self.made:
            sink.close()

    def sink(self) -> DeadLetters:
        sink = DeadLetters(self.kafka.config(), self.dead_letter_topic, clock=lambda: 0.0)
        self.made.append(sink)
        return sink

    def read_letters(self, expected: int) -> list[tuple[bytes | None, dict[str, str]]]:
        got = self.kafka.read_all(self.dead_letter_topic)
        assert len(got) >= expected
        return [(m.value(), header_map(m)) for m in got[:expected]]


class TestTransactionalDeadLetters(TransactionalSinkContract):
    @pytest.fixture(autouse=True)
    def _topic(self, kafka: KafkaHelper) -> object:
        self.kafka = kafka
        self.topic = kafka.new_topic(PARTITIONS, prefix="contract")
        self.dead_letter_topic = kafka.new_topic(1, prefix="contract-dlq")
        self.group = f"contract-{uuid.uuid4().hex[:10]}"
        self.members: list[Member] = []
        self.made: list[TransactionalDeadLetters] = []
        yield
        for sink in self.made:
            sink.close()
        for m in self.members:
            with contextlib.suppress(Exception):
                m.source.close()

    def produce(self, partition: int, values: list[bytes]) -> None:
        self.kafka.produce(self.topic, [{"value": v, "partition": partition} for v in values])

    def member(self) -> Member:
        props = self.kafka.config({"group.id": self.group, "session.timeout.ms": 6000})
        m = Member(KafkaSource(props), self.topic)
        self.members.append(m)
        return m

    def sink(self) -> TransactionalDeadLetters:
        sink = TransactionalDeadLetters(self.kafka.config(), self.dead_letter_topic, f"contract-{uuid.uuid4().hex}")
        self.made.append(sink)
        return sink

    def read_letters(self) -> list[tuple[bytes | None, dict[str, str]]]:
        return [(m.value(), header_map(m)) for m in self.kafka.read_all(self.dead_letter_topic)]
