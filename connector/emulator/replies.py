"""Answer bodies and HTTP statuses: one place that says which error code goes with which status.

The platform does not document the HTTP status of error answers. The emulator sends:

=========================================  ===========  ============================================
body ``error``                             HTTP status  when
=========================================  ===========  ============================================
0 (per-item errors inside ``result``)      200          the request was executed
400 ``Invalid request``                    400          malformed body or parameters, body too large,
                                                        a matching mode refused (``refuse_matching``),
                                                        strict mode rejecting a batch
401 ``API token required``                 401          token missing or not accepted
402 ``Tariff limit reached``               402          quota fault exhausted
404 ``Object is not found ...``            404          unknown workflow_id / db_id / task_id
415 ``Requested Content-Type ...``         415          neither JSON nor XML
435 ``Ambiguous search ...``               400          import_and_start matched several profiles
500 ``Internal service error``             500          injected fault
501 ``Method does not exist``              404          unknown path under /api/
502 / 503 / 429                            same         injected faults (503 also during an outage)
=========================================  ===========  ============================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from connector.emulator.xmlbody import render_xml

JSON = "application/json"
XML = "application/xml"

TEXTS = {
    0: "Successful operation",
    400: "Invalid request",
    401: "API token required",
    402: "Tariff limit reached",
    403: "No rights for this action",
    404: "Object is not found in token vision zone",
    405: "Method not allowed",
    409: "Other record with same unique attributes already exists",
    415: "Requested Content-Type is not supported",
    429: "Too Many Requests",
    435: "Ambiguous search, there are several objects with given attributes",
    500: "Internal service error",
    501: "Method does not exist",
    502: "Bad Gateway",
    503: "Service Unavailable",
}

_HTTP = {0: 200, 435: 400, 450: 400, 501: 404}

TOO_LARGE_DEBUG = "http: request body too large"


def http_status(code: int) -> int:
    """The HTTP status sent with a body whose ``error`` is ``code``."""
    return _HTTP.get(code, code if 400 <= code <= 599 else 400)


def error_payload(code: int, debug: str | None = None, text: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"error": code, "error_text": text if text is not None else TEXTS.get(code, "Error")}
    if debug is not None:
        out["error_debug"] = debug
    return out


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()
    # Close the connection after answering (the body was not read, or the client must reconnect).
    close: bool = False


def render(payload: dict[str, Any], xml: bool = False) -> tuple[bytes, str]:
    """The body bytes and content type of an answer, JSON unless the request asked for XML."""
    if xml:
        return render_xml(_plain(payload)), XML
    return orjson.dumps(payload), JSON


def error_reply(code: int, debug: str | None = None, *, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    """A request-level error answer; always JSON (it may come before the body could be read)."""
    return Reply(http_status(code), orjson.dumps(error_payload(code, debug)), JSON, headers)


def _plain(value: Any) -> Any:
    """Resolve pre-serialised JSON fragments (task results) so the XML renderer sees plain values."""
    if isinstance(value, orjson.Fragment):
        return orjson.loads(orjson.dumps(value))
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
