"""A client of a Confluent-compatible Schema Registry: writer schemas by id, cached, with faults classified.

What the caller does with each outcome decides the classes raised here:

- the registry says the id does not exist (HTTP 404 with error code 40403): the record can never be
  read, so :class:`SchemaNotFound` (a :class:`~connector.errors.DecodeError`, dead-lettered);
- the schema exists but is not Avro, or uses schema references: also a :class:`DecodeError`;
- the registry cannot be reached, times out, answers 5xx, 429, refuses the credentials, or answers
  something that is not a Schema Registry reply (a proxy, a wrong URL): :class:`RegistryUnavailable`,
  a :class:`~connector.errors.TransientError`; the main loop rewinds to the record and retries later.
  Nothing is ever dead-lettered because the registry misbehaved.

Schemas registered under an id never change, so found schemas are kept in a bounded LRU cache
(``cache_size``); ids the registry does not know are remembered for a few seconds only, so that a flood
of records with one bad id costs one request, while a schema registered a moment later is still found.

There is no process-wide client: whoever composes the application opens one
(:func:`connector.decode.open_registry`), hands it to every Avro route's decoder, and closes it.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
import orjson

from connector.config import SchemaRegistrySettings
from connector.errors import DecodeError, TransientError

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
ACCEPT = "application/vnd.schemaregistry.v1+json, application/vnd.schemaregistry+json; qs=0.9, application/json; qs=0.5"
SCHEMA_NOT_FOUND = 40403
UNKNOWN_ID_TTL_S = 10.0  # how long a 40403 answer is trusted before the id is asked again
_UNKNOWN_IDS_KEPT = 10_000

K = TypeVar("K")
V = TypeVar("V")


class SchemaNotFound(DecodeError):
    """The registry has no schema under this id: the record cannot be read, ever."""


class RegistryUnavailable(TransientError):
    """The registry could not answer (down, slow, 5xx, refused credentials): try the record again later."""


class RegistryRefused(Exception):
    """The registry refused a producer-side request (e.g. an invalid schema); not raised on the read path."""

    def __init__(self, status: int, error_code: int | None, message: str) -> None:
        self.status = status
        self.error_code = error_code
        super().__init__(f"HTTP {status}, error {error_code}: {message}")


@dataclass(frozen=True, slots=True)
class RegisteredSchema:
    """One schema as the registry holds it."""

    id: int
    text: str
    schema_type: str = "AVRO"
    subject: str | None = None
    version: int | None = None


class LruCache(Generic[K, V]):
    """A dict bounded to ``maxsize`` entries; the least recently used one leaves first. Not thread-safe."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self._data: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def pop(self, key: K) -> V | None:
        return self._data.pop(key, None)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data


def _auth_headers(settings: SchemaRegistrySettings) -> tuple[httpx.BasicAuth | None, dict[str, str]]:
    user, password, bearer = settings.basic_auth_user, settings.basic_auth_password, settings.bearer_token
    if bearer is not None and (user is not None or password is not None):
        raise ValueError("schema_registry: give basic_auth_user/basic_auth_password or bearer_token, not both")
    if (user is None) != (password is None):
        raise ValueError("schema_registry: basic auth needs both basic_auth_user and basic_auth_password")
    if bearer is not None:
        return None, {"Authorization": f"Bearer {bearer.get_secret_value()}"}
    if user is not None and password is not None:
        return httpx.BasicAuth(user, password.get_secret_value()), {}
    return None, {}


class RegistryClient:
    """Reads (and, for producers and tests, registers) schemas over the registry's REST API.

    Thread-safe: several routes, and the sender threads of a demo producer, may share one client. Its
    owner closes it (:meth:`close`, or ``with``).
    """

    def __init__(
        self,
        settings: SchemaRegistrySettings,
        *,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not settings.url:
            raise ValueError("schema_registry.url is not set")
        self.url = settings.url.rstrip("/")
        parsed = httpx.URL(self.url)
        self._shown = str(parsed.copy_with(username=None, password=None)) if parsed.userinfo else self.url
        auth, headers = _auth_headers(settings)
        verify: ssl.SSLContext | bool = True
        if settings.ca_file is not None:
            verify = ssl.create_default_context(cafile=str(settings.ca_file))
        self._http = httpx.Client(
            base_url=self.url,
            auth=auth,
            headers={"Accept": ACCEPT, **headers},
            timeout=httpx.Timeout(settings.request_timeout_s),
            verify=verify,
            transport=transport,
        )
        self._clock = clock
        self._lock = threading.Lock()
        self._found: LruCache[int, RegisteredSchema] = LruCache(settings.cache_size)
        self._unknown: LruCache[int, float] = LruCache(_UNKNOWN_IDS_KEPT)  # id -> when to ask again
        self.requests = 0  # HTTP requests made (tests and debugging)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def cache_size(self) -> int:
        """How many schemas the cache keeps at most (``schema_registry.cache_size``)."""
        return self._found.maxsize

    @property
    def cached(self) -> int:
        """How many schemas the cache holds."""
        return len(self._found)

    # ------------------------------------------------------------------ the read path

    def schema(self, schema_id: int) -> RegisteredSchema:
        """The Avro schema registered under ``schema_id``.

        Raises :class:`SchemaNotFound` or :class:`DecodeError` (the record is dead), or
        :class:`RegistryUnavailable` (retry later).
        """
        with self._lock:
            found = self._found.get(schema_id)
            if found is not None:
                return found
            retry_at = self._unknown.get(schema_id)
            if retry_at is not None and self._clock() < retry_at:
                raise SchemaNotFound(f"schema id {schema_id} is not in the schema registry (error {SCHEMA_NOT_FOUND})")
        try:
            doc = self._get(f"/schemas/ids/{schema_id}", what=f"schema id {schema_id}")
        except SchemaNotFound:
            with self._lock:
                self._unknown.put(schema_id, self._clock() + UNKNOWN_ID_TTL_S)
            raise
        text = doc.get("schema")
        if type(text) is not str:
            raise RegistryUnavailable(
                f"the schema registry answered schema id {schema_id} without a schema string; "
                "is schema_registry.url a Schema Registry?"
            )
        schema_type = doc.get("schemaType") or "AVRO"
        if schema_type != "AVRO":
            raise DecodeError(f"schema id {schema_id} is a {schema_type} schema, not Avro")
        if doc.get("references"):
            raise DecodeError(f"schema id {schema_id} uses schema references, which the connector does not support")
        found = RegisteredSchema(schema_id, text)
        with self._lock:
            self._found.put(schema_id, found)
            self._unknown.pop(schema_id)
        return found

    # ------------------------------------------------------------------ the producer side (demo, tests)

    def register(self, subject: str, schema: str | Mapping[str, Any] | list[Any]) -> int:
        """Register ``schema`` under ``subject`` (or find it there); returns its id.

        Raises :class:`RegistryRefused` when the registry refuses it, :class:`RegistryUnavailable` when it
        cannot answer.
        """
        text = schema if isinstance(schema, str) else orjson.dumps(schema).decode()
        body = orjson.dumps({"schema": text, "schemaType": "AVRO"})
        doc = self._request("POST", f"/subjects/{quote(subject, safe='')}/versions", body, refuse=True)
        schema_id = doc.get("id")
        if type(schema_id) is not int:
            raise RegistryUnavailable(f"the schema registry answered a registration without an id: {doc!r}")
        return schema_id

    def latest(self, subject: str) -> RegisteredSchema:
        """The latest version registered under ``subject``."""
        doc = self._request("GET", f"/subjects/{quote(subject, safe='')}/versions/latest", None, refuse=True)
        try:
            return RegisteredSchema(
                int(doc["id"]), str(doc["schema"]), str(doc.get("schemaType") or "AVRO"),
                str(doc["subject"]), int(doc["version"]),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError):
            raise RegistryUnavailable(f"unexpected answer for the latest version of {subject!r}: {doc!r}") from None

    # ------------------------------------------------------------------ HTTP

    def _get(self, path: str, *, what: str) -> dict[str, Any]:
        return self._request("GET", path, None, refuse=False, what=what)

    def _request(self, method: str, path: str, body: bytes | None, *, refuse: bool, what: str = "") -> dict[str, Any]:
        headers = {"Content-Type": CONTENT_TYPE} if body is not None else None
        try:
            self.requests += 1
            response = self._http.request(method, path, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise RegistryUnavailable(
                f"the schema registry at {self._shown} did not answer in time ({type(exc).__name__})"
            ) from None
        except httpx.TransportError as exc:
            raise RegistryUnavailable(
                f"the schema registry at {self._shown} cannot be reached ({type(exc).__name__}: {exc})"
            ) from None
        status = response.status_code
        doc = _json_or_none(response.content)
        error_code = doc.get("error_code") if doc is not None else None
        message = str(doc.get("message", "")) if doc is not None else response.text[:200]
        if status == 200 and doc is not None:
            return doc
        if status == 404 and error_code == SCHEMA_NOT_FOUND and what:
            raise SchemaNotFound(f"{what} is not in the schema registry (error {error_code}: {message})")
        if refuse and 400 <= status < 500 and status not in (401, 403, 408, 429) and error_code is not None:
            raise RegistryRefused(status, error_code if type(error_code) is int else None, message)
        if status in (401, 403):
            reason = f"refused the connector's credentials (HTTP {status}: {message})"
        elif status == 200:
            reason = "answered 200 with a body that is not JSON"
        elif status == 404:
            reason = f"answered 404 without a Schema Registry error ({message!r}); check schema_registry.url"
        else:
            reason = f"answered HTTP {status}" + (f" (error {error_code}: {message})" if doc is not None else "")
        raise RegistryUnavailable(f"the schema registry at {self._shown} {reason}")


def _json_or_none(content: bytes) -> dict[str, Any] | None:
    try:
        doc = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    return doc if type(doc) is dict else None
