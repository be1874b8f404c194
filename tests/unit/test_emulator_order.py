"""The per-profile order of a chosen field's values, and the count of requests in flight at once."""

from __future__ import annotations

import argparse
from typing import Any

import orjson
import pytest

from connector.emulator.cli import add_arguments, config_from_args
from connector.emulator.config import EmulatorConfig
from connector.emulator.faults import FaultConfig
from connector.emulator.handlers import ApiRequest, handle_api, run_due_tasks
from connector.emulator.order import OrderLog
from connector.emulator.state import EmulatorState
from connector.emulator.views import order_view

CFG = EmulatorConfig(tokens=["tok"], workflows=[12], dbs=[1], task_delay_s=5.0, order_field="seq")
BATCH = "/api/v1.1/workflows/import_and_start_batch"
TASK = "/api/v1.1/workflows/import_and_start_batch_task"
IMPORT = "/api/v1.1/profiles/import_batch"
SINGLE = "/api/v1.1/workflows/import_and_start"


def _state(order_field: str | None = "seq") -> EmulatorState:
    return EmulatorState(
        seed=0, dedup_window_s=100, answer_cache_bytes=1 << 20, request_log_size=100, order_field=order_field
    )


def _post(state: EmulatorState, path: str, body: dict[str, Any], rid: str | None = None, now: float = 0.0) -> Any:
    req = ApiRequest(path, orjson.dumps(body), "application/json", None, rid)
    return orjson.loads(handle_api(state, CFG, FaultConfig(), req, now).body)


def _items(*changes: tuple[str, int], **extra: Any) -> dict[str, Any]:
    data = [{"data": {"email": email, "seq": seq}} for email, seq in changes]
    return {"token": "tok", "workflow_id": 12, "data": data, **extra}


def _by_email(state: EmulatorState) -> dict[str, list[object]]:
    rows = order_view(state, {})["profiles"]
    return {str(r["matching_value"]).lower(): r["values"] for r in rows}


def test_values_are_kept_per_profile_in_applied_order_across_requests() -> None:
    state = _state()
    _post(state, BATCH, _items(("a@example.com", 1), ("b@example.com", 2), ("a@example.com", 3)), rid="r1")
    _post(state, BATCH, _items(("b@example.com", 4), ("A@Example.com", 5)), rid="r2")
    # Requests applied out of source order show as such: that is what the lists are for.
    _post(state, BATCH, _items(("b@example.com", 3)), rid="r3")
    assert _by_email(state) == {"a@example.com": [1, 3, 5], "b@example.com": [2, 4, 3]}


def test_only_applied_items_count_not_rejected_ones_nor_duplicates() -> None:
    state = _state()
    body = _items(("a@example.com", 1), ("not-an-email", 2), ("b@example.com", 3))
    _post(state, BATCH, body, rid="k")
    _post(state, BATCH, body, rid="k")  # a duplicate: answered from the store, not applied again
    assert _by_email(state) == {"a@example.com": [1], "b@example.com": [3]}
    assert state.counters["duplicates"] == 1


def test_items_without_the_field_are_counted_not_recorded() -> None:
    state = _state()
    _post(state, BATCH, {"token": "tok", "workflow_id": 12, "data": [{"data": {"email": "a@example.com"}}]})
    _post(state, BATCH, _items(("a@example.com", 7)))
    view = order_view(state, {})
    assert (view["field"], view["total"], view["missing"]) == ("seq", 1, 1)
    assert view["profiles"][0]["values"] == [7]


def test_every_endpoint_that_applies_items_records_them() -> None:
    state = _state()
    _post(state, IMPORT, {"token": "tok", "db_id": 1, "data": [{"email": "a@example.com", "seq": 1}]})
    _post(state, SINGLE, {"token": "tok", "workflow_id": 12, "data": {"email": "a@example.com", "seq": 2}})
    _post(state, TASK, _items(("a@example.com", 3)))
    assert _by_email(state) == {"a@example.com": [1, 2]}  # the task is applied when it runs
    run_due_tasks(state, FaultConfig(), 10.0)
    assert _by_email(state) == {"a@example.com": [1, 2, 3]}


def test_values_keep_their_json_type_and_custom_matching_is_shown() -> None:
    state = _state()
    body = {"token": "tok", "workflow_id": 12, "matching": "custom", "field_name": "crm",
            "data": [{"data": {"crm": 77, "seq": "x1"}}, {"data": {"crm": "77", "seq": 2.5}}]}  # fmt: skip
    _post(state, BATCH, body)
    (row,) = order_view(state, {})["profiles"]
    assert (row["matching"], row["matching_value"], row["values"]) == ("custom", "77", ["x1", 2.5])


def test_the_view_pages_and_filters_by_profile() -> None:
    state = _state()
    answer = _post(state, BATCH, _items(*((f"u{i}@example.com", i) for i in range(5))))
    ids = [r["profile_id"] for r in answer["result"]]
    page = order_view(state, {"limit": "2", "offset": "1"})
    assert page["total"] == 5
    assert [r["profile_id"] for r in page["profiles"]] == ids[1:3]
    one = order_view(state, {"profile_id": ids[4]})["profiles"]
    assert [(r["profile_id"], r["values"]) for r in one] == [(ids[4], [4])]
    assert order_view(state, {"profile_id": "nobody"})["profiles"] == []


def test_without_an_order_field_nothing_is_recorded() -> None:
    state = _state(order_field=None)
    _post(state, BATCH, _items(("a@example.com", 1)))
    assert order_view(state, {}) == {"field": None, "total": 0, "missing": 0, "profiles": []}
    assert state.stats()["order_field"] is None


def test_order_log_alone() -> None:
    log = OrderLog("seq")
    log.add("p1", {"seq": 1}, "email", None)
    log.add("p2", {"seq": 2}, "email", None)
    log.add("p1", {"seq": 3}, "phone", None)
    log.add("p1", {"other": 4}, "email", None)
    assert [(pid, rec.values, rec.matching) for pid, rec in log.records()] == [
        ("p1", [1, 3], "phone"),
        ("p2", [2], "email"),
    ]
    assert len(log) == 2 and log.missing == 1
    assert [pid for pid, _ in log.records("p2")] == ["p2"]


def test_requests_in_flight_now_and_at_most() -> None:
    state = _state()
    for _ in range(3):
        state.request_started()
    state.request_finished()
    state.request_started()
    state.request_finished()
    stats = state.stats()
    assert (stats["requests_in_flight"], stats["requests_in_flight_max"]) == (2, 3)


def test_the_setting_the_flag_and_their_checks() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert config_from_args(parser.parse_args(["--order-field", "seq"]), 0.0).order_field == "seq"
    assert config_from_args(parser.parse_args([]), 0.0).order_field is None
    with pytest.raises(ValueError, match="order_field"):
        EmulatorConfig(order_field="")
