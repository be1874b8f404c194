"""Request bodies and Request-IDs. Pure.

A body is built once per batch from items serialized once per record: ``prefix + b",".join(items) +
suffix``, so its size is known exactly while the batch grows and nothing is serialized twice.
"""

from __future__ import annotations

import hashlib
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
    params: dict[str, Any] = {}
    if route.mode is Mode.IMPORT:
        params["db_id"] = route.db_id
    else:
        params["workflow_id"] = route.workflow_id
    params["matching"] = route.matching
    if route.field_name:
        params["field_name"] = route.field_name
    if route.resource_id is not None:
        params["resource_id"] = route.resource_id
    for flag in ("skip_triggers", "skip_invalid_subscriptions", "detect_geo"):
        if getattr(route, flag):
            params[flag] = True
    head = orjson.dumps(params)
    return BodyShape(head[:-1] + b',"data":[', b"]}", route.mode is not Mode.IMPORT)


def request_id(
    group_id: str, route: RouteSettings, topic: str, partition: int, first: int, last: int, epoch: str = ""
) -> str:
    """Deterministic key of a batch: the same records of the same route always give the same key.

    ``epoch`` (``altcraft.request_id_epoch``) is mixed in when not empty: a new epoch makes every batch
    a new request for Altcraft's deduplication. The empty epoch gives the keys of the versions without
    one, so batches recorded before it existed replay under their original keys.
    """
    target = route.db_id if route.mode is Mode.IMPORT else route.workflow_id
    parts: tuple[object, ...] = (group_id, route.name, route.mode.value, target, topic, partition, first, last)
    if epoch:
        parts += (f"epoch={epoch}",)
    text = "\x1f".join(str(p) for p in parts)
    return "akc-" + hashlib.sha256(text.encode()).hexdigest()[:40]


def sub_request_id(parent: str, index: int, halves: int = 2) -> str:
    """Key of a part of a split batch: derived from the parent's, so a replay splits alike."""
    return f"{parent}.{index}of{halves}"


def resend_request_id(key: str, generation: int) -> str:
    """Key under which a request is sent again when Altcraft keeps replaying a failed answer (error 500
    as a duplicate) for ``key``: ``<key>.resend<generation>``, derived, so a replay derives it alike."""
    return f"{key}.resend{generation}"


def rest_request_id(key: str, skipped: int) -> str:
    """Key of the part of a request after its first ``skipped`` items: ``<key>.from<skipped>``."""
    return f"{key}.from{skipped}"
