from __future__ import annotations

import pytest

from connector.sink.classify import (
    Action,
    backoff_s,
    classify,
    item_results,
    parse_retry_after,
    request_level,
    same_refusal,
    task_status,
)


@pytest.mark.parametrize(
    ("status", "body", "action", "reason"),
    [
        (200, {"error": 0, "result": []}, Action.OK, "ok"),
        (None, None, Action.RETRY, "transport"),
        (502, None, Action.RETRY, "http_5xx"),
        (503, "<html>", Action.RETRY, "http_5xx"),
        (500, {"error": 500, "error_text": "Internal"}, Action.RETRY, "server_error"),
        (200, {"error": 500, "error_text": "Internal"}, Action.RETRY, "server_error"),
        (429, None, Action.RETRY, "throttled"),
        (400, {"error": 400, "error_debug": "http: request body too large"}, Action.SPLIT, "too_large"),
        (413, None, Action.SPLIT, "too_large"),
        (400, {"error": 400, "error_text": "Invalid request"}, Action.BISECT, "refused_whole"),
        (200, {"error": 435, "error_text": "Ambiguous"}, Action.BISECT, "refused_whole"),
        (401, {"error": 401, "error_text": "API token required"}, Action.HALT, "unauthorized"),
        (403, {"error": 403}, Action.HALT, "forbidden"),
        (404, {"error": 404}, Action.HALT, "not_found"),
        (200, {"error": 413, "error_text": "Database is not available"}, Action.HALT, "database_unavailable"),
        (415, {"error": 415}, Action.HALT, "unsupported_content_type"),
        (200, {"error": 441}, Action.HALT, "other_group"),
        (200, {"error": 501}, Action.HALT, "no_such_method"),
        (200, {"error": 402, "error_text": "Tariff limit"}, Action.PAUSE, "tariff_limit"),
        (200, {"error": 777}, Action.HALT, "unknown_error"),
        (404, None, Action.HALT, "not_found"),
    ],
)
def test_every_answer_has_one_decision(status, body, action, reason) -> None:  # type: ignore[no-untyped-def]
    d = classify(status, body)
    assert (d.action, d.reason) == (action, reason)


def test_retry_after_is_honoured_and_capped() -> None:
    assert parse_retry_after("7", cap_s=60) == 7
    assert parse_retry_after("9999", cap_s=60) == 60
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", cap_s=60) is None
    assert classify(429, None, retry_after_s=7).retry_after_s == 7


def test_per_item_results_line_up_with_the_request() -> None:
    body = {"error": 0, "result": [{"profile_id": "a"}, {"error": 400, "error_text": "Invalid email"}, {"error": 0}]}
    assert item_results(body, 3) == [(1, 400, "Invalid email", "")]
    assert item_results(body, 4) is None  # does not line up: never guessed
    assert item_results({"error": 0}, 1) is None


def test_backoff_grows_exponentially_within_the_cap_with_full_jitter() -> None:
    assert backoff_s(0, 0.5, 30, rand=1.0) == 0.5
    assert backoff_s(3, 0.5, 30, rand=1.0) == 4.0
    assert backoff_s(20, 0.5, 30, rand=1.0) == 30
    assert backoff_s(20, 0.5, 30, rand=0.0) == 0.0


def test_error_debug_is_kept_with_the_decision() -> None:
    d = classify(400, {"error": 400, "error_text": "Invalid request", "error_debug": "matching: phone refused"})
    assert (d.action, d.code, d.text, d.debug) == (Action.BISECT, 400, "Invalid request", "matching: phone refused")
    body = {"error": 0, "result": [{"error": 400, "error_text": "Invalid phone", "error_debug": "+7 9"}]}
    assert item_results(body, 1) == [(0, 400, "Invalid phone", "+7 9")]


def test_only_incorrect_request_refusals_may_be_about_the_request() -> None:
    invalid = classify(400, {"error": 400, "error_text": "Invalid request", "error_debug": "a"})
    other_debug = classify(400, {"error": 400, "error_text": "Invalid request", "error_debug": "b"})
    ambiguous = classify(400, {"error": 435, "error_text": "Ambiguous search"})
    invalid_email = classify(400, {"error": 400, "error_text": "Invalid email"})
    assert request_level(invalid) and request_level(classify(400, {"error": 450, "error_text": "x"}))
    assert not request_level(ambiguous)  # about one profile: always the items
    assert not request_level(classify(400, {"error": 409, "error_text": "exists"}))
    assert same_refusal(invalid, other_debug)
    assert not same_refusal(invalid, invalid_email) and not same_refusal(ambiguous, ambiguous)


@pytest.mark.parametrize(
    ("status", "body", "action", "reason"),
    [
        (200, {"error": 0, "data": {"status": "completed", "result": {"error": 0}}}, Action.OK, "ok"),
        (200, {"error": 0, "data": {"status": "processing", "progress": 40}}, Action.RETRY, "task_pending"),
        (200, {"error": 0, "data": {"status": "queued"}}, Action.RETRY, "task_pending"),
        (404, {"error": 404, "error_text": "Object is not found in token vision zone"}, Action.HALT, "task_unknown"),
        (404, None, Action.HALT, "task_unknown"),
        (200, {"error": 777, "error_text": "task not found"}, Action.HALT, "task_unknown"),
        (401, {"error": 401, "error_text": "API token required"}, Action.HALT, "unauthorized"),
        (503, None, Action.RETRY, "http_5xx"),
    ],
)
def test_task_status_answers(status, body, action, reason) -> None:  # type: ignore[no-untyped-def]
    d = task_status(status, body)
    assert (d.action, d.reason) == (action, reason)
