"""Kafka Connect standalone with Debezium's PostgreSQL connector, as a child JVM on loopback.

The jars come from Maven Central through ``tests/cdc/pom.xml`` into ``<repo>/.cache/cdc-connect-*/libs``
(or ``$CDC_CONNECT_LIBS_DIR``) on first use, with the same locked, marker-checked fetch as the test
broker's (tests/procs.py). Everything is on one classpath: one connector, no plugin isolation
needed, and ``plugin.discovery=service_load`` skips the classpath scan (seconds on 2 cores).

Versions: Debezium 3.6.1.Final (built against Kafka 4.3.0) runs on Connect 4.1.1, the test broker's
version, so one Kafka version serves the whole suite; see tests/cdc/README.md for the check.

The worker: standalone mode, offsets in a file in its temp folder, the REST API on a free loopback port
(connectors are created and deleted through it), source topics created by Connect itself
(``topic.creation.default.*``), since the test broker does not auto-create topics. The JVM is small and
C1-only like the broker's fast start. It is stopped by its PID (SIGTERM, SIGKILL after a timeout), with
the safety net of tests/procs.py (atexit, ``PR_SET_PDEATHSIG``) that the broker has too.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from tests.procs import (
    CACHE_DIR,
    ChildError,
    ChildServer,
    MavenJars,
    free_port,
    java_executable,
    log4j2_properties,
)

CONNECT_VERSION = "4.1.1"
DEBEZIUM_VERSION = "3.6.1.Final"
JARS = MavenJars(
    pom=Path(__file__).resolve().parent / "pom.xml",
    default_dir=CACHE_DIR / f"cdc-connect-{CONNECT_VERSION}-debezium-{DEBEZIUM_VERSION}" / "libs",
    env="CDC_CONNECT_LIBS_DIR",
    artifacts={
        "connect-runtime": CONNECT_VERSION,
        "debezium-connector-postgres": DEBEZIUM_VERSION,
    },
    clean=True,
)
libs_dir = JARS.libs_dir  # $CDC_CONNECT_LIBS_DIR or <repo>/.cache/cdc-connect-*/libs


class ConnectError(ChildError):
    """The worker could not be fetched, started or driven; the message has the log tail."""


def ensure_libs(target: Path | None = None) -> Path:
    """Fetch the jars with Maven unless the cache is complete; returns the folder (process-safe)."""
    return JARS.ensure(target, error=ConnectError)


JVM_OPTS = (
    "-Xms128m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:CICompilerCount=2",
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
    "-Dfile.encoding=UTF-8",
)

# The worker's and the connector's life cycle at INFO, WARN for the chatty parts.
LOG4J2_PROPERTIES = log4j2_properties(
    "cdc-connect",
    "tests/cdc/connect.py",
    {
        "org.apache.kafka.clients": "WARN",
        "org.apache.kafka.common": "WARN",
        "org.reflections": "ERROR",
        "org.eclipse.jetty": "WARN",
    },
)


class ConnectWorker(ChildServer):
    """One Connect standalone worker (``ConnectStandalone``) against ``bootstrap``, REST on 127.0.0.1."""

    what = "the Connect worker"
    tag = "cdc-connect"
    error = ConnectError
    temp_prefix = "cdc-connect-"
    log_name = "connect.log"

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
        self.extra_config = dict(extra_config or {})
        super().__init__(None, startup_timeout_s, stop_timeout_s)
        self.config_path = self.work_dir / "worker.properties"
        self.log4j_path = self.work_dir / "log4j2.properties"
        self.offsets_path = self.work_dir / "offsets.dat"
        self.fetch_s = 0.0
        self.start_s = 0.0
        self._http = httpx.Client(base_url=self.url, timeout=30.0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

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
        if self.running:
            return self
        began = time.monotonic()
        libs = ensure_libs(self._libs)
        self.fetch_s = time.monotonic() - began
        self.config_path.write_text("".join(f"{k}={v}\n" for k, v in self.worker_properties().items()))
        self.log4j_path.write_text(LOG4J2_PROPERTIES)
        cmd = [java_executable(ConnectError), *JVM_OPTS, f"-Dlog4j2.configurationFile={self.log4j_path}",
               f"-Dkafka.logs.dir={self.work_dir}", "-cp", str(libs / "*"),
               "org.apache.kafka.connect.cli.ConnectStandalone", str(self.config_path)]  # fmt: skip
        began = time.monotonic()
        self._launch(cmd, self._rest_probe)
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

    def close(self) -> None:
        """Stop the worker and delete its folder."""
        try:
            super().close()
        finally:
            self._http.close()

    def __repr__(self) -> str:
        return f"ConnectWorker(url={self.url!r}, pid={self.pid}, bootstrap={self.bootstrap!r})"

    # -- internals

    def _check_alive(self) -> None:
        if not self.running:
            code = None if self._proc is None else self._proc.returncode
            raise ConnectError(f"the Connect worker is not running (exit {code}); log {self.log_path}:\n"
                               f"{self.log_tail()}")  # fmt: skip

    def _rest_probe(self) -> str | None:
        """Ready when the REST API lists the plugins (the worker has loaded them)."""
        try:
            resp = self._http.get("/connector-plugins", timeout=2.0)
        except httpx.HTTPError as exc:
            return repr(exc)
        return None if resp.status_code == 200 else f"HTTP {resp.status_code}"
