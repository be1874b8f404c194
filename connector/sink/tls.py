"""TLS towards Altcraft: whom to trust, and what a failing handshake leads to.

A certificate the connector does not trust is a configuration fault, not an outage: retrying cannot
cure it. Each TLS failure is counted (``altcraft_connector_tls_errors_total{reason}``) and logged with
its reason, at most once a minute per reason. After :data:`HALT_AFTER_FAILURES` of them in a row
spanning at least :data:`HALT_AFTER_S` seconds (no other transport failure and no answer between), the
connector halts with reason ``tls`` (readiness false, ``altcraft_connector_halted{reason="tls"}``); the
senders keep trying, and the first HTTP answer, whatever its status, ends the halt.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from connector.config import SettingsError
from connector.metrics import Metrics
from connector.sink.halt import HaltState

log = logging.getLogger(__name__)

TLS_REASON = "tls"  # the halt reason
HALT_AFTER_FAILURES = 3  # TLS failures in a row...
HALT_AFTER_S = 30.0  # ...spanning at least this long, before the connector halts
LOG_EVERY_S = 60.0  # one log line per failure reason at most this often

# Why a handshake failed: a closed set, safe as metric labels.
UNTRUSTED = "untrusted_certificate"  # no trusted CA issued it (a private CA without altcraft.ca_file)
EXPIRED = "expired_certificate"
HOSTNAME = "hostname_mismatch"
INVALID = "invalid_certificate"  # any other verification failure (not yet valid, revoked, bad purpose...)
HANDSHAKE = "handshake_failed"  # no certificate verdict: protocol, version or cipher mismatch, not TLS at all
REASONS = (UNTRUSTED, EXPIRED, HOSTNAME, INVALID, HANDSHAKE)

# OpenSSL's X509_V_ERR_* codes, grouped by what the operator must do.
_UNTRUSTED_CODES = frozenset({2, 18, 19, 20, 21, 27})
_EXPIRED_CODE = 10
_HOSTNAME_CODE = 62


def ssl_context(ca_file: Path | None) -> ssl.SSLContext | bool:
    """httpx's ``verify``: the system's trust store plus ``ca_file``; without one, True (httpx's default
    trust: certifi's bundle, or ``SSL_CERT_FILE``/``SSL_CERT_DIR`` when set)."""
    if ca_file is None:
        return True
    context = ssl.create_default_context()
    try:
        context.load_verify_locations(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError([f"altcraft.ca_file: cannot load {ca_file}: {exc}"]) from exc
    return context


@dataclass(frozen=True, slots=True)
class TlsFailure:
    reason: str  # one of REASONS
    text: str  # OpenSSL's words, e.g. "certificate verify failed: unable to get local issuer certificate"


def tls_failure(exc: BaseException) -> TlsFailure | None:
    """The TLS failure behind a failed connection, or None when it failed otherwise."""
    if not isinstance(exc, httpx.ConnectError):
        return None  # the handshake happens while connecting; later failures are not about trust
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ssl.SSLCertVerificationError):
            code = cause.verify_code
            if code in _UNTRUSTED_CODES:
                reason = UNTRUSTED
            elif code == _EXPIRED_CODE:
                reason = EXPIRED
            elif code == _HOSTNAME_CODE:
                reason = HOSTNAME
            else:
                reason = INVALID
            return TlsFailure(reason, f"certificate verify failed: {cause.verify_message}")
        if isinstance(cause, ssl.SSLError):
            return TlsFailure(HANDSHAKE, str(cause))
        cause = cause.__cause__ or cause.__context__
    return None


# ------------------------------------------------------------------------------------ pure decisions


@dataclass(frozen=True, slots=True)
class Run:
    """TLS failures in a row: how many, since when."""

    failures: int
    since: float


def after_failure(run: Run | None, now: float) -> Run:
    return Run(1, now) if run is None else Run(run.failures + 1, run.since)


def sustained(
    run: Run | None, now: float, min_failures: int = HALT_AFTER_FAILURES, min_span_s: float = HALT_AFTER_S
) -> bool:
    """The run is long enough to call it a configuration fault rather than a passing glitch."""
    return run is not None and run.failures >= min_failures and now - run.since >= min_span_s


def log_due(last: float | None, now: float, every_s: float = LOG_EVERY_S) -> bool:
    return last is None or now - last >= every_s


# ------------------------------------------------------------------------------------ the guard


class TlsGuard:
    """Shared by the sender threads: told of every transport failure and every answer.

    The thresholds are read from the module when it is built, so that a test can lower them.
    """

    def __init__(
        self, url: str, metrics: Metrics, halt: HaltState, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._url = url
        self._metrics = metrics
        self._halt = halt
        self._clock = clock
        self._min_failures = HALT_AFTER_FAILURES
        self._min_span_s = HALT_AFTER_S
        self._lock = threading.Lock()
        self._run: Run | None = None
        self._halted = False
        self._logged: dict[str, float] = {}

    def failed(self, exc: BaseException) -> None:
        """A request failed without an answer."""
        failure = tls_failure(exc)
        if failure is None:
            if self._run is not None:
                with self._lock:
                    self._run = None  # not TLS: the run of TLS failures is broken
            return
        self._metrics.tls_errors.labels(failure.reason).inc()
        now = self._clock()
        with self._lock:
            self._run = run = after_failure(self._run, now)
            say = log_due(self._logged.get(failure.reason), now)
            if say:
                self._logged[failure.reason] = now
            halt = not self._halted and sustained(run, now, self._min_failures, self._min_span_s)
            if halt:  # under the lock, so that an answer in another thread cannot clear it first
                self._halted = True
                self._halt.set(TLS_REASON, f"{failure.reason}: {failure.text}")
        if say:
            log.warning(
                "TLS handshake with %s failed (%s): %s; retrying, nothing is dropped (set altcraft.ca_file if it "
                "uses a private CA)", self._url, failure.reason, failure.text,
            )  # fmt: skip
        if halt:
            log.error(
                "halted (tls): %d TLS handshakes with %s failed in a row over %.0f s (%s); set altcraft.ca_file "
                "to the PEM of a private CA, or fix the server's certificate. Retrying; it resumes by itself on "
                "the first good handshake", run.failures, self._url, now - run.since, failure.text,
            )  # fmt: skip

    def answered(self) -> None:
        """A request got an HTTP answer, so its handshake (if any) succeeded."""
        if self._run is None and not self._halted:
            return
        with self._lock:
            was_halted = self._halted
            self._run = None
            self._halted = False
            if was_halted:
                self._halt.clear(TLS_REASON)
        if was_halted:
            log.warning("halt over (tls): the TLS handshake with %s succeeds again", self._url)
