"""What the inspection endpoints (and the Python API) show of the state. Pure, read-only.

Lists are paged (``limit``, ``offset``) so a million-profile run can still be looked at; without
a ``limit`` everything is returned.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import islice
from typing import Any, TypeVar

from connector.emulator.engagements import Engagement
from connector.emulator.faults import FaultConfig
from connector.emulator.order import ProfileOrder
from connector.emulator.profiles import first_phone
from connector.emulator.state import EmulatorState

T = TypeVar("T")


class QueryError(ValueError):
    """A query parameter that is not what the endpoint expects."""


def _int_param(params: Mapping[str, str], key: str) -> int | None:
    raw = params.get(key)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise QueryError(f"{key} must be an integer, got {raw!r}") from None
    if value < 0:
        raise QueryError(f"{key} must be >= 0")
    return value


def _page(rows: Iterable[T], params: Mapping[str, str]) -> list[T]:
    offset = _int_param(params, "offset") or 0
    limit = _int_param(params, "limit")
    return list(islice(rows, offset, None if limit is None else offset + limit))


def profile_json(pid: str, fields: dict[str, Any]) -> dict[str, Any]:
    return {"profile_id": pid, "fields": fields}


def profiles_view(state: EmulatorState, params: Mapping[str, str]) -> dict[str, Any]:
    """Profiles, optionally only those with ``email`` or the one ``profile_id``."""
    store = state.profiles
    pid = params.get("profile_id")
    email = params.get("email")
    if pid:
        fields = store.get(pid)
        listed = [] if fields is None else [(pid, fields)]
        rows: Iterable[tuple[str, dict[str, Any]]] = listed
        total = len(listed)
    elif email:
        listed = [(p, f) for p in store.find_by_email(email) if (f := store.get(p)) is not None]
        rows = listed
        total = len(listed)
    else:
        rows = iter(store)
        total = len(store)
    return {"total": total, "profiles": [profile_json(p, f) for p, f in _page(rows, params)]}


def matching_value(fields: dict[str, Any] | None, matching: str, field_name: str | None) -> object:
    """The profile's current value of the field a matching mode reads."""
    if fields is None:
        return None
    if matching.startswith("email"):
        return fields.get("email")
    if matching.startswith("phone"):
        return first_phone(fields)
    if matching == "custom":
        return fields.get(field_name or "")
    return None


def engagement_json(state: EmulatorState, workflow_id: int, pid: str, rec: Engagement) -> dict[str, Any]:
    value = (
        pid if rec.matching == "profile_id" else matching_value(state.profiles.get(pid), rec.matching, rec.field_name)
    )
    return {
        "workflow_id": workflow_id,
        "profile_id": pid,
        "matching": rec.matching,
        "matching_value": value,
        "count": rec.count,
        "request_ids": list(rec.request_ids),
        "content": rec.content,
    }


def engagements_view(state: EmulatorState, params: Mapping[str, str]) -> dict[str, Any]:
    """Engagements, optionally of one ``workflow_id`` and/or one ``profile_id``."""
    wid = _int_param(params, "workflow_id")
    pid = params.get("profile_id") or None
    page = _page(state.engagements.records(wid, pid), params)
    return {
        "total": state.engagements.distinct(),
        "engagements": [engagement_json(state, w, p, r) for w, p, r in page],
    }


def order_json(state: EmulatorState, pid: str, rec: ProfileOrder) -> dict[str, Any]:
    value = (
        pid if rec.matching == "profile_id" else matching_value(state.profiles.get(pid), rec.matching, rec.field_name)
    )
    return {"profile_id": pid, "matching": rec.matching, "matching_value": value, "values": list(rec.values)}


def order_view(state: EmulatorState, params: Mapping[str, str]) -> dict[str, Any]:
    """Per profile, the order field's values in the order they were applied; optionally one ``profile_id``.

    ``field`` is null (and the list empty) when the emulator records no order field."""
    order = state.order
    if order is None:
        return {"field": None, "total": 0, "missing": 0, "profiles": []}
    page = _page(order.records(params.get("profile_id") or None), params)
    return {
        "field": order.field,
        "total": len(order),
        "missing": order.missing,
        "profiles": [order_json(state, pid, rec) for pid, rec in page],
    }


def requests_view(state: EmulatorState, params: Mapping[str, str]) -> dict[str, Any]:
    """The request log, oldest first; ``limit`` keeps the most recent ones."""
    log = list(state.log)
    limit = _int_param(params, "limit")
    if limit is not None:
        log = log[-limit:] if limit else []
    return {"total": state.counters["requests"], "kept": len(state.log), "requests": [r.to_json() for r in log]}


def stats_view(state: EmulatorState, faults: FaultConfig, now: float) -> dict[str, Any]:
    out = state.stats()
    out["faults"] = faults.to_json(now)
    return out
