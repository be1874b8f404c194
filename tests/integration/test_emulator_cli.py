"""`altcraft-connector emulator` as a subprocess: URL line, flags applied, clean stop on a signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator

import httpx
import pytest

pytestmark = pytest.mark.integration

BATCH = "/api/v1.1/workflows/import_and_start_batch"


class Running:
    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc = proc
        self.url = url


Start = Callable[..., Running]


@pytest.fixture
def start() -> Iterator[Start]:
    started: list[subprocess.Popen[str]] = []

    def _start(*flags: str) -> Running:
        proc = subprocess.Popen(
            [sys.executable, "-m", "connector.cli", "emulator", "--port", "0", "--log-level", "WARNING", *flags],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("EMULATOR_URL=http://127.0.0.1:"), line
        return Running(proc, line.removeprefix("EMULATOR_URL="))

    yield _start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def _stop(proc: subprocess.Popen[str], sig: signal.Signals) -> int:
    os.kill(proc.pid, sig)
    proc.communicate(timeout=30)
    return proc.returncode


def test_defaults_work_out_of_the_box_and_sigterm_exits_0(start: Start) -> None:
    emu = start()
    with httpx.Client(base_url=emu.url, timeout=10) as c:
        r = c.post(BATCH, json={"token": "test-token", "workflow_id": 100, "data": [{"data": {"email": "a@b.co"}}]})
        assert (r.status_code, r.json()["error"]) == (200, 0)
        r = c.post("/api/v1.1/profiles/import_batch", json={"token": "test-token", "db_id": 1, "data": []})
        assert r.status_code == 200
        assert c.post(BATCH, json={"token": "test-token", "workflow_id": 101, "data": []}).status_code == 404
    assert _stop(emu.proc, signal.SIGTERM) == 0


def test_flags_are_applied_and_sigint_exits_0(start: Start) -> None:
    emu = start(
        "--token", "cli-a", "--token", "cli-b", "--workflow", "5", "--workflow", "20-22", "--db", "3",
        "--max-body-bytes", "20000", "--strict", "--quota-requests", "2", "--retry-after-s", "9", "--seed", "4",
    )  # fmt: skip
    with httpx.Client(base_url=emu.url, timeout=10) as c:
        faults = c.get("/_emulator/faults").json()
        assert (faults["strict"], faults["quota_requests"], faults["retry_after_s"]) == (True, 2, 9)
        ok = {"token": "cli-b", "workflow_id": 21, "data": [{"data": {"email": "a@example.com"}}]}
        assert c.post(BATCH, json=ok).status_code == 200
        assert c.post(BATCH, json={**ok, "token": "test-token"}).status_code == 401
        assert c.post(BATCH, json={**ok, "workflow_id": 12}).status_code == 404
        strict = {**ok, "data": [{"data": {"email": "a@example.com"}}, {"data": {"email": "broken"}}]}
        assert c.post(BATCH, json=strict).json()["error"] == 400
        assert c.post(BATCH, json=ok).status_code == 402
        big = {**ok, "data": [{"data": {"email": f"u{i}@example.com"}} for i in range(1000)]}
        assert c.post(BATCH, json=big).json()["error_debug"] == "http: request body too large"
    assert _stop(emu.proc, signal.SIGINT) == 0


def test_fault_flags(start: Start) -> None:
    emu = start("--http-503-rate", "1")
    with httpx.Client(base_url=emu.url, timeout=10) as c:
        r = c.post(BATCH, json={"token": "test-token", "workflow_id": 1, "data": []})
        assert (r.status_code, r.json()["error"]) == (503, 503)
        c.post("/_emulator/faults", json={"clear": True})
        assert c.post(BATCH, json={"token": "test-token", "workflow_id": 1, "data": []}).status_code == 200
    assert _stop(emu.proc, signal.SIGTERM) == 0


def test_bad_flags_exit_2() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "connector.cli", "emulator", "--port", "0", "--error-500-rate", "0.7",
         "--http-503-rate", "0.7"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "add up to" in proc.stderr
    assert "EMULATOR_URL" not in proc.stdout
