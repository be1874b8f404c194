"""The inspection endpoints under /_emulator/: profiles, engagements, requests, order, stats, reset."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from connector.emulator.server import Emulator, EmulatorConfig

pytestmark = pytest.mark.integration

TOKEN = "inspect-token"
BATCH = "/api/v1.1/workflows/import_and_start_batch"


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(EmulatorConfig(tokens=[TOKEN], request_log_size=5)) as e:
        yield e


@pytest.fixture
def client(emu: Emulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.url, timeout=10) as c:
        yield c


def _batch(*emails: str, workflow_id: int = 12) -> dict[str, Any]:
    return {"token": TOKEN, "workflow_id": workflow_id, "data": [{"data": {"email": e}} for e in emails]}


def test_profiles_filtered_and_paged(client: httpx.Client) -> None:
    ids = [
        x["profile_id"]
        for x in client.post(BATCH, json=_batch("a@example.com", "b@example.com", "c@example.com")).json()["result"]
    ]
    listing = client.get("/_emulator/profiles").json()
    assert listing["total"] == 3
    assert [p["profile_id"] for p in listing["profiles"]] == ids
    assert listing["profiles"][1]["fields"] == {"email": "b@example.com"}
    page = client.get("/_emulator/profiles", params={"limit": 1, "offset": 1}).json()
    assert [p["profile_id"] for p in page["profiles"]] == [ids[1]]
    by_email = client.get("/_emulator/profiles", params={"email": "C@example.com"}).json()
    assert [p["profile_id"] for p in by_email["profiles"]] == [ids[2]]
    by_id = client.get("/_emulator/profiles", params={"profile_id": ids[0]}).json()
    assert by_id["profiles"][0]["fields"]["email"] == "a@example.com"
    assert client.get("/_emulator/profiles", params={"limit": "x"}).status_code == 400


def test_engagements_by_workflow_and_profile(client: httpx.Client) -> None:
    client.post(BATCH, json=_batch("a@example.com"), headers={"Request-ID": "r1"})
    client.post(BATCH, json=_batch("a@example.com", workflow_id=13), headers={"Request-ID": "r2"})
    client.post(BATCH, json=_batch("a@example.com"), headers={"Request-ID": "r3"})
    everything = client.get("/_emulator/engagements").json()
    assert everything["total"] == 2
    only_12 = client.get("/_emulator/engagements", params={"workflow_id": 12}).json()["engagements"]
    assert len(only_12) == 1
    record = only_12[0]
    assert {k: record[k] for k in ("workflow_id", "matching", "matching_value", "count", "request_ids")} == {
        "workflow_id": 12,
        "matching": "email",
        "matching_value": "a@example.com",
        "count": 2,
        "request_ids": ["r1", "r3"],
    }
    by_profile = client.get("/_emulator/engagements", params={"profile_id": record["profile_id"]}).json()
    assert sorted(e["workflow_id"] for e in by_profile["engagements"]) == [12, 13]


def test_request_log_is_small_records_and_bounded(emu: Emulator, client: httpx.Client) -> None:
    for i in range(7):
        client.post(BATCH, json=_batch(f"u{i}@example.com", "bad"), headers={"Request-ID": f"k{i}"})
    client.post(BATCH, json=_batch("x@example.com"), headers={"Request-ID": "k6"})
    log = client.get("/_emulator/requests").json()
    assert (log["total"], log["kept"]) == (8, 5)
    last = log["requests"][-1]
    assert set(last) == {
        "seq", "at", "endpoint", "request_id", "items", "body_bytes", "http_status", "error", "duplicate", "fault",
    }  # fmt: skip
    assert (last["endpoint"], last["request_id"], last["duplicate"], last["http_status"], last["error"]) == (
        "workflows/import_and_start_batch", "k6", True, 200, 0,
    )  # fmt: skip
    assert log["requests"][-2]["items"] == 2
    assert log["requests"][-2]["body_bytes"] > 50
    assert [r["seq"] for r in client.get("/_emulator/requests", params={"limit": 2}).json()["requests"]] == [7, 8]


def test_stats_totals(client: httpx.Client) -> None:
    client.post(BATCH, json=_batch("a@example.com", "b@example.com", "bad"), headers={"Request-ID": "k"})
    client.post(BATCH, json=_batch("a@example.com"), headers={"Request-ID": "k"})
    client.post(BATCH, json={"workflow_id": 12, "data": []})  # 401
    stats = client.get("/_emulator/stats").json()
    assert {k: stats[k] for k in ("requests", "duplicates", "profiles", "profiles_engaged", "items_rejected")} == {
        "requests": 3,
        "duplicates": 1,
        "profiles": 2,
        "profiles_engaged": 2,
        "items_rejected": 1,
    }
    assert stats["faults"]["outage"] is False


def test_reset_forgets_everything(emu: Emulator, client: httpx.Client) -> None:
    client.post(BATCH, json=_batch("a@example.com"), headers={"Request-ID": "k"})
    assert client.post("/_emulator/reset").json() == {"ok": True}
    assert client.get("/_emulator/profiles").json() == {"total": 0, "profiles": []}
    assert client.get("/_emulator/engagements").json()["engagements"] == []
    assert client.get("/_emulator/stats").json()["requests"] == 0
    again = client.post(BATCH, json=_batch("a@example.com"), headers={"Request-ID": "k"})
    assert "duplicate-request" not in again.headers


def test_inspection_is_never_under_api(client: httpx.Client) -> None:
    r = client.get("/api/v1.1/_emulator/stats")
    assert r.status_code == 405
    r = client.post("/api/v1.1/_emulator/stats", json={"token": TOKEN})
    assert (r.status_code, r.json()["error"]) == (404, 501)
    assert client.get("/_emulator/nothing").status_code == 404
    assert client.get("/elsewhere").status_code == 404


def test_python_api_matches_the_endpoints(emu: Emulator, client: httpx.Client) -> None:
    client.post(BATCH, json=_batch("a@example.com"))
    assert emu.profiles() == client.get("/_emulator/profiles").json()["profiles"]
    assert emu.engagements() == client.get("/_emulator/engagements").json()["engagements"]
    assert emu.requests() == client.get("/_emulator/requests").json()["requests"][:1]
    with emu.locked() as state:
        assert len(state.profiles) == 1


def test_order_lists_each_profiles_values_in_applied_order() -> None:
    with Emulator(EmulatorConfig(tokens=[TOKEN], order_field="seq")) as emu, httpx.Client(base_url=emu.url) as c:
        for rid, changes in (("r1", [("a@example.com", 1), ("b@example.com", 2)]),
                             ("r2", [("A@example.com", 3), ("b@example.com", 4), ("a@example.com", 5)]),
                             ("r2", [("a@example.com", 6)])):  # fmt: skip
            body = {"token": TOKEN, "workflow_id": 12, "data": [{"data": {"email": e, "seq": n}} for e, n in changes]}
            assert c.post(BATCH, json=body, headers={"Request-ID": rid}).json()["error"] == 0
        got = c.get("/_emulator/order").json()
        assert (got["field"], got["total"], got["missing"]) == ("seq", 2, 0)
        assert {r["matching_value"].lower(): r["values"] for r in got["profiles"]} == {
            "a@example.com": [1, 3, 5],  # the third request was a duplicate of the second: not applied
            "b@example.com": [2, 4],
        }
        assert emu.order() == got["profiles"]
        first = got["profiles"][0]["profile_id"]
        assert c.get("/_emulator/order", params={"profile_id": first}).json()["profiles"] == got["profiles"][:1]
        assert c.get("/_emulator/stats").json()["order_profiles"] == 2


def test_stats_show_how_many_requests_were_in_flight_at_once(emu: Emulator, client: httpx.Client) -> None:
    emu.set_faults(latency_s=0.5)

    def post(i: int) -> int:
        with httpx.Client(base_url=emu.url, timeout=10) as c:
            return int(c.post(BATCH, json=_batch(f"u{i}@example.com")).json()["error"])

    with ThreadPoolExecutor(3) as pool:
        assert list(pool.map(post, range(3))) == [0, 0, 0]
    stats = client.get("/_emulator/stats").json()
    assert (stats["requests_in_flight"], stats["requests_in_flight_max"]) == (0, 3)
    emu.set_faults(latency_s=0, reset_rate=1.0)  # a request that ends in a reset is over too
    with pytest.raises(httpx.TransportError), httpx.Client(base_url=emu.url, timeout=10) as c:
        c.post(BATCH, json=_batch("v@example.com"))
    assert client.get("/_emulator/stats").json()["requests_in_flight"] == 0
    client.post("/_emulator/reset")
    assert client.get("/_emulator/stats").json()["requests_in_flight_max"] == 0
