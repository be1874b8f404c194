"""The in-process Schema Registry answers the REST calls a connector and a producer make as Confluent's
registry does: bodies, error codes, content type, global ids, idempotent registration."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from connector.schema_registry import RegistryServer

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
V1 = {"type": "record", "name": "Customer", "fields": [{"name": "id", "type": "int"}]}
V2 = {
    "type": "record",
    "name": "Customer",
    "fields": [{"name": "id", "type": "int"}, {"name": "x", "type": "string", "default": ""}],
}


@pytest.fixture
def registry() -> Iterator[RegistryServer]:
    with RegistryServer() as server:
        yield server


@pytest.fixture
def http(registry: RegistryServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=registry.url, headers={"Content-Type": CONTENT_TYPE}) as client:
        yield client


def register(http: httpx.Client, subject: str, schema: object) -> httpx.Response:
    return http.post(f"/subjects/{subject}/versions", json={"schema": json.dumps(schema)})


def test_registration_is_idempotent_and_ids_are_global(http: httpx.Client) -> None:
    first = register(http, "customers-value", V1)
    assert first.status_code == 200 and first.json() == {"id": 1}
    assert first.headers["content-type"] == CONTENT_TYPE
    assert register(http, "customers-value", V1).json() == {"id": 1}
    reformatted = http.post("/subjects/customers-value/versions", json={"schema": json.dumps(V1, indent=4)})
    assert reformatted.json() == {"id": 1}
    assert register(http, "other-value", V1).json() == {"id": 1}  # same schema, same id, another subject
    assert register(http, "customers-value", V2).json() == {"id": 2}
    assert http.get("/subjects/customers-value/versions").json() == [1, 2]
    assert http.get("/subjects").json() == ["customers-value", "other-value"]


def test_reading_schemas(http: httpx.Client) -> None:
    register(http, "customers-value", V1)
    register(http, "customers-value", V2)
    assert json.loads(http.get("/schemas/ids/2").json()["schema"]) == V2
    latest = http.get("/subjects/customers-value/versions/latest").json()
    assert {k: latest[k] for k in ("subject", "version", "id")} == {"subject": "customers-value", "version": 2, "id": 2}
    assert json.loads(latest["schema"]) == V2
    assert http.get("/subjects/customers-value/versions/1").json()["id"] == 1
    looked_up = http.post("/subjects/customers-value", json={"schema": json.dumps(V1)})
    assert looked_up.json()["version"] == 1


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("GET", "/schemas/ids/99", None, 404, 40403),
        ("GET", "/subjects/nope/versions/latest", None, 404, 40401),
        ("GET", "/subjects/customers-value/versions/7", None, 404, 40402),
        ("POST", "/subjects/customers-value/versions", {"schema": "{not json"}, 422, 42201),
        ("POST", "/subjects/customers-value/versions", {"schema": '{"type": "record"}'}, 422, 42201),
        ("POST", "/subjects/customers-value", {"schema": json.dumps(V2)}, 404, 40403),
    ],
)
def test_errors_carry_confluent_codes(
    http: httpx.Client, method: str, path: str, body: object, status: int, code: int
) -> None:
    register(http, "customers-value", V1)
    response = http.request(method, path, json=body)
    assert response.status_code == status
    assert response.headers["content-type"] == CONTENT_TYPE
    assert response.json()["error_code"] == code and response.json()["message"]


def test_subjects_with_reserved_characters(http: httpx.Client) -> None:
    assert register(http, "a%2Fb", V1).status_code == 200  # the subject "a/b", URL-encoded
    assert http.get("/subjects").json() == ["a/b"]


def test_outages(registry: RegistryServer) -> None:
    registry.register("s", V1)
    with httpx.Client(base_url=registry.url, timeout=0.3) as http:
        registry.set_outage("unavailable")
        assert http.get("/schemas/ids/1").status_code == 503
        registry.set_outage("refuse")
        with pytest.raises(httpx.ConnectError):
            http.get("/schemas/ids/1")
        registry.set_outage("slow", delay_s=2)
        with pytest.raises(httpx.ReadTimeout):
            http.get("/schemas/ids/1")
        registry.set_outage(None)
        assert http.get("/schemas/ids/1").status_code == 200
    assert registry.url.endswith(f":{registry.port}")  # the same port throughout


def test_basic_auth_is_required_when_configured() -> None:
    with RegistryServer(basic_auth=("u", "p")) as server:
        server.register("s", V1)
        assert httpx.get(f"{server.url}/schemas/ids/1").status_code == 401
        assert httpx.get(f"{server.url}/schemas/ids/1", auth=("u", "p")).status_code == 200
