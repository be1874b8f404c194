"""The profile store: profiles by id, the indexes that matching searches, and matching itself.

Pure and single-threaded: the server serialises calls. One profile space serves every database and
workflow (``db_id`` and ``workflow_id`` are only checked to exist).

A profile id is 24 hex characters: 8 derived from the seed, then a 16-digit counter, so the n-th
profile created is ``raw[n - 1]`` and ids are the same from run to run. A profile's fields are kept
as their JSON serialisation without the outer braces (:func:`encode`, :func:`decode`): a third of
the memory of a dict, invisible to the garbage collector, and what a parse worker hands over anyway
(see :mod:`connector.emulator.prepare`). Index values are a
profile id, or a set of ids when several profiles share the key (which is what makes a match
ambiguous, error 435). Emails are compared case-insensitively; custom field values as strings
(``77`` and ``"77"`` are the same key). The email and subscription indexes are always kept; the
phone index and custom-field indexes are built the first time a request matches by them, then kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from connector.emulator.validation import (
    AMBIGUOUS,
    PROFILE_NOT_FOUND,
    ItemError,
    missing_value,
    phones_of,
    subscription_email,
    subscription_phone,
)

Ids = str | set[str]
Index = dict[str, Ids]

# Matching modes the emulator implements. push_sub and custom_sub are not: the API pages name them
# without saying what an item carries for them (the connector refuses them too).
UNDESCRIBED_MATCHING = frozenset({"custom_sub", "push_sub"})
MATCHING_MODES = frozenset(
    {
        "email", "email_profile", "email_sub", "phone", "phone_sub", "profile_id", "custom", "email_phone",
        "email_phone_sub",
    }
)  # fmt: skip


def encode(fields: dict[str, Any]) -> bytes:
    """Profile fields as stored: their JSON without the outer braces."""
    return orjson.dumps(fields)[1:-1]


def decode(raw: bytes) -> dict[str, Any]:
    """The fields of a stored profile (a fresh dict)."""
    if raw[:2] == b",{":  # cut from a batch's serialisation (connector.emulator.prepare.Items)
        raw = raw[2:]
    fields: dict[str, Any] = orjson.loads(b"{" + raw + b"}")
    return fields


def index_add(index: Index, key: str, pid: str) -> None:
    cur = index.setdefault(key, pid)
    if cur is pid:
        return
    if isinstance(cur, str):
        if cur != pid:
            index[key] = {cur, pid}
    else:
        cur.add(pid)


def index_remove(index: Index, key: str, pid: str) -> None:
    cur = index.get(key)
    if cur is None:
        return
    if isinstance(cur, str):
        if cur == pid:
            del index[key]
    else:
        cur.discard(pid)
        if len(cur) == 1:
            index[key] = next(iter(cur))


def email_key(value: object) -> str | None:
    return value.lower() if type(value) is str and value else None


def custom_key(value: object) -> str | None:
    """The string a custom field value is matched by; None for values that cannot be matched."""
    if type(value) is str:
        return value or None
    if type(value) is bool:
        return "true" if value else "false"
    if type(value) is int or type(value) is float:
        return str(value)
    return None


def phone_keys(fields: dict[str, Any]) -> set[str]:
    keys: set[str] = set()
    plist = phones_of(fields.get("phones"))
    if plist:
        keys.update(p for p in plist if p)
    phone = fields.get("phone")
    if type(phone) is str and phone:
        keys.add(phone)
    return keys


def subscriptions_of(fields: dict[str, Any]) -> list[dict[str, Any]]:
    subs = fields.get("subscriptions")
    if type(subs) is dict:
        return [subs]
    if type(subs) is list:
        return [s for s in subs if type(s) is dict]
    return []


def sub_email_keys(fields: dict[str, Any]) -> set[str]:
    return {k for s in subscriptions_of(fields) if (k := email_key(subscription_email(s)))}


def sub_phone_keys(fields: dict[str, Any]) -> set[str]:
    return {p for s in subscriptions_of(fields) if type(p := subscription_phone(s)) is str and p}


def _sub_identity(sub: dict[str, Any]) -> tuple[object, ...]:
    email = subscription_email(sub)
    phone = subscription_phone(sub)
    channel = sub.get("channel") or ("email" if email is not None else "sms" if phone is not None else None)
    address = email if email is not None else phone if phone is not None else sub.get("subscription_id")
    return (sub.get("resource_id"), channel, str(address).lower() if address is not None else None)


def merge_subscriptions(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Upsert: a new subscription replaces the stored one for the same resource, channel and address."""
    merged = {_sub_identity(s): s for s in old}
    for s in new:
        merged[_sub_identity(s)] = s
    return list(merged.values())


def _reindex(index: Index, pid: str, old: set[str], new: set[str]) -> None:
    for k in old - new:
        index_remove(index, k, pid)
    for k in new - old:
        index_add(index, k, pid)


class ProfileStore:
    """Profiles in creation order, with the indexes matching needs."""

    def __init__(self, id_prefix: str) -> None:
        prefix = int(id_prefix, 16)
        if not 0 <= prefix < 1 << 32:
            raise ValueError("id_prefix must be at most 8 hex characters")
        # A leading non-zero digit keeps every id exactly 24 characters long: hex(base + n)[2:].
        self.id_base = (prefix | 1 << 28) << 64
        # The n-th profile's fields, JSON-serialised, at raw[n - 1].
        self.raw: list[bytes] = []
        self.email_index: Index = {}
        self.sub_email_index: Index = {}
        self.sub_phone_index: Index = {}
        self._phone_index: Index | None = None
        self._custom: dict[str, Index] = {}

    def __len__(self) -> int:
        return len(self.raw)

    def __iter__(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every profile's id and fields (decoded), in creation order."""
        base = self.id_base
        for n, raw in enumerate(self.raw, 1):
            yield hex(base + n)[2:], decode(raw)

    def only_email_indexed(self) -> bool:
        """Whether a new profile without subscriptions needs only the email index updated."""
        return self._phone_index is None and not self._custom

    def pid(self, n: int) -> str:
        """The id of the n-th profile created (1-based)."""
        return hex(self.id_base + n)[2:]

    def number(self, pid: str) -> int | None:
        """The creation number of a stored profile's id, None if there is no such profile."""
        if type(pid) is not str or len(pid) != 24:
            return None
        try:
            n = int(pid, 16) - self.id_base
        except ValueError:
            return None
        return n if 1 <= n <= len(self.raw) else None

    def get(self, pid: str) -> dict[str, Any] | None:
        """A profile's fields (a fresh dict), or None."""
        n = self.number(pid)
        return None if n is None else decode(self.raw[n - 1])

    def find_by_email(self, email: str) -> list[str]:
        return sorted(_ids(self.email_index.get(email.lower())))

    # --- matching -------------------------------------------------------------------------------

    def match(self, mode: str, field_name: str | None, fields: dict[str, Any]) -> tuple[str | None, ItemError | None]:
        """Find the profile an item is about: ``(id, None)``, ``(None, None)`` to create one, or an error."""
        if mode == "email" or mode == "email_profile" or mode == "email_sub":
            value = fields.get("email")
            if not value and mode != "email_profile":
                value = next((e for s in subscriptions_of(fields) if (e := subscription_email(s))), None)
            key = email_key(value)
            if key is None:
                return None, missing_value("email")
            if mode == "email":
                return _one(self.email_index.get(key), self.sub_email_index.get(key))
            return _one((self.email_index if mode == "email_profile" else self.sub_email_index).get(key), None)
        if mode == "phone" or mode == "phone_sub":
            phone = first_phone(fields)
            if phone is None:
                return None, missing_value("phone")
            if mode == "phone":
                return _one(self.phone_index().get(phone), self.sub_phone_index.get(phone))
            return _one(self.sub_phone_index.get(phone), None)
        if mode == "custom":
            name = field_name or ""
            key = custom_key(fields.get(name))
            if key is None:
                return None, missing_value(name)
            return _one(self.custom_index(name).get(key), None)
        if mode == "profile_id":
            pid = fields.get("profile_id")
            if type(pid) is not str or not pid:
                return None, missing_value("profile_id")
            if self.number(pid) is None:
                return None, PROFILE_NOT_FOUND
            return pid, None
        if mode == "email_phone":
            ekey = email_key(fields.get("email"))
            phone = first_phone(fields)
            if ekey is None and phone is None:
                return None, missing_value("email or phone")
            by_email = self.email_index.get(ekey) if ekey is not None else None
            by_phone = self.phone_index().get(phone) if phone is not None else None
            return _one(by_email, by_phone)
        if mode == "email_phone_sub":
            # email_sub and phone_sub together: the item's email (else a subscription's) among the email
            # subscriptions, its phone (else an SMS subscription's) among the SMS subscriptions.
            value = fields.get("email") or next(
                (e for s in subscriptions_of(fields) if (e := subscription_email(s))), None
            )
            ekey = email_key(value)
            phone = first_phone(fields)
            if ekey is None and phone is None:
                return None, missing_value("email or phone")
            by_email = self.sub_email_index.get(ekey) if ekey is not None else None
            by_phone = self.sub_phone_index.get(phone) if phone is not None else None
            return _one(by_email, by_phone)
        raise ValueError(f"matching mode not emulated: {mode}")

    def phone_index(self) -> Index:
        """The phone index, built on first use and maintained from then on."""
        index = self._phone_index
        if index is None:
            index = {}
            for pid, fields in self:
                for k in phone_keys(fields):
                    index_add(index, k, pid)
            self._phone_index = index
        return index

    def custom_index(self, name: str) -> Index:
        """The index of one custom field, built on first use and maintained from then on."""
        index = self._custom.get(name)
        if index is None:
            index = {}
            for pid, fields in self:
                key = custom_key(fields.get(name))
                if key is not None:
                    index_add(index, key, pid)
            self._custom[name] = index
        return index

    # --- writing --------------------------------------------------------------------------------

    def create(self, fields: dict[str, Any], raw: bytes | None = None) -> str:
        """Store a new profile and index it; returns its id. ``raw``: ``encode(fields)`` if at hand."""
        if "profile_id" in fields:
            fields = {k: v for k, v in fields.items() if k != "profile_id"}
            raw = None
        self.raw.append(raw if raw is not None else encode(fields))
        pid = hex(self.id_base + len(self.raw))[2:]
        v = fields.get("email")
        if v and type(v) is str:
            index_add(self.email_index, v.lower(), pid)
        if self._phone_index is not None:
            for k in phone_keys(fields):
                index_add(self._phone_index, k, pid)
        if "subscriptions" in fields:
            for k in sub_email_keys(fields):
                index_add(self.sub_email_index, k, pid)
            for k in sub_phone_keys(fields):
                index_add(self.sub_phone_index, k, pid)
        for name, index in self._custom.items():
            ckey = custom_key(fields.get(name))
            if ckey is not None:
                index_add(index, ckey, pid)
        return pid

    def append_fields(self, pid: str, raw: bytes) -> None:
        """Update a profile found by its email when no other index is kept (:meth:`only_email_indexed`)
        and the new fields carry neither subscriptions nor a profile id: the same result as
        :meth:`update`, for the price of a concatenation. The new fields' JSON is appended to the stored
        one; reading it back keeps the last value of a repeated key at the key's first position, which
        is what ``dict.update`` gives. The stored text is folded into one object again once it holds
        about three versions, so that it stays bounded.
        """
        n = self.number(pid)
        if n is None:
            raise KeyError(pid)
        old = self.raw[n - 1]
        if old[:2] == b",{":
            old = old[2:]
        if raw[:2] == b",{":
            raw = raw[2:]
        merged = old + b"," + raw
        self.raw[n - 1] = merged if len(old) < 3 * len(raw) else encode(decode(merged))

    def update(self, pid: str, new: dict[str, Any]) -> None:
        """Merge new field values into a stored profile, keeping every index in step."""
        n = self.number(pid)
        if n is None:
            raise KeyError(pid)
        old = decode(self.raw[n - 1])
        if "email" in new:
            ok, nk = email_key(old.get("email")), email_key(new.get("email"))
            if ok != nk:
                if ok is not None:
                    index_remove(self.email_index, ok, pid)
                if nk is not None:
                    index_add(self.email_index, nk, pid)
        for name, index in self._custom.items():
            if name in new:
                ok, nk = custom_key(old.get(name)), custom_key(new.get(name))
                if ok != nk:
                    if ok is not None:
                        index_remove(index, ok, pid)
                    if nk is not None:
                        index_add(index, nk, pid)
        phones_index = self._phone_index if "phones" in new or "phone" in new else None
        old_phones = phone_keys(old) if phones_index is not None else set()
        touches_subs = "subscriptions" in new
        if touches_subs:
            old_se, old_sp = sub_email_keys(old), sub_phone_keys(old)
            merged = merge_subscriptions(subscriptions_of(old), subscriptions_of(new))
        old.update(new)
        old.pop("profile_id", None)
        if phones_index is not None:
            _reindex(phones_index, pid, old_phones, phone_keys(old))
        if touches_subs:
            old["subscriptions"] = merged
            _reindex(self.sub_email_index, pid, old_se, sub_email_keys(old))
            _reindex(self.sub_phone_index, pid, old_sp, sub_phone_keys(old))
        self.raw[n - 1] = encode(old)


def _ids(v: Ids | None) -> set[str]:
    if v is None:
        return set()
    return {v} if isinstance(v, str) else set(v)


def _one(a: Ids | None, b: Ids | None) -> tuple[str | None, ItemError | None]:
    """Combine the candidates of up to two indexes: none -> create, one -> it, several -> 435."""
    if b is None or b == a:
        if a is None or isinstance(a, str):
            return a, None
        return None, AMBIGUOUS
    if a is None and isinstance(b, str):
        return b, None
    ids = _ids(a) | _ids(b)
    if len(ids) == 1:
        return ids.pop(), None
    return None, AMBIGUOUS


def first_phone(fields: dict[str, Any]) -> str | None:
    """The phone an item is matched by: ``phone``, else the first of ``phones``, else of subscriptions."""
    phone = fields.get("phone")
    if type(phone) is str and phone:
        return phone
    plist = phones_of(fields.get("phones"))
    if plist:
        return plist[0] or None
    for s in subscriptions_of(fields):
        p = subscription_phone(s)
        if type(p) is str and p:
            return p
    return None
