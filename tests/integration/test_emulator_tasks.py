"""The asynchronous batch task over HTTP: task_id at once, progress, the sync answer when completed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from connector.emulator.server import Emulator, EmulatorConfig

pytestmark = pytest.mark.integration

TOKEN = "task-token"
TASK = "/api/v1.1/workflows/import_and_start_batch_task"
STATUS = "/api/v1.1/tasks/status"


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(EmulatorConfig(tokens=[TOKEN, "other"], task_delay_s=1.0)) as e:
        yield e


@pytest.fixture
def client(emu: Emulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.url, timeout=10) as c:
        yield c


def _task_body(*emails: str) -> dict[str, Any]:
    return {"token": TOKEN, "workflow_id": 12, "matching": "email", "data": [{"data": {"email": e}} for e in emails]}


def _status(client: httpx.Client, task_id: str, token: str = TOKEN) -> httpx.Response:
    return client.post(STATUS, json={"token": token, "task_id": task_id})


def test_task_answers_at_once_then_completes_with_the_sync_answer(emu: Emulator, client: httpx.Client) -> None:
    r = client.post(TASK, json=_task_body("a@example.com", "nope", "b@example.com"))
    assert r.status_code == 200
    body = r.json()
    assert (body["error"], body["error_text"]) == (0, "Successful operation")
    task_id = body["task_id"]
    assert len(task_id) == 36 and task_id.count("-") == 4
    pending = _status(client, task_id).json()
    assert pending["error"] == 0
    assert pending["data"]["status"] != "completed"
    assert 0 <= pending["data"]["progress"] < 100
    assert emu.profiles() == []  # not processed yet
    deadline = time.monotonic() + 5
    while (done := _status(client, task_id).json())["data"]["status"] != "completed":
        assert time.monotonic() < deadline, done
        time.sleep(0.05)
    assert done["error"] == 0
    assert done["data"]["progress"] == 100
    result = done["data"]["result"]
    assert result["error"] == 0
    assert [item["error"] for item in result["result"]] == [0, 400, 0]
    ids = [item["profile_id"] for item in result["result"]]
    assert {p["profile_id"] for p in emu.profiles()} == {ids[0], ids[2]}
    assert len(emu.engagements()) == 2


def test_the_task_runs_even_if_nobody_polls(emu: Emulator, client: httpx.Client) -> None:
    client.post(TASK, json=_task_body("a@example.com"))
    deadline = time.monotonic() + 5
    while not emu.profiles():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert emu.stats()["tasks_completed"] == 1


def test_a_deduplicated_task_request_returns_the_same_task_id(emu: Emulator, client: httpx.Client) -> None:
    first = client.post(TASK, json=_task_body("a@example.com"), headers={"Request-ID": "t-1"})
    again = client.post(TASK, json=_task_body("a@example.com"), headers={"Request-ID": "t-1"})
    assert again.json()["task_id"] == first.json()["task_id"]
    assert again.headers["Duplicate-Request"] == "true"
    assert emu.stats()["tasks_submitted"] == 1


def test_unknown_or_foreign_task_is_404(client: httpx.Client) -> None:
    task_id = client.post(TASK, json=_task_body("a@example.com")).json()["task_id"]
    assert _status(client, "no-such-task").status_code == 404
    r = _status(client, task_id, token="other")
    assert (r.status_code, r.json()["error"]) == (404, 404)
