"""Shared fixtures: the real Kafka broker (``kafka``) and free loopback ports (``free_port``).

``kafka`` starts one Apache Kafka 4.1.1 KRaft node per test session (tests/broker/kafka.py) on first
use, or uses the cluster in ``$KAFKA_BOOTSTRAP_SERVERS`` when that is set (e.g. one started with
``python -m tests.broker``). A broker that cannot be fetched or started fails the tests that use it:
nothing here skips for a missing Java or Maven. Tests that use ``kafka`` get the ``integration`` marker.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    IsolationLevel,
    KafkaError,
    KafkaException,
    Message,
    Producer,
)
from confluent_kafka import TopicPartition as TP
from confluent_kafka.admin import (
    AdminClient,
    NewTopic,
    OffsetSpec,
)

from connector.dlq import close_producer
from tests.broker.kafka import KafkaBroker
from tests.broker.kafka import free_port as _free_port
from tests.support import wait_until

EXTERNAL_ENV = "KAFKA_BOOTSTRAP_SERVERS"

Headers = Sequence[tuple[str, bytes | str | None]] | Mapping[str, bytes | str | None]
Payload = bytes | str | None
# A record to produce: a bare value, a tuple (value, key, partition, headers, timestamp_ms) cut anywhere
# after the value, or a dict with any of those keys.
RecordSpec = Payload | tuple[Any, ...] | Mapping[str, Any]
_RECORD_FIELDS = ("value", "key", "partition", "headers", "timestamp")
# The helper's own clients reconnect quickly after a broker restart (librdkafka backs off up to 10 s).
FAST_RECONNECT = {"reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 500}


class KafkaHelper:
    """The cluster under test plus the client chores tests need (topics, producing, reading back)."""

    def __init__(self, bootstrap: str, broker: KafkaBroker | None, startup_s: float = 0.0) -> None:
        self.bootstrap = bootstrap
        self.broker = broker
        self.startup_s = startup_s
        self._admin: AdminClient | None = None
        self._producer: Producer | None = None

    # -- clients

    def config(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """librdkafka properties for this cluster: ``bootstrap.servers`` plus ``extra``."""
        return {"bootstrap.servers": self.bootstrap, **(extra or {})}

    @property
    def admin(self) -> AdminClient:
        if self._admin is None:
            self._admin = AdminClient(self.config(FAST_RECONNECT))
        return self._admin

    @property
    def producer(self) -> Producer:
        if self._producer is None:
            self._producer = Producer(
                {
                    **self.config(FAST_RECONNECT),
                    "acks": "all",
                    "linger.ms": 5,
                    "message.timeout.ms": 60_000,
                    # Records land in the order given, also when librdkafka retries (e.g. a NOT_LEADER
                    # answer for a topic created a moment ago): one request in flight per connection.
                    # Not idempotence: a broker killed and restarted under it must not put this
                    # session-wide producer into a fatal state.
                    "enable.idempotence": False,
                    "max.in.flight.requests.per.connection": 1,
                }
            )
        return self._producer

    def require_broker(self) -> KafkaBroker:
        """The broker process, for tests that stop/restart it; skips on an external cluster."""
        if self.broker is None:
            pytest.skip(f"needs the test-owned broker (restarts it); {EXTERNAL_ENV} points at an external one")
        return self.broker

    # -- topics

    def create_topic(
        self,
        name: str,
        partitions: int = 1,
        config: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> str:
        """Create ``name`` and wait until every partition has a leader; returns the name."""
        futures = self.admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1, config=dict(config or {}))],
            operation_timeout=timeout,
            request_timeout=timeout,
        )
        futures[name].result(timeout=timeout)
        self.wait_until(
            lambda: self._partitions_led(name) == partitions,
            timeout=timeout,
            what=f"topic {name} to have {partitions} partitions with leaders",
        )
        return name

    def new_topic(self, partitions: int = 1, config: Mapping[str, str] | None = None, prefix: str = "test") -> str:
        """Create a topic with a unique name; returns the name."""
        return self.create_topic(f"{prefix}-{uuid.uuid4().hex[:12]}", partitions, config)

    def delete_topic(self, name: str, timeout: float = 30.0) -> None:
        self.admin.delete_topics([name], operation_timeout=timeout)[name].result(timeout=timeout)

    def partitions(self, topic: str, timeout: float = 10.0) -> list[int]:
        md = self.admin.list_topics(topic=topic, timeout=timeout)
        t = md.topics.get(topic)
        if t is None or t.error is not None:
            raise KeyError(f"topic {topic}: {None if t is None else t.error}")
        return sorted(t.partitions)

    def _partitions_led(self, topic: str) -> int:
        try:
            md = self.admin.list_topics(topic=topic, timeout=5)
        except KafkaException:
            return -1
        t = md.topics.get(topic)
        if t is None or t.error is not None:
            return -1
        return sum(1 for p in t.partitions.values() if p.error is None and p.leader >= 0)

    # -- producing

    def produce(self, topic: str, records: Iterable[RecordSpec], timeout: float = 60.0) -> list[tuple[int, int]]:
        """Produce ``records`` in order, flush, and assert every one was delivered.

        Returns ``(partition, offset)`` of each record, in the order given.
        """
        producer = self.producer
        results: list[tuple[int, int] | None] = []
        errors: list[str] = []

        def on_delivery(index: int) -> Callable[[KafkaError | None, Message], None]:
            def cb(err: KafkaError | None, msg: Message) -> None:
                if err is not None:
                    errors.append(f"record #{index}: {err}")
                else:
                    results[index] = (msg.partition(), msg.offset())

            return cb

        for index, spec in enumerate(records):
            kwargs = _record_kwargs(spec)
            results.append(None)
            while True:
                try:
                    producer.produce(topic, on_delivery=on_delivery(index), **kwargs)
                    break
                except BufferError:
                    producer.poll(0.1)
            producer.poll(0)
        remaining = producer.flush(timeout)
        assert remaining == 0, f"{remaining} records to {topic} still undelivered after {timeout}s"
        assert not errors, f"delivery to {topic} failed: {errors[:10]}"
        missing = [i for i, r in enumerate(results) if r is None]
        assert not missing, f"no delivery report for records {missing[:10]}"
        return [r for r in results if r is not None]

    # -- reading back

    def end_offsets(self, topic: str, *, committed_only: bool = False, timeout: float = 10.0) -> dict[int, int]:
        """The end (high watermark) offset of each partition; ``committed_only``: the last stable offset."""
        isolation = IsolationLevel.READ_COMMITTED if committed_only else IsolationLevel.READ_UNCOMMITTED
        return self._list_offsets(topic, OffsetSpec.latest(), isolation, timeout)

    def begin_offsets(self, topic: str, timeout: float = 10.0) -> dict[int, int]:
        return self._list_offsets(topic, OffsetSpec.earliest(), IsolationLevel.READ_UNCOMMITTED, timeout)

    def _list_offsets(self, topic: str, spec: OffsetSpec, isolation: Any, timeout: float) -> dict[int, int]:
        req = {TP(topic, p): spec for p in self.partitions(topic)}
        futures = self.admin.list_offsets(req, isolation_level=isolation, request_timeout=timeout)
        return {tp.partition: fut.result(timeout=timeout).offset for tp, fut in futures.items()}

    def read_all(self, topic: str, timeout: float = 30.0) -> list[Message]:
        """Every record of ``topic`` (read-committed), from the beginning to the current end offsets.

        Uses ``assign()`` with a throwaway group id that never commits. Sorted by (partition, offset).
        """
        ends = self.end_offsets(topic, committed_only=True)
        begins = self.begin_offsets(topic)
        todo = {p for p, end in ends.items() if end > begins.get(p, 0)}
        out: list[Message] = []
        if not todo:
            return out
        consumer = Consumer(
            {
                **self.config(FAST_RECONNECT),
                "group.id": f"read-all-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
            }
        )
        try:
            consumer.assign([TP(topic, p, OFFSET_BEGINNING) for p in sorted(todo)])
            deadline = time.monotonic() + timeout
            while todo:
                if time.monotonic() > deadline:
                    got = {p: sum(1 for m in out if m.partition() == p) for p in ends}
                    raise AssertionError(
                        f"read_all({topic}) timed out after {timeout}s; partitions {sorted(todo)} not read "
                        f"to their end offsets {ends}; records per partition so far: {got}"
                    )
                for m in consumer.consume(num_messages=10_000, timeout=0.1):
                    err = m.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            continue
                        if err.fatal() or not err.retriable():
                            raise KafkaException(err)
                        continue
                    if m.partition() in todo and m.offset() < ends[m.partition()]:
                        out.append(m)
                for tp in consumer.position([TP(topic, p) for p in sorted(todo)]):
                    if tp.offset >= ends[tp.partition]:
                        todo.discard(tp.partition)
        finally:
            consumer.close()
        out.sort(key=lambda m: (m.partition(), m.offset()))
        return out

    def read_values(self, topic: str, timeout: float = 30.0) -> list[bytes | None]:
        """The values of :meth:`read_all`, in (partition, offset) order."""
        return [m.value() for m in self.read_all(topic, timeout)]

    # -- consumer groups

    def committed_with_metadata(self, group_id: str, topic: str, timeout: float = 10.0) -> dict[int, tuple[int, str]]:
        """``{partition: (offset, metadata)}`` committed by ``group_id`` on ``topic`` (partitions with none omitted)."""
        # A consumer that never joins the group reads its committed offsets (OffsetFetch) without the
        # admin client's group-coordinator paths: a fresh admin client per call hung after broker
        # restarts (confluentinc/librdkafka#5511) and crashed on a young group's NOT_COORDINATOR
        # answer (confluentinc/librdkafka#5040).
        reader = Consumer(self.config({**FAST_RECONNECT, "group.id": group_id, "enable.auto.commit": False}))
        try:
            got = reader.committed([TP(topic, p) for p in self.partitions(topic)], timeout=timeout)
        finally:
            reader.close()
        out: dict[int, tuple[int, str]] = {}
        for tp in got:
            if tp.error is not None:
                raise KafkaException(tp.error)
            if tp.offset >= 0:
                out[tp.partition] = (tp.offset, tp.metadata or "")
        return out

    def committed(self, group_id: str, topic: str, timeout: float = 10.0) -> dict[int, int]:
        """``{partition: offset}`` committed by ``group_id`` on ``topic`` (partitions with none omitted)."""
        return {p: off for p, (off, _meta) in self.committed_with_metadata(group_id, topic, timeout).items()}

    # -- misc

    @staticmethod
    def wait_until(cond: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1, what: str = "") -> Any:
        """Poll ``cond`` until it returns something truthy (returned); AssertionError after ``timeout``."""
        return wait_until(cond, timeout, what or repr(cond), interval)

    def close(self) -> None:
        if self._producer is not None:
            close_producer(self._producer, 10)
            self._producer = None
        self._admin = None


def _record_kwargs(spec: RecordSpec) -> dict[str, Any]:
    if spec is None or isinstance(spec, bytes | str):
        fields: dict[str, Any] = {"value": spec}
    elif isinstance(spec, tuple):
        if not 1 <= len(spec) <= len(_RECORD_FIELDS):
            raise ValueError(f"a record tuple is (value, key, partition, headers, timestamp): {spec!r}")
        fields = dict(zip(_RECORD_FIELDS, spec, strict=False))
    elif isinstance(spec, Mapping):
        unknown = set(spec) - set(_RECORD_FIELDS)
        if unknown:
            raise ValueError(f"unknown record fields {sorted(unknown)} (allowed: {_RECORD_FIELDS})")
        fields = dict(spec)
    else:
        raise TypeError(f"a record is bytes/str/None, a tuple or a dict, not {type(spec).__name__}")
    kwargs: dict[str, Any] = {"value": fields.get("value")}
    if fields.get("key") is not None:
        kwargs["key"] = fields["key"]
    if fields.get("partition") is not None:
        kwargs["partition"] = fields["partition"]
    headers = fields.get("headers")
    if headers is not None:
        kwargs["headers"] = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    if fields.get("timestamp") is not None:
        kwargs["timestamp"] = int(fields["timestamp"])
    return kwargs


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaHelper]:
    """The Kafka cluster under test: a broker this session owns, or ``$KAFKA_BOOTSTRAP_SERVERS``."""
    external = os.environ.get(EXTERNAL_ENV, "").strip()
    if external:
        helper = KafkaHelper(external, None)
        try:
            helper.admin.list_topics(timeout=15)
        except KafkaException as exc:
            pytest.fail(f"{EXTERNAL_ENV}={external} is set but that cluster does not answer: {exc}")
        yield helper
        helper.close()
        return
    started = time.monotonic()
    broker = KafkaBroker(fast_start=True)
    try:
        broker.start()
    except BaseException:
        broker.close()
        raise
    startup_s = time.monotonic() - started
    print(f"\n[kafka] broker {broker.bootstrap} (pid {broker.pid}) ready in {startup_s:.1f}s", file=sys.stderr)
    helper = KafkaHelper(broker.bootstrap, broker, startup_s)
    try:
        yield helper
    finally:
        helper.close()
        broker.close()


@pytest.fixture
def free_port() -> Callable[[], int]:
    """A function returning a free loopback TCP port (a different one per call within a test)."""
    given: set[int] = set()

    def pick() -> int:
        port = _free_port(exclude=given)
        given.add(port)
        return port

    return pick


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "broker_restart: stops/restarts the session's Kafka broker; such tests run last")
    config.addinivalue_line(
        "markers",
        "deploy: validates deploy/ with kustomize, promtool, checkov, kubernetes-validate and hadolint, "
        "installed into .cache/deploy-tools on first use (tests/deploy/conftest.py)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests using ``kafka`` as integration tests; run the broker-restarting ones last."""
    for item in items:
        if "kafka" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)
    items.sort(key=lambda item: item.get_closest_marker("broker_restart") is not None)  # stable
