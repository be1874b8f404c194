"""Kafka Connect standalone with Debezium's PostgreSQL connector, as a child JVM on loopback.

The jars come from Maven Central through ``tests/cdc/pom.xml`` into ``<repo>/.cache/cdc-connect-*/libs``
(or ``$CDC_CONNECT_LIBS_DIR``) on first use, with the same locked, marker-checked fetch as the test
broker's (tests/broker/kafka.py). Everything is on one classpath: one connector, no plugin isolation
needed, and ``plugin.discovery=service_load`` skips the classpath scan (seconds on 2 cores).

Versions: Debezium 3.6.1.Final (built against Kafka 4.3.0) runs on Connect 4.1.1, the test broker's
version, so one Kafka version serves the whole suite; see tests/cdc/README.md for the check.

The worker: standalone mode, offsets in a file in its temp folder, the REST API on a free loopback port
(connectors are created and deleted through it), source topics created by Connect itself
(``topic.creation.default.*``), since the test broker does not auto-create topics. The JVM is small and
C1-only like the broker's fast start. It is stopped by its PID (SIGTERM, SIGKILL after a timeout), and
the broker module's safety net (atexit, ``PR_SET_PDEATHSIG``) covers it as well.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx

from tests.broker.kafka import _kill_pid_group, _live_lock, _live_procs, _spawn, free_port, java_executable

CONNECT_VERSION = "4.1.1"
DEBEZIUM_VERSION = "3.6.1.Final"
REPO_ROOT = Path(__file__).resolve().parents[2]
POM = Path(__file__).resolve().parent / "pom.xml"
DEFAULT_LIBS_DIR = REPO_ROOT / ".cache" / f"cdc-connect-{CONNECT_VERSION}-debezium-{DEBEZIUM_VERSION}" / "libs"
LIBS_ENV = "CDC_CONNECT_LIBS_DIR"
MARKER_NAME = ".complete"
MARKER_TEXT = f"connect-runtime:{CONNECT_VERSION} debezium-connector-postgres:{DEBEZIUM_VERSION}\n"

JVM_OPTS = (
    "-Xms128m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:CICompilerCount=2",
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
    "-Dfile.encoding=UTF-8",
)

LOG4J2_PROPERTIES = """\
# Written by tests/cdc/connect.py: the worker's and the connector's life cycle, WARN for the chatty parts.
status = warn
name = cdc-connect
shutdownHook = disable
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d{HH:mm:ss,SSS}] %-5p %m (%c{1})%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
logger.clients.name = org.apache.kafka.clients
logger.clients.level = WARN
logger.common.name = org.apache.kafka.common
logger.common.level = WARN
logger.reflections.name = org.reflections
logger.reflections.level = ERROR
logger.jetty.name = org.eclipse.jetty
logger.jetty.level = WARN
"""


class ConnectError(RuntimeError):
    """The worker could not be fetched, started or driven; the message has the log tail."""


def libs_dir() -> Path:
    """Where the worker's jars live: ``$CDC_CONNECT_LIBS_DIR`` or ``<repo>/.cache/cdc-connect-*/libs``."""
    env = os.environ.get(LIBS_ENV)
    return Path(env).expanduser().resolve() if env else DEFAULT_LIBS_DIR


def ensure_libs(target: Path | None = None) -> Path:
    """Fetch the jars with Maven unless the cache is complete; returns the folder (process-safe)."""
    target = target or libs_dir()
    marker = target / MARKER_NAME
    if marker.is_file():
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ConnectError(f"the Connect/Debezium jars are not in {target} and `mvn` is not on PATH to fetch them")
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file():
            return target
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        cmd = [mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(POM), "dependency:copy-dependencies",
               f"-DoutputDirectory={target}", "-DincludeScope=runtime"]  # fmt: skip
        print(f"[cdc-connect] fetching Connect {CONNECT_VERSION} + Debezium {DEBEZIUM_VERSION} jars into {target}",
              file=sys.stderr)  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, check=False)
        if proc.returncode != 0:
            raise ConnectError(f"fetching the Connect jars failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                               f"{(proc.stdout + proc.stderr)[-6000:]}")  # fmt: skip
        if not (target / f"debezium-connector-postgres-{DEBEZIUM_VERSION}.jar").is_file():
            raise ConnectError(f"Maven succeeded but {target} has no debezium-connector-postgres jar")
        marker.write_text(MARKER_TEXT)
    return target


class ConnectWorker:
    """One Connect standalone worker (``ConnectStandalone``) against ``bootstrap``, REST on 127.0.0.1."""

    def __init__(
        self,
        bootstrap: str,
        *,
        rest_port: int | None = None,
        libs: Path | None = None,
        startup_timeout_s: float = 120.0,
        stop_timeout_s: float = 30.0,
        extra_config: Mapping[str, str] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.rest_port = rest_port if rest_port is not None else free_port()
        self._libs = libs
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.extra_config = dict(extra_config or {})
        self.work_dir = Path(tempfile.mkdtemp(prefix="cdc-connect-"))
        self.config_path = self.work_dir / "worker.properties"
        self.log4j_path = self.work_dir / "log4j2.properties"
        self.log_path = self.work_dir / "connect.log"
        self.offsets_path = self.work_dir / "offsets.dat"
        self.fetch_s = 0.0
        self.start_s = 0.0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._http = httpx.Client(base_url=self.url, timeout=30.0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def worker_properties(self) -> dict[str, str]:
        return {
            "bootstrap.servers": self.bootstrap,
            "listeners": f"http://127.0.0.1:{self.rest_port}",
            "rest.advertised.host.name": "127.0.0.1",
            "rest.advertised.port": str(self.rest_port),
            "offset.storage.file.filename": str(self.offsets_path),
            "offset.flush.interval.ms": "1000",
            # Converters are set per connector (start_connector); these are only the defaults.
            "key.converter": "org.apache.kafka.connect.json.JsonConverter",
            "value.converter": "org.apache.kafka.connect.json.JsonConverter",
            "plugin.discovery": "service_load",
            "topic.creation.enable": "true",
            "task.shutdown.graceful.timeout.ms": "5000",
            **self.extra_config,
        }

    def start(self) -> ConnectWorker:
        """Fetch the jars if needed, start the JVM, return when the REST API answers."""
        if self._proc is not None and self._proc.poll() is None:
            return self
        began = time.monotonic()
        libs = ensure_libs(self._libs)
        self.fetch_s = time.monotonic() - began
        self.config_path.write_text("".join(f"{k}={v}\n" for k, v in self.worker_properties().items()))
        self.log4j_path.write_text(LOG4J2_PROPERTIES)
        cmd = [java_executable(), *JVM_OPTS, f"-Dlog4j2.configurationFile={self.log4j_path}",
               f"-Dkafka.logs.dir={self.work_dir}", "-cp", str(libs / "*"),
               "org.apache.kafka.connect.cli.ConnectStandalone", str(self.config_path)]  # fmt: skip
        began = time.monotonic()
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in _reap()
        self._proc = _spawn(cmd, stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT,
                            cwd=self.work_dir)  # fmt: skip
        with _live_lock:
            _live_procs[self._proc.pid] = self._proc
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise
        self.start_s = time.monotonic() - began
        return self

    # -- REST

    def put_connector(self, name: str, config: Mapping[str, str]) -> None:
        """Create (or reconfigure) connector ``name``."""
        self._check_alive()
        resp = self._http.put(f"/connectors/{name}/config", json=dict(config))
        if resp.status_code not in (200, 201):
            raise ConnectError(f"PUT connector {name}: HTTP {resp.status_code} {resp.text}\n{self.log_tail(30)}")

    def status(self, name: str) -> dict[str, Any]:
        resp = self._http.get(f"/connectors/{name}/status")
        resp.raise_for_status()
        result: dict[str, Any] = resp.json()
        return result

    def wait_running(self, name: str, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until the connector and its task run; a FAILED one raises with its trace at once."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            self._check_alive()
            with contextlib.suppress(httpx.HTTPError):
                last = self.status(name)
                states = [last["connector"]["state"], *(t["state"] for t in last.get("tasks", []))]
                if "FAILED" in states:
                    traces = [last["connector"].get("trace"), *(t.get("trace") for t in last.get("tasks", []))]
                    raise ConnectError(f"connector {name} failed: {[t for t in traces if t]}")
                if len(states) > 1 and all(s == "RUNNING" for s in states):
                    return last
            time.sleep(0.2)
        raise ConnectError(f"connector {name} not running after {timeout:.0f}s: {last}\n{self.log_tail(40)}")

    def delete_connector(self, name: str) -> None:
        resp = self._http.delete(f"/connectors/{name}")
        if resp.status_code not in (204, 404):
            raise ConnectError(f"DELETE connector {name}: HTTP {resp.status_code} {resp.text}")

    # -- life cycle

    def stop(self) -> None:
        """SIGTERM to the worker's PID (its connectors stop cleanly), SIGKILL after ``stop_timeout_s``."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            _kill_pid_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                print(f"[cdc-connect] pid {proc.pid} ignored SIGTERM; killing it", file=sys.stderr)
                self.kill()
                return
        self._reap()

    def kill(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            _kill_pid_group(proc, signal.SIGKILL)
            proc.wait(timeout=30)
        self._reap()

    def close(self) -> None:
        """Stop the worker and delete its folder."""
        try:
            self.stop()
        finally:
            self._http.close()
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_bytes()[-200_000:].decode("utf-8", "replace")
        except OSError:
            return "(no worker log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> ConnectWorker:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ConnectWorker(url={self.url!r}, pid={self.pid}, bootstrap={self.bootstrap!r})"

    # -- internals

    def _check_alive(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            code = None if self._proc is None else self._proc.returncode
            raise ConnectError(f"the Connect worker is not running (exit {code}); log {self.log_path}:\n"
                               f"{self.log_tail()}")  # fmt: skip

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        last = "no answer yet"
        while True:
            self._check_alive()
            if time.monotonic() > deadline:
                raise ConnectError(f"Connect not ready within {self.startup_timeout_s:.0f}s ({last}); "
                                   f"log {self.log_path}:\n{self.log_tail()}")  # fmt: skip
            try:
                resp = self._http.get("/connector-plugins", timeout=2.0)
                if resp.status_code == 200:
                    return
                last = f"HTTP {resp.status_code}"
            except httpx.HTTPError as exc:
                last = repr(exc)
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
