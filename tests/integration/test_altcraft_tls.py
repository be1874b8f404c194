"""Altcraft over HTTPS behind a private CA: the real connector process, the emulator behind a TLS proxy.

A private CA and a server certificate for 127.0.0.1 are made at test time with the ``openssl`` command.
The connector runs with the TLS halt threshold lowered from 30 s to 1 s (three failed handshakes in a
row over at least 1 s), so that a halt shows within seconds; everything else is as a user runs it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration import test_faults as faults
from tests.support import ROOT, ConnectorProcess, wait_until

make_bed = faults.make_bed  # the fixture

pytestmark = pytest.mark.timeout(120)

# The connector's own entry point, after lowering the TLS halt threshold (connector.sink.tls.HALT_AFTER_S).
_LAUNCH = (
    "import sys; import connector.sink.tls as tls; tls.HALT_AFTER_S = 1.0; "
    "from connector.cli import main; sys.exit(main(sys.argv[1:]))"
)


class QuickTlsHaltConnector(ConnectorProcess):
    """``altcraft-connector run`` in a child process, halting on TLS failures after 1 s instead of 30 s."""

    def start(self) -> QuickTlsHaltConnector:
        assert self.proc is None or self.proc.poll() is not None
        self.runs += 1
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _LAUNCH, "run", "--config", str(self.config_path)],
                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        return self


# ----------------------------------------------------------------------------------------------- a private CA


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_ca(d: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca.pem, server.pem, server.key)."""
    d.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=d)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key",
             "-out", "server.csr", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", "san.ext", "-out", "server.pem", cwd=d)  # fmt: skip
    return d / "ca.pem", d / "server.pem", d / "server.key"


@pytest.fixture(scope="module")
def cas(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path, Path]]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a private CA")
    base = tmp_path_factory.mktemp("cas")
    return {"private": _make_ca(base / "private", "Private Test CA"), "other": _make_ca(base / "other", "Other CA")}


# ----------------------------------------------------------------------------------------------- the proxy


class TlsProxy:
    """Terminates TLS on a loopback port and forwards the bytes to a plain HTTP upstream."""

    def __init__(self, upstream_port: int, cert: Path, key: Path) -> None:
        self._upstream = upstream_port
        self.use(cert, key)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, name="tls-proxy", daemon=True)]
        self._threads[0].start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self._listener.getsockname()[1]}"

    def use(self, cert: Path, key: Path) -> None:
        """Present this certificate from the next connection on."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        self._context = context

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._start(self._serve, conn)

    def _start(self, target: Callable[..., None], *args: Any) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads.append(t)
        t.start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        try:
            tls = self._context.wrap_socket(conn, server_side=True)  # the handshake
            upstream = socket.create_connection(("127.0.0.1", self._upstream), timeout=10)
        except (ssl.SSLError, OSError):  # the client refused our certificate
            conn.close()
            return
        tls.settimeout(None)
        upstream.settimeout(None)
        with self._lock:
            self._sockets += [tls, upstream]
        self._start(self._pump, upstream, tls)
        self._pump(tls, upstream)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass  # closed by the other direction or by stop()
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.close()

    def stop(self) -> None:
        self._stopping.set()
        self._listener.close()
        with self._lock:
            sockets, threads = list(self._sockets), list(self._threads)
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        for t in threads:
            t.join(5)


@pytest.fixture
def tls_proxy() -> Iterator[Callable[[int, Path, Path], TlsProxy]]:
    proxies: list[TlsProxy] = []

    def make(upstream_port: int, cert: Path, key: Path) -> TlsProxy:
        proxies.append(TlsProxy(upstream_port, cert, key))
        return proxies[-1]

    try:
        yield make
    finally:
        for p in proxies:
            p.stop()


# ----------------------------------------------------------------------------------------------- the scenarios


def _connector(bed: faults.Bed, base_url: str, ca_file: Path | None) -> QuickTlsHaltConnector:
    altcraft: dict[str, Any] = {"base_url": base_url}
    if ca_file is not None:
        altcraft["ca_file"] = str(ca_file)
    proc = QuickTlsHaltConnector(bed.settings(max_items=200, altcraft=altcraft), bed.tmp_path, bed.free_port())
    bed.procs.append(proc)  # stopped by the bed's fixture
    return proc.start()


def _readyz(proc: ConnectorProcess) -> int:
    try:
        return httpx.get(f"http://127.0.0.1:{proc.port}/readyz", timeout=5).status_code
    except httpx.HTTPError:
        return -1


def test_without_ca_file_a_private_ca_halts_tls_with_the_reason_logged(
    make_bed: Callable[..., faults.Bed], tls_proxy: Callable[..., TlsProxy], cas: dict[str, tuple[Path, Path, Path]]
) -> None:
    bed = make_bed(2_000, 2, seed=71)
    _, cert, key = cas["private"]
    proxy = tls_proxy(bed.emu.port, cert, key)
    proc = _connector(bed, proxy.url, None)
    wait_until(lambda: proc.metric_sum("altcraft_connector_halted", reason="tls") == 1, 40, "the tls halt")
    assert _readyz(proc) == 503
    assert proc.metric_sum("altcraft_connector_tls_errors_total", reason="untrusted_certificate") >= 3
    messages = faults.log_messages(proc)
    assert any(m.startswith("halted (tls)") for m in messages), proc.log_tail()
    assert any("certificate verify failed: unable to get local issuer certificate" in m for m in messages)
    assert bed.emu.stats()["requests"] == 0
    assert set(bed.committed().values()) <= {0}, "an offset moved while nothing was delivered"
    assert proc.alive()


def test_with_ca_file_the_private_ca_is_trusted_and_everything_is_delivered(
    make_bed: Callable[..., faults.Bed], tls_proxy: Callable[..., TlsProxy], cas: dict[str, tuple[Path, Path, Path]]
) -> None:
    bed = make_bed(2_000, 2, seed=72)
    ca, cert, key = cas["private"]
    proxy = tls_proxy(bed.emu.port, cert, key)
    proc = _connector(bed, proxy.url, ca)
    bed.assert_delivered([proc], timeout=60)
    assert bed.emu.stats()["items_accepted"] == bed.stream.outcomes["engage"]
    assert proc.metric_sum("altcraft_connector_tls_errors_total") == 0
    assert _readyz(proc) == 200


def test_a_tls_halt_ends_on_the_first_good_handshake(
    make_bed: Callable[..., faults.Bed], tls_proxy: Callable[..., TlsProxy], cas: dict[str, tuple[Path, Path, Path]]
) -> None:
    bed = make_bed(2_000, 2, seed=73)
    ca, cert, key = cas["private"]
    _, wrong_cert, wrong_key = cas["other"]
    proxy = tls_proxy(bed.emu.port, wrong_cert, wrong_key)  # a certificate from a CA nobody trusts
    proc = _connector(bed, proxy.url, ca)
    wait_until(lambda: proc.metric_sum("altcraft_connector_halted", reason="tls") == 1, 40, "the tls halt")
    assert _readyz(proc) == 503
    proxy.use(cert, key)  # the server's certificate is fixed
    wait_until(lambda: _readyz(proc) == 200, 30, "readiness after the first good handshake")
    assert proc.metric_sum("altcraft_connector_halted", reason="tls") == 0
    bed.assert_delivered([proc], timeout=60)
    assert any(m.startswith("halt over (tls)") for m in faults.log_messages(proc))
