"""The import loop: match each validated item, create or update its profile, engage it. Pure.

The stateful half of a batch (validation happened in :mod:`connector.emulator.prepare`). It runs
under the server's lock, once per item of every request, so it is one flat loop with local
aliases, an inlined lookup for email matching (the default mode), and results kept as bare profile
ids (or error pairs) that :func:`results_json` turns into the answer's array with one ``str.join``
when every item succeeded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import orjson

from connector.emulator.engagements import Engagements
from connector.emulator.order import OrderLog
from connector.emulator.prepare import Items
from connector.emulator.profiles import Ids, ProfileStore, decode
from connector.emulator.validation import AMBIGUOUS, OK_TEXT, ItemError

# result[i]: the profile id of an imported item, or the (error, error_text) of a rejected one.
ItemResult = str | ItemError

_OK_HEAD = '[{"error":0,"error_text":"' + OK_TEXT + '","profile_id":"'
_OK_SEP = '"},{"error":0,"error_text":"' + OK_TEXT + '","profile_id":"'
_OK_TAIL = '"}]'
_FAST_MODES = frozenset({"email", "email_profile"})


@dataclass(frozen=True, slots=True)
class BatchCall:
    """What a batch request asks for, once its request-level parameters were checked."""

    # The validated items.
    items: Items
    matching: str
    field_name: str | None
    # The workflow to engage valid items in; None for import only.
    workflow_id: int | None
    request_id: str | None
    # The request-level content of a workflow batch (None: none given).
    content: dict[str, Any] | None = None


@dataclass(slots=True)
class ImportOutcome:
    results: list[ItemResult] = field(default_factory=list)
    accepted: int = 0
    rejected: int = 0
    created: int = 0
    updated: int = 0


def first_invalid(store: ProfileStore, call: BatchCall) -> tuple[int, ItemError] | None:
    """The first item that would be rejected, without changing anything (for strict mode).

    Items are matched against the store as it is; two items of the batch about one new person are
    both "create" here and one profile once imported, as in :func:`import_items`.
    """
    errors, keys, raws = call.items.unpack()
    for i, (err, key, raw) in enumerate(zip(errors, keys, raws, strict=True)):
        if err is None:
            if key and call.matching in _FAST_MODES and not store.sub_email_index:
                if not isinstance(store.email_index.get(key, ""), str):
                    err = AMBIGUOUS
            else:
                _, err = store.match(call.matching, call.field_name, decode(raw))
        if err is not None:
            return i, err
    return None


def import_items(store: ProfileStore, engagements: Engagements, call: BatchCall) -> ImportOutcome:
    """Import every valid item and engage it; ``results[i]`` answers item i."""
    results: list[ItemResult] = []
    append = results.append
    match = store.match
    create = store.create
    update = store.update
    append_fields = store.append_fields
    matching, field_name = call.matching, call.field_name
    # Email matching is one dict lookup, done inline, unless subscription addresses are in play;
    # so is creating a profile when the email index is the only one to maintain.
    email_index = store.email_index
    email_get = email_index.get
    email_setdefault = email_index.setdefault
    sub_email_index = store.sub_email_index
    profile_only = matching == "email_profile"
    fast_email = matching in _FAST_MODES
    plain_create = store.only_email_indexed()
    all_raw = store.raw
    keep = all_raw.append
    base = store.id_base
    n = len(all_raw)
    created = updated = 0
    errors, keys, raws = call.items.unpack()
    for err, key, raw in zip(errors, keys, raws, strict=True):
        if err is not None:
            append(err)
            continue
        if key and fast_email and (profile_only or not sub_email_index):
            hit: Ids | None
            if plain_create:
                # One probe of the (big, cache-cold) index both finds the person and claims a new id.
                new_pid = hex(base + n + 1)[2:]
                hit = email_setdefault(key, new_pid)
                if hit is new_pid:
                    keep(raw)
                    n += 1
                    append(new_pid)
                    created += 1
                    continue
            else:
                hit = email_get(key)
                if hit is None:
                    append(create(decode(raw), raw))
                    n = len(all_raw)
                    created += 1
                    continue
            if type(hit) is str:
                if plain_create:
                    append_fields(hit, raw)
                else:
                    update(hit, decode(raw))
                updated += 1
                append(hit)
            else:
                append(AMBIGUOUS)
            continue
        fields = decode(raw)
        pid, err = match(matching, field_name, fields)
        if err is not None:
            append(err)
        elif pid is None:
            append(create(fields, raw))
            n = len(all_raw)
            created += 1
        else:
            update(pid, fields)
            updated += 1
            append(pid)
    accepted = created + updated
    if call.workflow_id is not None and accepted:
        ok = results if accepted == len(results) else [r for r in results if type(r) is str]
        engagements.add(call.workflow_id, call.request_id, matching, field_name, cast(list[str], ok), call.content)
    return ImportOutcome(results, accepted, len(results) - accepted, created, updated)


def record_order(order: OrderLog, call: BatchCall, results: list[ItemResult]) -> None:
    """Add the order field's value of every applied item of a batch to its profile's list, in item
    order. Off the hot path: it runs only when an order field is set (tests, not benchmarks)."""
    _, _, raws = call.items.unpack()
    for raw, result in zip(raws, results, strict=True):
        if type(result) is str:
            order.add(result, decode(raw), call.matching, call.field_name)


def results_json(results: list[ItemResult], all_ok: bool) -> str:
    """The answer's ``result`` array, as JSON text."""
    if all_ok:
        return _OK_HEAD + _OK_SEP.join(cast(list[str], results)) + _OK_TAIL if results else "[]"
    parts = []
    for r in results:
        if isinstance(r, str):
            parts.append(f'{{"error":0,"error_text":"{OK_TEXT}","profile_id":"{r}"}}')
        else:
            code, text = r
            parts.append(orjson.dumps({"error": code, "error_text": text, "profile_id": ""}).decode())
    return "[" + ",".join(parts) + "]"
