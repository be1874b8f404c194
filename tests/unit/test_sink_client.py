"""The sender loop against scripted answers (httpx.MockTransport); the real emulator is in integration."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry

from connector.config import AltcraftSettings, Mode, RouteSettings
from connector.metrics import Metrics
from connector.sink.client import Abandoned, AltcraftClient, SendJob
from connector.sink.halt import HaltState
from connector.sink.request import body_shape

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    def __init__(self, script: Handler) -> None:
        self.script = script
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.script(request)


def ok_for_all(request: httpx.Request) -> httpx.Response:
    n = len(orjson.loads(request.content)["data"])
    return httpx.Response(
        200, json={"error": 0, "error_text": "Successful operation", "result": [{"profile_id": "p"}] * n}
    )


def make(script: Handler, mode: Mode = Mode.ENGAGE) -> tuple[AltcraftClient, Recorder, SendJob, HaltState, Metrics]:
    rec = Recorder(script)
    settings = AltcraftSettings.model_validate(
        {
            "token": "tok",
            "retry": {"initial_backoff_s": 0.001, "max_backoff_s": 0.002},
            "task": {"poll_interval_s": 0.001},
        }
    )
    metrics = Metrics(CollectorRegistry())
    halt = HaltState()
    client = AltcraftClient(
        settings, "tok", metrics, halt, transport=httpx.MockTransport(rec), rand=lambda: 1.0, halt_probe_s=0.001
    )
    route = RouteSettings.model_validate({"name": "r", "topics": ["t"], "workflow_id": 3, "mode": mode.value})
    shape = body_shape(route)
    items = [shape.item(_mapped(i)) for i in range(8)]
    return client, rec, SendJob("r", mode, shape, items, "akc-parent"), halt, metrics


def _mapped(i: int):  # type: ignore[no-untyped-def]
    from connector.mapping import MappedItem

    return MappedItem({"email": f"u{i}@example.com"})


def test_a_batch_is_one_request_with_the_token_in_the_header_and_its_request_id() -> None:
    client, rec, job, _, _ = make(ok_for_all)
    out = client.send(job)
    assert (out.accepted, out.rejected, out.requests) == (8, (), 1)
    req = rec.requests[0]
    assert req.url.path == "/api/v1.1/workflows/import_and_start_batch"
    assert req.headers["Authorization"] == "Bearer tok"
    assert req.headers["Request-ID"] == "akc-parent"
    body = orjson.loads(req.content)
    assert body["workflow_id"] == 3 and body["matching"] == "email" and "token" not in body
    assert body["data"][0] == {"data": {"email": "u0@example.com"}}


def test_transient_failures_resend_identical_bytes_with_the_same_request_id() -> None:
    answers = iter([
        httpx.Response(503), httpx.Response(500, json={"error": 500, "error_text": "Internal"}),
        httpx.Response(429, headers={"Retry-After": "0"}),
    ])  # fmt: skip

    def script(request: httpx.Request) -> httpx.Response:
        nxt = next(answers, None)
        if nxt is None:
            return ok_for_all(request)
        return nxt

    client, rec, job, _, metrics = make(script)
    out = client.send(job)
    assert out.accepted == 8 and out.requests == 4
    assert len({r.content for r in rec.requests}) == 1
    assert {r.headers["Request-ID"] for r in rec.requests} == {"akc-parent"}
    assert (
        metrics.registry.get_sample_value(
            "altcraft_connector_retries_total",
            {"endpoint": "/api/v1.1/workflows/import_and_start_batch", "reason": "http_5xx"},
        )
        == 1
    )


def test_too_large_bodies_are_split_with_derived_request_ids() -> None:
    def script(request: httpx.Request) -> httpx.Response:
        if len(orjson.loads(request.content)["data"]) > 2:
            return httpx.Response(400, json={"error": 400, "error_text": "Invalid request",
                                             "error_debug": "http: request body too large"})  # fmt: skip
        return ok_for_all(request)

    client, rec, job, _, _ = make(script)
    out = client.send(job)
    assert out.accepted == 8 and out.rejected == ()
    sent = [r.headers["Request-ID"] for r in rec.requests if len(orjson.loads(r.content)["data"]) <= 2]
    assert len(sent) == 4 and len(set(sent)) == 4
    assert all(rid.startswith("akc-parent.") for rid in sent)


def test_a_batch_refused_whole_is_bisected_down_to_the_bad_items() -> None:
    bad = {"u3@example.com", "u6@example.com"}

    def script(request: httpx.Request) -> httpx.Response:
        emails = {d["data"]["email"] for d in orjson.loads(request.content)["data"]}
        if emails & bad:
            return httpx.Response(400, json={"error": 400, "error_text": "Invalid email"})
        return ok_for_all(request)

    client, _, job, _, _ = make(script)
    out = client.send(job)
    assert out.accepted == 6
    assert [(r.index, r.code, r.text) for r in out.rejected] == [(3, 400, "Invalid email"), (6, 400, "Invalid email")]


def test_per_item_rejections_come_back_by_index() -> None:
    def script(request: httpx.Request) -> httpx.Response:
        n = len(orjson.loads(request.content)["data"])
        result = [{"error": 400, "error_text": "Invalid phone"} if i == 5 else {"profile_id": "p"} for i in range(n)]
        return httpx.Response(200, json={"error": 0, "result": result})

    client, _, job, _, _ = make(script)
    out = client.send(job)
    assert out.accepted == 7 and [(r.index, r.text) for r in out.rejected] == [(5, "Invalid phone")]


def test_a_refused_token_halts_until_it_is_accepted_again_and_drops_nothing() -> None:
    state: dict[str, Any] = {"calls": 0, "gauge_while_refused": None}

    def script(request: httpx.Request) -> httpx.Response:
        state["calls"] += 1
        if state["calls"] == 3:  # what an operator sees while the token is refused
            state["gauge_while_refused"] = registry.get_sample_value(
                "altcraft_connector_halted", {"reason": "unauthorized"}
            )
        if state["calls"] <= 3:
            return httpx.Response(401, json={"error": 401, "error_text": "API token required"})
        return ok_for_all(request)

    client, rec, job, halt, metrics = make(script)
    registry = metrics.registry
    out = client.send(job)
    assert state["gauge_while_refused"] == 1
    assert out.accepted == 8 and not halt
    assert registry.get_sample_value("altcraft_connector_halted", {"reason": "unauthorized"}) == 0
    assert {r.headers["Request-ID"] for r in rec.requests} == {"akc-parent"}


def test_results_that_do_not_line_up_halt_instead_of_guessing() -> None:
    def script(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"error": 0, "result": [{"profile_id": "p"}]})

    client, _, job, halt, _ = make(script)
    cancel = threading.Event()
    timer = threading.Timer(0.2, cancel.set)
    timer.start()
    with pytest.raises(Abandoned):
        client.send(job, cancel)
    assert "result_mismatch" in halt.reasons()


def test_task_mode_polls_until_completed_and_reads_the_items() -> None:
    polls = {"n": 0}

    def script(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("_task"):
            return httpx.Response(200, json={"error": 0, "task_id": "task-1"})
        assert orjson.loads(request.content) == {"token": "tok", "task_id": "task-1"}
        polls["n"] += 1
        if polls["n"] < 3:
            return httpx.Response(200, json={"error": 0, "data": {"status": "processing", "progress": 50}})
        result = {"error": 0, "result": [{"profile_id": "p"}] * 7 + [{"error": 409, "error_text": "Duplicate"}]}
        return httpx.Response(
            200, json={"error": 0, "data": {"status": "completed", "progress": 100, "result": result}}
        )

    client, _, job, _, _ = make(script, mode=Mode.ENGAGE_TASK)
    out = client.send(job)
    assert polls["n"] == 3
    assert out.accepted == 7 and [(r.index, r.code) for r in out.rejected] == [(7, 409)]
