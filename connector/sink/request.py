"""Request bodies. Pure. (Request-IDs are derived in :mod:`connector.replay`.)

A body is built once per batch from items serialized once per record: ``prefix + b",".join(items) +
suffix``, so its size is known exactly while the batch grows and nothing is serialized twice.

What is constant for a route (the endpoint's parameters, and ``request_content`` for the engage
endpoints, where the API pages put ``content``) is in the prefix; what comes from the row (profile
fields, per-item ``content`` and ``custom_data``) is in the items.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from connector.config import Mode, RouteSettings
from connector.mapping import MappedItem

ENDPOINTS = {
    Mode.ENGAGE: "/api/v1.1/workflows/import_and_start_batch",
    Mode.ENGAGE_TASK: "/api/v1.1/workflows/import_and_start_batch_task",
    Mode.IMPORT: "/api/v1.1/profiles/import_batch",
}
TASK_STATUS = "/api/v1.1/tasks/status"
_DATA_HEAD = b'{"data":'


def _right_sized(data: bytes) -> bytes:
    return memoryview(data).tobytes()


@dataclass(frozen=True, slots=True)
class BodyShape:
    """The bytes around the items of one route's requests."""

    prefix: bytes
    suffix: bytes
    wrap_items: bool  # import_and_start_batch wraps each item as {"data": {...}}

    @property
    def overhead(self) -> int:
        return len(self.prefix) + len(self.suffix)

    def item(self, mapped: MappedItem) -> bytes:
        """One item as sent, in a right-sized bytes object.

        An item is held until its batch is answered, and the bytes object ``orjson.dumps`` returns keeps
        the capacity of its output buffer (about 4 KiB) however short the JSON: held as is, a 250-byte
        item costs 4 KiB of memory. Each item is therefore copied once into an object of its own size
        (one join, which is also faster than serializing the wrapper dict).
        """
        if not self.wrap_items or (not mapped.content and not mapped.custom_data):
            return self.fields_item(mapped.fields)
        wrapper: dict[str, Any] = {"data": mapped.fields}
        if mapped.content:
            wrapper["content"] = mapped.content
        if mapped.custom_data:
            wrapper["custom_data"] = mapped.custom_data
        return _right_sized(orjson.dumps(wrapper))

    def fields_item(self, fields: dict[str, Any]) -> bytes:
        """:meth:`item` for an item of profile fields only."""
        if self.wrap_items:
            return b"".join((_DATA_HEAD, orjson.dumps(fields), b"}"))
        return _right_sized(orjson.dumps(fields))

    def body(self, items: list[bytes]) -> bytes:
        return b"".join((self.prefix, b",".join(items), self.suffix))


def body_shape(route: RouteSettings) -> BodyShape:
    """The bytes around the items of ``route``'s requests to the endpoint of ``route.mode``."""
    engage = route.mode is not Mode.IMPORT
    params: dict[str, Any] = {}
    if engage:
        params["workflow_id"] = route.workflow_id
    else:
        params["db_id"] = route.db_id
    params["matching"] = route.matching
    if route.field_name:
        params["field_name"] = route.field_name
    if route.resource_id is not None:
        params["resource_id"] = route.resource_id
    for flag in ("skip_triggers", "skip_invalid_subscriptions", "detect_geo"):
        if getattr(route, flag):
            params[flag] = True
    if engage and route.request_content:  # profiles/import_batch takes no content
        params["content"] = route.request_content
    head = orjson.dumps(params)
    return BodyShape(head[:-1] + b',"data":[', b"]}", engage)
