"""Liveness and readiness state, and the small HTTP server for /metrics, /healthz and /readyz.

- liveness (``/healthz``): the main loop is turning: it polled Kafka within ``liveness_timeout_s``.
  A stuck loop is what a restart can cure.
- readiness (``/readyz``): the member has joined its group (it got an assignment, possibly empty),
  is not halted by a configuration fault and is not shutting down. The Altcraft API's health is
  deliberately not part of it: an API outage is waited out, not cured by restarting pods.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)


class HealthState:
    def __init__(self, liveness_timeout_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._timeout = liveness_timeout_s
        self._beat = clock()
        self.joined = False
        self.halted = False
        self.stopping = False

    def beat(self) -> None:
        self._beat = self._clock()

    def live(self) -> tuple[bool, str]:
        idle = self._clock() - self._beat
        if idle > self._timeout:
            return False, f"main loop has not turned for {idle:.0f} s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        if self.stopping:
            return False, "shutting down"
        if self.halted:
            return False, "halted: see altcraft_connector_halted{reason} and the log"
        if not self.joined:
            return False, "not yet joined the consumer group"
        return True, "ok"


# A scrape or probe that has not sent its request line within this many seconds is disconnected.
CLIENT_TIMEOUT_S = 5.0
# Connections served at once; more are closed at once (probes and a scraper need a handful).
MAX_CONNECTIONS = 16


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, at most ``MAX_CONNECTIONS`` of them: an idle or slow client costs a
    thread for at most ``CLIENT_TIMEOUT_S``, and a flood of them cannot grow the thread count."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], limit: int) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(limit)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            log.debug("health http: %d connections open, refusing %s", MAX_CONNECTIONS, client_address)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class HealthServer:
    """Serves the registry and the health state on one port, in a daemon thread."""

    def __init__(
        self,
        host: str,
        port: int,
        state: HealthState,
        registry: CollectorRegistry,
        *,
        max_connections: int = MAX_CONNECTIONS,
        client_timeout_s: float = CLIENT_TIMEOUT_S,
    ) -> None:
        handler = _handler(state, registry, client_timeout_s)
        self._server = _BoundedServer((host, port), handler, max_connections)
        self._thread = threading.Thread(target=self._server.serve_forever, name="health-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(state: HealthState, registry: CollectorRegistry, timeout_s: float) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = timeout_s  # socket timeout: an idle or slow client is disconnected

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/readyz"):
                ok, why = state.live() if path == "/healthz" else state.ready()
                self._send(200 if ok else 503, (why + "\n").encode(), "text/plain; charset=utf-8")
            else:
                self._send(404, b"not found\n", "text/plain; charset=utf-8")

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("health http: %s", format % args)

    return Handler
