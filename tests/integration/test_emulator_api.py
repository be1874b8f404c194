"""The emulator over real HTTP: the seed pages' examples, auth, request errors, per-item results."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from connector.emulator.server import Emulator, EmulatorConfig
from tests.seed_examples import (
    SEED_BATCH_CUSTOM_JSON,
    SEED_BATCH_CUSTOM_XML,
    SEED_BATCH_EMAIL_JSON,
    SEED_BATCH_EMAIL_XML,
    SEED_IMPORT_BATCH_JSON,
    SEED_IMPORT_BATCH_XML,
    SEED_SINGLE_JSON,
    SEED_SINGLE_XML,
)

pytestmark = pytest.mark.integration

TOKEN = "abcdefghijklmnqrstuvwxyz"
BATCH = "/api/v1.1/workflows/import_and_start_batch"
IMPORT = "/api/v1.1/profiles/import_batch"
SINGLE = "/api/v1.1/workflows/import_and_start"


XML = {"Content-Type": "application/xml"}


@pytest.fixture
def emu() -> Iterator[Emulator]:
    config = EmulatorConfig(tokens=[TOKEN, "abcdefghkijlmnopqrstuv0123456789"], max_body_bytes=100_000)
    with Emulator(config) as e:
        yield e


@pytest.fixture
def client(emu: Emulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.url, timeout=10) as c:
        yield c


def _ok_results(r: httpx.Response, n: int) -> list[str]:
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["error"], body["error_text"]) == (0, "Successful operation")
    assert len(body["result"]) == n
    assert all(item["error"] == 0 for item in body["result"])
    return [item["profile_id"] for item in body["result"]]


def test_binds_loopback_on_a_free_port_by_default(emu: Emulator) -> None:
    assert emu.url.startswith("http://127.0.0.1:")
    assert emu.port > 0


def test_seed_batch_email_json(emu: Emulator, client: httpx.Client) -> None:
    ids = _ok_results(client.post(BATCH, json=SEED_BATCH_EMAIL_JSON), 2)
    # Both items are the same person: one profile, updated by the second item, engaged twice.
    assert ids[0] == ids[1]
    assert len(ids[0]) == 24 and int(ids[0], 16) >= 0
    assert emu.profiles() == [
        {
            "profile_id": ids[0],
            "fields": {"_fname": "Alex", "_lname": "Lambert", "email": "example@example.com", "phones": "+79000000000"},
        }
    ]
    [engagement] = emu.engagements()
    assert (engagement["workflow_id"], engagement["profile_id"], engagement["count"]) == (12, ids[0], 2)
    assert (engagement["matching"], engagement["matching_value"]) == ("email", "example@example.com")


def test_seed_batch_email_xml(emu: Emulator, client: httpx.Client) -> None:
    ids = _ok_results(client.post(BATCH, content=SEED_BATCH_EMAIL_XML, headers=XML), 2)
    assert ids[0] == ids[1]
    assert emu.profile(ids[0]) == {"_fname": "Bert", "_lname": "Lambert", "email": "example@example.com"}
    assert [e["workflow_id"] for e in emu.engagements()] == [10]


def test_seed_batch_custom_json_and_xml(emu: Emulator, client: httpx.Client) -> None:
    json_ids = _ok_results(client.post(BATCH, json=SEED_BATCH_CUSTOM_JSON), 2)
    xml_ids = _ok_results(client.post(BATCH, content=SEED_BATCH_CUSTOM_XML, headers=XML), 2)
    assert len(set(json_ids + xml_ids)) == 4
    fields = emu.profile(xml_ids[0])
    assert fields is not None
    assert fields["New_field_7"] == "00067"  # string="true" kept the leading zeros
    # Four profiles now share example@example.com: matching by email is ambiguous.
    r = client.post(
        BATCH, json={"token": TOKEN, "workflow_id": 12, "data": [{"data": {"email": "example@example.com"}}]}
    )
    assert r.json()["result"] == [
        {
            "error": 435,
            "error_text": "Ambiguous search, there are several objects with given attributes",
            "profile_id": "",
        }
    ]


def test_seed_import_batch_json_and_xml(emu: Emulator, client: httpx.Client) -> None:
    r = client.post(IMPORT, json=SEED_IMPORT_BATCH_JSON)
    json_ids = _ok_results(r, 2)
    xml_ids = _ok_results(client.post(IMPORT, content=SEED_IMPORT_BATCH_XML, headers=XML), 2)
    assert xml_ids[0] == json_ids[0]  # Custom_ID 77 again
    assert xml_ids[1] not in json_ids
    assert emu.engagements() == []  # import only
    fields = emu.profile(json_ids[0])
    assert fields is not None
    assert fields["subscriptions"][0]["resource_id"] == 28


def test_seed_import_and_start_json_and_xml(emu: Emulator, client: httpx.Client) -> None:
    r = client.post(SINGLE, json=SEED_SINGLE_JSON)
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"error", "error_text", "profile_id"}
    assert body["error"] == 0
    r2 = client.post(SINGLE, content=SEED_SINGLE_XML, headers=XML)
    assert r2.json()["profile_id"] == body["profile_id"]
    [engagement] = emu.engagements()
    assert engagement["count"] == 2


def test_xml_answer_when_format_is_xml(client: httpx.Client) -> None:
    r = client.post(BATCH, json={**SEED_BATCH_EMAIL_JSON, "format": "xml"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/xml"
    assert r.text.startswith("<xml><error>0</error><error_text>Successful operation</error_text><result>")


def test_token_in_the_bearer_header(client: httpx.Client) -> None:
    body = {k: v for k, v in SEED_BATCH_EMAIL_JSON.items() if k != "token"}
    assert client.post(BATCH, json=body, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    r = client.post(BATCH, json=body)
    assert (r.status_code, r.json()["error"], r.json()["error_text"]) == (401, 401, "API token required")
    r = client.post(BATCH, json=body, headers={"Authorization": "Bearer wrong"})
    assert (r.status_code, r.json()["error"]) == (401, 401)
    r = client.post(BATCH, json={**body, "token": "wrong"})
    assert (r.status_code, r.json()["error"]) == (401, 401)


def test_unknown_workflow_or_database_is_404(emu: Emulator, client: httpx.Client) -> None:
    r = client.post(BATCH, json={**SEED_BATCH_EMAIL_JSON, "workflow_id": 1000})
    assert (r.status_code, r.json()["error"]) == (404, 404)
    assert "workflow_id 1000" in r.json()["error_debug"]
    r = client.post(IMPORT, json={**SEED_IMPORT_BATCH_JSON, "db_id": 1000})
    assert (r.status_code, r.json()["error"]) == (404, 404)
    assert emu.profiles() == []


def test_unsupported_content_type_is_415(client: httpx.Client) -> None:
    r = client.post(BATCH, content=b"token=x", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert (r.status_code, r.json()["error"]) == (415, 415)


def test_unknown_method_and_wrong_verb(client: httpx.Client) -> None:
    r = client.post("/api/v1.1/workflows/nope", json=SEED_BATCH_EMAIL_JSON)
    assert (r.status_code, r.json()["error"]) == (404, 501)
    r = client.get(BATCH)
    assert (r.status_code, r.json()["error"]) == (405, 405)


def test_body_over_the_limit_is_400_request_body_too_large(emu: Emulator, client: httpx.Client) -> None:
    big = {**SEED_BATCH_EMAIL_JSON, "data": [{"data": {"email": f"u{i}@example.com"}} for i in range(5000)]}
    r = client.post(BATCH, json=big)
    assert r.status_code == 400
    assert r.json() == {"error": 400, "error_text": "Invalid request", "error_debug": "http: request body too large"}
    assert emu.profiles() == []
    # The same limit holds for a chunked body, which has no Content-Length.
    chunks = iter([b'{"token": "x", "data": [', b" " * 60_000, b" " * 60_000, b"]}"])
    r = client.post(BATCH, content=chunks, headers={"Content-Type": "application/json"})
    assert (r.status_code, r.json()["error_debug"]) == (400, "http: request body too large")
    # And the emulator still serves the next request.
    _ok_results(client.post(BATCH, json=SEED_BATCH_EMAIL_JSON), 2)


def test_too_large_is_answered_from_content_length_without_reading_the_body(emu: Emulator) -> None:
    with socket.create_connection(("127.0.0.1", emu.port), timeout=5) as sock:
        sock.sendall(
            f"POST {BATCH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: 50000000\r\n\r\n{{".encode()
        )
        # Not a byte more of the 50 MB is sent: the answer must come anyway.
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
            chunk = sock.recv(4096)
            assert chunk, answer
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"http: request body too large" in answer
    assert b"Connection: close" in answer


def test_per_item_validation_lines_up_with_the_data(emu: Emulator, client: httpx.Client) -> None:
    items = [
        {"email": "ok1@example.com", "phones": ["+79000000001"], "_bdate": "1990-05-17", "_regip": "10.0.0.1"},
        {"email": "bad email"},
        {"email": "ok2@example.com", "phones": "8-900-000"},
        {"email": "ok3@example.com", "_regip": "300.0.0.1"},
        {"email": "ok4@example.com", "_ip": "fe80::1"},
        {"email": "ok5@example.com", "_bdate": "1990-02-30"},
        {"_fname": "no email"},
        {"email": "ok6@example.com", "_bdate": "2001-09-11T08:46:00Z"},
    ]
    r = client.post(BATCH, json={"token": TOKEN, "workflow_id": 12, "data": [{"data": i} for i in items]})
    result = r.json()["result"]
    assert [(x["error"], x["error_text"]) for x in result] == [
        (0, "Successful operation"),
        (400, "Invalid email"),
        (400, "Invalid phone: international format expected"),
        (400, "Invalid IPv4 address in _regip"),
        (400, "Invalid IPv4 address in _ip"),
        (400, "Invalid date in _bdate: YYYY-MM-DD or RFC 3339 expected"),
        (400, "Matching value is missing: email"),
        (0, "Successful operation"),
    ]
    assert [x["profile_id"] == "" for x in result] == [False, True, True, True, True, True, True, False]
    stored = {p["fields"]["email"] for p in emu.profiles()}
    assert stored == {"ok1@example.com", "ok6@example.com"}
    assert {e["profile_id"] for e in emu.engagements()} == {result[0]["profile_id"], result[7]["profile_id"]}
    stats = emu.stats()
    assert (stats["items_accepted"], stats["items_rejected"]) == (2, 6)


def test_same_person_keeps_the_same_profile_id_across_requests(emu: Emulator, client: httpx.Client) -> None:
    first = _ok_results(client.post(IMPORT, json={"token": TOKEN, "db_id": 1, "data": [{"email": "p@example.com"}]}), 1)
    second = _ok_results(
        client.post(BATCH, json={"token": TOKEN, "workflow_id": 3, "data": [{"data": {"email": "P@EXAMPLE.COM"}}]}), 1
    )
    third = _ok_results(
        client.post(
            BATCH,
            json={
                "token": TOKEN,
                "workflow_id": 3,
                "matching": "profile_id",
                "data": [{"data": {"profile_id": first[0]}}],
            },
        ),
        1,
    )
    assert first == second == third
    assert len(emu.profiles()) == 1


def test_profile_id_matching_cannot_create(emu: Emulator, client: httpx.Client) -> None:
    r = client.post(
        BATCH,
        json={
            "token": TOKEN,
            "workflow_id": 3,
            "matching": "profile_id",
            "data": [{"data": {"profile_id": "ab" * 12}}],
        },
    )
    assert r.json()["result"] == [{"error": 404, "error_text": "Profile not found", "profile_id": ""}]
    assert emu.profiles() == []
    assert emu.engagements() == []


def test_import_and_start_errors_are_request_level(client: httpx.Client) -> None:
    r = client.post(SINGLE, json={"token": TOKEN, "workflow_id": 12, "email": "broken"})
    assert (r.status_code, r.json()["error"], r.json()["error_text"]) == (400, 400, "Invalid email")
    client.post(BATCH, json=SEED_BATCH_CUSTOM_JSON)  # two profiles with example@example.com
    r = client.post(SINGLE, json={"token": TOKEN, "workflow_id": 12, "email": "example@example.com"})
    assert (r.status_code, r.json()["error"]) == (400, 435)


def test_a_routes_request_content_reaches_the_engagements_over_http(emu: Emulator, client: httpx.Client) -> None:
    from connector.config import RouteSettings
    from connector.mapping import Mapper
    from connector.sink.request import body_shape

    route = RouteSettings.model_validate(
        {
            "name": "contacts",
            "topics": ["cdc.contacts"],
            "workflow_id": 12,
            "db_id": 1,
            "matching": "email_phone_sub",
            "fields": {"email": "email", "phones": "phone", "subscriptions": "subs"},
            "request_content": {"one": "Spring sale", "two": 15},
        }
    )
    shape, mapper = body_shape(route), Mapper(route)
    sms = {"resource_id": 7, "channel": "sms", "phone": "+79000000001"}
    rows = [{"email": "a@example.com", "phone": "+79000000001", "subs": [sms]}, {"phone": "+79000000001"}]
    body = shape.body([shape.item(mapper.map(row)) for row in rows])
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    ids = _ok_results(client.post(BATCH, content=body, headers=headers), 2)
    assert ids[0] == ids[1]  # the second item is found by the SMS subscription the first one created
    [engagement] = emu.engagements()
    assert (engagement["matching"], engagement["count"]) == ("email_phone_sub", 2)
    assert engagement["content"] == {"one": "Spring sale", "two": 15}
