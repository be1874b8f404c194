"""The stateless half of an API request: body bytes in, a :class:`Prepared` request out. Pure.

Parsing and per-item validation are most of the work of a big batch and need no state, so the
server can run them in worker processes, in parallel, while the stateful half (matching, storing,
engaging: :mod:`connector.emulator.importer`) runs in the server process under its lock. Everything
here is picklable: the body goes to a worker as bytes and comes back as a :class:`Prepared`, whose
items are packed into a few blobs (see :class:`Items`).
"""

from __future__ import annotations

import contextlib
import gc
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from connector.emulator.validation import (
    INVALID_ITEM,
    INVALID_WRAPPER,
    ItemError,
    all_emails,
    all_ipv4,
    all_phones,
    all_plain_dates,
    check_fields,
    check_subscriptions,
)
from connector.emulator.xmlbody import XmlBodyError, parse_xml

PREFIX = "/api/v1.1/"
BATCH = "workflows/import_and_start_batch"
BATCH_TASK = "workflows/import_and_start_batch_task"
IMPORT_BATCH = "profiles/import_batch"
SINGLE = "workflows/import_and_start"
TASK_STATUS = "tasks/status"
ENDPOINTS = frozenset({BATCH, BATCH_TASK, IMPORT_BATCH, SINGLE, TASK_STATUS})
BATCH_ENDPOINTS = frozenset({BATCH, BATCH_TASK, IMPORT_BATCH})

_JSON_TYPES = frozenset({"", "application/json", "text/json"})
_XML_TYPES = frozenset({"application/xml", "text/xml"})
# Item keys that send a batch down the item-by-item path (checked or handled there only).
_RARE_KEYS = frozenset({"subscriptions", "profile_id", "phone", "_ip", "_regdate"})


@dataclass(frozen=True, slots=True)
class Items:
    """A batch's items, validated, packed for the trip from a worker: three blobs rather than tens of
    thousands of small objects, which are slow to pickle and slower to unpickle. Item i (see
    :meth:`unpack`): its error (None when valid); its email lower-cased when it can take the fast
    path of email matching (it has an email and neither subscriptions nor a profile_id), else "";
    its profile fields as JSON without the outer braces, as the store keeps them (b"" if rejected).
    """

    count: int
    # Per-item errors; None when every item is valid.
    errors: list[ItemError | None] | None
    # The email keys joined by "\n" (valid emails never contain one).
    keys: str
    # The fields joined by ``sep``: NUL (serialised JSON never contains a raw one), or "}" when cut
    # from one serialisation of the whole batch, in which case every item but the first keeps a
    # leading ",{" (see connector.emulator.profiles.decode).
    raws: bytes
    sep: bytes = b"\x00"

    def __len__(self) -> int:
        return self.count

    def unpack(self) -> tuple[list[ItemError | None], list[str], list[bytes]]:
        if not self.count:
            return [], [], []
        errors: list[ItemError | None] = [None] * self.count if self.errors is None else self.errors
        return errors, self.keys.split("\n"), self.raws.split(self.sep)


@dataclass(frozen=True, slots=True)
class Prepared:
    # The method (``workflows/import_and_start_batch``), None if the path names none.
    endpoint: str | None
    # The body's top-level parameters; for batch endpoints without "data" when it was an array.
    params: dict[str, Any]
    # Batch endpoints: the items of "data" (None when "data" is not an array).
    items: Items | None
    # A request-level error found already: (code, debug) for 501, 415 or 400.
    error: tuple[int, str] | None = None

    @property
    def item_count(self) -> int | None:
        """How many items the request carries (for the request log)."""
        if self.items is not None:
            return len(self.items)
        return 1 if self.endpoint == SINGLE and self.error is None else None


def endpoint_of(path: str) -> str | None:
    """The method name of an API path (``workflows/import_and_start_batch``), None if unknown."""
    path = path.rstrip("/")
    if not path.startswith(PREFIX):
        return None
    name = path[len(PREFIX) :]
    return name if name in ENDPOINTS else None


def prepare(path: str, body: bytes, content_type: str | None) -> Prepared:
    """Parse and validate a request body; never raises for a bad request (see ``error``)."""
    endpoint = endpoint_of(path)
    if endpoint is None:
        return Prepared(None, {}, None, (501, f"no method at {path}"))
    ctype = (content_type or "").split(";", 1)[0].strip().lower()
    params: Any
    if ctype in _JSON_TYPES:
        if not body:
            return Prepared(endpoint, {}, None, (400, "empty body"))
        try:
            params = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return Prepared(endpoint, {}, None, (400, f"malformed JSON: {exc}"))
        if type(params) is not dict:
            return Prepared(endpoint, {}, None, (400, "the body must be a JSON object"))
    elif ctype in _XML_TYPES:
        try:
            params = _normalise_xml(parse_xml(body), endpoint)
        except XmlBodyError as exc:
            return Prepared(endpoint, {}, None, (400, str(exc)))
    else:
        detail = f"content type {ctype!r} is not supported: use application/json or application/xml"
        return Prepared(endpoint, {}, None, (415, detail))
    data = params.get("data")
    if endpoint not in BATCH_ENDPOINTS or type(data) is not list:
        return Prepared(endpoint, params, None)
    del params["data"]
    skip_subs = params.get("skip_invalid_subscriptions") is True
    return Prepared(endpoint, params, prepare_items(data, endpoint != IMPORT_BATCH, skip_subs))


def prepare_in_worker(path: str, body: bytes, content_type: str | None) -> Prepared:
    """:func:`prepare`, as a worker process runs it."""
    with gc_paused():
        return prepare(path, body, content_type)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a request is handled.

    A 10,000-item body allocates some 30,000 containers, each young-generation collection meanwhile
    also walks what the earlier ones promoted, and the stored profiles keep the heap growing: left
    on, the collector takes more time than the import. Collection resumes (and catches up) when
    the request is done; if it was already disabled by the host program, it stays disabled.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def init_worker() -> None:
    """Worker processes leave SIGINT to the server process, which shuts them down in order."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def warm_up(n: int) -> int:
    """A no-op task that makes a worker process start (and import this module) ahead of traffic."""
    return n


def prepare_items(items: list[Any], wrapped: bool, skip_invalid_subscriptions: bool) -> Items:
    """Validate each item; item i of the answer is ``items[i]``. The hot loop of a batch."""
    fast = _ordinary_batch(items, wrapped)
    return fast if fast is not None else _item_by_item(items, wrapped, skip_invalid_subscriptions)


def _ordinary_batch(items: list[Any], wrapped: bool) -> Items | None:
    """The fast path: the whole batch column by column, iterating in C (``map``, ``set``, one
    serialisation), when every item is an ordinary valid profile: a dict with a valid email, valid
    phones, _regip and _bdate (YYYY-MM-DD) when present, none of the rarer keys. None as soon as
    anything is not ordinary: the item-by-item path then decides and names the errors. Both paths
    give the same answer for a batch this one accepts.
    """
    n = len(items)
    if wrapped:
        if set(map(type, items)) != {dict}:
            return None
        fields = [item.get("data") for item in items]
    else:
        fields = items
    if set(map(type, fields)) != {dict} or not _RARE_KEYS.isdisjoint(set().union(*fields)):
        return None
    emails = [f.get("email") for f in fields]
    if set(map(type, emails)) != {str} or not all_emails(emails):
        return None
    phones = list(filter(None, [f.get("phones") for f in fields]))
    if phones and set(map(type, phones)) != {str}:
        phones = [p for v in phones for p in (v if type(v) is list else [v])]
        if set(map(type, phones)) != {str}:
            return None
    ips = list(filter(None, [f.get("_regip") for f in fields]))
    dates = list(filter(None, [f.get("_bdate") for f in fields]))
    if not (
        all_phones(phones)
        and set(map(type, ips)) <= {str}
        and all_ipv4(ips)
        and set(map(type, dates)) <= {str}
        and all_plain_dates(dates)
    ):
        return None
    # One serialisation for the whole batch, cut by the server process at the item boundaries "},{"
    # (on the "}", found at memchr speed). That is right only when no "}" occurs inside an item (in
    # a string or a nested object): counted here, else the items are serialised one at a time.
    whole = orjson.dumps(fields)[2:-2]
    if whole.count(b"}") == n - 1:
        return Items(n, None, "\n".join(emails).lower(), whole, b"}")
    return Items(n, None, "\n".join(emails).lower(), b"\x00".join([orjson.dumps(f)[1:-1] for f in fields]))


def _item_by_item(items: list[Any], wrapped: bool, skip_invalid_subscriptions: bool) -> Items:
    errors: list[ItemError | None] = []
    keys: list[str] = []
    raws: list[bytes] = []
    add_error, add_key, add_raw = errors.append, keys.append, raws.append
    check = check_fields
    dumps = orjson.dumps
    for item in items:
        if wrapped:
            fields = item.get("data") if type(item) is dict else None
            if type(fields) is not dict:
                add_error(INVALID_WRAPPER)
                add_key("")
                add_raw(b"")
                continue
        elif type(item) is dict:
            fields = item
        else:
            add_error(INVALID_ITEM)
            add_key("")
            add_raw(b"")
            continue
        err = check(fields)
        if err is None and "subscriptions" in fields:
            err, kept = check_subscriptions(fields["subscriptions"], skip_invalid_subscriptions)
            if err is None:
                fields["subscriptions"] = kept
        add_error(err)
        if err is not None:
            add_key("")
            add_raw(b"")
            continue
        email = fields.get("email")
        add_key(email.lower() if email and "subscriptions" not in fields and "profile_id" not in fields else "")
        add_raw(dumps(fields)[1:-1])
    return Items(len(items), errors, "\n".join(keys), b"\x00".join(raws))


def _normalise_xml(body: dict[str, Any], endpoint: str) -> dict[str, Any]:
    """XML batches: one <data> is still an array, and workflow items carry their fields directly."""
    if endpoint in BATCH_ENDPOINTS:
        data = body.get("data")
        if isinstance(data, dict):
            data = [data]
        if isinstance(data, list) and endpoint != IMPORT_BATCH:
            data = [d if isinstance(d, dict) and isinstance(d.get("data"), dict) else {"data": d} for d in data]
        if data is not None:
            body["data"] = data
    return body
