"""Request deduplication over HTTP: the original answer, the headers, engaged once, what is stored."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from connector.emulator.server import Emulator, EmulatorConfig
from tests.support import FakeClock

pytestmark = pytest.mark.integration

TOKEN = "dedup-token"
BATCH = "/api/v1.1/workflows/import_and_start_batch"
IMPORT = "/api/v1.1/profiles/import_batch"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


@pytest.fixture
def emu(clock: FakeClock) -> Iterator[Emulator]:
    with Emulator(EmulatorConfig(tokens=[TOKEN, "other-token"], dedup_window_s=60), clock=clock) as e:
        yield e


@pytest.fixture
def client(emu: Emulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.url, timeout=10) as c:
        yield c


def _batch(*emails: str, token: str = TOKEN) -> dict[str, Any]:
    return {"token": token, "workflow_id": 12, "data": [{"data": {"email": e}} for e in emails]}


def test_a_duplicate_gets_the_original_body_and_the_duplicate_headers(emu: Emulator, client: httpx.Client) -> None:
    first = client.post(BATCH, json=_batch("a@example.com", "bad"), headers={"Request-ID": "p0-o1-o2"})
    assert "duplicate-request" not in first.headers
    # The retry's body differs: it is not executed, the first answer comes back.
    again = client.post(BATCH, json=_batch("z@example.com"), headers={"Request-ID": "p0-o1-o2"})
    assert again.status_code == first.status_code == 200
    assert again.content == first.content
    assert again.headers["Duplicate-Request"] == "true"
    assert again.headers["Duplicate-Key"] == "p0-o1-o2"
    assert [p["fields"]["email"] for p in emu.profiles()] == ["a@example.com"]
    [engagement] = emu.engagements()
    assert (engagement["count"], engagement["request_ids"]) == (1, ["p0-o1-o2"])
    log = emu.requests()
    assert [(r["request_id"], r["duplicate"], r["http_status"]) for r in log] == [
        ("p0-o1-o2", False, 200),
        ("p0-o1-o2", True, 200),
    ]
    assert emu.stats()["duplicates"] == 1


def test_legacy_x_request_id(client: httpx.Client) -> None:
    first = client.post(IMPORT, json={"token": TOKEN, "db_id": 1, "data": [{"email": "a@example.com"}]},
                        headers={"X-Request-ID": "legacy-1"})  # fmt: skip
    again = client.post(IMPORT, json={"token": TOKEN, "db_id": 1, "data": []}, headers={"X-Request-ID": "legacy-1"})
    assert again.content == first.content
    assert again.headers["Duplicate-Request"] == again.headers["X-Duplicate-Request"] == "true"
    assert again.headers["Duplicate-Key"] == again.headers["X-Duplicate-Key"] == "legacy-1"


def test_keys_are_per_token(emu: Emulator, client: httpx.Client) -> None:
    client.post(BATCH, json=_batch("a@example.com"), headers={"Request-ID": "k"})
    other = client.post(BATCH, json=_batch("a@example.com", token="other-token"), headers={"Request-ID": "k"})
    assert "duplicate-request" not in other.headers
    assert emu.engagements()[0]["count"] == 2


def test_the_window_ends(emu: Emulator, client: httpx.Client, clock: FakeClock) -> None:
    client.post(BATCH, json=_batch("a@example.com"), headers={"Request-ID": "k"})
    clock.now += 59
    assert client.post(BATCH, json=_batch("a@example.com"), headers={"Request-ID": "k"}).headers["Duplicate-Request"]
    clock.now += 2
    late = client.post(BATCH, json=_batch("a@example.com"), headers={"Request-ID": "k"})
    assert "duplicate-request" not in late.headers
    assert emu.engagements()[0]["count"] == 2


def test_without_request_id_every_request_executes(emu: Emulator, client: httpx.Client) -> None:
    client.post(BATCH, json=_batch("a@example.com"))
    client.post(BATCH, json=_batch("a@example.com"))
    assert emu.engagements()[0]["count"] == 2


def test_failed_requests_are_not_stored_so_a_retry_executes(emu: Emulator, client: httpx.Client) -> None:
    emu.set_faults(error_500_rate=1.0)
    r = client.post(BATCH, json=_batch("a@example.com"), headers={"Request-ID": "k"})
    assert (r.status_code, r.json()["error"]) == (500, 500)
    emu.clear_faults()
    r = client.post(BATCH, json=_batch("a@example.com", "b@example.com"), headers={"Request-ID": "k", "X": "1"})
    assert "duplicate-request" not in r.headers
    assert len(r.json()["result"]) == 2
    # A configuration error (unknown workflow) is not stored either.
    bad = {**_batch("c@example.com"), "workflow_id": 999}
    assert client.post(BATCH, json=bad, headers={"Request-ID": "k2"}).status_code == 404
    fixed = client.post(BATCH, json=_batch("c@example.com"), headers={"Request-ID": "k2"})
    assert (fixed.status_code, "duplicate-request" in fixed.headers) == (200, False)
    assert sorted(e["count"] for e in emu.engagements()) == [1, 1, 1]


def test_per_item_errors_are_stored_and_replayed(emu: Emulator, client: httpx.Client) -> None:
    first = client.post(BATCH, json=_batch("bad-address"), headers={"Request-ID": "k"})
    assert first.json()["result"][0]["error"] == 400
    again = client.post(BATCH, json=_batch("good@example.com"), headers={"Request-ID": "k"})
    assert again.headers["Duplicate-Request"] == "true"
    assert again.content == first.content
    assert emu.profiles() == []
