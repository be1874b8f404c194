"""The HTTP loop: send one batch until the platform has answered for every item in it.

Runs in a sender thread. It applies the decisions of :mod:`connector.sink.classify` and never decides
by itself: retry (same bytes, same Request-ID), split, bisect, pause on 402, halt on configuration
faults. It returns only when every item is accepted or rejected by the platform, or raises
:class:`Abandoned` when the connector is stopping. It never gives up on a transient failure.

A whole refusal is bisected in order; when single items from both halves are refused like the whole
while no part was accepted, the request is at fault, not its items: it halts ``request_refused``
and nothing is rejected. Halts are held per batch and end only on an accepted answer.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import orjson

from connector.config import AltcraftSettings, Mode
from connector.errors import ConnectorError
from connector.metrics import Metrics
from connector.models import ItemRejection, SendOutcome
from connector.ratelimit import RateLimiter
from connector.replay import resend_request_id, rest_request_id, sub_request_id
from connector.sink.classify import (
    REQUEST_REFUSED,
    RESULT_MISMATCH,
    TASK_UNKNOWN,
    Action,
    Decision,
    answered,
    backoff_s,
    classify,
    parse_retry_after,
    same_refusal,
    task_status,
)
from connector.sink.halt import HaltState
from connector.sink.request import ENDPOINTS, TASK_STATUS, BodyShape
from connector.sink.tls import TlsGuard, ssl_context

log = logging.getLogger(__name__)

HALT_PROBE_S = 15.0  # how often a halted sender tries again
TARIFF_PAUSE_S = 60.0  # wait after a 402 when no Retry-After says otherwise
STUCK_LOG_EVERY_S = 60.0
# Error 500 answers in a row that come as duplicates of one Request-ID before the request is sent again
# under a derived key (request.resend_request_id): Altcraft replays a failed original for its whole
# deduplication window, so resending the same key would never end.
DUPLICATE_ERROR_RETRIES = 3
# Outcomes of requests_total: what each request led to.
OUTCOMES = ("ok", "retry", "split", "bisect", "pause", "halt", "pending")
EPOCH_WAY_OUT = (
    "To move on before the window ends: set altcraft.request_id_epoch to a new value (any text not used "
    "before) and restart the connector; every batch is then sent under a new Request-ID. Risk: batches that "
    "Altcraft had already executed are executed again, so their profiles may be engaged a second time"
)


class Abandoned(ConnectorError):
    """The connector is stopping: the batch was left unfinished (its replay resends the same Request-ID)."""


@dataclass(frozen=True, slots=True)
class SendJob:
    route: str
    mode: Mode
    shape: BodyShape
    items: list[bytes]
    request_id: str


@dataclass(slots=True)
class _Walk:
    """One bisection of a range refused whole: what its parts were answered so far."""

    first: Decision  # the whole range's refusal
    # A part was accepted, or refused otherwise than the whole: items are at fault, not the request.
    items_at_fault: bool = False
    # Single items refused alone like the whole (with their keys), while nothing showed items at fault.
    singles: list[tuple[ItemRejection, str]] = field(default_factory=list)


class _RequestRefused(Exception):
    """Every part of a bisected range was refused alike, down to single items of both halves."""

    def __init__(self, singles: list[tuple[ItemRejection, str]]) -> None:
        super().__init__(singles)
        self.singles = singles


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
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[threading.Event, float], bool] = threading.Event.wait,
    ) -> None:
        """``clock`` and ``wait`` (block on the cancel event for a number of seconds; True if it was set)
        are the sender's only reading of time, replaceable in tests."""
        self._s = settings
        self._clock = clock
        self._event_wait = wait
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
        self._tls = TlsGuard(settings.base_url, metrics, halt, clock=clock)

    def close(self) -> None:
        self._http.close()

    # -- one batch

    def send(self, job: SendJob, cancel: threading.Event | None = None) -> SendOutcome:
        """Raises :class:`Abandoned` once ``cancel`` is set while waiting."""
        counts = _Counts(cancel or threading.Event())
        try:
            rejected = self._deliver(job, 0, len(job.items), job.request_id, counts)
        finally:
            self._release(job, "its batch was abandoned")  # no-op when its holds ended on an acceptance
        return SendOutcome(
            accepted=len(job.items) - len(rejected),
            rejected=tuple(rejected),
            request_id=job.request_id,
            requests=counts.requests,
            duplicates=counts.duplicates,
        )

    def _deliver(
        self, job: SendJob, start: int, end: int, rid: str, counts: _Counts, walk: _Walk | None = None
    ) -> list[ItemRejection]:
        """Send items[start:end] under ``rid`` until answered; split or bisect on the platform's word.

        ``walk``: the bisection this range is a part of, if any.
        """
        endpoint = ENDPOINTS[job.mode]
        body = job.shape.body(job.items[start:end])
        key = rid
        attempt = 0
        replayed_errors = 0  # error 500 answers in a row that came as duplicates of ``key``
        generation = 0
        stuck_logged = float("-inf")
        while True:
            if self._limiter.active:
                self._wait(self._limiter.delay(end - start), counts)
            decision, results, duplicate = self._attempt(job, endpoint, body, key, end - start, counts)
            action = decision.action
            if action is Action.OK:
                assert results is not None
                self._release(job, "Altcraft accepts requests again")
                self._metrics.paused_tariff.set(0)
                if walk is not None:
                    walk.items_at_fault = True
                return [ItemRejection(start + i, code, text, debug) for i, code, text, debug in results]
            if action is Action.SPLIT:
                if end - start == 1:
                    text = f"the record alone exceeds the platform's body limit ({decision.text})"
                    return [ItemRejection(start, decision.code, text, decision.debug)]
                mid = (start + end) // 2
                left = self._deliver(job, start, mid, sub_request_id(key, 1), counts, walk)
                right = self._deliver(job, mid, end, sub_request_id(key, 2), counts, walk)
                return left + right
            if action is Action.BISECT:
                if walk is not None:
                    return self._bisect(job, start, end, key, decision, counts, walk)
                return self._bisect_whole(job, start, end, key, body, decision, counts)
            if action is Action.HALT:
                self._hold(job, key, decision, duplicate)
                self._wait(self._halt_probe_s, counts)
                continue
            if action is Action.PAUSE:
                self._metrics.paused_tariff.set(1)
                log.warning("Altcraft tariff limit reached (error 402); waiting, nothing is dropped")
                self._wait(decision.retry_after_s or TARIFF_PAUSE_S, counts)
                continue
            # Action.RETRY
            self._metrics.retries.labels(endpoint, decision.reason).inc()
            replayed_errors = replayed_errors + 1 if duplicate and decision.reason == "server_error" else 0
            if replayed_errors >= DUPLICATE_ERROR_RETRIES:
                generation += 1
                replayed_errors = 0
                new_key = resend_request_id(rid, generation)
                log.warning(
                    "Altcraft answered request %s with error 500 %d times in a row as a duplicate: it replays a "
                    "failed answer, and would for its whole deduplication window; sending it again as %s "
                    "(if that failed original had engaged anyone, they are engaged again)",
                    key, DUPLICATE_ERROR_RETRIES, new_key,
                )  # fmt: skip
                key = new_key
                attempt = 0
                continue
            delay = backoff_s(attempt, self._s.retry.initial_backoff_s, self._s.retry.max_backoff_s, self._rand())
            if decision.retry_after_s is not None:
                delay = max(delay, decision.retry_after_s)
            attempt += 1
            if attempt >= self._s.retry.max_attempts and self._clock() - stuck_logged > STUCK_LOG_EVERY_S:
                stuck_logged = self._clock()
                log.warning(
                    "batch %s still failing after %d attempts (%s); it stays queued, nothing is dropped",
                    key, attempt, decision.reason,
                )  # fmt: skip
            self._wait(delay, counts)

    # -- bisection: items at fault, or the request?

    def _bisect_whole(
        self, job: SendJob, start: int, end: int, key: str, body: bytes, refusal: Decision, counts: _Counts
    ) -> list[ItemRejection]:
        """Items[start:end] were refused whole: find the items at fault, or halt if the request is.

        A single item refused whole has nothing to be compared with: it is dead-lettered.
        """
        if end - start == 1:
            return [ItemRejection(start, refusal.code, refusal.text or refusal.reason, refusal.debug)]
        walk = _Walk(refusal)
        try:
            return self._bisect(job, start, end, key, refusal, counts, walk)
        except _RequestRefused as refused:
            return self._refused(job, start, end, key, body, refusal, refused.singles, counts)

    def _bisect(
        self, job: SendJob, start: int, end: int, key: str, refusal: Decision, counts: _Counts, walk: _Walk
    ) -> list[ItemRejection]:
        """Halve a range refused whole, in order (left first), so items are still engaged in their order.

        While no part has been accepted, the first single items reached are the range's first two, one
        from each half of the smallest part holding both. Refused alone with the batch's request-level
        error, when nothing was accepted, they show the request at fault: :class:`_RequestRefused`.
        """
        if not same_refusal(refusal, walk.first):
            walk.items_at_fault = True  # a configuration fault refuses every part alike
        if end - start == 1:
            rejection = ItemRejection(start, refusal.code, refusal.text or refusal.reason, refusal.debug)
            if not walk.items_at_fault:
                walk.singles.append((rejection, key))
                if len(walk.singles) >= 2:
                    raise _RequestRefused(walk.singles)
            return [rejection]
        mid = (start + end) // 2
        left = self._deliver(job, start, mid, sub_request_id(key, 1), counts, walk)
        right = self._deliver(job, mid, end, sub_request_id(key, 2), counts, walk)
        return left + right

    def _refused(
        self,
        job: SendJob,
        start: int,
        end: int,
        key: str,
        body: bytes,
        refusal: Decision,
        singles: list[tuple[ItemRejection, str]],
        counts: _Counts,
    ) -> list[ItemRejection]:
        """Halted ``request_refused``: probe with the refused request (same bytes, same key) until accepted.

        The first probe refused again is followed, once, by the rest of the range without the items
        refused alone, bisected like the range: a part of it accepted shows that items were at fault
        after all (a batch refused whole for one item, whose first two items were both bad). Those two
        are then sent alone once more under their keys, so that an item accepted now (the cause was
        removed between two probes) is engaged, late, rather than dead-lettered.
        """
        endpoint = ENDPOINTS[job.mode]
        halt = Decision(Action.HALT, REQUEST_REFUSED, refusal.code, refusal.text, debug=refusal.debug)
        self._hold(job, key, halt, False)
        skip = max(r.index for r, _ in singles) + 1
        explored = skip >= end
        while True:
            self._wait(self._halt_probe_s, counts)
            decision, results, _ = self._attempt(job, endpoint, body, key, end - start, counts, probing=True)
            if decision.action is Action.OK:
                assert results is not None
                self._release(job, "Altcraft accepts the request again")
                return [ItemRejection(start + i, code, text, debug) for i, code, text, debug in results]
            if decision.action is Action.HALT:
                self._hold(job, key, decision, False)
            if explored or not same_refusal(decision, refusal):
                continue
            explored = True
            walk = _Walk(refusal)
            try:
                rest = self._deliver(job, skip, end, rest_request_id(key, skip - start), counts, walk)
            except _RequestRefused:
                continue  # refused alike again: the request is at fault
            if not walk.items_at_fault:
                continue  # one item, refused alike: no new evidence
            log.warning(
                "part of batch %s was accepted without its items %s, refused alone: items were at fault, not the "
                "request", key, [r.index for r, _ in singles],
            )  # fmt: skip
            again: list[ItemRejection] = []
            for single, single_key in singles:
                i = single.index
                again += self._deliver(job, i, i + 1, single_key, counts, _Walk(refusal, items_at_fault=True))
            return again + rest

    # -- halts

    def _hold(self, job: SendJob, key: str, decision: Decision, duplicate: bool) -> None:
        """Halt for ``decision.reason`` on behalf of this batch; say once what it takes to end it."""
        detail = f"error {decision.code}: {decision.text}" + (f" ({decision.debug})" if decision.debug else "")
        new = decision.reason not in self._halt.holds(job.request_id)
        self._halt.set(decision.reason, detail, job.request_id)
        if not new:
            return
        probe = self._halt_probe_s
        if decision.reason in (TASK_UNKNOWN, RESULT_MISMATCH) or duplicate:
            what = {
                TASK_UNKNOWN: "tasks/status does not know the batch's task (expired or lost), so its outcome is "
                "unknown",
                RESULT_MISMATCH: "the answer's result does not line up with the items sent, so no item's outcome "
                "is known",
            }.get(decision.reason, "the refusal is a replay of an answer Altcraft stored for this Request-ID")
            log.error(
                "halted (%s) on request %s of route %s: %s (%s). This cannot clear by itself: the same "
                "Request-ID replays the same answer for Altcraft's deduplication window (1 day by default). "
                "Retrying every %.0f s; nothing is dropped. %s",
                decision.reason, key, job.route, what, detail, probe, EPOCH_WAY_OUT,
            )  # fmt: skip
        elif decision.reason == REQUEST_REFUSED:
            log.error(
                "halted (request_refused): Altcraft refuses request %s of route %s whatever items it carries, "
                "error %s %r, error_debug %r: the route's request is at fault (matching mode, field_name or "
                "another parameter), not its data; nothing is dead-lettered. Probing every %.0f s with the same "
                "request; it resumes by itself once the route's settings (or Altcraft's) are fixed",
                key, job.route, decision.code, decision.text, decision.debug, probe,
            )  # fmt: skip
        else:
            log.error(
                "halted: Altcraft refused the configuration (%s, %s) for route %s; nothing is dropped, "
                "retrying every %.0f s", decision.reason, detail, job.route, probe,
            )  # fmt: skip

    def _release(self, job: SendJob, why: str) -> None:
        """End this batch's holds; a reason no batch holds any more is over."""
        for reason in self._halt.release(job.request_id):
            log.warning("halt over (%s): %s", reason, why)

    # -- one request

    def _attempt(
        self, job: SendJob, endpoint: str, body: bytes, key: str, n: int, counts: _Counts, *, probing: bool = False
    ) -> tuple[Decision, list[tuple[int, int, str, str]] | None, bool]:
        """Send once (in task mode: submit and poll); the decision, the item rejections when answered,
        and whether Altcraft answered as a duplicate. Counts every request once, by what it led to."""
        status, answer, retry_after, duplicate = self._post(endpoint, body, key, counts)
        decision = classify(status, answer, retry_after)
        if decision.action is Action.OK and job.mode is Mode.ENGAGE_TASK:
            assert answer is not None
            task_id = answer.get("task_id")
            if isinstance(task_id, str) and task_id:
                self._count(endpoint, decision, probing)
                decision, results = self._await_task(task_id, n, counts, probing)
                return decision, results, duplicate
            decision = Decision(Action.RETRY, "unreadable_answer", 0, "no task_id in the answer")
        decision, results = answered(decision, answer, n)
        self._count(endpoint, decision, probing)
        return decision, results, duplicate

    def _await_task(
        self, task_id: str, n: int, counts: _Counts, probing: bool
    ) -> tuple[Decision, list[tuple[int, int, str, str]] | None]:
        """Poll tasks/status until completed; a timeout asks the caller to resend (same Request-ID)."""
        deadline = self._clock() + self._s.task.timeout_s
        interval = self._s.task.poll_interval_s
        payload = orjson.dumps({"token": self._task_token, "task_id": task_id})
        while self._clock() < deadline:
            self._wait(interval, counts)
            interval = min(interval * 1.5, 5.0)
            status, answer, retry_after, _ = self._post(TASK_STATUS, payload, None, counts)
            decision = task_status(status, answer, retry_after)
            if decision.action is Action.OK:
                assert answer is not None
                result = answer["data"].get("result")
                decision, results = answered(classify(200, result), result, n)
                self._count(TASK_STATUS, decision, probing)
                return decision, results
            self._count(TASK_STATUS, decision, probing)
            if decision.action is not Action.RETRY:
                if decision.reason == TASK_UNKNOWN:
                    decision = replace(decision, text=f"task {task_id}: {decision.text}")
                return decision, None
        return Decision(Action.RETRY, "task_timeout", 0, f"task {task_id} not completed in time"), None

    def _count(self, endpoint: str, decision: Decision, probing: bool) -> None:
        """``requests_total{endpoint,outcome}``: what the request led to (see OUTCOMES)."""
        if decision.reason == "task_pending":
            outcome = "pending"
        elif probing and decision.action is Action.BISECT:
            outcome = "halt"  # a halted request_refused probe, refused again
        else:
            outcome = decision.action.value
        self._metrics.requests.labels(endpoint, outcome).inc()

    def _post(
        self, endpoint: str, body: bytes, rid: str | None, counts: _Counts
    ) -> tuple[int | None, dict[str, Any] | None, float | None, bool]:
        # tasks/status takes the token in its body, as documented; batches carry it in the header.
        headers = {"Content-Type": "application/json"} if rid is None else {**self._headers, "Request-ID": rid}
        counts.requests += 1
        started = time.perf_counter()
        try:
            response = self._http.post(endpoint, content=body, headers=headers)
        except httpx.TransportError as exc:
            self._metrics.request_duration.labels(endpoint).observe(time.perf_counter() - started)
            log.debug("transport failure on %s: %s", endpoint, type(exc).__name__)
            self._metrics.altcraft_up.set(0)
            self._tls.failed(exc)
            return None, None, None, False
        self._metrics.request_duration.labels(endpoint).observe(time.perf_counter() - started)
        self._metrics.altcraft_up.set(1)
        self._tls.answered()
        duplicate = (
            response.headers.get("Duplicate-Request", response.headers.get("X-Duplicate-Request", "")).lower() == "true"
        )
        if duplicate:
            counts.duplicates += 1
            self._metrics.duplicates.labels(endpoint).inc()
        try:
            answer = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            answer = None
        retry_after = parse_retry_after(response.headers.get("Retry-After"), self._s.retry.retry_after_cap_s)
        return response.status_code, answer if isinstance(answer, dict) else None, retry_after, duplicate

    def _wait(self, seconds: float, counts: _Counts) -> None:
        if seconds <= 0:
            if counts.cancel.is_set():
                raise Abandoned()
            return
        if self._event_wait(counts.cancel, seconds):
            raise Abandoned()
