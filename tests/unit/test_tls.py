"""TLS towards Altcraft: which failures are TLS, when they halt the connector, and what ends the halt."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from connector.config import AltcraftSettings, SettingsError
from connector.metrics import Metrics
from connector.sink import tls
from connector.sink.client import AltcraftClient
from connector.sink.halt import HaltState
from connector.sink.tls import (
    EXPIRED,
    HANDSHAKE,
    HOSTNAME,
    INVALID,
    TLS_REASON,
    UNTRUSTED,
    Run,
    TlsGuard,
    after_failure,
    log_due,
    ssl_context,
    sustained,
    tls_failure,
)
from tests.support import FakeClock

URL = "https://altcraft.example"


def _verify_error(code: int, message: str) -> httpx.ConnectError:
    """What httpx raises when the certificate is refused: ConnectError <- httpcore's <- the SSL error."""
    cause = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: {message}")
    cause.verify_code = code
    cause.verify_message = message
    inner = httpx.ConnectError(str(cause))  # stands for httpcore.ConnectError
    inner.__cause__ = cause
    outer = httpx.ConnectError(str(cause))
    outer.__cause__ = inner
    return outer


UNKNOWN_CA = _verify_error(20, "unable to get local issuer certificate")


def _handshake_error() -> httpx.ConnectError:
    exc = httpx.ConnectError("wrong version number")
    exc.__context__ = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1000)")
    return exc


# ------------------------------------------------------------------------------------ which failure


@pytest.mark.parametrize(
    ("exc", "reason", "text"),
    [
        (UNKNOWN_CA, UNTRUSTED, "certificate verify failed: unable to get local issuer certificate"),
        (_verify_error(19, "self-signed certificate in certificate chain"), UNTRUSTED, None),
        (_verify_error(10, "certificate has expired"), EXPIRED, "certificate verify failed: certificate has expired"),
        (_verify_error(62, "Hostname mismatch, certificate is not valid for 'x'."), HOSTNAME, None),
        (_verify_error(9, "certificate is not yet valid"), INVALID, None),
        (_handshake_error(), HANDSHAKE, "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1000)"),
    ],
)
def test_a_tls_failure_is_named_with_openssls_words(exc: BaseException, reason: str, text: str | None) -> None:
    failure = tls_failure(exc)
    assert failure is not None and failure.reason == reason
    if text is not None:
        assert failure.text == text


def test_other_transport_failures_are_not_tls() -> None:
    refused = httpx.ConnectError("connection refused")
    refused.__cause__ = ConnectionRefusedError(111, "Connection refused")
    assert tls_failure(refused) is None
    assert tls_failure(httpx.ReadTimeout("slow")) is None
    # An established connection that breaks is not about trust, even when the SSL layer reports it.
    broken = httpx.ReadError("eof")
    broken.__cause__ = ssl.SSLEOFError(8, "EOF occurred in violation of protocol")
    assert tls_failure(broken) is None


def test_the_reasons_are_a_closed_set() -> None:
    assert set(tls.REASONS) == {UNTRUSTED, EXPIRED, HOSTNAME, INVALID, HANDSHAKE}


# ------------------------------------------------------------------------------------ when to halt


def test_three_failures_in_a_row_over_30_s_are_sustained() -> None:
    run = None
    for now in (0.0, 10.0):
        run = after_failure(run, now)
        assert not sustained(run, now)
    run = after_failure(run, 29.9)
    assert run == Run(3, 0.0)
    assert not sustained(run, 29.9)  # three, but not yet long enough
    run = after_failure(run, 30.0)
    assert sustained(run, 30.0)


def test_many_failures_in_a_short_burst_are_not_sustained() -> None:
    run = None
    for i in range(50):
        run = after_failure(run, i * 0.1)
    assert not sustained(run, 4.9)
    assert not sustained(None, 100.0)


def test_a_log_line_per_reason_at_most_once_a_minute() -> None:
    assert log_due(None, 0.0)
    assert not log_due(0.0, 59.9)
    assert log_due(0.0, 60.0)


# ------------------------------------------------------------------------------------ the guard


def _guard() -> tuple[TlsGuard, FakeClock, HaltState, Metrics]:
    clock = FakeClock(0.0)
    metrics = Metrics(CollectorRegistry())
    halt = HaltState()
    return TlsGuard(URL, metrics, halt, clock=clock), clock, halt, metrics


def test_a_sustained_run_halts_and_the_first_answer_resumes(caplog: pytest.LogCaptureFixture) -> None:
    guard, clock, halt, metrics = _guard()
    for now in (0.0, 1.0, 5.0, 15.0):
        clock.now = now
        guard.failed(UNKNOWN_CA)
        assert not halt
    clock.now = 31.0
    guard.failed(UNKNOWN_CA)
    assert TLS_REASON in halt.reasons()
    assert "unable to get local issuer certificate" in halt.reasons()[TLS_REASON]
    errors = metrics.registry.get_sample_value("altcraft_connector_tls_errors_total", {"reason": UNTRUSTED})
    assert errors == 5
    # Still failing: halted once, logged once a minute.
    clock.now = 61.0
    guard.failed(UNKNOWN_CA)
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if m.startswith("halted (tls)")]) == 1
    assert len([m for m in messages if m.startswith("TLS handshake with")]) == 2  # at 0 s and 61 s
    assert any("certificate verify failed: unable to get local issuer certificate" in m for m in messages)
    guard.answered()
    assert not halt
    assert caplog.records[-1].getMessage().startswith("halt over (tls)")


def test_a_different_transport_failure_breaks_the_run() -> None:
    guard, clock, halt, _ = _guard()
    refused = httpx.ConnectError("connection refused")
    for now, exc in [(0.0, UNKNOWN_CA), (10.0, UNKNOWN_CA), (20.0, refused), (31.0, UNKNOWN_CA), (40.0, UNKNOWN_CA)]:
        clock.now = now
        guard.failed(exc)
    assert not halt  # the run restarted at 31 s
    clock.now = 61.0
    guard.failed(UNKNOWN_CA)
    assert halt


def test_an_answer_between_failures_breaks_the_run_and_leaves_other_halts_alone() -> None:
    guard, clock, halt, _ = _guard()
    halt.set("unauthorized", "error 401")
    for now in (0.0, 20.0):
        clock.now = now
        guard.failed(UNKNOWN_CA)
    guard.answered()
    clock.now = 40.0
    guard.failed(UNKNOWN_CA)
    assert set(halt.reasons()) == {"unauthorized"}


def test_the_tls_reason_stays_until_a_handshake_succeeds_whatever_other_failures_come() -> None:
    guard, clock, halt, _ = _guard()
    for now in (0.0, 15.0, 30.0):
        clock.now = now
        guard.failed(UNKNOWN_CA)
    assert TLS_REASON in halt.reasons()
    guard.failed(httpx.ConnectTimeout("timeout"))
    assert TLS_REASON in halt.reasons()


# ------------------------------------------------------------------------------------ the client


def test_the_client_halts_on_tls_failures_and_resumes_on_an_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tls, "HALT_AFTER_S", 0.0)  # three failures in a row suffice
    failing = [True]

    def script(request: httpx.Request) -> httpx.Response:
        if failing[0]:
            raise _verify_error(20, "unable to get local issuer certificate")
        return httpx.Response(200, json={"error": 0, "error_text": "Successful operation", "data": {}})

    settings = AltcraftSettings.model_validate({"token": "tok", "base_url": URL})
    metrics = Metrics(CollectorRegistry())
    halt = HaltState()
    client = AltcraftClient(settings, "tok", metrics, halt, transport=httpx.MockTransport(script))
    for _ in range(3):
        assert client._post("workflows/import_and_start_batch", b"{}", "rid", _counts())[0] is None
    assert TLS_REASON in halt.reasons()
    failing[0] = False
    assert client._post("workflows/import_and_start_batch", b"{}", "rid", _counts())[0] == 200
    assert not halt
    assert metrics.registry.get_sample_value("altcraft_connector_tls_errors_total", {"reason": UNTRUSTED}) == 3
    client.close()


def _counts():  # type: ignore[no-untyped-def]
    import threading

    from connector.sink.client import _Counts

    return _Counts(threading.Event())


# ------------------------------------------------------------------------------------ trust


def test_no_ca_file_keeps_httpx_default_trust() -> None:
    assert ssl_context(None) is True


def test_a_ca_file_is_added_to_the_system_trust_store(tmp_path: Path) -> None:
    system = ssl.create_default_context().cert_store_stats()["x509_ca"]
    ca = tmp_path / "ca.pem"
    ca.write_text(_TEST_CA)
    context = ssl_context(ca)
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] == system + 1


def test_an_unreadable_ca_file_is_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"altcraft\.ca_file: cannot load"):
        ssl_context(tmp_path / "missing.pem")
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(SettingsError, match=r"altcraft\.ca_file"):
        ssl_context(bad)


# A throwaway self-signed CA (no key kept anywhere): only its parsing matters here.
_TEST_CA = """-----BEGIN CERTIFICATE-----
MIIBhTCCASugAwIBAgIUQvh9MaSjvpUdcNugN6QYzLZEdycwCgYIKoZIzj0EAwIw
FzEVMBMGA1UEAwwMVW5pdCBUZXN0IENBMCAXDTI2MTEzMDAwNDY1NVoYDzIxMjYx
MTA2MDA0NjU1WjAXMRUwEwYDVQQDDAxVbml0IFRlc3QgQ0EwWTATBgcqhkjOPQIB
BggqhkjOPQMBBwNCAARHwNhQQXCYczjyXhPyRG05Rgds/IUez1hZGOWTx+5VFXdQ
C/frQkA5mP6ERbhJtpyR3WYct5mIPOjWdmStCFaNo1MwUTAdBgNVHQ4EFgQUYQJu
9plJojmqJzMxnS53/EVc8HswHwYDVR0jBBgwFoAUYQJu9plJojmqJzMxnS53/EVc
8HswDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNIADBFAiAq6b81ytXpBDGD
bNM/6aJW6D08COP58N4Jh9yWkUVuNAIhALTz5Z4Sm0VFSQxRfdOSTvN+wgA59jAp
BGtP7XddUyRz
-----END CERTIFICATE-----
"""
