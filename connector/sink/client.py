"""The HTTP loop: send one batch until the platform has answered for every item in it.

Runs in a sender thread. It applies the decisions of :mod:`connector.sink.classify` and never decides
by itself: retry (same bytes, same Request-ID), split, bisect, pause on 402, halt on configuration
faults. It returns only when every item is accepted or rejected by the platform, or raises
:class:`Abandoned` when the connector is stopping. It never gives up on a transient failure.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from connector.config import AltcraftSettings, Mode
from connector.metrics import Metrics
from connector.models import ItemRejection, SendOutcome
from connector.ratelimit import RateLimiter
from connector.sink.classify import (
    Action,
    Decision,
    backoff_s,
    classify,
    item_results,
    parse_retry_after,
)
from connector.sink.halt import BREAKER_REASON, HaltState
from connector.sink.request import ENDPOINTS, TASK_STATUS, BodyShape, sub_request_id
from connector.sink.tls import TlsGuard, ssl_context

log = logging.getLogger(__name__)

HALT_PROBE_S = 15.0  # how often a halted sender tries again
TARIFF_PAUSE_S = 60.0  # wait after a 402 when no Retry-After says otherwise
STUCK_LOG_EVERY_S = 60.0


class Abandoned(Exception):
    """The connector is stopping: the batch was left unfinished (its replay resends the same Request-ID)."""


@dataclass(frozen=True, slots=True)
class SendJob:
    route: str
    mode: Mode
    shape: BodyShape
    items: list[bytes]
    request_id: str


@dataclass(slots=True)
class _Counts:
    cancel: threading.Event
    requests: int = 0
    duplicates: int = 0


class AltcraftClient:
    """Thread-safe: one instance serves every sender thread."""

    def __init__(
        self,
        settings: AltcraftSettings,
        token: str,
        metrics: Metrics,
        halt: HaltState,
        *,
        transport: httpx.BaseTransport | None = None,
        rand: Callable[[], float] = random.random,
        halt_probe_s: float = HALT_PROBE_S,
    ) -> None:
        self._s = settings
        self._metrics = metrics
        self._halt = halt
        self._rand = rand
        self._halt_probe_s = halt_probe_s
        self._limiter = RateLimiter(settings.max_requests_per_s, settings.max_profiles_per_s)
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self._task_token = token
        pool = settings.max_in_flight * 2
        limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
        self._http = httpx.Client(
            base_url=settings.base_url,
            timeout=httpx.Timeout(settings.request_timeout_s),
            limits=limits,
            transport=transport,
            verify=ssl_context(settings.ca_file),
        )
        self._tls = TlsGuard(settings.base_url, metrics, halt)

    def close(self) -> None:
        self._http.close()

    # -- one batch

    def send(self, job: SendJob, cancel: threading.Event | None = None) -> SendOutcome:
        """Raises :class:`Abandoned` once ``cancel`` is set while waiting."""
        counts = _Counts(cancel or threading.Event())
        rejected = self._deliver(job, 0, len(job.items), job.request_id, counts)
        return SendOutcome(
            accepted=len(job.items) - len(rejected),
            rejected=tuple(rejected),
            request_id=job.request_id,
            requests=counts.requests,
            duplicates=counts.duplicates,
        )

    def _deliver(self, job: SendJob, start: int, end: int, rid: str, counts: _Counts) -> list[ItemRejection]:
        """Send items[start:end] under ``rid`` until answered; split or bisect on the platform's word."""
        endpoint = ENDPOINTS[job.mode]
        body = job.shape.body(job.items[start:end])
        attempt = 0
        stuck_logged = 0.0
        while True:
            if self._limiter.active:
                self._wait(self._limiter.delay(end - start), counts)
            decision, answer = self._attempt(job, endpoint, body, rid, counts)
            action = decision.action
            if action is Action.OK:
                assert answer is not None
                results = item_results(answer, end - start)
                if results is not None:
                    if self._halt:
                        self._clear_halts(include_mismatch=True)
                    return [ItemRejection(start + i, code, text) for i, code, text in results]
                decision = Decision(
                    Action.HALT, "result_mismatch", 0,
                    f"the answer's result does not line up with the {end - start} items sent",
                )  # fmt: skip
                action = Action.HALT
            self._metrics.requests.labels(endpoint, action.value).inc()
            if action in (Action.SPLIT, Action.BISECT):
                if end - start == 1:
                    text = decision.text or decision.reason
                    if action is Action.SPLIT:
                        text = f"the record alone exceeds the platform's body limit ({decision.text})"
                    return [ItemRejection(start, decision.code, text)]
                mid = (start + end) // 2
                left = self._deliver(job, start, mid, sub_request_id(rid, 1), counts)
                right = self._deliver(job, mid, end, sub_request_id(rid, 2), counts)
                return left + right
            if action is Action.HALT:
                if self._halt.set(decision.reason, decision.text):
                    log.error(
                        "halted: Altcraft refused the configuration (%s, error %s: %s); nothing is dropped, "
                        "retrying every %.0f s", decision.reason, decision.code, decision.text, self._halt_probe_s,
                    )  # fmt: skip
                self._metrics.halted.labels(decision.reason).set(1)
                self._wait(self._halt_probe_s, counts)
                continue
            if self._halt:
                self._clear_halts()
            if action is Action.PAUSE:
                self._metrics.paused_tariff.set(1)
                log.warning("Altcraft tariff limit reached (error 402); waiting, nothing is dropped")
                self._wait(decision.retry_after_s or TARIFF_PAUSE_S, counts)
                continue
            # Action.RETRY
            self._metrics.retries.labels(endpoint, decision.reason).inc()
            delay = backoff_s(attempt, self._s.retry.initial_backoff_s, self._s.retry.max_backoff_s, self._rand())
            if decision.retry_after_s is not None:
                delay = max(delay, decision.retry_after_s)
            attempt += 1
            if attempt >= self._s.retry.max_attempts and time.monotonic() - stuck_logged > STUCK_LOG_EVERY_S:
                stuck_logged = time.monotonic()
                log.warning(
                    "batch %s still failing after %d attempts (%s); it stays queued, nothing is dropped",
                    rid, attempt, decision.reason,
                )  # fmt: skip
            self._wait(delay, counts)

    def _clear_halts(self, include_mismatch: bool = False) -> None:
        """The platform accepted a request: configuration faults are over (a result mismatch only
        clears on an answer that lines up)."""
        for reason in self._halt.reasons():
            if reason == BREAKER_REASON:
                continue  # the loop's verdict on the data, not the API's: only a restart clears it
            if (include_mismatch or reason != "result_mismatch") and self._halt.clear(reason):
                self._metrics.halted.labels(reason).set(0)
                log.warning("resumed: Altcraft accepts requests again (was halted: %s)", reason)
        self._metrics.paused_tariff.set(0)

    def _attempt(
        self, job: SendJob, endpoint: str, body: bytes, rid: str, counts: _Counts
    ) -> tuple[Decision, dict[str, Any] | None]:
        status, answer, retry_after = self._post(endpoint, body, rid, counts)
        decision = classify(status, answer, retry_after)
        if decision.action is not Action.OK or job.mode is not Mode.ENGAGE_TASK:
            return decision, answer
        assert answer is not None
        task_id = answer.get("task_id")
        if not isinstance(task_id, str) or not task_id:
            return Decision(Action.RETRY, "unreadable_answer", 0, "no task_id in the answer"), None
        return self._await_task(task_id, counts)

    def _await_task(self, task_id: str, counts: _Counts) -> tuple[Decision, dict[str, Any] | None]:
        """Poll tasks/status until completed; a timeout asks the caller to resend (same Request-ID)."""
        deadline = time.monotonic() + self._s.task.timeout_s
        interval = self._s.task.poll_interval_s
        payload = orjson.dumps({"token": self._task_token, "task_id": task_id})
        while time.monotonic() < deadline:
            self._wait(interval, counts)
            interval = min(interval * 1.5, 5.0)
            status, answer, retry_after = self._post(TASK_STATUS, payload, None, counts)
            decision = classify(status, answer, retry_after)
            if decision.action is not Action.OK:
                if decision.action is Action.RETRY:
                    continue
                return decision, answer
            assert answer is not None
            data = answer.get("data")
            if isinstance(data, dict) and data.get("status") == "completed":
                result = data.get("result")
                return classify(200, result), result if isinstance(result, dict) else None
        return Decision(Action.RETRY, "task_timeout", 0, f"task {task_id} not completed in time"), None

    def _post(
        self, endpoint: str, body: bytes, rid: str | None, counts: _Counts
    ) -> tuple[int | None, dict[str, Any] | None, float | None]:
        # tasks/status takes the token in its body, as documented; batches carry it in the header.
        headers = {"Content-Type": "application/json"} if rid is None else {**self._headers, "Request-ID": rid}
        counts.requests += 1
        started = time.perf_counter()
        try:
            response = self._http.post(endpoint, content=body, headers=headers)
        except httpx.TransportError as exc:
            self._metrics.request_duration.labels(endpoint).observe(time.perf_counter() - started)
            log.debug("transport failure on %s: %s", endpoint, type(exc).__name__)
            self._tls.failed(exc)
            return None, None, None
        self._metrics.request_duration.labels(endpoint).observe(time.perf_counter() - started)
        self._tls.answered()
        if response.headers.get("Duplicate-Request", response.headers.get("X-Duplicate-Request", "")).lower() == "true":
            counts.duplicates += 1
            self._metrics.duplicates.labels(endpoint).inc()
        try:
            answer = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            answer = None
        retry_after = parse_retry_after(response.headers.get("Retry-After"), self._s.retry.retry_after_cap_s)
        if rid is not None and isinstance(answer, dict) and answer.get("error") == 0:
            self._metrics.requests.labels(endpoint, "ok").inc()
        return response.status_code, answer if isinstance(answer, dict) else None, retry_after

    @staticmethod
    def _wait(seconds: float, counts: _Counts) -> None:
        if seconds <= 0:
            if counts.cancel.is_set():
                raise Abandoned()
            return
        if counts.cancel.wait(seconds):
            raise Abandoned()
