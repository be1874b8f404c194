"""The Schema Registry client: credentials and TLS as configured, a bounded cache, and every registry
fault classified as the main loop needs it (dead letter only for an authoritative "no such schema")."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from connector.config import SchemaRegistrySettings
from connector.decode.registry import (
    UNKNOWN_ID_TTL_S,
    LruCache,
    RegistryClient,
    RegistryUnavailable,
    SchemaNotFound,
)
from connector.errors import DecodeError, TransientError
from connector.schema_registry import RegistryServer

RECORD = '{"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"}]}'


def settings(url: str, **extra: object) -> SchemaRegistrySettings:
    return SchemaRegistrySettings.model_validate({"url": url, "request_timeout_s": 1.0, **extra})


@pytest.fixture
def registry() -> Iterator[RegistryServer]:
    with RegistryServer() as server:
        yield server


# ---------------------------------------------------------------------------------------- credentials


def test_basic_auth() -> None:
    with RegistryServer(basic_auth=("svc", "s3cret")) as server:
        schema_id = server.register("s", RECORD)
        with RegistryClient(settings(server.url, basic_auth_user="svc", basic_auth_password="s3cret")) as client:
            assert client.schema(schema_id).text == RECORD
        assert server.requests[-1].authorization == "Basic c3ZjOnMzY3JldA=="
        wrong = settings(server.url, basic_auth_user="svc", basic_auth_password="wrong")
        with (
            RegistryClient(wrong) as client,
            pytest.raises(RegistryUnavailable, match="refused the connector's credentials \\(HTTP 401"),
        ):
            client.schema(schema_id)


def test_bearer_token() -> None:
    with RegistryServer(bearer_token="tok-123") as server:
        schema_id = server.register("s", RECORD)
        with RegistryClient(settings(server.url, bearer_token="tok-123")) as client:
            assert client.schema(schema_id).id == schema_id
        assert server.requests[-1].authorization == "Bearer tok-123"
        with RegistryClient(settings(server.url)) as client, pytest.raises(TransientError, match="401"):
            client.schema(schema_id)


def test_credentials_must_be_one_kind_and_complete() -> None:
    # Refused when the settings are validated, before any client exists.
    with pytest.raises(ValueError, match="not both"):
        settings("http://127.0.0.1:1", basic_auth_user="u", basic_auth_password="p", bearer_token="t")
    with pytest.raises(ValueError, match="go together"):
        settings("http://127.0.0.1:1", basic_auth_user="u")


def test_credentials_in_the_url_never_reach_messages() -> None:
    url = "http://user:hunter2@127.0.0.1:9"  # nothing listens on the discard port
    with RegistryClient(settings(url)) as client, pytest.raises(RegistryUnavailable) as caught:
        client.schema(1)
    assert "hunter2" not in str(caught.value) and "127.0.0.1:9" in str(caught.value)


# ---------------------------------------------------------------------------------------- TLS


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def private_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a private CA")
    d = tmp_path_factory.mktemp("ca")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=Test CA",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=d)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key",
             "-out", "server.csr", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", "san.ext", "-out", "server.pem", cwd=d)  # fmt: skip
    return d


def test_tls_with_a_private_ca(private_ca: Path) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(private_ca / "server.pem", private_ca / "server.key")
    with RegistryServer(ssl_context=context) as server:
        assert server.url.startswith("https://")
        schema_id = server.register("s", RECORD)
        with RegistryClient(settings(server.url, ca_file=str(private_ca / "ca.pem"))) as client:
            assert client.schema(schema_id).text == RECORD
        with RegistryClient(settings(server.url)) as client, pytest.raises(RegistryUnavailable, match="ConnectError"):
            client.schema(schema_id)  # the system CAs do not know the private CA


# ---------------------------------------------------------------------------------------- caching


def test_schemas_are_fetched_once_and_the_cache_is_bounded(registry: RegistryServer) -> None:
    ids = [registry.register(f"s{n}", RECORD.replace('"R"', f'"R{n}"')) for n in range(3)]
    with RegistryClient(settings(registry.url, cache_size=2)) as client:
        assert client.cache_size == 2
        for _ in range(5):
            client.schema(ids[0])
        assert client.requests == 1
        for schema_id in ids:
            client.schema(schema_id)
        assert client.cached == 2
        client.schema(ids[2])
        assert client.requests == 3
        client.schema(ids[0])  # evicted by ids[2], the least recently used then
        assert client.requests == 4


def test_unknown_ids_are_remembered_briefly(registry: RegistryServer) -> None:
    now = [0.0]
    with RegistryClient(settings(registry.url), clock=lambda: now[0]) as client:
        with pytest.raises(SchemaNotFound, match="schema id 1 is not in the schema registry"):
            client.schema(1)
        with pytest.raises(SchemaNotFound):
            client.schema(1)
        assert client.requests == 1
        registry.register("late", RECORD)  # gets id 1
        now[0] += UNKNOWN_ID_TTL_S + 0.1
        assert client.schema(1).text == RECORD
        assert client.requests == 2


def test_lru_cache() -> None:
    cache: LruCache[str, int] = LruCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1
    cache.put("c", 3)
    assert "b" not in cache and cache.get("a") == 1 and cache.get("c") == 3
    with pytest.raises(ValueError):
        LruCache(0)


# ---------------------------------------------------------------------------------------- what the registry holds


def test_schemas_that_are_not_avro_or_use_references_are_dead_letters(registry: RegistryServer) -> None:
    with httpx.Client(base_url=registry.url) as http:
        proto = http.post("/subjects/p/versions", json={"schema": "syntax = 'proto3';", "schemaType": "PROTOBUF"})
        refs = http.post(
            "/subjects/r/versions",
            json={"schema": '"string"', "references": [{"name": "x.Y", "subject": "y", "version": 1}]},
        )
    with RegistryClient(settings(registry.url)) as client:
        with pytest.raises(DecodeError, match="is a PROTOBUF schema, not Avro"):
            client.schema(proto.json()["id"])
        with pytest.raises(DecodeError, match="uses schema references"):
            client.schema(refs.json()["id"])


# ---------------------------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (httpx.Response(500, json={"error_code": 50001, "message": "store"}), "HTTP 500 \\(error 50001: store\\)"),
        (httpx.Response(502, text="<html>bad gateway</html>"), "HTTP 502"),
        (httpx.Response(429, json={"error_code": 429, "message": "slow down"}), "HTTP 429"),
        (httpx.Response(403, json={"error_code": 40301, "message": "denied"}), "credentials \\(HTTP 403"),
        (
            httpx.Response(404, text="<html>not found</html>"),
            "404 without a Schema Registry error.*schema_registry.url",
        ),
        (httpx.Response(200, text="<html>hello</html>"), "200 with a body that is not JSON"),
        (httpx.Response(200, json={"unexpected": True}), "without a schema string"),
    ],
)
def test_registry_faults_are_transient(response: httpx.Response, reason: str) -> None:
    transport = httpx.MockTransport(lambda request: response)
    with (
        RegistryClient(settings("http://registry.test"), transport=transport) as client,
        pytest.raises(RegistryUnavailable, match=reason),
    ):
        client.schema(1)


def test_timeouts_and_refused_connections_are_transient(registry: RegistryServer) -> None:
    schema_id = registry.register("s", RECORD)
    with RegistryClient(settings(registry.url, request_timeout_s=0.2)) as client:
        registry.set_outage("slow", delay_s=3)
        with pytest.raises(RegistryUnavailable, match="did not answer in time"):
            client.schema(schema_id)
        registry.set_outage("refuse")
        with pytest.raises(RegistryUnavailable, match="cannot be reached"):
            client.schema(schema_id)
        registry.set_outage("unavailable")
        with pytest.raises(RegistryUnavailable, match="HTTP 503"):
            client.schema(schema_id)
        registry.set_outage(None)
        assert client.schema(schema_id).id == schema_id


# ---------------------------------------------------------------------------------------- producer side


def test_register_and_latest(registry: RegistryServer) -> None:
    with RegistryClient(settings(registry.url)) as client:
        first = client.register("customers-value", RECORD)
        assert client.register("customers-value", RECORD) == first
        second = client.register("customers-value", RECORD.replace('"int"', '"long"'))
        latest = client.latest("customers-value")
        assert (latest.id, latest.version, latest.subject) == (second, 2, "customers-value")
        assert client.schema(first).text == RECORD
