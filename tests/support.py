"""Test support: the connector as a child process, as a user runs it, and small readers of its output."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]


class ConnectorProcess:
    """``altcraft-connector run --config FILE`` in a child process, stopped by its PID."""

    def __init__(self, settings: dict[str, Any], workdir: Path, metrics_port: int, name: str = "connector") -> None:
        settings = {**settings, "observability": {**settings.get("observability", {}), "host": "127.0.0.1",
                                                  "port": metrics_port, "log_format": "json"}}  # fmt: skip
        self.config_path = workdir / f"{name}.yaml"
        self.config_path.write_text(yaml.safe_dump(settings))
        self.log_path = workdir / f"{name}.log"
        self.port = metrics_port
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def start(self) -> ConnectorProcess:
        assert self.proc is None or self.proc.poll() is not None
        self.runs += 1
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "connector.cli", "run", "--config", str(self.config_path)],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: the crash the connector must survive."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def terminate(self, timeout: float = 60.0) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds until exit)."""
        assert self.proc is not None
        started = time.monotonic()
        os.kill(self.proc.pid, signal.SIGTERM)
        code = self.proc.wait(timeout)
        return code, time.monotonic() - started

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            try:
                self.terminate(60)
            except subprocess.TimeoutExpired:
                self.kill()

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5).text
        out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def metric_sum(self, name: str, **labels: str) -> float:
        try:
            samples = self.metrics()
        except httpx.HTTPError:
            return -1.0
        wanted = set(labels.items())
        return sum(v for (n, lab), v in samples.items() if n == name and wanted <= set(lab))

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def wait_until(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll ``cond`` until it returns something truthy (returned); AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def native_threads() -> int:
    """This process's threads, librdkafka's included (native: ``threading`` does not see them), after a
    gc pass, so that clients other tests left to the collector are gone before they are counted."""
    gc.collect()
    return len(os.listdir("/proc/self/task"))


def header_map(msg: Any) -> dict[str, str]:
    raw = msg.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return {k: (v.decode() if isinstance(v, bytes) else (v or "")) for k, v in pairs}


class FakeClock:
    """A clock that moves only when a test sets ``now``."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
