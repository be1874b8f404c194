"""Every fault kind over HTTP, set through the control endpoint while the emulator serves."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from connector.emulator.faults import FaultConfig, FaultConfigError
from connector.emulator.server import Emulator, EmulatorConfig
from tests.support import FakeClock

pytestmark = pytest.mark.integration

TOKEN = "fault-token"
BATCH = "/api/v1.1/workflows/import_and_start_batch"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(5000.0)


@pytest.fixture
def emu(clock: FakeClock) -> Iterator[Emulator]:
    with Emulator(EmulatorConfig(tokens=[TOKEN], seed=3), clock=clock) as e:
        yield e


@pytest.fixture
def client(emu: Emulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.url, timeout=10) as c:
        yield c


def _faults(client: httpx.Client, **changes: Any) -> dict[str, Any]:
    r = client.post("/_emulator/faults", json=changes)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _batch(*emails: str) -> dict[str, Any]:
    return {"token": TOKEN, "workflow_id": 12, "data": [{"data": {"email": e}} for e in emails]}


def test_fixed_latency(client: httpx.Client) -> None:
    _faults(client, latency_s=0.5)
    start = time.monotonic()
    assert client.post(BATCH, json=_batch("a@example.com")).status_code == 200
    assert time.monotonic() - start >= 0.5
    _faults(client, latency_s=0)
    start = time.monotonic()
    client.post(BATCH, json=_batch("a@example.com"))
    assert time.monotonic() - start < 0.5


def test_uniform_latency_range() -> None:
    slept: list[float] = []
    with Emulator(EmulatorConfig(tokens=[TOKEN]), sleep=slept.append) as emu, httpx.Client(base_url=emu.url) as c:
        emu.set_faults(latency_s=0.1, latency_max_s=0.5)
        for _ in range(20):
            assert c.post(BATCH, json=_batch("a@example.com")).status_code == 200
    assert len(slept) == 20
    assert all(0.1 <= s <= 0.5 for s in slept)
    assert len(set(slept)) == 20


def test_error_500_with_a_body(emu: Emulator, client: httpx.Client) -> None:
    _faults(client, error_500_rate=1.0)
    r = client.post(BATCH, json=_batch("a@example.com"))
    assert r.status_code == 500
    assert r.json() == {"error": 500, "error_text": "Internal service error", "error_debug": "injected fault"}
    assert emu.profiles() == []
    assert emu.requests()[-1]["fault"] == "error_500"


@pytest.mark.parametrize(("key", "status"), [("http_502_rate", 502), ("http_503_rate", 503)])
def test_gateway_errors(emu: Emulator, client: httpx.Client, key: str, status: int) -> None:
    _faults(client, **{key: 1.0})
    r = client.post(BATCH, json=_batch("a@example.com"))
    assert (r.status_code, r.json()["error"]) == (status, status)
    assert emu.profiles() == []


def test_rate_limit_with_retry_after(emu: Emulator, client: httpx.Client) -> None:
    _faults(client, rate_limit_rate=1.0, retry_after_s=7)
    r = client.post(BATCH, json=_batch("a@example.com"))
    assert (r.status_code, r.headers["Retry-After"], r.json()["error"]) == (429, "7", 429)
    assert emu.profiles() == []


def test_a_fraction_of_requests_fails(client: httpx.Client) -> None:
    _faults(client, error_500_rate=0.5)
    statuses = [client.post(BATCH, json=_batch("a@example.com")).status_code for _ in range(60)]
    assert 10 < statuses.count(500) < 50
    assert statuses.count(200) == 60 - statuses.count(500)


def test_connection_reset_without_answer_executes_nothing(emu: Emulator, client: httpx.Client) -> None:
    _faults(client, reset_rate=1.0)
    with pytest.raises(httpx.TransportError):
        client.post(BATCH, json=_batch("a@example.com"))
    assert emu.profiles() == []
    last = emu.requests()[-1]
    assert (last["fault"], last["http_status"]) == ("reset", 0)
    _faults(client, reset_rate=0.0)
    assert client.post(BATCH, json=_batch("a@example.com")).status_code == 200


def test_reset_after_execution_loses_the_answer_and_dedup_saves_the_retry(emu: Emulator, client: httpx.Client) -> None:
    _faults(client, reset_after_execute_rate=1.0)
    with pytest.raises(httpx.TransportError):
        client.post(BATCH, json=_batch("a@example.com"), headers={"Request-ID": "r-1"})
    assert len(emu.profiles()) == 1  # it was executed
    _faults(client, reset_after_execute_rate=0.0)
    retry = client.post(BATCH, json=_batch("a@example.com"), headers={"Request-ID": "r-1"})
    assert retry.headers["Duplicate-Request"] == "true"
    assert retry.json()["result"][0]["profile_id"] == emu.profiles()[0]["profile_id"]
    assert emu.engagements()[0]["count"] == 1


def test_outage_for_n_seconds_then_recovery(emu: Emulator, client: httpx.Client, clock: FakeClock) -> None:
    shown = _faults(client, outage_s=30)
    assert (shown["outage"], shown["outage_remaining_s"]) == (True, 30.0)
    r = client.post(BATCH, json=_batch("a@example.com"))
    assert (r.status_code, r.json()["error"], r.headers["Retry-After"]) == (503, 503, "30")
    # Only /api/ is affected.
    assert client.get("/_emulator/stats").status_code == 200
    clock.now += 20
    assert client.post(BATCH, json=_batch("a@example.com")).headers["Retry-After"] == "10"
    clock.now += 10.5
    assert client.post(BATCH, json=_batch("a@example.com")).status_code == 200


def test_outage_until_cleared(client: httpx.Client, clock: FakeClock) -> None:
    _faults(client, outage=True)
    clock.now += 10**6
    r = client.post(BATCH, json=_batch("a@example.com"))
    assert r.status_code == 503
    assert "retry-after" not in r.headers
    _faults(client, outage=False)
    assert client.post(BATCH, json=_batch("a@example.com")).status_code == 200


def test_request_quota(emu: Emulator, client: httpx.Client) -> None:
    _faults(client, quota_requests=2)
    assert [client.post(BATCH, json=_batch("a@example.com")).status_code for _ in range(3)] == [200, 200, 402]
    r = client.post(BATCH, json=_batch("b@example.com"))
    assert (r.json()["error"], r.json()["error_text"]) == (402, "Tariff limit reached")
    assert len(emu.profiles()) == 1
    _faults(client, quota_requests=1)  # setting a quota restarts its count
    assert client.post(BATCH, json=_batch("b@example.com")).status_code == 200
    _faults(client, quota_requests=None)
    assert client.post(BATCH, json=_batch("c@example.com")).status_code == 200


def test_profile_quota(emu: Emulator, client: httpx.Client) -> None:
    _faults(client, quota_profiles=3)
    assert client.post(BATCH, json=_batch("a@example.com", "b@example.com")).status_code == 200
    r = client.post(BATCH, json=_batch("c@example.com", "d@example.com"))
    assert (r.status_code, r.json()["error"]) == (402, 402)
    assert len(emu.profiles()) == 2


def test_strict_mode_fails_the_whole_batch(emu: Emulator, client: httpx.Client) -> None:
    _faults(client, strict=True)
    r = client.post(BATCH, json=_batch("a@example.com", "not-an-email"))
    assert r.status_code == 400
    body = r.json()
    assert (body["error"], body["error_text"]) == (400, "Invalid request")
    assert "result" not in body
    assert emu.profiles() == []
    assert client.post(BATCH, json=_batch("a@example.com")).status_code == 200


def test_token_revoked_then_accepted_again(client: httpx.Client) -> None:
    assert client.post(BATCH, json=_batch("a@example.com")).status_code == 200
    _faults(client, tokens=["rotated-token"])
    r = client.post(BATCH, json=_batch("a@example.com"))
    assert (r.status_code, r.json()["error"]) == (401, 401)
    _faults(client, tokens=None)
    assert client.post(BATCH, json=_batch("a@example.com")).status_code == 200


def test_bad_fault_settings_are_refused_with_every_problem(emu: Emulator, client: httpx.Client) -> None:
    r = client.post("/_emulator/faults", json={"error_500_rate": 3, "bogus": True})
    assert (r.status_code, r.json()["error"]) == (400, 400)
    assert "error_500_rate" in r.json()["error_debug"]
    assert "bogus" in r.json()["error_debug"]
    assert client.get("/_emulator/faults").json()["error_500_rate"] == 0.0
    with pytest.raises(FaultConfigError):
        emu.set_faults(http_503_rate=-1)


def test_faults_from_the_config_and_back_after_reset() -> None:
    config = EmulatorConfig(tokens=[TOKEN], faults=FaultConfig(http_503_rate=1.0))
    with Emulator(config) as emu, httpx.Client(base_url=emu.url) as c:
        assert c.post(BATCH, json=_batch("a@example.com")).status_code == 503
        emu.clear_faults()
        assert c.post(BATCH, json=_batch("a@example.com")).status_code == 200
        assert c.post("/_emulator/reset").status_code == 200
        assert c.post(BATCH, json=_batch("a@example.com")).status_code == 503
