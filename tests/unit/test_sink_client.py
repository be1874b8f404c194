"""The sender loop against scripted answers (httpx.MockTransport); the real emulator is in integration."""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry

import connector.sink.client as client_module
from connector.config import AltcraftSettings, Mode, RouteSettings
from connector.metrics import Metrics
from connector.sink.client import OUTCOMES, Abandoned, AltcraftClient, SendJob
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


def make(
    script: Handler, mode: Mode = Mode.ENGAGE, n: int = 8
) -> tuple[AltcraftClient, Recorder, SendJob, HaltState, Metrics]:
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
    raw = {"name": "r", "topics": ["t"], "workflow_id": 3, "db_id": 7, "mode": mode.value}
    route = RouteSettings.model_validate(raw)
    shape = body_shape(route)
    items = [shape.item(_mapped(i)) for i in range(n)]
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
        if state["calls"] == 3:  # what the loop shows while the token is refused
            state["gauge_while_refused"] = "unauthorized" in halt.reasons()
        if state["calls"] <= 3:
            return httpx.Response(401, json={"error": 401, "error_text": "API token required"})
        return ok_for_all(request)

    client, rec, job, halt, _ = make(script)
    out = client.send(job)
    assert state["gauge_while_refused"] is True
    assert out.accepted == 8 and not halt
    assert {r.headers["Request-ID"] for r in rec.requests} == {"akc-parent"}


def test_results_that_do_not_line_up_halt_until_they_do_and_name_the_way_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: dict[str, Any] = {"calls": 0}

    def script(request: httpx.Request) -> httpx.Response:
        seen["calls"] += 1
        if seen["calls"] <= 3:
            seen["reasons"] = halt.reasons()
            return httpx.Response(200, json={"error": 0, "result": [{"profile_id": "p"}]})
        return ok_for_all(request)

    client, rec, job, halt, _metrics = make(script)
    out = client.send(job)
    assert "result_mismatch" in seen["reasons"]
    assert out.accepted == 8 and not halt
    assert {r.headers["Request-ID"] for r in rec.requests} == {"akc-parent"}
    assert any("altcraft.request_id_epoch" in r.getMessage() and "second time" in r.getMessage()
               for r in caplog.records if r.levelname == "ERROR")  # fmt: skip


def test_an_abandoned_batch_leaves_no_halt_behind() -> None:
    def script(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"error": 0, "result": [{"profile_id": "p"}]})

    client, _, job, halt, _metrics = make(script)
    cancel = threading.Event()
    timer = threading.Timer(0.2, cancel.set)
    timer.start()
    with pytest.raises(Abandoned):
        client.send(job, cancel)
    assert not halt


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


# -- configuration faults halt, data faults are dead-lettered


REFUSED = {"error": 400, "error_text": "Invalid request", "error_debug": "matching 'phone' is not allowed here"}
STRICT = {"error": 400, "error_text": "Invalid request", "error_debug": "strict mode: the batch has invalid items"}


def emails_of(request: httpx.Request) -> list[str]:
    return [d["data"]["email"] for d in orjson.loads(request.content)["data"]]


def strict_script(bad: set[int]) -> Handler:
    """Refuses a whole request holding any bad item, as Altcraft would in strict mode."""
    bad_emails = {f"u{i}@example.com" for i in bad}

    def script(request: httpx.Request) -> httpx.Response:
        if bad_emails & set(emails_of(request)):
            return httpx.Response(400, json=STRICT)
        return ok_for_all(request)

    return script


def bound(n: int, k: int) -> int:
    return 2 * k * math.ceil(math.log2(n)) + 1


@pytest.mark.parametrize("n", [2, 3, 10, 100, 1000])
def test_a_request_refused_whatever_it_carries_halts_within_the_bound_and_resumes_when_accepted(
    n: int, caplog: pytest.LogCaptureFixture
) -> None:
    state: dict[str, Any] = {"fixed": False, "refused": 0, "probes": 0}

    def script(request: httpx.Request) -> httpx.Response:
        if halt and request.headers["Request-ID"] == "akc-parent":  # a probe, while halted
            state["probes"] += 1
            state["reasons"] = halt.reasons()
            state["before_halt"] = state.get("before_halt", state["refused"])
            state["fixed"] = state["probes"] >= 2  # the operator fixes the route's matching meanwhile
        if not state["fixed"]:
            state["refused"] += 1
            return httpx.Response(400, json=REFUSED)
        return ok_for_all(request)

    client, rec, job, halt, _metrics = make(script, n=n)
    out = client.send(job)
    assert state["before_halt"] <= bound(n, 1), (state["before_halt"], bound(n, 1))
    assert "request_refused" in state["reasons"]
    assert "matching 'phone' is not allowed here" in state["reasons"]["request_refused"]
    # Nothing dead-lettered; the probe was the refused request itself, which was then accepted whole.
    assert (out.accepted, out.rejected) == (n, ())
    whole = [r for r in rec.requests if r.headers["Request-ID"] == "akc-parent"]
    assert len({r.content for r in whole}) == 1 and len(whole) >= 2
    assert rec.requests[-1].headers["Request-ID"] == "akc-parent"
    assert not halt
    logged = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("request_refused" in m and "matching 'phone' is not allowed here" in m for m in logged)


@pytest.mark.parametrize("n", [10, 100, 1000, 1024])
@pytest.mark.parametrize("k", [1, 2, 3, 5, 8])
def test_bisection_isolates_k_bad_items_within_2k_log2n_plus_1_requests(n: int, k: int) -> None:
    rng = random.Random(n * 100 + k)
    bad = set(rng.sample(range(n), k))
    if {0, 1} <= bad:  # that case halts first: see the next test
        bad -= {1}
        bad.add(max(set(range(2, n)) - bad))
    client, rec, job, halt, _ = make(strict_script(bad), n=n)
    out = client.send(job)
    assert sorted(r.index for r in out.rejected) == sorted(bad)
    assert all((r.code, r.text, r.debug) == (400, "Invalid request", STRICT["error_debug"]) for r in out.rejected)
    assert out.accepted == n - k and not halt
    assert out.requests == len(rec.requests) <= bound(n, k), (len(rec.requests), bound(n, k))
    # Accepted parts went out in their order: each starts where the items before it were settled.
    accepted = [emails_of(r) for r in rec.requests if r.headers["Request-ID"] and
                not ({f"u{i}@example.com" for i in bad} & set(emails_of(r)))]  # fmt: skip
    flat = [e for part in accepted for e in part]
    assert flat == [f"u{i}@example.com" for i in range(n) if i not in bad]


def test_a_strict_batch_whose_first_two_items_are_bad_halts_then_rejects_only_them() -> None:
    client, rec, job, halt, _ = make(strict_script({0, 1, 5}), n=16)
    out = client.send(job)
    assert sorted(r.index for r in out.rejected) == [0, 1, 5]
    assert out.accepted == 13 and not halt
    assert any(r.headers["Request-ID"] == "akc-parent.from2" for r in rec.requests)


def test_a_cause_removed_between_the_two_probes_dead_letters_nothing() -> None:
    state = {"fixed": False}

    def script(request: httpx.Request) -> httpx.Response:
        if request.headers["Request-ID"].endswith(".from2"):
            state["fixed"] = True  # just after the whole request's probe was refused
        if not state["fixed"]:
            return httpx.Response(400, json=REFUSED)
        return ok_for_all(request)

    client, _, job, halt, _ = make(script, n=16)
    out = client.send(job)
    assert (out.accepted, out.rejected) == (16, ()) and not halt


def test_refusals_that_differ_are_items_at_fault_and_are_not_a_halt() -> None:
    def script(request: httpx.Request) -> httpx.Response:
        emails = emails_of(request)
        if "u0@example.com" in emails:
            return httpx.Response(400, json={"error": 400, "error_text": "Invalid email"})
        if "u1@example.com" in emails:
            return httpx.Response(400, json={"error": 400, "error_text": "Invalid phone"})
        return ok_for_all(request)

    client, _, job, halt, _ = make(script)
    out = client.send(job)
    assert [(r.index, r.text) for r in out.rejected] == [(0, "Invalid email"), (1, "Invalid phone")]
    assert not halt


# -- every halt names its cause and has a way out


def test_an_unknown_task_halts_task_unknown_with_the_way_out_then_clears_on_a_new_task(
    caplog: pytest.LogCaptureFixture,
) -> None:
    state = {"submits": 0}

    def script(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("_task"):
            state["submits"] += 1
            return httpx.Response(200, json={"error": 0, "task_id": f"task-{min(state['submits'], 3)}"})
        task_id = orjson.loads(request.content)["task_id"]
        state.setdefault("all_reasons", set()).update(halt.reasons())
        if task_id != "task-3":  # expired: the duplicate answers keep naming it
            state["halted"] = "task_unknown" in halt.reasons()
            return httpx.Response(404, json={"error": 404, "error_text": "Object is not found in token vision zone"})
        result = {"error": 0, "result": [{"profile_id": "p"}] * 8}
        return httpx.Response(200, json={"error": 0, "data": {"status": "completed", "result": result}})

    client, _, job, halt, _ = make(script, mode=Mode.ENGAGE_TASK)
    out = client.send(job)
    assert out.accepted == 8 and state["halted"] and not halt
    assert "not_found" not in state["all_reasons"]
    msgs = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("task_unknown" in m and "task-1" in m and "altcraft.request_id_epoch" in m for m in msgs)


def test_a_duplicate_answered_with_error_500_is_resent_under_a_derived_key_after_3_tries() -> None:
    def script(request: httpx.Request) -> httpx.Response:
        if request.headers["Request-ID"] == "akc-parent":
            return httpx.Response(500, json={"error": 500, "error_text": "Internal service error"},
                                  headers={"Duplicate-Request": "true", "Duplicate-Key": "akc-parent"})  # fmt: skip
        return ok_for_all(request)

    client, rec, job, _, _ = make(script)
    out = client.send(job)
    assert out.accepted == 8
    assert [r.headers["Request-ID"] for r in rec.requests] == ["akc-parent"] * 3 + ["akc-parent.resend1"]
    assert len({r.content for r in rec.requests}) == 1


def test_a_plain_error_500_is_retried_under_the_same_key() -> None:
    answers = iter([httpx.Response(500, json={"error": 500, "error_text": "Internal"})] * 5)

    def script(request: httpx.Request) -> httpx.Response:
        return next(answers, None) or ok_for_all(request)

    client, rec, job, _, _ = make(script)
    assert client.send(job).accepted == 8
    assert {r.headers["Request-ID"] for r in rec.requests} == {"akc-parent"} and len(rec.requests) == 6


def test_a_halt_clears_only_on_an_accepted_answer_not_on_a_5xx_or_a_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter([
        httpx.Response(401, json={"error": 401, "error_text": "API token required"}),
        httpx.Response(503),
        httpx.Response(200, json={"error": 402, "error_text": "Tariff limit reached"}),
        httpx.Response(500, json={"error": 500, "error_text": "Internal"}),
    ])  # fmt: skip
    halted_while: list[bool] = []

    def script(request: httpx.Request) -> httpx.Response:
        halted_while.append("unauthorized" in halt.reasons())
        return next(answers, None) or ok_for_all(request)

    client, _, job, halt, _ = make(script)
    monkeypatch.setattr(client_module, "TARIFF_PAUSE_S", 0.001)
    out = client.send(job)
    assert halted_while == [False, True, True, True, True]
    assert out.accepted == 8 and not halt


def test_one_batch_accepted_does_not_end_the_halt_another_batch_meets() -> None:
    def script(request: httpx.Request) -> httpx.Response:
        if orjson.loads(request.content)["workflow_id"] == 4:
            return httpx.Response(404, json={"error": 404, "error_text": "Object is not found in token vision zone"})
        return ok_for_all(request)

    client, _, job, halt, _metrics = make(script)
    other_route = RouteSettings.model_validate({"name": "s", "topics": ["u"], "workflow_id": 4, "db_id": 7})
    other = SendJob("s", Mode.ENGAGE, body_shape(other_route), job.items, "akc-other")
    cancel = threading.Event()

    def send_other() -> None:
        with pytest.raises(Abandoned):
            client.send(other, cancel)

    thread = threading.Thread(target=send_other)
    thread.start()
    try:
        wait_for(lambda: "not_found" in halt.reasons())
        assert client.send(job).accepted == 8
        assert "not_found" in halt.reasons()
    finally:
        cancel.set()
        thread.join()
    assert not halt


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


# -- requests_total counts every request once


def test_every_request_is_counted_once_by_what_it_led_to() -> None:
    bad = {"u3@example.com"}
    answers = iter([httpx.Response(503), httpx.Response(429, headers={"Retry-After": "0"})])

    def script(request: httpx.Request) -> httpx.Response:
        nxt = next(answers, None)
        if nxt is not None:
            return nxt
        if len(emails_of(request)) > 4:
            return httpx.Response(400, json={"error": 400, "error_debug": "http: request body too large"})
        if bad & set(emails_of(request)):
            return httpx.Response(400, json={"error": 400, "error_text": "Invalid email"})
        return ok_for_all(request)

    client, rec, job, _, metrics = make(script)
    out = client.send(job)
    assert out.accepted == 7

    def count(outcome: str) -> float:
        value = metrics.registry.get_sample_value(
            "altcraft_connector_requests_total",
            {"endpoint": "/api/v1.1/workflows/import_and_start_batch", "outcome": outcome},
        )
        return value or 0.0

    assert {o: count(o) for o in ("retry", "split", "bisect", "ok")} == {"retry": 2, "split": 1, "bisect": 3, "ok": 3}
    assert sum(count(o) for o in OUTCOMES) == len(rec.requests) == out.requests


def test_task_mode_counts_the_submission_and_every_poll_once() -> None:
    polls = {"n": 0}

    def script(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("_task"):
            return httpx.Response(200, json={"error": 0, "task_id": "task-1"})
        polls["n"] += 1
        if polls["n"] < 3:
            return httpx.Response(200, json={"error": 0, "data": {"status": "processing"}})
        result = {"error": 0, "result": [{"profile_id": "p"}] * 8}
        return httpx.Response(200, json={"error": 0, "data": {"status": "completed", "result": result}})

    client, rec, job, _, metrics = make(script, mode=Mode.ENGAGE_TASK)
    client.send(job)
    samples = {
        (s.labels["endpoint"], s.labels["outcome"]): s.value
        for metric in metrics.registry.collect() if metric.name == "altcraft_connector_requests"
        for s in metric.samples if s.name.endswith("_total")
    }  # fmt: skip
    assert samples == {
        ("/api/v1.1/workflows/import_and_start_batch_task", "ok"): 1,
        ("/api/v1.1/tasks/status", "pending"): 2,
        ("/api/v1.1/tasks/status", "ok"): 1,
    }
    assert len(rec.requests) == 4
