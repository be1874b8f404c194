"""The HTTP/1.1 server: connections, request bodies, transport faults, answers on the wire.

A threading server (keep-alive, one thread per connection, ``TCP_NODELAY``) in front of a
:class:`Backend` (the :class:`connector.emulator.server.Emulator`). Transport faults are applied
here, before a request reaches the backend's state, and only to paths under ``/api/``: latency,
5xx/429 answers, connection resets (before or after execution) and outages. Bodies larger than the
limit are refused from their Content-Length, without being read.
"""

from __future__ import annotations

import contextlib
import http
import logging
import socket
import socketserver
import struct
import sys
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler
from typing import Any, Protocol
from urllib.parse import parse_qsl

import orjson

from connector.emulator.faults import FaultConfig, FaultDecision, FaultKind
from connector.emulator.handlers import ApiRequest, fault_reply, too_large_reply
from connector.emulator.replies import Reply, error_payload, error_reply

_log = logging.getLogger(__name__)

_ANSWERED_FAULTS = frozenset(
    {FaultKind.ERROR_500, FaultKind.HTTP_502, FaultKind.HTTP_503, FaultKind.RATE_LIMIT, FaultKind.OUTAGE}
)
_CONTROL_BODY_MAX = 1_000_000
# After answering "too large", how long and how much of the unread body is discarded before closing,
# so that the client (still sending) reads the answer instead of a connection reset.
_DRAIN_TIMEOUT_S = 5.0
_DRAIN_MAX_BYTES = 1 << 30


class Backend(Protocol):
    """What the HTTP layer needs from the emulator."""

    @property
    def max_body_bytes(self) -> int: ...

    def request_started(self) -> None:
        """An API request's headers were read (counted until :meth:`request_finished`)."""
        ...

    def request_finished(self) -> None:
        """That request was answered, reset or abandoned."""
        ...

    def decide_faults(self) -> tuple[FaultDecision, FaultConfig, float]:
        """The fault decision of an arriving API request (in arrival order), the faults, the time."""
        ...

    def inject_latency(self, seconds: float) -> None: ...

    def record_unexecuted(
        self, path: str, request_id: str | None, body_bytes: int, reply: Reply | None, fault: FaultKind | None
    ) -> None:
        """Log an API request that never reached execution (fault, too large)."""
        ...

    def answer_api(self, req: ApiRequest, fault: FaultKind | None) -> Reply: ...

    def answer_control(self, method: str, path: str, params: Mapping[str, str], body: bytes) -> Reply: ...


class HttpServer(socketserver.TCPServer):
    """A TCP server with one daemon thread per connection, whose connections it can close."""

    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], backend: Backend) -> None:
        self.backend = backend
        self._conns: dict[socket.socket, threading.Thread] = {}
        self._resets: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        t = threading.Thread(
            target=self._serve_connection, args=(request, client_address), name="emulator-conn", daemon=True
        )
        with self._conns_lock:
            self._conns[request] = t
        t.start()

    def _serve_connection(self, request: socket.socket, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            with self._conns_lock:
                self._conns.pop(request, None)
            self.shutdown_request(request)

    def mark_reset(self, request: socket.socket) -> None:
        """Close this connection with a TCP reset (no answer, no FIN) when its handler ends."""
        with contextlib.suppress(OSError):
            request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with self._conns_lock:
            self._resets.add(request)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            reset = request in self._resets
            self._resets.discard(request)
        if reset:
            self.close_request(request)
        else:
            super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client going away is routine; anything else is a bug worth a traceback.
        if isinstance(sys.exc_info()[1], OSError):
            _log.debug("connection from %s ended", client_address, exc_info=True)
        else:
            _log.exception("request from %s failed", client_address)

    def close_connections(self) -> list[threading.Thread]:
        """Wake every connection thread (blocked reading a keep-alive socket) so that it ends."""
        with self._conns_lock:
            conns = list(self._conns.items())
        for sock, _ in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        return [t for _, t in conns]


class _Handler(BaseHTTPRequestHandler):
    """One connection: requests read and answered in turn (keep-alive)."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    # Idle keep-alive connections are closed after this many seconds.
    timeout = 120
    server: HttpServer

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("%s %s", self.address_string(), format % args)

    def handle_expect_100(self) -> bool:
        # Refuse a too-large body before the client sends it: no "100 Continue", the 400 follows.
        length = self._declared_length()
        if length is not None and length > self.server.backend.max_body_bytes:
            return True
        return super().handle_expect_100()

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    # --- routing ------------------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        path, _, query = self.path.partition("?")
        if path.startswith("/api/"):
            if method == "POST":
                backend = self.server.backend
                backend.request_started()
                try:
                    self._api(path)
                finally:
                    backend.request_finished()
            else:
                self._discard_small_body()
                self._send(
                    Reply(
                        405,
                        orjson.dumps(error_payload(405, f"{method} {path}: use POST")),
                        headers=(("Allow", "POST"),),
                    )
                )
        elif path == "/_emulator" or path.startswith("/_emulator/"):
            body = self._read_small_body()
            if body is not None:
                reply = self.server.backend.answer_control(method, path, dict(parse_qsl(query)), body)
                self._send(reply)
        else:
            self._discard_small_body()
            self._send(Reply(404, orjson.dumps(error_payload(404, f"no {path}", text="Not found"))))

    def _api(self, path: str) -> None:
        backend = self.server.backend
        headers = self.headers
        rid = headers.get("Request-ID")
        legacy = False
        if not rid and headers.get("X-Request-ID"):
            rid, legacy = headers.get("X-Request-ID"), True
        try:
            length = self._declared_length()
        except ValueError:
            self._send(error_reply(400, "invalid Content-Length"), close=True)
            return
        decision, faults, now = backend.decide_faults()
        if decision.latency_s > 0:
            backend.inject_latency(decision.latency_s)
        if decision.kind is FaultKind.RESET:
            backend.record_unexecuted(path, rid, length or 0, None, decision.kind)
            self._reset()
            return
        limit = backend.max_body_bytes
        if length is not None and length > limit:
            self._too_large(path, rid, length, drain=not headers.get("Expect"))
            return
        body = self._read_body(length, limit)
        if body is None:
            self._too_large(path, rid, limit + 1, drain=True)
            return
        if decision.kind in _ANSWERED_FAULTS:
            reply = fault_reply(decision, faults, now)
            backend.record_unexecuted(path, rid, len(body), reply, decision.kind)
            self._send(reply)
            return
        req = ApiRequest(
            path=path,
            body=body,
            content_type=headers.get("Content-Type"),
            authorization=headers.get("Authorization"),
            request_id=rid,
            legacy_request_id=legacy,
        )
        after = FaultKind.RESET_AFTER_EXECUTE if decision.kind is FaultKind.RESET_AFTER_EXECUTE else None
        reply = backend.answer_api(req, after)
        if after is not None:
            self._reset()
        else:
            self._send(reply)

    def _too_large(self, path: str, rid: str | None, length: int, *, drain: bool) -> None:
        reply = too_large_reply()
        self.server.backend.record_unexecuted(path, rid, length, reply, None)
        self._send(reply, close=True)
        if drain:
            self._drain(length)

    # --- body --------------------------------------------------------------------------------------

    def _declared_length(self) -> int | None:
        """Content-Length (None when chunked or absent); ValueError when malformed."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return None
        raw = self.headers.get("Content-Length")
        if raw is None:
            return 0
        value = int(raw.strip())
        if value < 0:
            raise ValueError(raw)
        return value

    def _read_body(self, length: int | None, limit: int) -> bytes | None:
        """The body; None when a chunked body grows past ``limit`` (the connection then closes)."""
        if length is not None:
            body = self.rfile.read(length) if length else b""
            if len(body) < length:
                raise ConnectionError("the client closed the connection mid-body")
            return body
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise ConnectionError("malformed chunked body") from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            total += size
            if total > limit:
                return None
            parts.append(self.rfile.read(size))
            self.rfile.readline(8)

    def _read_small_body(self) -> bytes | None:
        try:
            length = self._declared_length()
        except ValueError:
            self._send(error_reply(400, "invalid Content-Length"), close=True)
            return None
        if length is not None and length > _CONTROL_BODY_MAX:
            self._send(error_reply(400, "body too large for a control request"), close=True)
            return None
        body = self._read_body(length, _CONTROL_BODY_MAX)
        if body is None:
            self._send(error_reply(400, "body too large for a control request"), close=True)
        return body

    def _discard_small_body(self) -> None:
        with contextlib.suppress(ValueError):
            length = self._declared_length()
            if length is None or length > _CONTROL_BODY_MAX:
                self.close_connection = True
            elif length:
                self.rfile.read(length)

    def _drain(self, length: int) -> None:
        remaining = min(length, _DRAIN_MAX_BYTES)
        deadline = time.monotonic() + _DRAIN_TIMEOUT_S
        with contextlib.suppress(OSError):
            self.connection.settimeout(1.0)
            while remaining > 0 and time.monotonic() < deadline:
                chunk = self.rfile.read1(min(remaining, 1 << 16))
                if not chunk:
                    break
                remaining -= len(chunk)

    # --- answers -----------------------------------------------------------------------------------

    def _send(self, reply: Reply, *, close: bool = False) -> None:
        close = close or reply.close or self.close_connection
        try:
            reason = http.HTTPStatus(reply.status).phrase
        except ValueError:
            reason = "Error"
        lines = [
            f"HTTP/1.1 {reply.status} {reason}",
            f"Content-Type: {reply.content_type}",
            f"Content-Length: {len(reply.body)}",
        ]
        lines += [f"{k}: {v}" for k, v in reply.headers]
        if close:
            lines.append("Connection: close")
            self.close_connection = True
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head + reply.body if len(reply.body) < 65536 else head)
        if len(reply.body) >= 65536:
            self.wfile.write(reply.body)

    def _reset(self) -> None:
        self.server.mark_reset(self.connection)
        self.close_connection = True
