"""The ports' contract (tests/contract.py) against the in-memory fakes the loop's unit tests use."""

from __future__ import annotations

from connector.dlq import headers_for
from connector.ports import FakeBroker, FakeDeadLetters, FakeSource, FakeTransactions
from tests.contract import PARTITIONS, DeadLetterSinkContract, Member, SourceContract, TransactionalSinkContract


class TestFakeSource(SourceContract):
    topic = "profiles"

    def setup_method(self) -> None:
        self.broker = FakeBroker(PARTITIONS)

    def produce(self, partition: int, values: list[bytes]) -> None:
        for v in values:
            self.broker.produce(self.topic, partition, v)

    def member(self) -> Member:
        return Member(FakeSource(self.broker), self.topic)


class TestFakeDeadLetters(DeadLetterSinkContract):
    def setup_method(self) -> None:
        self.fake = FakeDeadLetters()

    def sink(self) -> FakeDeadLetters:
        return self.fake

    def read_letters(self, expected: int) -> list[tuple[bytes | None, dict[str, str]]]:
        out = []
        for msg, reason in self.fake.letters[:expected]:
            headers = {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in headers_for(msg, reason)}
            out.append((msg.value(), headers))
        return out


class TestFakeTransactions(TransactionalSinkContract):
    topic = "profiles"

    def setup_method(self) -> None:
        self.broker = FakeBroker(PARTITIONS)
        self.fake = FakeTransactions(self.broker)

    def produce(self, partition: int, values: list[bytes]) -> None:
        for v in values:
            self.broker.produce(self.topic, partition, v)

    def member(self) -> Member:
        return Member(FakeSource(self.broker), self.topic)

    def sink(self) -> FakeTransactions:
        return self.fake

    def read_letters(self) -> list[tuple[bytes | None, dict[str, str]]]:
        out = []
        for msg, reason in self.fake.letters:
            headers = {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in headers_for(msg, reason)}
            out.append((msg.value(), headers))
        return out
