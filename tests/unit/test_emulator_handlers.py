"""Endpoint logic without sockets: request in, answer and state out, time passed in."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from connector.emulator.config import EmulatorConfig
from connector.emulator.faults import FaultConfig
from connector.emulator.handlers import ApiRequest, handle_api
from connector.emulator.replies import Reply, http_status
from connector.emulator.state import EmulatorState

CFG = EmulatorConfig(tokens=["tok", "tok2"], workflows=[12], dbs=[1], task_delay_s=5.0)
BATCH = "/api/v1.1/workflows/import_and_start_batch"
TASK = "/api/v1.1/workflows/import_and_start_batch_task"
STATUS = "/api/v1.1/tasks/status"
IMPORT = "/api/v1.1/profiles/import_batch"
SINGLE = "/api/v1.1/workflows/import_and_start"


def _state() -> EmulatorState:
    return EmulatorState(seed=0, dedup_window_s=100, answer_cache_bytes=1 << 20, request_log_size=100)


def _post(
    state: EmulatorState,
    path: str,
    body: dict[str, Any] | bytes,
    *,
    faults: FaultConfig | None = None,
    now: float = 0.0,
    ctype: str | None = "application/json",
    auth: str | None = None,
    rid: str | None = None,
    legacy: bool = False,
) -> tuple[Reply, Any]:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    req = ApiRequest(path, raw, ctype, auth, rid, legacy)
    reply = handle_api(state, CFG, faults or FaultConfig(), req, now)
    parsed = orjson.loads(reply.body) if reply.content_type == "application/json" else reply.body
    return reply, parsed


def _batch(*emails: str, **extra: Any) -> dict[str, Any]:
    return {"token": "tok", "workflow_id": 12, "data": [{"data": {"email": e}} for e in emails], **extra}


def test_http_status_of_each_error_code() -> None:
    assert [http_status(c) for c in (0, 400, 401, 402, 404, 415, 435, 450, 500, 501)] == [
        200, 400, 401, 402, 404, 415, 400, 400, 500, 404,
    ]  # fmt: skip


def test_batch_answers_one_result_per_item() -> None:
    state = _state()
    reply, body = _post(state, BATCH, _batch("a@example.com", "oops", "b@example.com"))
    assert reply.status == 200
    assert body["error"] == 0
    assert [r["error"] for r in body["result"]] == [0, 400, 0]
    assert body["result"][1] == {"error": 400, "error_text": "Invalid email", "profile_id": ""}
    assert len(state.profiles) == 2
    assert state.engagements.total == 2


@pytest.mark.parametrize(
    ("path", "body", "ctype", "auth", "status", "code"),
    [
        ("/api/v1.1/nope", _batch("a@example.com"), "application/json", None, 404, 501),
        (BATCH, _batch("a@example.com"), "text/plain", None, 415, 415),
        (BATCH, b"{not json", "application/json", None, 400, 400),
        (BATCH, b"[1, 2]", "application/json", None, 400, 400),
        (BATCH, {"workflow_id": 12, "data": []}, "application/json", None, 401, 401),
        (BATCH, _batch("a@example.com", token="bad"), "application/json", None, 401, 401),
        (BATCH, {"workflow_id": 12, "data": []}, "application/json", "Bearer nope", 401, 401),
        (BATCH, _batch("a@example.com", workflow_id=99), "application/json", None, 404, 404),
        (BATCH, {"token": "tok", "data": []}, "application/json", None, 400, 400),
        (IMPORT, {"token": "tok", "db_id": 2, "data": []}, "application/json", None, 404, 404),
        (BATCH, _batch("a@example.com", matching="custom"), "application/json", None, 400, 400),
        (BATCH, _batch("a@example.com", matching="push_sub"), "application/json", None, 400, 400),
        (BATCH, {"token": "tok", "workflow_id": 12, "data": {"x": 1}}, "application/json", None, 400, 400),
    ],
)
def test_request_level_errors(
    path: str, body: dict[str, Any] | bytes, ctype: str, auth: str | None, status: int, code: int
) -> None:
    state = _state()
    reply, answer = _post(state, path, body, ctype=ctype, auth=auth)
    assert (reply.status, answer["error"]) == (status, code)
    assert isinstance(answer["error_text"], str) and answer["error_text"]
    assert "result" not in answer
    assert len(state.profiles) == 0


def test_token_in_bearer_header_or_body() -> None:
    state = _state()
    body = {"workflow_id": 12, "data": [{"data": {"email": "a@example.com"}}]}
    assert _post(state, BATCH, body, auth="Bearer tok2")[0].status == 200
    assert _post(state, BATCH, {**body, "token": "tok"})[0].status == 200


def test_a_duplicate_gets_the_original_answer_and_is_not_executed() -> None:
    state = _state()
    first, _ = _post(state, BATCH, _batch("a@example.com"), rid="k1", now=1.0)
    again, _ = _post(state, BATCH, _batch("a@example.com", "new@example.com"), rid="k1", now=50.0)
    assert again.body == first.body
    assert dict(again.headers) == {"Duplicate-Request": "true", "Duplicate-Key": "k1"}
    assert state.engagements.total == 1
    assert len(state.profiles) == 1
    # Another token, or the end of the window, executes it again.
    assert _post(state, BATCH, {**_batch("a@example.com"), "token": "tok2"}, rid="k1", now=2.0)[0].headers == ()
    assert _post(state, BATCH, _batch("a@example.com"), rid="k1", now=101.5)[0].headers == ()
    assert state.engagements.total == 3
    log = list(state.log)
    assert [r.duplicate for r in log] == [False, True, False, False]
    assert log[1].items == 2


def test_legacy_request_id_gets_legacy_headers_too() -> None:
    state = _state()
    _post(state, BATCH, _batch("a@example.com"), rid="k", legacy=True)
    reply, _ = _post(state, BATCH, _batch("a@example.com"), rid="k", legacy=True)
    assert dict(reply.headers) == {
        "Duplicate-Request": "true",
        "Duplicate-Key": "k",
        "X-Duplicate-Request": "true",
        "X-Duplicate-Key": "k",
    }


def test_answers_that_did_not_execute_are_not_stored() -> None:
    state = _state()
    assert _post(state, BATCH, _batch("a@example.com", workflow_id=99), rid="k")[0].status == 404
    quota = FaultConfig(quota_requests=0)
    assert _post(state, BATCH, _batch("a@example.com"), rid="k", faults=quota)[0].status == 402
    reply, _ = _post(state, BATCH, _batch("a@example.com"), rid="k")
    assert (reply.status, reply.headers) == (200, ())
    assert state.engagements.total == 1


def test_quota_of_profiles_refuses_a_whole_request_that_would_pass_it() -> None:
    state = _state()
    faults = FaultConfig(quota_profiles=3)
    assert _post(state, BATCH, _batch("a@example.com", "b@example.com"), faults=faults)[0].status == 200
    reply, body = _post(state, BATCH, _batch("c@example.com", "d@example.com"), faults=faults)
    assert (reply.status, body["error"], body["error_text"]) == (402, 402, "Tariff limit reached")
    assert _post(state, BATCH, _batch("c@example.com"), faults=faults)[0].status == 200
    assert len(state.profiles) == 3


def test_strict_mode_rejects_the_whole_batch_without_detail() -> None:
    state = _state()
    strict = FaultConfig(strict=True)
    reply, body = _post(state, BATCH, _batch("a@example.com", "bad"), faults=strict, rid="s")
    assert (reply.status, body["error"]) == (400, 400)
    assert "result" not in body
    assert len(state.profiles) == 0
    # The rejection was an execution: the same key replays it.
    assert _post(state, BATCH, _batch("a@example.com"), rid="s")[0].body == reply.body
    assert _post(state, BATCH, _batch("a@example.com", "b@example.com"), faults=strict)[0].status == 200


def test_task_runs_when_due_and_status_reports_progress() -> None:
    state = _state()
    reply, body = _post(state, TASK, _batch("a@example.com"), now=10.0, rid="t1")
    task_id = body["task_id"]
    assert (reply.status, body["error"]) == (200, 0)
    _, pending = _post(state, STATUS, {"token": "tok", "task_id": task_id}, now=12.0)
    assert pending["data"] == {"status": "processing", "progress": 40}
    assert len(state.profiles) == 0
    _, done = _post(state, STATUS, {"token": "tok", "task_id": task_id}, now=15.0)
    assert done["data"]["status"] == "completed"
    assert done["data"]["progress"] == 100
    result = done["data"]["result"]
    assert result["error"] == 0
    assert [r["profile_id"] for r in result["result"]] == [state.profiles.pid(1)]
    # Dedup returns the same task, and another token cannot see it.
    assert _post(state, TASK, _batch("a@example.com"), now=16.0, rid="t1")[1]["task_id"] == task_id
    assert _post(state, STATUS, {"token": "tok2", "task_id": task_id}, now=16.0)[0].status == 404
    assert _post(state, STATUS, {"token": "tok"}, now=16.0)[0].status == 400


def test_import_and_start_single_profile_with_the_matching_value_at_the_root() -> None:
    state = _state()
    body = {
        "token": "tok",
        "workflow_id": 12,
        "matching": "email",
        "email": "example001@example.com",
        "data": {"subscriptions": [{"email": "example001@example.com", "resource_id": 7}]},
    }
    reply, answer = _post(state, SINGLE, body)
    assert (reply.status, answer["error"]) == (200, 0)
    assert answer["profile_id"] == state.profiles.pid(1)
    bad, problem = _post(state, SINGLE, {**body, "email": "nope"})
    assert (bad.status, problem["error"], problem["error_text"]) == (400, 400, "Invalid email")
    missing, problem = _post(state, SINGLE, {**body, "matching": "profile_id", "profile_id": "1" * 24})
    assert (missing.status, problem["error"]) == (404, 404)


def test_import_and_start_ambiguous_match_is_error_435() -> None:
    state = _state()
    state.profiles.create({"email": "a@example.com", "CRM": "1"})
    state.profiles.create({"email": "b@example.com", "CRM": "1"})
    body = {"token": "tok", "workflow_id": 12, "matching": "custom", "field_name": "CRM", "field_value": "1"}
    reply, answer = _post(state, SINGLE, body)
    assert (reply.status, answer["error"]) == (400, 435)


def test_xml_batch_items_carry_their_fields_directly() -> None:
    state = _state()
    xml = (
        b"<xml><token>tok</token><workflow_id>12</workflow_id><format>xml</format>"
        b"<data><email>a@example.com</email></data></xml>"
    )
    reply, body = _post(state, BATCH, xml, ctype="application/xml; charset=utf-8")
    assert reply.status == 200
    assert reply.content_type == "application/xml"
    assert body == (
        b"<xml><error>0</error><error_text>Successful operation</error_text><result><error>0</error>"
        b"<error_text>Successful operation</error_text><profile_id>" + state.profiles.pid(1).encode() + b"</profile_id>"
        b"</result></xml>"
    )


def test_profiles_import_batch_items_are_the_fields() -> None:
    state = _state()
    body = {"token": "tok", "db_id": 1, "data": [{"email": "a@example.com"}, {"data": {"email": "b@example.com"}}]}
    _, answer = _post(state, IMPORT, body)
    assert [r["error"] for r in answer["result"]] == [0, 400]
    assert state.engagements.total == 0


def test_latency_is_measured_for_acknowledged_requests_only() -> None:
    import dataclasses
    import time

    cfg = dataclasses.replace(CFG, latency_field="produced_ms")
    state = _state()
    sent = int(time.time() * 1000) - 300
    items = [{"data": {"email": f"p{i}@example.com"}, "produced_ms": sent} for i in range(3)]
    refused = ApiRequest(BATCH, orjson.dumps({"token": "wrong", "workflow_id": 12, "data": items}), "application/json")
    assert handle_api(state, cfg, FaultConfig(), refused, 0.0).status != 200
    assert state.latency_stats() is None
    ok = ApiRequest(BATCH, orjson.dumps({"token": "tok", "workflow_id": 12, "data": items}), "application/json",
                    request_id="r1")  # fmt: skip
    assert handle_api(state, cfg, FaultConfig(), ok, 0.0).status == 200
    handle_api(state, cfg, FaultConfig(), ok, 0.0)  # a duplicate is answered from memory, not measured again
    stats = state.latency_stats()
    assert stats is not None and stats["count"] == 3 and 300 <= stats["p50_ms"] < 10_000


@pytest.mark.parametrize("path", [BATCH, TASK, IMPORT, SINGLE])
def test_a_refused_matching_mode_refuses_every_request_whole_until_removed(path: str) -> None:
    state = _state()
    refusing = FaultConfig(refuse_matching=("email",))
    body: dict[str, Any] = _batch("a@example.com", "b@example.com")
    if path == IMPORT:
        body = {"token": "tok", "db_id": 1, "data": [{"email": "a@example.com"}]}
    elif path == SINGLE:
        body = {"token": "tok", "workflow_id": 12, "email": "a@example.com"}
    reply, answer = _post(state, path, body, faults=refusing, rid="k")
    assert (reply.status, answer["error"], answer["error_text"]) == (400, 400, "Invalid request")
    assert answer["error_debug"] == "matching 'email' is not available for this account"
    assert "result" not in answer and len(state.profiles) == 0
    # Any subset is refused alike: the request, not an item, is at fault.
    if path == BATCH:
        assert _post(state, path, _batch("b@example.com"), faults=refusing)[1] == answer
        other = _post(state, path, _batch("a@example.com", matching="email_profile"), faults=refusing)
        assert other[0].status == 200
    # Nothing was executed or stored: the same key executes once the cause is removed.
    reply, answer = _post(state, path, body, rid="k")
    assert (reply.status, answer["error"]) == (200, 0)
    assert ("Duplicate-Request", "true") not in reply.headers


def test_strict_mode_refuses_a_batch_for_one_bad_item_and_accepts_it_without() -> None:
    state = _state()
    strict = FaultConfig(strict=True)
    items = [f"u{i}@example.com" for i in range(10)]
    items[7] = "not-an-email"
    reply, answer = _post(state, BATCH, _batch(*items), faults=strict, rid="whole")
    assert (reply.status, answer["error"], answer["error_text"]) == (400, 400, "Invalid request")
    assert "result" not in answer and len(state.profiles) == 0
    assert _post(state, BATCH, _batch(*items[:7]), faults=strict)[0].status == 200
    assert _post(state, BATCH, _batch(items[7]), faults=strict)[1]["error"] == 400
    assert len(state.profiles) == 7


def _engagements(state: EmulatorState) -> list[dict[str, Any]]:
    from connector.emulator.views import engagements_view

    return list(engagements_view(state, {})["engagements"])


@pytest.mark.parametrize("path", [BATCH, TASK])
def test_request_level_content_is_kept_with_the_engagements_it_came_with(path: str) -> None:
    state = _state()
    content = {"one": "My email = a@example.com", "two": "Timestamp: 1595512477"}
    reply, _ = _post(state, path, _batch("a@example.com", "b@example.com", content=content), now=0.0)
    assert reply.status == 200
    _post(state, STATUS, {"token": "tok", "task_id": "x"}, now=10.0)  # runs a task that is due
    _post(state, path, _batch("a@example.com", content={"one": "later"}), now=20.0)
    _post(state, STATUS, {"token": "tok", "task_id": "x"}, now=30.0)
    shown = {e["matching_value"]: (e["count"], e["content"]) for e in _engagements(state)}
    assert shown == {"a@example.com": (2, {"one": "later"}), "b@example.com": (1, content)}


def test_content_of_the_single_import_and_start_is_kept_too() -> None:
    state = _state()
    body = {"token": "tok", "workflow_id": 12, "email": "a@example.com", "content": {"one": "1"}}
    assert _post(state, SINGLE, body)[0].status == 200
    assert [e["content"] for e in _engagements(state)] == [{"one": "1"}]
    assert _post(state, BATCH, _batch("b@example.com"))[0].status == 200
    assert [e["content"] for e in _engagements(state)] == [{"one": "1"}, None]


@pytest.mark.parametrize("path", [BATCH, TASK, SINGLE])
@pytest.mark.parametrize("content", ["text", ["a"], 5])
def test_content_that_is_not_an_object_is_a_request_error(path: str, content: object) -> None:
    state = _state()
    body = _batch("a@example.com", content=content) if path != SINGLE else {
        "token": "tok", "workflow_id": 12, "email": "a@example.com", "content": content,
    }  # fmt: skip
    reply, answer = _post(state, path, body)
    assert (reply.status, answer["error"]) == (400, 400)
    assert answer["error_debug"] == "content must be an object of template variables"
    assert len(state.profiles) == 0 and state.engagements.total == 0


def test_import_batch_takes_no_content_and_ignores_one() -> None:
    state = _state()
    body = {"token": "tok", "db_id": 1, "content": "ignored", "data": [{"email": "a@example.com"}]}
    reply, answer = _post(state, IMPORT, body)
    assert (reply.status, answer["error"], len(state.profiles)) == (200, 0, 1)


@pytest.mark.parametrize("matching", ["custom_sub", "push_sub"])
def test_matching_modes_the_api_pages_do_not_describe_are_not_emulated(matching: str) -> None:
    state = _state()
    reply, answer = _post(state, BATCH, _batch("a@example.com", matching=matching, field_name="CRM_ID"))
    assert (reply.status, answer["error"]) == (400, 400)
    assert answer["error_debug"].startswith(
        f"matching '{matching}' is not emulated (the API pages do not say what an item carries for it)"
    )
    assert len(state.profiles) == 0


def test_email_phone_sub_is_emulated() -> None:
    state = _state()
    sub = {"resource_id": 7, "channel": "email", "email": "a@example.com"}
    items = [{"data": {"email": "a@example.com", "subscriptions": [sub]}}, {"data": {"email": "a@example.com"}}]
    body = {"token": "tok", "workflow_id": 12, "matching": "email_phone_sub", "data": items}
    reply, answer = _post(state, BATCH, body)
    assert reply.status == 200
    first, second = (r["profile_id"] for r in answer["result"])
    assert first == second and len(state.profiles) == 1
    [engagement] = _engagements(state)
    assert (engagement["matching"], engagement["matching_value"], engagement["count"]) == (
        "email_phone_sub", "a@example.com", 2,
    )  # fmt: skip
