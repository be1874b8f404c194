"""The one decision: what to do with an answer (or a transport failure). Pure.

Follows the Altcraft error table: read the body's ``error`` as well as the HTTP status.

A whole-request refusal (error 400/450 without per-item detail) has two possible causes that the
answer alone cannot tell apart: the request (matching mode, ``field_name``, a parameter Altcraft
refuses for this account) or one of its items (a batch refused whole for one bad item, "strict
mode", which the public documentation neither states nor rules out). It is classified ``BISECT``;
the sender tells the causes apart by what the parts of the batch are answered
(:func:`request_level`). Errors 409 and 435 are about one profile, so a whole refusal with them is
always item-caused.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any


class Action(Enum):
    OK = "ok"  # answered: read the per-item results
    RETRY = "retry"  # resend the same bytes with the same Request-ID after a delay
    SPLIT = "split"  # the body was too large: send it in halves
    BISECT = "bisect"  # refused whole with no per-item detail: halve until the bad items are isolated
    PAUSE = "pause"  # tariff limit: long backoff, alert, keep everything
    HALT = "halt"  # configuration fault: stop sending until the cause is fixed


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: str  # closed set, safe as a metric label
    code: int = 0  # Altcraft error code (or HTTP status when the body had none)
    text: str = ""
    retry_after_s: float | None = None
    debug: str = ""  # the answer's error_debug, when Altcraft sent one


TOO_LARGE = "http: request body too large"
HALT_CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found", 413: "database_unavailable",
              415: "unsupported_content_type", 441: "other_group", 501: "no_such_method"}  # fmt: skip
PER_RECORD_CODES = {400, 409, 435, 450}
# Whole refusals that may be about the request itself ("Incorrect request" in the error table).
REQUEST_LEVEL_CODES = frozenset({400, 450})

# Halt reasons the sender sets (besides those of HALT_CODES and the loop's dead-letter breaker).
REQUEST_REFUSED = "request_refused"  # every part of a batch refused alike: the request, not an item
TASK_UNKNOWN = "task_unknown"  # tasks/status does not know the batch's task (expired or lost)
RESULT_MISMATCH = "result_mismatch"  # an answer whose result does not line up with the items sent


def parse_retry_after(value: str | None, cap_s: float) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form), capped; None when absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return min(max(seconds, 0.0), cap_s)


def classify(status: int | None, body: Any, retry_after_s: float | None = None) -> Decision:
    """Decide from the HTTP status and the parsed JSON body; ``status=None`` means a transport failure."""
    if status is None:
        return Decision(Action.RETRY, "transport")
    if status == 429:
        return Decision(Action.RETRY, "throttled", 429, "too many requests", retry_after_s)
    code, text, debug = _error_fields(body)
    if code is None:
        if 200 <= status < 300:
            return Decision(Action.RETRY, "unreadable_answer", status, "the answer has no error field")
        if status >= 500:
            return Decision(Action.RETRY, "http_5xx", status, f"HTTP {status}", retry_after_s)
        if status == 413:  # a proxy in front of Altcraft refused the size
            return Decision(Action.SPLIT, "too_large", status, "HTTP 413 without an Altcraft body")
        if status in (401, 403, 404):
            return Decision(Action.HALT, HALT_CODES[status], status, f"HTTP {status} without an Altcraft body")
        return Decision(Action.HALT, "unexpected_http_status", status, f"HTTP {status} without an Altcraft body")
    if code == 0:
        return Decision(Action.OK, "ok")
    if code in (400, 450) and debug == TOO_LARGE:
        return Decision(Action.SPLIT, "too_large", code, text or debug, debug=debug)
    if code in PER_RECORD_CODES:
        return Decision(Action.BISECT, "refused_whole", code, text, debug=debug)
    if code in HALT_CODES:
        return Decision(Action.HALT, HALT_CODES[code], code, text, debug=debug)
    if code == 402:
        return Decision(Action.PAUSE, "tariff_limit", code, text, retry_after_s, debug)
    if code == 500 or status >= 500:
        return Decision(Action.RETRY, "server_error", code, text, retry_after_s, debug)
    return Decision(Action.HALT, "unknown_error", code, text, debug=debug)


def request_level(decision: Decision) -> bool:
    """A whole refusal that may be caused by the request rather than by its items."""
    return decision.action is Action.BISECT and decision.code in REQUEST_LEVEL_CODES


def same_refusal(a: Decision, b: Decision) -> bool:
    """Two refusals with the same request-level error (code and text; ``error_debug`` may vary)."""
    return request_level(a) and request_level(b) and (a.code, a.text) == (b.code, b.text)


def task_status(status: int | None, body: Any, retry_after_s: float | None = None) -> Decision:
    """Decide from a ``tasks/status`` answer: OK (``completed``), ``task_pending``, or as :func:`classify`.

    An unknown task (error 404, or an error text saying it is not found) is ``task_unknown``, not a
    configuration fault: the task expired or was lost, and the batch's outcome is unknown.
    """
    decision = classify(status, body, retry_after_s)
    if decision.action is Action.OK:
        assert type(body) is dict
        data = body.get("data")
        if type(data) is dict and data.get("status") == "completed":
            return decision
        return Decision(Action.RETRY, "task_pending", 0, "the task is not completed yet")
    if decision.code == 404 or (decision.action is Action.HALT and "not found" in decision.text.lower()):
        return Decision(Action.HALT, TASK_UNKNOWN, decision.code, decision.text or "task not found",
                        debug=decision.debug)  # fmt: skip
    return decision


def answered(decision: Decision, answer: Any, n_items: int) -> tuple[Decision, list[tuple[int, int, str, str]] | None]:
    """The final decision on an answer classified OK: its per-item rejections, or a ``result_mismatch``
    halt when its result does not line up with the ``n_items`` sent (no item's outcome is then known).
    Any other decision passes through."""
    if decision.action is not Action.OK:
        return decision, None
    results = item_results(answer, n_items) if type(answer) is dict else None
    if results is None:
        text = f"the answer's result does not line up with the {n_items} items sent"
        return Decision(Action.HALT, RESULT_MISMATCH, 0, text), None
    return decision, results


def _error_fields(body: Any) -> tuple[int | None, str, str]:
    if type(body) is not dict:
        return None, "", ""
    code = body.get("error")
    if type(code) is str and code.isdigit():
        code = int(code)
    if type(code) is not int:
        return None, "", ""
    return code, str(body.get("error_text") or ""), str(body.get("error_debug") or "")


def item_results(body: dict[str, Any], n_items: int) -> list[tuple[int, int, str, str]] | None:
    """Per-item rejections ``(index, code, text, debug)`` of an answered batch; None if results do not
    line up.

    A missing item ``error`` counts as 0 (the engage endpoint's documented answer has only profile_id).
    """
    results = body.get("result")
    if type(results) is not list or len(results) != n_items:
        return None
    rejected = []
    for i, r in enumerate(results):
        if type(r) is not dict:
            return None
        code = r.get("error", 0)
        if code in (0, None, "0"):
            continue
        try:
            code = int(code)
        except (TypeError, ValueError):
            return None
        rejected.append((i, code, str(r.get("error_text") or ""), str(r.get("error_debug") or "")))
    return rejected


def backoff_s(attempt: int, initial_s: float, max_s: float, rand: float) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(max, initial * 2**attempt)]."""
    return float(rand * min(max_s, initial_s * (2 ** min(attempt, 30))))
