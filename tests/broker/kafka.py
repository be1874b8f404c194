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
  (``PR_SET_PDEATHSIG``, set from a launcher thread that lives as long as the process), so even a
  SIGKILLed test run leaves no broker behind. :meth:`KafkaBroker.restart` may be called from any thread.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import fcntl
import os
import queue
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

T = TypeVar("T")

KAFKA_VERSION = "4.1.1"
REPO_ROOT = Path(__file__).resolve().parents[2]
POM = Path(__file__).resolve().parent / "pom.xml"
DEFAULT_LIBS_DIR = REPO_ROOT / ".cache" / f"kafka-{KAFKA_VERSION}" / "libs"
LIBS_ENV = "KAFKA_LIBS_DIR"
MARKER_NAME = ".complete"
# Keep in sync with .ci/install-kafka.sh.
MARKER_TEXT = f"kafka_2.13:{KAFKA_VERSION}\n"

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

LOG4J2_PROPERTIES = """\
# Written by tests/broker/kafka.py. INFO for the broker's life cycle, WARN for the chatty parts.
status = warn
name = test-broker
shutdownHook = disable
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d{HH:mm:ss,SSS}] %-5p %m (%c{1})%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
# The full config dumps ("KafkaConfig values: ...", one per internal client) are hundreds of lines.
logger.config.name = kafka.server.KafkaConfig
logger.config.level = WARN
logger.clientconfig.name = org.apache.kafka.clients
logger.clientconfig.level = WARN
logger.common.name = org.apache.kafka.common
logger.common.level = WARN
# One line per partition and per segment: noise with many small test topics.
logger.log.name = kafka.log
logger.log.level = WARN
logger.storage.name = org.apache.kafka.storage
logger.storage.level = WARN
logger.partition.name = kafka.cluster.Partition
logger.partition.level = WARN
logger.replicamgr.name = kafka.server.ReplicaManager
logger.replicamgr.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.fetcher.name = kafka.server.ReplicaFetcherManager
logger.fetcher.level = WARN
logger.alterlog.name = kafka.server.ReplicaAlterLogDirsManager
logger.alterlog.level = WARN
logger.metaloader.name = org.apache.kafka.image
logger.metaloader.level = WARN
logger.raftlog.name = kafka.raft.KafkaMetadataLog
logger.raftlog.level = WARN
"""


class BrokerError(RuntimeError):
    """The broker could not be fetched, formatted, started or stopped; the message has the log tail."""


# -- jars


def libs_dir() -> Path:
    """Where the broker's jars live: ``$KAFKA_LIBS_DIR`` or ``<repo>/.cache/kafka-4.1.1/libs``."""
    env = os.environ.get(LIBS_ENV)
    return Path(env).expanduser().resolve() if env else DEFAULT_LIBS_DIR


def ensure_libs(target: Path | None = None, *, quiet: bool = True) -> Path:
    """Fetch the jars with Maven unless the cache is complete; returns the folder.

    Safe to call from several processes at once (a file lock serialises the fetch).
    """
    target = target or libs_dir()
    marker = target / MARKER_NAME
    if marker.is_file():
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError(
            f"the Kafka jars are not in {target} and `mvn` is not on PATH to fetch them "
            f"(install Maven, or run .ci/install-kafka.sh, or set {LIBS_ENV} to a folder holding them)"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.parent / f".{target.name}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file():  # another process fetched them while we waited
            return target
        target.mkdir(parents=True, exist_ok=True)
        cmd = [
            mvn,
            "-B",
            "-Dstyle.color=never",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={target}",
            "-DincludeScope=runtime",
        ]
        if quiet:
            cmd.insert(1, "-q")
        print(f"[kafka-broker] fetching Kafka {KAFKA_VERSION} jars into {target} ...", file=sys.stderr)
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, check=False)
        if proc.returncode != 0:
            raise BrokerError(
                f"fetching the Kafka jars failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                f"{_tail_text(proc.stdout + proc.stderr, 60)}"
            )
        if not list(target.glob(f"kafka_2.13-{KAFKA_VERSION}.jar")):
            raise BrokerError(f"Maven succeeded but {target} has no kafka_2.13-{KAFKA_VERSION}.jar")
        marker.write_text(MARKER_TEXT)
    return target


def java_executable() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("java")
    if found is None:
        raise BrokerError("`java` (JDK/JRE 17+) is not on PATH and JAVA_HOME is not set: cannot run the broker")
    return found


# -- ports


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``host:port`` now.

    With SO_REUSEADDR, like the JVM's server sockets: connections of a just-stopped broker lingering in
    TIME_WAIT do not count, a socket bound or listening there does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1", *, exclude: set[int] | frozenset[int] = frozenset()) -> int:
    """A TCP port nobody listens on at ``host``, chosen below the kernel's ephemeral range.

    Ports below the ephemeral range are never handed out as a client's local port, so a port stays
    free while our server is briefly down (restart) and a client retrying a connection to it cannot
    end up connected to itself. Falls back to a kernel-chosen port.
    """
    eph_lo, _eph_hi = _ephemeral_range()
    lo, hi = 20000, eph_lo - 1
    if hi - lo > 1000:
        for _ in range(200):
            port = random.randint(lo, hi)
            if port not in exclude and port_is_free(port, host):
                return port
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port not in exclude:
            return port
    raise BrokerError("could not find a free loopback port")


def _port_accepts(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        try:
            s.connect((host, port))
        except OSError:
            return False
    return True


# -- process safety net

_live: weakref.WeakSet[KafkaBroker] = weakref.WeakSet()
_live_procs: dict[int, subprocess.Popen[bytes]] = {}
_live_lock = threading.Lock()

_PR_SET_PDEATHSIG = 1


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:
        pass


class _Launcher:
    """Starts the JVMs from one daemon thread that lives as long as this process.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process: a broker
    started (or restarted) from a short-lived thread would be SIGKILLed as soon as that thread ends.
    Forking from this thread ties the JVM's life to the whole Python process instead.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run(self, fn: Callable[[], T]) -> T:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="kafka-broker-launcher", daemon=True)
                self._thread.start()
        fut: Future[T] = Future()
        self._jobs.put((fn, fut))
        return fut.result()

    def _loop(self) -> None:
        while True:
            fn, fut = self._jobs.get()
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)


_launcher = _Launcher()


def _spawn(cmd: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """Popen in its own session, killed by the kernel if this process dies (Linux)."""
    linux = sys.platform.startswith("linux")
    return _launcher.run(
        lambda: subprocess.Popen(
            cmd,
            start_new_session=True,  # Ctrl-C in a terminal reaches us, not the JVM; we stop it in order
            preexec_fn=_set_pdeathsig if linux else None,
            **kwargs,
        )
    )


def _kill_pid_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)  # the JVM leads its own session/group (start_new_session=True)
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)


@atexit.register
def _kill_leftovers() -> None:
    with _live_lock:
        procs = list(_live_procs.values())
        _live_procs.clear()
    for proc in procs:
        if proc.poll() is None:
            _kill_pid_group(proc, signal.SIGKILL)
            with contextlib.suppress(Exception):
                proc.wait(timeout=10)
    for broker in list(_live):
        with contextlib.suppress(Exception):
            broker.close()


def _tail_text(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


# -- the broker


class KafkaBroker:
    """One Kafka 4.1.1 KRaft node (``process.roles=broker,controller``) on 127.0.0.1."""

    NODE_ID = 1

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
        self._own_work_dir = work_dir is None
        self.work_dir = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="kafka-test-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.work_dir / "data"
        self.config_path = self.work_dir / "server.properties"
        self.log4j_path = self.work_dir / "log4j2.properties"
        self.log_path = self.work_dir / "broker.log"
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.extra_config = dict(extra_config or {})
        self.jvm_opts = jvm_opts + (FAST_START_JVM_OPTS if fast_start else ())
        self.cluster_id: str | None = None
        self.starts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._closed = False
        _live.add(self)

    # -- public surface

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> KafkaBroker:
        """Start the JVM (formatting the storage on first start) and wait until metadata requests work."""
        if self._closed:
            raise BrokerError("this broker was closed")
        if self.running:
            return self
        libs = ensure_libs(self._libs)
        java = java_executable()
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
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in _reap()
        self._log_file.write(f"\n===== start #{self.starts} of the test broker at {time.ctime()} =====\n".encode())
        self._log_file.flush()
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
        self._proc = _spawn(
            cmd, stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT, cwd=self.work_dir
        )
        with _live_lock:
            _live_procs[self._proc.pid] = self._proc
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise
        return self

    def stop(self, timeout_s: float | None = None) -> None:
        """SIGTERM (a clean shutdown), SIGKILL after ``timeout_s``; waits for the process to exit."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            _kill_pid_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout_s if timeout_s is None else timeout_s)
            except subprocess.TimeoutExpired:
                print(f"[kafka-broker] pid {proc.pid} ignored SIGTERM; killing it", file=sys.stderr)
                _kill_pid_group(proc, signal.SIGKILL)
                proc.wait(timeout=30)
        self._reap()

    def kill(self) -> None:
        """SIGKILL: an unclean crash (the next start recovers the logs)."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            _kill_pid_group(proc, signal.SIGKILL)
            proc.wait(timeout=30)
        self._reap()

    def restart(self, *, hard: bool = False, downtime_s: float = 0.0) -> KafkaBroker:
        """Stop (SIGTERM, or SIGKILL with ``hard``) and start again on the same ports and data."""
        if hard:
            self.kill()
        else:
            self.stop()
        if downtime_s:
            time.sleep(downtime_s)
        return self.start()

    def close(self) -> None:
        """Stop the broker and delete its work folder (when we created it)."""
        if self._closed:
            return
        try:
            self.stop()
        finally:
            self._closed = True
            if self._own_work_dir:
                shutil.rmtree(self.work_dir, ignore_errors=True)

    def log_tail(self, lines: int = 80) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return "(no broker log)"
        return _tail_text(data[-200_000:].decode("utf-8", "replace"), lines)

    def __enter__(self) -> KafkaBroker:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(Exception):
                _kill_pid_group(proc, signal.SIGKILL)
                proc.wait(timeout=10)
        with contextlib.suppress(Exception):
            self._reap()

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
                f"{_tail_text(proc.stdout + proc.stderr, 40)}"
            )

    def _wait_ready(self) -> None:
        from confluent_kafka.admin import AdminClient

        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout_s
        last_error = "the broker port never accepted a connection"
        admin: AdminClient | None = None
        while True:
            code = self._proc.poll()
            if code is not None:
                raise BrokerError(
                    f"the Kafka broker exited with code {code} while starting; "
                    f"log {self.log_path}, last lines:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"the Kafka broker did not become ready within {self.startup_timeout_s:.0f}s "
                    f"({last_error}); log {self.log_path}, last lines:\n{self.log_tail()}"
                )
            if not _port_accepts(self.port):
                time.sleep(0.1)
                continue
            if admin is None:
                admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 2})
            try:
                md = admin.list_topics(timeout=2)
            except Exception as exc:  # KafkaException: not ready yet
                last_error = f"metadata request failed: {exc}"
                time.sleep(0.2)
                continue
            if self.NODE_ID in md.brokers:
                return
            last_error = f"metadata lists brokers {sorted(md.brokers)}"
            time.sleep(0.2)

    def _reap(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is not None:
            with _live_lock:
                _live_procs.pop(proc.pid, None)
            self._proc = None
        if self._proc is None and self._log_file is not None:
            self._log_file.close()
            self._log_file = None
