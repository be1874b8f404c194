"""What a route's request bodies look like: the request-level parameters the API pages show, the
constant ``request_content`` at the request level of the engage endpoints only, and the row-derived
per-item ``content`` inside each item's wrapper."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from connector.config import Mode, RouteSettings
from connector.mapping import Mapper
from connector.routing import Route
from connector.sink.request import body_shape


def route(**kw: object) -> RouteSettings:
    base: dict[str, object] = {"name": "r", "topics": ["t"], "workflow_id": 12, "db_id": 7}
    base.update(kw)
    return RouteSettings.model_validate(base)


def body_of(settings: RouteSettings, *rows: dict[str, Any]) -> dict[str, Any]:
    """The parsed body of one request holding ``rows``, as the connector builds it."""
    shape = body_shape(settings)
    mapper = Mapper(settings)
    body: dict[str, Any] = orjson.loads(shape.body([shape.item(mapper.map(row)) for row in rows]))
    return body


def test_the_seed_custom_matching_request_is_what_a_custom_route_sends() -> None:
    settings = route(matching="custom", field_name="CRM_ID", fields={"email": "email", "CRM_ID": "id"})
    assert body_of(settings, {"email": "a@example.com", "id": "00066"}) == {
        "workflow_id": 12,
        "matching": "custom",
        "field_name": "CRM_ID",
        "data": [{"data": {"email": "a@example.com", "CRM_ID": "00066"}}],
    }


@pytest.mark.parametrize("mode", [Mode.ENGAGE, Mode.ENGAGE_TASK])
def test_request_content_is_sent_once_at_the_request_level_of_the_engage_endpoints(mode: Mode) -> None:
    settings = route(
        mode=mode.value,
        fields={"email": "email"},
        request_content={"campaign": "spring", "discount": 10, "urls": {"shop": "https://shop.example"}},
    )
    body = body_of(settings, {"email": "a@example.com"}, {"email": "b@example.com"})
    assert body == {
        "workflow_id": 12,
        "matching": "email",
        "content": {"campaign": "spring", "discount": 10, "urls": {"shop": "https://shop.example"}},
        "data": [{"data": {"email": "a@example.com"}}, {"data": {"email": "b@example.com"}}],
    }


def test_request_content_stays_out_of_the_items_and_of_import_requests() -> None:
    settings = route(fields={"email": "email"}, request_content={"campaign": "spring"})
    assert Mapper(settings).fields_only  # items are profile fields only: the content is the request's
    r = Route(settings, max_body_bytes=100_000)
    assert r.import_shape is not None  # snapshot reads import into db_id (profiles/import_batch)
    imported = orjson.loads(r.import_shape.body([r.import_shape.fields_item({"email": "a@example.com"})]))
    assert imported == {"db_id": 7, "matching": "email", "data": [{"email": "a@example.com"}]}


def test_per_item_content_comes_from_the_row_and_sits_in_each_items_wrapper() -> None:
    settings = route(fields={"email": "email"}, content={"plan": "plan.name"}, request_content={"campaign": "spring"})
    body = body_of(settings, {"email": "a@example.com", "plan": {"name": "gold"}}, {"email": "b@example.com"})
    assert body["content"] == {"campaign": "spring"}
    assert body["data"] == [
        {"data": {"email": "a@example.com"}, "content": {"plan": "gold"}},
        {"data": {"email": "b@example.com"}},  # nothing at the path: no per-item content
    ]


def test_request_content_counts_toward_the_body_limit() -> None:
    big = {"legal": "x" * 5_000}
    value = orjson.dumps({"op": "c", "after": {"email": "a@example.com", "bio": "y" * 5_000}})
    without = Route(route(fields={"email": "email", "bio": "bio"}), max_body_bytes=10_000)
    with_content = Route(route(fields={"email": "email", "bio": "bio"}, request_content=big), max_body_bytes=10_000)
    assert isinstance(without.prepare(value), bytes)
    out = with_content.prepare(value)
    assert not isinstance(out, bytes) and out.dead is not None and out.dead.stage == "size"


def test_email_phone_sub_requests_carry_the_mode_and_items_with_email_or_phones() -> None:
    settings = route(matching="email_phone_sub", resource_id=3, fields={"email": "email", "phones": "phone"})
    body = body_of(settings, {"email": "a@example.com", "phone": "+79000000001"}, {"phone": "+79000000002"})
    assert body == {
        "workflow_id": 12,
        "matching": "email_phone_sub",
        "resource_id": 3,
        "data": [{"data": {"email": "a@example.com", "phones": "+79000000001"}}, {"data": {"phones": "+79000000002"}}],
    }
