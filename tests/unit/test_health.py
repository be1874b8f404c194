"""The health server: what a probe, a scraper and a misbehaving client see (real sockets on loopback)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter

from connector.health import HealthServer, HealthState
from tests.support import FakeClock, wait_until


@pytest.fixture
def server() -> Iterator[tuple[HealthServer, HealthState]]:
    registry = CollectorRegistry()
    Counter("demo_events", "events", registry=registry).inc(3)
    state = HealthState()
    srv = HealthServer("127.0.0.1", 0, state, registry, max_connections=4, client_timeout_s=0.5)
    srv.start()
    try:
        yield srv, state
    finally:
        srv.stop()


def _get(port: int, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)


def _idle_connection(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    return sock


def _closed_by_server(sock: socket.socket, within_s: float) -> bool:
    sock.settimeout(within_s)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_probes_and_metrics_answer(server: tuple[HealthServer, HealthState]) -> None:
    srv, state = server
    assert _get(srv.port, "/healthz").status_code == 200
    ready = _get(srv.port, "/readyz")
    assert ready.status_code == 503 and "not yet joined" in ready.text
    state.joined = True
    assert _get(srv.port, "/readyz").status_code == 200
    state.halted = True
    assert _get(srv.port, "/readyz").status_code == 503
    assert "demo_events_total 3.0" in _get(srv.port, "/metrics").text


def test_idle_clients_are_disconnected_and_do_not_block_probes(server: tuple[HealthServer, HealthState]) -> None:
    srv, _ = server
    idle = [_idle_connection(srv.port) for _ in range(4)]  # every serving slot taken by a silent client
    try:
        extra = _idle_connection(srv.port)
        assert _closed_by_server(extra, within_s=2.0), "a connection beyond the limit is closed at once"
        extra.close()
        # The silent clients are cut off after the client timeout, which frees the slots for probes.
        for sock in idle:
            assert _closed_by_server(sock, within_s=3.0)
        assert wait_until(lambda: _get(srv.port, "/healthz").status_code == 200, 5, "healthz served again")
    finally:
        for sock in idle:
            sock.close()


def test_thread_count_stays_bounded_under_a_flood(server: tuple[HealthServer, HealthState]) -> None:
    srv, _ = server
    before = threading.active_count()
    socks = [_idle_connection(srv.port) for _ in range(40)]
    try:
        time.sleep(0.2)  # let the server accept them all
        assert threading.active_count() - before <= 4
    finally:
        for sock in socks:
            sock.close()
    assert wait_until(lambda: _get(srv.port, "/healthz").status_code == 200, 5, "healthz after the flood")


def test_liveness_turns_false_when_the_loop_stops() -> None:
    clock = FakeClock()
    state = HealthState(liveness_timeout_s=60, clock=clock)
    state.beat()
    clock.now += 59
    assert state.live()[0]
    clock.now += 2
    ok, why = state.live()
    assert not ok and "61 s" in why
