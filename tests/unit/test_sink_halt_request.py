"""Halt holds (sink/halt.py) and Request-IDs with an epoch (sink/request.py)."""

from __future__ import annotations

import hashlib

from connector.config import RouteSettings
from connector.replay import request_id, resend_request_id, rest_request_id, sub_request_id
from connector.sink.halt import BREAKER_REASON, HaltState

ROUTE = RouteSettings.model_validate({"name": "customers", "topics": ["t"], "workflow_id": 12, "db_id": 7})


def test_a_reason_lasts_until_every_batch_holding_it_is_released() -> None:
    halt = HaltState()
    assert halt.set("not_found", "workflow 12", "batch-a") is True
    assert halt.set("not_found", "workflow 12", "batch-b") is False
    assert halt.release("batch-a") == [] and halt.reasons() == {"not_found": "workflow 12"}
    assert halt.holds("batch-b") == ["not_found"] and halt.holds("batch-a") == []
    assert halt.release("batch-b") == ["not_found"] and not halt


def test_releasing_a_batch_leaves_the_breaker_and_other_reasons_alone() -> None:
    halt = HaltState()
    halt.set(BREAKER_REASON, "too many dead letters")
    halt.set("unauthorized", "error 401", "batch-a")
    halt.set("task_unknown", "task 1", "batch-b")
    assert halt.release("batch-a") == ["unauthorized"]
    assert set(halt.reasons()) == {BREAKER_REASON, "task_unknown"}
    assert halt.clear() and not halt


def test_an_empty_epoch_gives_exactly_the_keys_of_before() -> None:
    parts = ("g", "customers", "engage", 12, "t", 3, 100, 199)
    before = "akc-" + hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:40]
    assert request_id("g", ROUTE, "t", 3, 100, 199) == before
    assert request_id("g", ROUTE, "t", 3, 100, 199, epoch="") == before


def test_a_new_epoch_makes_every_batch_a_new_request_deterministically() -> None:
    a = request_id("g", ROUTE, "t", 3, 100, 199, epoch="2024-06-01")
    assert a != request_id("g", ROUTE, "t", 3, 100, 199)
    assert a == request_id("g", ROUTE, "t", 3, 100, 199, epoch="2024-06-01")
    assert a != request_id("g", ROUTE, "t", 3, 100, 199, epoch="2024-06-02")
    assert a.startswith("akc-") and len(a) == 44


def test_derived_keys_are_named_after_their_parent() -> None:
    assert sub_request_id("akc-x", 1) == "akc-x.1of2"
    assert resend_request_id("akc-x.1of2", 1) == "akc-x.1of2.resend1"
    assert rest_request_id("akc-x", 2) == "akc-x.from2"
