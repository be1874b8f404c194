"""Same seed and same sequence of requests -> the same answers, on two fresh emulators."""

from __future__ import annotations

import httpx
import pytest

from connector.emulator.faults import FaultConfig
from connector.emulator.server import Emulator, EmulatorConfig

pytestmark = pytest.mark.integration

TOKEN = "repro-token"
FAULTS = FaultConfig(
    error_500_rate=0.15,
    http_502_rate=0.05,
    http_503_rate=0.05,
    rate_limit_rate=0.1,
    reset_rate=0.1,
    reset_after_execute_rate=0.05,
)


def _run(seed: int) -> list[tuple[int, bytes]]:
    """A fixed sequence of requests, one at a time; the answers (0 for a reset connection)."""
    config = EmulatorConfig(tokens=[TOKEN], seed=seed, faults=FAULTS, task_delay_s=0)
    answers: list[tuple[int, bytes]] = []
    with Emulator(config) as emu, httpx.Client(base_url=emu.url, timeout=10) as client:
        for i in range(40):
            body = {
                "token": TOKEN,
                "workflow_id": 12,
                "data": [{"data": {"email": f"user{i % 7}@example.com", "_fname": f"n{i}"}}, {"data": {"email": "x"}}],
            }
            path = "/api/v1.1/workflows/import_and_start_batch" + ("_task" if i % 5 == 0 else "")
            try:
                r = client.post(path, json=body, headers={"Request-ID": f"k{i % 10}"})
                answers.append((r.status_code, r.content))
            except httpx.TransportError:
                answers.append((0, b""))
        profiles = sorted((p["profile_id"], p["fields"]["email"]) for p in emu.profiles())
    answers.append((-1, repr(profiles).encode()))
    return answers


def test_same_seed_same_answers() -> None:
    first, second = _run(seed=11), _run(seed=11)
    assert first == second
    kinds = {status for status, _ in first}
    # The sequence did exercise faults as well as successes.
    assert {0, 200, 500}.issubset(kinds)
    assert any(b'"task_id"' in body for _, body in first)


def test_another_seed_other_answers() -> None:
    assert _run(seed=11) != _run(seed=12)


def _big_run(workers: int) -> list[object]:
    """Bodies big enough to go to a parse worker, with valid and invalid items and repeated people."""
    config = EmulatorConfig(tokens=[TOKEN], workers=workers, task_delay_s=0)
    items = [
        {"data": {"email": f"P{i % 900}@example.com", "phones": f"+7900{i:07d}", "_bdate": "1990-01-31"}}
        if i % 97
        else {"data": {"email": f"broken{i}", "_regip": "1.2.3.400"}}
        for i in range(2000)
    ]
    out: list[object] = []
    with Emulator(config) as emu, httpx.Client(base_url=emu.url, timeout=30) as client:
        for path, body in [
            ("/api/v1.1/workflows/import_and_start_batch", {"token": TOKEN, "workflow_id": 3, "data": items}),
            ("/api/v1.1/profiles/import_batch", {"token": TOKEN, "db_id": 1, "data": [i["data"] for i in items]}),
            ("/api/v1.1/workflows/import_and_start_batch", {"token": TOKEN, "workflow_id": 3, "data": items[:5]}),
        ]:
            r = client.post(path, json=body)
            out.append((r.status_code, r.content))
        out.append(emu.profiles())
        out.append(emu.engagements())
        out.append([(s["items"], s["http_status"]) for s in emu.requests()])
        assert emu.stats()["bodies_parsed_by_workers"] == (2 if workers else 0)
    return out


def test_parse_workers_answer_exactly_as_the_server_process_does() -> None:
    inline, workers = _big_run(0), _big_run(1)
    assert inline == workers
    first = inline[0]
    assert isinstance(first, tuple)
    assert first[0] == 200
    assert b'"error":400' in first[1]
