"""Parsing and validating a body before it meets the state; the batch fast path agrees with the slow one."""

from __future__ import annotations

import pickle
from typing import Any

import orjson
import pytest

from connector.emulator import prepare as prep
from connector.emulator.prepare import Items, prepare, prepare_items
from connector.emulator.profiles import decode
from connector.emulator.validation import INVALID_EMAIL, INVALID_PHONE, INVALID_WRAPPER, invalid_date, invalid_ip

BATCH = "/api/v1.1/workflows/import_and_start_batch"


def _ordinary(n: int, odd_name_at: int | None = None) -> list[dict[str, Any]]:
    return [
        {
            "data": {
                "email": f"User{i}@Example.com",
                "phones": f"+7900{i:07d}" if i % 3 else [f"+7901{i:07d}", f"+7902{i:07d}"],
                "_regip": f"10.0.{i % 256}.1",
                "_bdate": "1990-01-31",
                "CRM_ID": i,
                "_fname": 'quote " and },{ inside' if i == odd_name_at else "Ann",
            }
        }
        for i in range(n)
    ]


Unpacked = tuple[list[tuple[int, str] | None], list[str], list[dict[str, Any] | None]]


def _both(items: list[Any], wrapped: bool = True) -> tuple[Unpacked | None, Unpacked]:
    """The fast path's items (None if it declined) and the slow path's, unpacked and decoded."""
    fast = prep._ordinary_batch(orjson.loads(orjson.dumps(items)), wrapped)
    slow = prep._item_by_item(orjson.loads(orjson.dumps(items)), wrapped, False)
    assert len(slow) == len(items)
    return (None if fast is None else _decoded(fast)), _decoded(slow)


def _decoded(items: Items) -> Unpacked:
    errors, keys, raws = items.unpack()
    return errors, keys, [decode(r) if r else None for r in raws]


def test_an_ordinary_batch_takes_the_fast_path_and_agrees_with_the_slow_one() -> None:
    batch = _ordinary(50)
    packed = prep._ordinary_batch(orjson.loads(orjson.dumps(batch)), True)
    assert packed is not None
    assert packed.sep == b"}"  # one serialisation, cut in the server process
    fast, slow = _both(batch)
    assert fast == slow
    errors, keys, fields = slow
    assert errors == [None] * 50
    assert keys[1] == "user1@example.com"
    assert fields[0] == batch[0]["data"]


def test_a_brace_inside_an_item_is_serialised_item_by_item() -> None:
    batch = _ordinary(10, odd_name_at=5)
    packed = prep._ordinary_batch(orjson.loads(orjson.dumps(batch)), True)
    assert packed is not None
    assert packed.sep == b"\x00"
    fast, slow = _both(batch)
    assert fast == slow
    assert fast is not None and fast[2][5] == batch[5]["data"]


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"email": "nope"}, INVALID_EMAIL),
        ({"email": "a@b.co\nc@d.co"}, INVALID_EMAIL),
        ({"phones": "8900"}, INVALID_PHONE),
        ({"phones": ["+79000000000", 7]}, INVALID_PHONE),
        ({"_regip": "1.2.3.999"}, invalid_ip("_regip")),
        ({"_bdate": "1990-02-30"}, invalid_date("_bdate")),
        ({"_ip": "::1"}, invalid_ip("_ip")),
    ],
)
def test_one_bad_item_sends_the_batch_down_the_slow_path(change: dict[str, Any], error: tuple[int, str]) -> None:
    items = _ordinary(10)
    items[7]["data"].update(change)
    fast, (errors, keys, fields) = _both(items)
    assert fast is None
    assert errors[7] == error
    assert errors[:7] == [None] * 7
    assert (keys[7], fields[7]) == ("", None)


def test_unusual_items_go_the_slow_path_which_still_accepts_them() -> None:
    items = _ordinary(4)
    items[2]["data"]["subscriptions"] = [{"resource_id": 1, "email": "s@example.com"}]
    items[3]["data"]["nested"] = [{"a": 1}, {"b": 2}]
    fast, (errors, keys, fields) = _both(items)
    assert fast is None
    assert errors == [None] * 4
    assert keys[2] == ""  # subscriptions: matched by the general path
    assert fields[3] is not None and fields[3]["nested"] == [{"a": 1}, {"b": 2}]


def test_nested_objects_in_an_ordinary_batch_are_cut_correctly() -> None:
    items = _ordinary(3)
    items[1]["data"]["extra"] = [{"x": 1}, {"y": 2}]  # "},{" between nested objects
    fast, slow = _both(items)
    assert fast == slow
    assert fast is not None and fast[2][1] == items[1]["data"]


def test_wrapper_errors_and_unwrapped_items() -> None:
    _, (errors, _, _) = _both([{"email": "a@example.com"}, {"data": "x"}, 3])
    assert errors == [INVALID_WRAPPER] * 3
    fast, slow = _both([{"email": "a@example.com"}], wrapped=False)
    assert fast == slow
    assert prepare_items([], True, False).unpack() == ([], [], [])


def test_prepare_reports_request_level_problems() -> None:
    assert prepare("/api/v1.1/nope", b"{}", "application/json").error == (501, "no method at /api/v1.1/nope")
    assert prepare(BATCH, b"{}", "text/plain").error is not None
    assert prepare(BATCH, b"{}", "text/plain").error[0] == 415  # type: ignore[index]
    assert prepare(BATCH, b"", None).error == (400, "empty body")
    assert prepare(BATCH, b"[]", "application/json").error == (400, "the body must be a JSON object")


def test_prepared_requests_survive_the_trip_to_and_from_a_worker() -> None:
    body = orjson.dumps({"token": "t", "workflow_id": 1, "data": _ordinary(3)})
    prepared = prepare(BATCH, body, "application/json; charset=utf-8")
    assert prepared.params == {"token": "t", "workflow_id": 1}
    assert prepared.item_count == 3
    assert pickle.loads(pickle.dumps(prepared)) == prepared
