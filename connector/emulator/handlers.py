"""Endpoint logic: an HTTP request's parts in, a :class:`Reply` out. No sockets, no clock, no locks.

The order of checks for an API request (after the server applied transport faults and the body
limit) is: known method (501) -> content type (415) -> body parses (400) -> token (401) ->
duplicate ``Request-ID`` (the stored answer) -> parameters (400/404) -> quota (402) -> execution.

Error answers (``error`` != 0) are always JSON; ``"format": "xml"`` renders the others as the
platform's XML.

Which answers are stored for deduplication: those of executed requests, that is every answer with
error 0 (per-item errors included), whole-batch rejections by strict mode, and the request-level
data errors of ``import_and_start`` (400/404/435 about its one profile). Nothing that stopped before
execution is stored (400 malformed or too large, 401, 402, 404 unknown workflow or database, 415),
and injected faults never reach this module, so a retry with the same key executes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import orjson

from connector.emulator.config import EmulatorConfig
from connector.emulator.dedup import StoredAnswer
from connector.emulator.faults import FaultConfig, FaultDecision, FaultKind
from connector.emulator.importer import BatchCall, first_invalid, import_items, record_order, results_json
from connector.emulator.prepare import (
    BATCH,
    BATCH_TASK,
    IMPORT_BATCH,
    SINGLE,
    TASK_STATUS,
    Prepared,
    prepare,
)
from connector.emulator.profiles import MATCHING_MODES, UNDESCRIBED_MATCHING
from connector.emulator.replies import (
    JSON,
    TEXTS,
    TOO_LARGE_DEBUG,
    Reply,
    error_payload,
    error_reply,
    http_status,
    render,
)
from connector.emulator.state import EmulatorState
from connector.emulator.tasks import Task
from connector.emulator.validation import OK_TEXT, check_fields, check_subscriptions


@dataclass(frozen=True, slots=True)
class ApiRequest:
    path: str
    body: bytes
    content_type: str | None = None
    authorization: str | None = None
    request_id: str | None = None
    # The key came in the legacy X-Request-ID header (duplicates then also get X-Duplicate-*).
    legacy_request_id: bool = False


class _Fail(Exception):
    """A request-level error: stops handling and becomes the answer."""

    def __init__(self, code: int, debug: str | None = None) -> None:
        super().__init__(code, debug)
        self.code = code
        self.debug = debug


@dataclass(slots=True)
class _Outcome:
    payload: dict[str, Any]
    code: int
    store: bool


def handle_api(
    state: EmulatorState,
    config: EmulatorConfig,
    faults: FaultConfig,
    req: ApiRequest,
    now: float,
    *,
    prepared: Prepared | None = None,
    fault: FaultKind | None = None,
) -> Reply:
    """Answer one API request and log it.

    ``prepared``: the body already parsed and validated (by a worker); else it is done here.
    ``fault``: an injected fault applied after execution (the answer will not be sent).
    """
    if prepared is None:
        prepared = prepare(req.path, req.body, req.content_type)
    run_due_tasks(state, faults, now)
    endpoint = prepared.endpoint
    duplicate = False
    try:
        if prepared.error is not None:
            raise _Fail(*prepared.error)
        assert endpoint is not None
        params = prepared.params
        xml = params.get("format") == "xml"
        token = _token(req, params, config, faults)
        if endpoint == TASK_STATUS:
            outcome = _task_status(state, params, token, now)
            data, ctype = render(outcome.payload, xml)
            reply = Reply(http_status(outcome.code), data, ctype)
            code = outcome.code
        else:
            rid = req.request_id
            stored = state.dedup.get(token, rid, now) if rid else None
            if stored is not None:
                assert rid is not None
                duplicate = True
                reply = Reply(stored.status, stored.body, stored.content_type, _duplicate_headers(rid, req))
                code = stored.error
            else:
                outcome = _ENDPOINTS[endpoint](state, config, faults, prepared, token, rid, now)
                code = outcome.code
                data, ctype = render(outcome.payload, xml and code == 0)
                reply = Reply(http_status(code), data, ctype)
                if outcome.store and rid:
                    state.dedup.put(token, rid, StoredAnswer(reply.status, code, data, ctype, now), now)
    except _Fail as f:
        code = f.code
        reply = error_reply(f.code, f.debug)
    status = 0 if fault is FaultKind.RESET_AFTER_EXECUTE else reply.status
    if config.latency_field is not None and status == 200 and code == 0 and not duplicate:
        _measure_latency(state, config.latency_field, req.body)  # acknowledged: executed and answered
    state.record(
        now=now,
        endpoint=endpoint or req.path,
        request_id=req.request_id,
        items=prepared.item_count,
        body_bytes=len(req.body),
        http_status=status,
        error=code,
        duplicate=duplicate,
        fault=fault.value if fault is not None else None,
    )
    return reply


def fault_reply(decision: FaultDecision, faults: FaultConfig, now: float) -> Reply:
    """The answer of a request stopped by an injected fault (never executed, never stored)."""
    kind = decision.kind
    if kind is FaultKind.ERROR_500:
        return error_reply(500, "injected fault")
    if kind is FaultKind.HTTP_502:
        return error_reply(502, "injected fault")
    if kind is FaultKind.HTTP_503:
        return error_reply(503, "injected fault")
    if kind is FaultKind.RATE_LIMIT:
        return error_reply(429, "injected fault", headers=(("Retry-After", str(faults.retry_after_s)),))
    if kind is FaultKind.OUTAGE:
        headers: tuple[tuple[str, str], ...] = ()
        if faults.outage_until is not None and faults.outage_until != float("inf"):
            headers = (("Retry-After", str(max(1, int(faults.outage_until - now + 0.999)))),)
        return error_reply(503, "emulated outage", headers=headers)
    raise ValueError(f"{kind} has no answer")


def too_large_reply() -> Reply:
    return Reply(400, orjson.dumps(error_payload(400, TOO_LARGE_DEBUG)), JSON, close=True)


def _token(req: ApiRequest, params: dict[str, Any], config: EmulatorConfig, faults: FaultConfig) -> str:
    token: object = None
    auth = req.authorization
    if auth:
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            token = value.strip()
    if token is None:
        token = params.get("token")
    if not isinstance(token, str) or not token:
        raise _Fail(401, 'no token: send it as "token" in the body or as Authorization: Bearer')
    accepted = faults.tokens if faults.tokens is not None else config.tokens
    if token not in accepted:
        raise _Fail(401, "the token is not valid")
    return token


def _duplicate_headers(key: str, req: ApiRequest) -> tuple[tuple[str, str], ...]:
    headers: tuple[tuple[str, str], ...] = (("Duplicate-Request", "true"), ("Duplicate-Key", key))
    if req.legacy_request_id:
        headers += (("X-Duplicate-Request", "true"), ("X-Duplicate-Key", key))
    return headers


# --- parameters -----------------------------------------------------------------------------------


def _object_id(body: dict[str, Any], key: str, known: Collection[int]) -> int:
    value = body.get(key)
    if value is None:
        raise _Fail(400, f"{key} is required")
    if type(value) is str and value.isdigit():
        value = int(value)
    if type(value) is not int:
        raise _Fail(400, f"{key} must be an integer")
    if value not in known:
        raise _Fail(404, f"{key} {value} not found")
    return value


def _matching(body: dict[str, Any], faults: FaultConfig) -> tuple[str, str | None]:
    matching = body.get("matching") or "email"
    if not isinstance(matching, str) or matching not in MATCHING_MODES:
        undescribed = isinstance(matching, str) and matching in UNDESCRIBED_MATCHING
        why = " (the API pages do not say what an item carries for it)" if undescribed else ""
        emulated = ", ".join(sorted(MATCHING_MODES))
        raise _Fail(400, f"matching {matching!r} is not emulated{why}; emulated: {emulated}")
    if matching in faults.refuse_matching:  # the refuse_matching fault: a configuration the account refuses
        raise _Fail(400, f"matching {matching!r} is not available for this account")
    field_name = body.get("field_name")
    if matching == "custom" and (not isinstance(field_name, str) or not field_name):
        raise _Fail(400, "field_name is required with matching custom")
    return matching, field_name if isinstance(field_name, str) else None


def _content(body: dict[str, Any]) -> dict[str, Any] | None:
    """The request-level ``content`` of a workflow request: an object (the API pages' type), or absent."""
    content = body.get("content")
    if content is None or content == "":  # an empty XML <content/>
        return None
    if type(content) is not dict:
        raise _Fail(400, "content must be an object of template variables")
    return content


def _batch_call(config: EmulatorConfig, faults: FaultConfig, prepared: Prepared, rid: str | None) -> BatchCall:
    params = prepared.params
    content = None
    if prepared.endpoint == IMPORT_BATCH:  # its page lists no content: ignored, as any unknown parameter
        _object_id(params, "db_id", config.dbs)
        workflow_id = None
    else:
        workflow_id = _object_id(params, "workflow_id", config.workflows)
        content = _content(params)
    matching, field_name = _matching(params, faults)
    if prepared.items is None:
        raise _Fail(400, "data must be an array of profiles")
    return BatchCall(prepared.items, matching, field_name, workflow_id, rid, content)


def _measure_latency(state: EmulatorState, field: str, body: bytes) -> None:
    """Record, per item carrying ``field`` (Unix ms when produced), how long ago that was: called once
    the request is executed and its answer is ready, so it measures produced -> acknowledged. Meant for
    benchmarks without faults: an answer lost to an injected reset and later replayed as a duplicate
    is not measured."""
    now_ms = int(time.time() * 1000)
    pattern = re.compile(b'"' + re.escape(field.encode()) + rb'":(\d+)')
    state.latencies_ms.extend(now_ms - int(m) for m in pattern.findall(body))


def _take_quota(state: EmulatorState, faults: FaultConfig, items: int) -> None:
    if faults.quota_requests is not None and state.quota_requests_used >= faults.quota_requests:
        raise _Fail(402, f"request quota of {faults.quota_requests} used up")
    if faults.quota_profiles is not None and state.quota_profiles_used + items > faults.quota_profiles:
        raise _Fail(402, f"profile quota of {faults.quota_profiles} used up")
    state.quota_requests_used += 1
    state.quota_profiles_used += items


# --- endpoints ------------------------------------------------------------------------------------


def run_batch(state: EmulatorState, call: BatchCall, strict: bool) -> tuple[dict[str, Any], int]:
    """Execute a checked batch: the sync endpoint's answer and its error code."""
    c = state.counters
    n = len(call.items)
    c["executed"] += 1
    c["items_received"] += n
    if strict and first_invalid(state.profiles, call) is not None:
        c["items_rejected"] += n
        return error_payload(400, "strict mode: the batch has invalid items"), 400
    out = import_items(state.profiles, state.engagements, call)
    if state.order is not None and out.accepted:
        record_order(state.order, call, out.results)
    c["items_accepted"] += out.accepted
    c["items_rejected"] += out.rejected
    c["profiles_created"] += out.created
    c["profiles_updated"] += out.updated
    result = orjson.Fragment(results_json(out.results, out.rejected == 0))
    return {"error": 0, "error_text": OK_TEXT, "result": result}, 0


def run_due_tasks(state: EmulatorState, faults: FaultConfig, now: float) -> int:
    """Execute the tasks whose processing time is over; returns how many ran."""
    tasks = state.tasks.due(now)
    for task in tasks:
        assert task.call is not None
        payload, _ = run_batch(state, task.call, faults.strict)
        state.tasks.complete(task, orjson.dumps(payload))
        state.counters["tasks_completed"] += 1
    return len(tasks)


def _batch(
    state: EmulatorState,
    config: EmulatorConfig,
    faults: FaultConfig,
    prepared: Prepared,
    token: str,
    rid: str | None,
    now: float,
) -> _Outcome:
    call = _batch_call(config, faults, prepared, rid)
    _take_quota(state, faults, len(call.items))
    payload, code = run_batch(state, call, faults.strict)
    return _Outcome(payload, code, store=True)


def _batch_task(
    state: EmulatorState,
    config: EmulatorConfig,
    faults: FaultConfig,
    prepared: Prepared,
    token: str,
    rid: str | None,
    now: float,
) -> _Outcome:
    call = _batch_call(config, faults, prepared, rid)
    _take_quota(state, faults, len(call.items))
    task = Task(state.tasks.new_id(), token, now, now + config.task_delay_s, call)
    state.tasks.submit(task)
    state.counters["tasks_submitted"] += 1
    if config.task_delay_s <= 0:
        run_due_tasks(state, faults, now)
    return _Outcome({"error": 0, "error_text": OK_TEXT, "task_id": task.task_id}, 0, store=True)


def _single(
    state: EmulatorState,
    config: EmulatorConfig,
    faults: FaultConfig,
    prepared: Prepared,
    token: str,
    rid: str | None,
    now: float,
) -> _Outcome:
    body = prepared.params
    workflow_id = _object_id(body, "workflow_id", config.workflows)
    content = _content(body)
    matching, field_name = _matching(body, faults)
    data = body.get("data")
    if data is None:
        data = {}
    if type(data) is not dict:
        raise _Fail(400, "data must be an object of profile fields")
    # The matching value may be given at the root of the request (email, phone, profile_id,
    # field_value) or among the profile fields.
    fields = dict(data)
    for key in ("email", "phone", "profile_id"):
        if body.get(key) is not None:
            fields[key] = body[key]
    if matching == "custom" and field_name and body.get("field_value") is not None:
        fields[field_name] = body["field_value"]
    _take_quota(state, faults, 1)
    c = state.counters
    c["executed"] += 1
    c["items_received"] += 1
    err = check_fields(fields)
    if err is None and "subscriptions" in fields:
        err, kept = check_subscriptions(fields["subscriptions"], body.get("skip_invalid_subscriptions") is True)
        if err is None:
            fields["subscriptions"] = kept
    pid: str | None = None
    if err is None:
        pid, err = state.profiles.match(matching, field_name, fields)
    if err is not None:
        c["items_rejected"] += 1
        return _Outcome(error_payload(err[0], text=err[1]), err[0], store=True)
    if pid is None:
        pid = state.profiles.create(fields)
        c["profiles_created"] += 1
    else:
        state.profiles.update(pid, fields)
        c["profiles_updated"] += 1
    c["items_accepted"] += 1
    if state.order is not None:
        state.order.add(pid, fields, matching, field_name)
    state.engagements.add(workflow_id, rid, matching, field_name, [pid], content)
    return _Outcome({"error": 0, "error_text": OK_TEXT, "profile_id": pid}, 0, store=True)


def _task_status(state: EmulatorState, body: dict[str, Any], token: str, now: float) -> _Outcome:
    task_id = body.get("task_id")
    if not isinstance(task_id, str) or not task_id:
        raise _Fail(400, "task_id is required")
    task = state.tasks.get(token, task_id)
    if task is None:
        raise _Fail(404, f"task {task_id} not found")
    data: dict[str, Any]
    if task.result is None:
        data = {"status": "processing", "progress": task.progress(now)}
    else:
        data = {"status": "completed", "progress": 100, "result": orjson.Fragment(task.result)}
    return _Outcome({"data": data, "error": 0, "error_text": TEXTS[0]}, 0, store=False)


_Handler = Callable[[EmulatorState, EmulatorConfig, FaultConfig, Prepared, str, str | None, float], _Outcome]
_ENDPOINTS: dict[str, _Handler] = {
    BATCH: _batch,
    BATCH_TASK: _batch_task,
    IMPORT_BATCH: _batch,
    SINGLE: _single,
}
