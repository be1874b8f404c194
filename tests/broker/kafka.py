"""A real Apache Kafka 4.1.1 broker for the tests: one KRaft node (broker + controller) on loopback.

The jars come from Maven Central through ``tests/broker/pom.xml`` into a cache folder (default
``<repo>/.cache/kafka-4.1.1/libs``, or ``$KAFKA_LIBS_DIR``); :func:`ensure_libs` fetches them when the
cache is missing (``.ci/install-kafka.sh`` does the same fetch ahead of time). Needs ``java`` (17+) and,
for the first fetch only, ``mvn``.

Usage::

    with KafkaBroker() as broker:
        print(broker.bootstrap)        # "127.0.0.1:PORT"
        broker.restart()               # same ports, same data: clients reconnect to the same address

Choices worth knowing:

- The broker and controller ports are chosen once, below the kernel's ephemeral port range (so no
  client socket can take them while the broker is down for a restart, and a client reconnecting to a
  stopped broker cannot connect to itself), and kept across :meth:`KafkaBroker.restart`.
- ``auto.create.topics.enable=false``: tests create their topics explicitly (and wait for the leaders),
  so a typo in a topic name fails loudly instead of silently creating a one-partition topic.
- Internal topics are small (``offsets.topic.num.partitions=4`` and friends, replication factor 1) so
  the first consumer group does not wait for 50 partitions to be created.
- The JVM is kept modest for a 2-core machine: 256-512 MB heap, serial GC, two JIT compiler threads,
  and by default (``fast_start``) the C1 JIT only, which halves the start time.
- Every started JVM is stopped by its PID: :meth:`KafkaBroker.stop` (SIGTERM, then SIGKILL), an atexit
  hook and a finalizer; on Linux the JVM also gets SIGKILL when this Python process dies
  (``PR_SET_PDEATHSIG``), so even a SIGKILLed test run leaves no broker behind; see tests/procs.py,
  which the CDC bed's servers share. :meth:`KafkaBroker.restart` may be called from any thread.
"""

from __future__ import annotations

import base64
import contextlib
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

from tests.procs import (
    CACHE_DIR,
    ChildError,
    ChildServer,
    MavenJars,
    close_at_exit,
    free_port,
    java_executable,
    log4j2_properties,
    port_accepts,
    port_is_free,
    tail_lines,
)

# free_port and friends moved to tests/procs.py; conftest and older callers import them from here.
__all__ = [
    "KAFKA_VERSION",
    "BrokerError",
    "KafkaBroker",
    "ensure_libs",
    "free_port",
    "java_executable",
    "libs_dir",
    "port_is_free",
]

KAFKA_VERSION = "4.1.1"
JARS = MavenJars(
    pom=Path(__file__).resolve().parent / "pom.xml",
    default_dir=CACHE_DIR / f"kafka-{KAFKA_VERSION}" / "libs",
    env="KAFKA_LIBS_DIR",
    artifacts={"kafka_2.13": KAFKA_VERSION},
    hint=", or run .ci/install-kafka.sh",
)
# Keep in sync with .ci/install-kafka.sh, which fetches the same jars into the same folder.
MARKER_TEXT = JARS.marker_text
libs_dir = JARS.libs_dir  # $KAFKA_LIBS_DIR or <repo>/.cache/kafka-4.1.1/libs


class BrokerError(ChildError):
    """The broker could not be fetched, formatted, started or stopped; the message has the log tail."""


def ensure_libs(target: Path | None = None, *, quiet: bool = True) -> Path:
    """Fetch the jars with Maven unless the cache is complete; returns the folder (process-safe)."""
    return JARS.ensure(target, quiet=quiet, error=BrokerError)


JVM_OPTS = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:CICompilerCount=2",
    "-XX:MaxInlineLevel=15",
    "-Djava.awt.headless=true",
    "-Dfile.encoding=UTF-8",
)
# C1 only: the broker is ready in about half the time (~2.5 s instead of ~5 s on 2 cores); its peak
# throughput is lower, which no functional test notices. Benchmarks should run with fast_start=False.
FAST_START_JVM_OPTS = ("-XX:TieredStopAtLevel=1",)
TOOL_JVM_OPTS = ("-Xms64m", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")

# INFO for the broker's life cycle, WARN for the chatty parts.
LOG4J2_PROPERTIES = log4j2_properties(
    "test-broker",
    "tests/broker/kafka.py",
    {
        # The full config dumps ("KafkaConfig values: ...", one per internal client) are hundreds of lines.
        "kafka.server.KafkaConfig": "WARN",
        "org.apache.kafka.clients": "WARN",
        "org.apache.kafka.common": "WARN",
        # One line per partition and per segment: noise with many small test topics.
        "kafka.log": "WARN",
        "org.apache.kafka.storage": "WARN",
        "kafka.cluster.Partition": "WARN",
        "kafka.server.ReplicaManager": "WARN",
        "state.change.logger": "WARN",
        "kafka.request.logger": "WARN",
        "kafka.server.ReplicaFetcherManager": "WARN",
        "kafka.server.ReplicaAlterLogDirsManager": "WARN",
        "org.apache.kafka.image": "WARN",
        "kafka.raft.KafkaMetadataLog": "WARN",
    },
)


# -- the broker


class KafkaBroker(ChildServer):
    """One Kafka 4.1.1 KRaft node (``process.roles=broker,controller``) on 127.0.0.1."""

    NODE_ID = 1
    what = "the Kafka broker"
    tag = "kafka-broker"
    error = BrokerError
    temp_prefix = "kafka-test-"
    log_name = "broker.log"
    tail_default = 80

    def __init__(
        self,
        *,
        port: int | None = None,
        controller_port: int | None = None,
        libs: Path | str | None = None,
        work_dir: Path | str | None = None,
        startup_timeout_s: float = 60.0,
        stop_timeout_s: float = 30.0,
        extra_config: Mapping[str, str | int | bool] | None = None,
        jvm_opts: tuple[str, ...] = JVM_OPTS,
        fast_start: bool = True,
    ) -> None:
        self._auto_ports = (port is None, controller_port is None)
        self.port = port if port is not None else free_port()
        self.controller_port = controller_port if controller_port is not None else free_port(exclude={self.port})
        if self.port == self.controller_port:
            raise ValueError("the broker and controller ports must differ")
        self._libs = Path(libs).resolve() if libs is not None else None
        super().__init__(work_dir, startup_timeout_s, stop_timeout_s)
        self.data_dir = self.work_dir / "data"
        self.config_path = self.work_dir / "server.properties"
        self.log4j_path = self.work_dir / "log4j2.properties"
        self.extra_config = dict(extra_config or {})
        self.jvm_opts = jvm_opts + (FAST_START_JVM_OPTS if fast_start else ())
        self.cluster_id: str | None = None
        self.starts = 0
        close_at_exit(self)

    # -- public surface

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> KafkaBroker:
        """Start the JVM (formatting the storage on first start) and wait until metadata requests work."""
        if self._closed:
            raise BrokerError("this broker was closed")
        if self.running:
            return self
        libs = ensure_libs(self._libs)
        java = java_executable(BrokerError)
        classpath = str(libs / "*")
        if self.starts == 0:  # ports we picked may have been taken since: pick again before first use
            if self._auto_ports[0] and not port_is_free(self.port):
                self.port = free_port(exclude={self.controller_port})
            if self._auto_ports[1] and not port_is_free(self.controller_port):
                self.controller_port = free_port(exclude={self.port})
        self._write_config()
        if not (self.data_dir / "meta.properties").is_file():
            # --standalone records the controller endpoint in the data dir: ports are fixed from here on.
            self._format(java, classpath)
        for p in (self.port, self.controller_port):
            if not port_is_free(p):
                raise BrokerError(f"port 127.0.0.1:{p} is taken: cannot start the broker on it")
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts} of the test broker at {time.ctime()} =====\n".encode())
        cmd = [
            java,
            *self.jvm_opts,
            f"-Dlog4j2.configurationFile={self.log4j_path}",
            f"-Dkafka.logs.dir={self.work_dir}",
            "-cp",
            classpath,
            "kafka.Kafka",
            str(self.config_path),
        ]
        self._launch(cmd, self._metadata_probe())
        return self

    def restart(self, *, hard: bool = False, downtime_s: float = 0.0) -> KafkaBroker:
        """Stop (SIGTERM, or SIGKILL with ``hard``) and start again on the same ports and data."""
        if hard:
            self.kill()
        else:
            self.stop()
        if downtime_s:
            time.sleep(downtime_s)
        return self.start()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.kill()

    def __repr__(self) -> str:
        return f"KafkaBroker(bootstrap={self.bootstrap!r}, pid={self.pid}, work_dir={str(self.work_dir)!r})"

    # -- internals

    def server_properties(self) -> dict[str, str]:
        p, cp = self.port, self.controller_port
        props: dict[str, str | int | bool] = {
            "process.roles": "broker,controller",
            "node.id": self.NODE_ID,
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{cp}",
            "listeners": f"PLAINTEXT://127.0.0.1:{p},CONTROLLER://127.0.0.1:{cp}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{p},CONTROLLER://127.0.0.1:{cp}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            # Tests create their topics explicitly (see the module docstring).
            "auto.create.topics.enable": False,
            "num.partitions": 1,
            "default.replication.factor": 1,
            "min.insync.replicas": 1,
            # Internal topics: one replica, few partitions (created on first use; 50 would take seconds).
            "offsets.topic.replication.factor": 1,
            "offsets.topic.num.partitions": 4,
            "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1,
            "transaction.state.log.num.partitions": 4,
            "share.coordinator.state.topic.replication.factor": 1,
            "share.coordinator.state.topic.min.isr": 1,
            "share.coordinator.state.topic.num.partitions": 1,
            # Groups: no initial rebalance delay; fast session timeouts are allowed for failover tests.
            "group.initial.rebalance.delay.ms": 0,
            "group.min.session.timeout.ms": 1000,
            "group.consumer.min.session.timeout.ms": 1000,
            "group.consumer.min.heartbeat.interval.ms": 500,
            # After a SIGKILL the controller refuses the restarted broker's registration until the old
            # incarnation's session expires (default 9 s): keep that short.
            "broker.session.timeout.ms": 4000,
            "broker.heartbeat.interval.ms": 1000,
            "num.network.threads": 2,
            "num.io.threads": 4,
            "num.recovery.threads.per.data.dir": 1,
            "log.cleaner.threads": 1,
            "log.cleaner.dedupe.buffer.size": 8 * 1024 * 1024,
            "background.threads": 2,
            **self.extra_config,
        }
        return {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in props.items()}

    def _write_config(self) -> None:
        lines = ["# Written by tests/broker/kafka.py"]
        lines += [f"{k}={v}" for k, v in self.server_properties().items()]
        self.config_path.write_text("\n".join(lines) + "\n")
        self.log4j_path.write_text(LOG4J2_PROPERTIES)

    def _format(self, java: str, classpath: str) -> None:
        # A Kafka cluster id is a base64url (no padding) UUID; make one here rather than spend a JVM start.
        # (Kafka's own Uuid.randomUuid() also never returns one starting with "-": it would read as an option.)
        while True:
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            if not cluster_id.startswith("-"):
                break
        self.cluster_id = cluster_id
        cmd = [
            java,
            *TOOL_JVM_OPTS,
            f"-Dlog4j2.configurationFile={self.log4j_path}",
            "-cp",
            classpath,
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            f"--cluster-id={self.cluster_id}",
            "-c",
            str(self.config_path),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=self.work_dir, timeout=120, check=False)
        with open(self.log_path, "a") as log:
            log.write(f"===== storage format: {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
        if proc.returncode != 0:
            raise BrokerError(
                f"formatting the KRaft storage failed (exit {proc.returncode}):\n"
                f"{tail_lines(proc.stdout + proc.stderr, 40)}"
            )

    def _metadata_probe(self) -> Callable[[], str | None]:
        """Ready when a metadata request lists this node (an open port alone is not enough)."""
        from confluent_kafka.admin import AdminClient

        admin: AdminClient | None = None

        def not_ready() -> str | None:
            nonlocal admin
            if not port_accepts(self.port):
                return "the broker port never accepted a connection"
            if admin is None:
                admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 2})
            try:
                md = admin.list_topics(timeout=2)
            except Exception as exc:  # KafkaException: not ready yet
                return f"metadata request failed: {exc}"
            return None if self.NODE_ID in md.brokers else f"metadata lists brokers {sorted(md.brokers)}"

        return not_ready
