"""The CDC test bed: real SQL into PostgreSQL, read back what Debezium wrote to Kafka.

Usage (the ``kafka`` fixture's bootstrap, or any reachable cluster)::

    with CdcBed(kafka.bootstrap) as bed:
        bed.sql("CREATE TABLE t (id serial PRIMARY KEY, email text)")
        topic = bed.start_connector("c1", tables=["public.t"])          # waits for the slot to be active
        bed.sql("INSERT INTO t (email) VALUES (%s)", ("a@example.com",))
        records = bed.wait_for_topic_records(topic, 1)

Why it is shaped like this:

- One PostgreSQL server and one Connect worker per bed (per test session with a session fixture);
  each connector gets its own topic prefix, replication slot and publication, so tests on the same bed
  (and on a shared broker) never see one another's events. ``slot.drop.on.stop``: a deleted connector
  drops its slot, which would otherwise pin WAL for the rest of the session.
- :meth:`start_connector` returns once the connector's replication slot is *active*: from then on
  every committed change is streamed, so a test can write right away without sleeping.
- Converter set-ups are named parameters (schemas on/off, ``decimal.handling.mode``, the
  ExtractNewRecordState SMT) because those are what change the shape of what the connector under
  test reads; anything else goes through ``props``.
- :meth:`stop` stops Connect first (so Debezium closes its replication connection), then PostgreSQL,
  each by its PID.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException
from confluent_kafka import TopicPartition as TP

from tests.cdc.connect import ConnectWorker
from tests.cdc.postgres import DATABASE, SUPERUSER, PostgresServer

JSON_CONVERTER = "org.apache.kafka.connect.json.JsonConverter"
_SQL_NAME = re.compile(r"[^a-z0-9_]")


@dataclass(frozen=True)
class CdcRecord:
    """One record as Debezium wrote it: raw bytes plus the JSON-decoded key and value (None: tombstone)."""

    topic: str
    partition: int
    offset: int
    raw_key: bytes | None
    raw_value: bytes | None

    @property
    def key(self) -> Any:
        return None if self.raw_key is None else json.loads(self.raw_key)

    @property
    def value(self) -> Any:
        return None if self.raw_value is None else json.loads(self.raw_value)


class CdcBed:
    """PostgreSQL (``wal_level=logical``) + Connect standalone with Debezium, against ``bootstrap``."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.postgres = PostgresServer()
        self.connect = ConnectWorker(bootstrap)
        self.connectors: dict[str, str] = {}  # name -> topic prefix
        self.timings: dict[str, float] = {}

    def start(self) -> CdcBed:
        """Start PostgreSQL, then the Connect worker (fetching its jars on first use); records timings."""
        began = time.monotonic()
        try:
            self.postgres.start()
            self.timings["postgres_s"] = time.monotonic() - began
            self.timings["postgres_initdb_s"] = self.postgres.init_s
            began = time.monotonic()
            self.connect.start()
            self.timings["connect_s"] = time.monotonic() - began
            self.timings["connect_fetch_s"] = self.connect.fetch_s
        except BaseException:
            self.stop()
            raise
        return self

    # -- SQL

    def sql(self, statement: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Run one statement in its own autocommitted transaction; returns its rows (``[]`` if none)."""
        with self.postgres.connect() as conn, conn.cursor() as cur:
            cur.execute(statement, params)
            return list(cur.fetchall()) if cur.description is not None else []

    def sql_many(self, statements: Iterable[str]) -> None:
        """Run several statements in one transaction (one commit: Debezium sees them together)."""
        with self.postgres.connect(autocommit=False) as conn:
            with conn.cursor() as cur:
                for statement in statements:
                    cur.execute(statement)
            conn.commit()

    # -- connectors

    def start_connector(
        self,
        name: str,
        *,
        tables: Sequence[str],
        schemas: bool = True,
        decimal_handling_mode: str = "precise",
        unwrap: bool = False,
        snapshot_mode: str = "no_data",
        props: Mapping[str, str] | None = None,
        timeout: float = 90.0,
    ) -> str:
        """Start a Debezium PostgreSQL connector on ``tables``; returns its topic prefix.

        The topic of table ``schema.table`` is ``<prefix>.<schema>.<table>``. ``schemas``: JsonConverter's
        ``schemas.enable`` for key and value; ``unwrap``: the ExtractNewRecordState SMT named ``unwrap``
        with Debezium's defaults (``props`` sets ``transforms.unwrap.*`` options such as ``add.fields``).
        ``snapshot_mode``: ``no_data`` streams changes made from now on only; ``initial`` also reads
        the rows already there (``op: r``). Returns once the replication slot is active.
        """
        if name in self.connectors:
            raise ValueError(f"connector {name} already started on this bed")
        suffix = uuid.uuid4().hex[:8]
        safe = _SQL_NAME.sub("_", name.lower())
        prefix = f"cdc-{safe}-{suffix}"
        slot = f"cdc_{safe}_{suffix}"[:63]
        config: dict[str, str] = {
            "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
            "tasks.max": "1",
            "plugin.name": "pgoutput",
            "database.hostname": "127.0.0.1",
            "database.port": str(self.postgres.port),
            "database.user": SUPERUSER,
            "database.password": "",
            "database.dbname": DATABASE,
            "topic.prefix": prefix,
            "slot.name": slot,
            "slot.drop.on.stop": "true",
            "publication.name": f"{slot}_pub"[:63],
            "publication.autocreate.mode": "filtered",
            "table.include.list": ",".join(tables),
            "snapshot.mode": snapshot_mode,
            "decimal.handling.mode": decimal_handling_mode,
            "key.converter": JSON_CONVERTER,
            "key.converter.schemas.enable": str(schemas).lower(),
            "value.converter": JSON_CONVERTER,
            "value.converter.schemas.enable": str(schemas).lower(),
            "topic.creation.default.replication.factor": "1",
            "topic.creation.default.partitions": "1",
            "poll.interval.ms": "100",
            "status.update.interval.ms": "1000",
        }
        if unwrap:
            config |= {
                "transforms": "unwrap",
                "transforms.unwrap.type": "io.debezium.transforms.ExtractNewRecordState",
            }
        config |= dict(props or {})
        self.connect.put_connector(name, config)
        self.connectors[name] = prefix
        self.connect.wait_running(name, timeout=timeout)
        deadline = time.monotonic() + timeout
        while True:
            rows = self.sql("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,))
            if rows and rows[0][0]:
                return prefix
            if time.monotonic() > deadline:
                raise AssertionError(f"replication slot {slot} of connector {name} not active after {timeout:.0f}s;"
                                     f" status {self.connect.status(name)}\n{self.connect.log_tail(40)}")  # fmt: skip
            self.connect.wait_running(name, timeout=timeout)  # raises at once if the task failed meanwhile
            time.sleep(0.2)

    def stop_connector(self, name: str) -> None:
        """Delete the connector (its slot is dropped with it)."""
        self.connect.delete_connector(name)
        self.connectors.pop(name, None)

    # -- reading back

    def wait_for_topic_records(self, topic: str, n: int, timeout: float = 60.0) -> list[CdcRecord]:
        """The first ``n`` records of ``topic`` (partition 0 first), waiting for the topic and the records.

        Fails with what was read so far when fewer than ``n`` arrive within ``timeout``.
        """
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"cdc-bed-{uuid.uuid4().hex}",  # never joins nor commits: assign() below
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
            }
        )
        out: list[CdcRecord] = []
        deadline = time.monotonic() + timeout
        try:
            partitions: list[int] = []
            while not partitions:
                md = consumer.list_topics(topic, timeout=5)
                t = md.topics.get(topic)
                if t is not None and t.error is None and t.partitions:
                    partitions = sorted(t.partitions)
                elif time.monotonic() > deadline:
                    raise AssertionError(f"topic {topic} does not exist after {timeout:.0f}s\n"
                                         f"{self.connect.log_tail(30)}")  # fmt: skip
                else:
                    time.sleep(0.2)
            consumer.assign([TP(topic, p, OFFSET_BEGINNING) for p in partitions])
            while len(out) < n:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{len(out)} of {n} records on {topic} after {timeout:.0f}s: "
                                         f"{[r.raw_value for r in out]}\n{self.connect.log_tail(30)}")  # fmt: skip
                for m in consumer.consume(num_messages=n - len(out), timeout=0.2):
                    err = m.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF or err.retriable():
                            continue
                        raise KafkaException(err)
                    partition, offset = m.partition(), m.offset()
                    assert partition is not None and offset is not None  # set on every consumed record
                    out.append(CdcRecord(topic, partition, offset, m.key(), m.value()))
        finally:
            consumer.close()
        return sorted(out, key=lambda r: (r.partition, r.offset))

    # -- life cycle

    def stop(self) -> None:
        """Stop Connect, then PostgreSQL (each by PID) and delete their folders; safe to call twice."""
        try:
            self.connect.close()
        finally:
            self.postgres.close()

    def __enter__(self) -> CdcBed:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
