"""A small Confluent-compatible Schema Registry for the tests and the demo, served from a background thread.

The endpoints the connector and an Avro producer use, with Confluent's bodies, error codes and content
type::

    GET  /schemas/ids/{id}                     {"schema": "..."} (+ "schemaType", "references" unless Avro/none)
    GET  /subjects                             ["subject", ...]
    GET  /subjects/{subject}/versions          [1, 2, ...]
    GET  /subjects/{subject}/versions/{v}      {"subject", "version", "id", "schema"}   (v: a number or latest)
    POST /subjects/{subject}/versions          {"schema": "...", "schemaType"?: "AVRO"} -> {"id": N}
    POST /subjects/{subject}                   the schema's {"subject", "version", "id", "schema"} there

Ids are global: the same schema gets the same id under every subject, and registering a schema again
under the same subject returns its id without a new version. Avro schemas are validated (fastavro);
no compatibility rules are enforced.

Test switches: :meth:`RegistryServer.set_outage` makes it answer 503, refuse connections, or answer
slowly; ``basic_auth`` / ``bearer_token`` make it demand credentials (401 otherwise); ``requests``
records what was asked, and how it was authenticated.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import socket
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import unquote

import fastavro

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
Outage = Literal["unavailable", "refuse", "slow"]


class RegistryError(Exception):
    """An error answer: HTTP status, Confluent error code and message."""

    def __init__(self, status: int, error_code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message


@dataclass(frozen=True, slots=True)
class _Stored:
    id: int
    text: str
    schema_type: str
    references: tuple[Any, ...] = ()


@dataclass(slots=True)
class SeenRequest:
    method: str
    path: str
    authorization: str | None


@dataclass
class SchemaStore:
    """The registry's state: schemas by id, versions by subject. Thread-safe."""

    _by_id: dict[int, _Stored] = field(default_factory=dict)
    _id_of: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (type, canonical, refs) -> id
    _subjects: dict[str, list[int]] = field(default_factory=dict)  # subject -> ids by version - 1
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def register(self, subject: str, text: str, schema_type: str = "AVRO", references: list[Any] | None = None) -> int:
        canonical = _canonical(text, schema_type)
        refs_key = json.dumps(references or [], sort_keys=True)
        with self._lock:
            key = (schema_type, canonical, refs_key)
            schema_id = self._id_of.get(key)
            if schema_id is None:
                schema_id = len(self._by_id) + 1
                self._id_of[key] = schema_id
                self._by_id[schema_id] = _Stored(schema_id, text, schema_type, tuple(references or ()))
            versions = self._subjects.setdefault(subject, [])
            if schema_id not in versions:
                versions.append(schema_id)
            return schema_id

    def by_id(self, schema_id: int) -> _Stored:
        with self._lock:
            stored = self._by_id.get(schema_id)
        if stored is None:
            raise RegistryError(404, 40403, "Schema not found")
        return stored

    def subjects(self) -> list[str]:
        with self._lock:
            return sorted(self._subjects)

    def versions(self, subject: str) -> list[int]:
        with self._lock:
            ids = self._subjects.get(subject)
            if ids is None:
                raise RegistryError(404, 40401, f"Subject '{subject}' not found.")
            return list(range(1, len(ids) + 1))

    def version(self, subject: str, version: str) -> dict[str, Any]:
        with self._lock:
            ids = self._subjects.get(subject)
            if ids is None:
                raise RegistryError(404, 40401, f"Subject '{subject}' not found.")
            if version == "latest":
                number = len(ids)
            elif version.isdigit() and 1 <= int(version) <= len(ids):
                number = int(version)
            elif version.lstrip("-").isdigit():
                raise RegistryError(404, 40402, f"Version {version} not found.")
            else:
                raise RegistryError(422, 42202, f"The specified version '{version}' is not a valid version id.")
            stored = self._by_id[ids[number - 1]]
        return _describe(subject, number, stored)

    def lookup(self, subject: str, text: str, schema_type: str = "AVRO") -> dict[str, Any]:
        canonical = _canonical(text, schema_type)
        with self._lock:
            ids = self._subjects.get(subject)
            if ids is None:
                raise RegistryError(404, 40401, f"Subject '{subject}' not found.")
            for number, schema_id in enumerate(ids, start=1):
                stored = self._by_id[schema_id]
                if stored.schema_type == schema_type and _canonical(stored.text, schema_type) == canonical:
                    return _describe(subject, number, stored)
        raise RegistryError(404, 40403, "Schema not found")


def _describe(subject: str, version: int, stored: _Stored) -> dict[str, Any]:
    doc: dict[str, Any] = {"subject": subject, "version": version, "id": stored.id, "schema": stored.text}
    if stored.schema_type != "AVRO":
        doc["schemaType"] = stored.schema_type
    if stored.references:
        doc["references"] = list(stored.references)
    return doc


def _canonical(text: str, schema_type: str) -> str:
    """The schema in a form where formatting differences vanish; validates Avro schemas."""
    if schema_type not in ("AVRO", "JSON", "PROTOBUF"):
        raise RegistryError(422, 42201, f"Invalid schema type {schema_type}")
    if schema_type == "PROTOBUF":
        return text.strip()
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise RegistryError(422, 42201, f"Invalid schema: not JSON ({exc})") from None
    if schema_type == "AVRO":
        try:
            fastavro.parse_schema(doc)
        except Exception as exc:  # fastavro raises several types for invalid schemas
            raise RegistryError(422, 42201, f"Invalid schema: {exc}") from None
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    registry: RegistryServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("schema registry: connection from %s ended with an error", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("schema registry: %s", format % args)

    def setup(self) -> None:
        super().setup()
        self.server.registry._track(self.connection, add=True)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.registry._track(self.connection, add=False)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        registry = self.server.registry
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        registry._seen(SeenRequest(method, self.path, self.headers.get("Authorization")))
        if registry._wait_if_slow():
            return  # stopped while waiting
        status, doc = registry._answer(method, self.path, body, self.headers.get("Authorization"))
        payload = json.dumps(doc).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            self.close_connection = True


class RegistryServer:
    """The registry on ``host:port`` (0: a free port) in a background thread.

    ``with RegistryServer() as registry: ...`` or ``start()`` / ``stop()``; ``url`` is its base URL.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        basic_auth: tuple[str, str] | None = None,
        bearer_token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        store: SchemaStore | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.store = store or SchemaStore()
        self.requests: list[SeenRequest] = []
        self._basic = _basic_header(basic_auth) if basic_auth else None
        self._bearer = f"Bearer {bearer_token}" if bearer_token else None
        self._ssl = ssl_context
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._outage: Outage | None = None
        self._slow_s = 0.0
        self._stopping = threading.Event()
        self._wake = threading.Event()

    # ------------------------------------------------------------------ life cycle

    @property
    def url(self) -> str:
        scheme = "https" if self._ssl else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def start(self) -> RegistryServer:
        self._stopping.clear()
        self._listen()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        self._close_listener()
        self._drop_connections()

    def __enter__(self) -> RegistryServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _listen(self) -> None:
        server = _Server((self.host, self.port), _Handler)
        if self._ssl is not None:
            server.socket = self._ssl.wrap_socket(server.socket, server_side=True)
        server.registry = self
        self.port = server.server_address[1]
        thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name=f"schema-registry-{self.port}", daemon=True
        )
        thread.start()
        self._server, self._thread = server, thread

    def _close_listener(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def _drop_connections(self) -> None:
        with self._lock:
            connections = list(self._connections)
            self._connections.clear()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    # ------------------------------------------------------------------ test switches

    @property
    def outage(self) -> Outage | None:
        return self._outage

    def set_outage(self, kind: Outage | None, *, delay_s: float = 5.0) -> None:
        """Simulate a fault until called again with ``None``.

        ``unavailable``: every request gets 503 (error 50003). ``refuse``: the port is closed and open
        connections are cut (the client sees "connection refused"). ``slow``: answers come after
        ``delay_s`` seconds.
        """
        previous = self._outage
        self._outage = kind
        self._slow_s = delay_s if kind == "slow" else 0.0
        if kind != "slow":
            wake, self._wake = self._wake, threading.Event()
            wake.set()  # requests waiting out a slow spell are answered now
        if kind == "refuse" and previous != "refuse":
            self._close_listener()
            self._drop_connections()
        elif previous == "refuse" and kind != "refuse" and not self._stopping.is_set():
            self._listen()

    def register(self, subject: str, schema: str | Mapping[str, Any] | list[Any]) -> int:
        """Register directly, without HTTP (test set-up)."""
        text = schema if isinstance(schema, str) else json.dumps(schema)
        try:
            return self.store.register(subject, text)
        except RegistryError as exc:
            raise ValueError(exc.message) from None

    # ------------------------------------------------------------------ request handling

    def _seen(self, request: SeenRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _wait_if_slow(self) -> bool:
        """Wait out a slow spell; True when the server stopped meanwhile (no answer is due)."""
        delay = self._slow_s
        if delay > 0:
            self._wake.wait(delay)
        return self._stopping.is_set()

    def _answer(self, method: str, raw_path: str, body: bytes, authorization: str | None) -> tuple[int, Any]:
        if self._outage == "unavailable":
            return 503, {"error_code": 50003, "message": "Error while forwarding the request to the leader"}
        accepted = {a for a in (self._basic, self._bearer) if a}
        if accepted and authorization not in accepted:
            return 401, {"error_code": 401, "message": "Unauthorized"}
        path = raw_path.split("?", 1)[0].rstrip("/")
        parts = [unquote(p) for p in path.split("/")[1:]]
        try:
            return 200, self._route(method, parts, body)
        except RegistryError as exc:
            return exc.status, {"error_code": exc.error_code, "message": exc.message}

    def _route(self, method: str, parts: list[str], body: bytes) -> Any:
        store = self.store
        match method, parts:
            case "GET", ["schemas", "ids", schema_id] if schema_id.isdigit():
                stored = store.by_id(int(schema_id))
                doc: dict[str, Any] = {"schema": stored.text}
                if stored.schema_type != "AVRO":
                    doc["schemaType"] = stored.schema_type
                if stored.references:
                    doc["references"] = list(stored.references)
                return doc
            case "GET", ["subjects"]:
                return store.subjects()
            case "GET", ["subjects", subject, "versions"]:
                return store.versions(subject)
            case "GET", ["subjects", subject, "versions", version]:
                return store.version(subject, version)
            case "POST", ["subjects", subject, "versions"]:
                text, schema_type, references = _registration(body)
                return {"id": store.register(subject, text, schema_type, references)}
            case "POST", ["subjects", subject]:
                text, schema_type, _references = _registration(body)
                return store.lookup(subject, text, schema_type)
        raise RegistryError(404, 404, "HTTP 404 Not Found")


def _registration(body: bytes) -> tuple[str, str, list[Any]]:
    try:
        doc = json.loads(body or b"{}")
    except ValueError:
        raise RegistryError(400, 400, "Unrecognized request body: not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("schema"), str):
        raise RegistryError(422, 42201, "Invalid schema: the body needs a 'schema' string")
    schema_type = doc.get("schemaType") or "AVRO"
    references = doc.get("references") or []
    if not isinstance(schema_type, str) or not isinstance(references, list):
        raise RegistryError(422, 42201, "Invalid schema: bad schemaType or references")
    return doc["schema"], schema_type, references


def _basic_header(credentials: tuple[str, str]) -> str:
    token = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode("ascii")
    return f"Basic {token}"
