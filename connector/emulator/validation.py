"""Per-item checks that the platform's import applies to profile fields.

Pure functions over one item's fields. They run once per imported profile, so they are written for
speed: precompiled regular expressions, ``dict.get`` on the few system fields that have a format,
and nothing at all for fields that have none.

Each check answers ``None`` (valid) or an :data:`ItemError`, the ``(error, error_text)`` pair that
ends up in ``result[i]``.
"""

from __future__ import annotations

import functools
import re
from datetime import date, datetime
from typing import Any

ItemError = tuple[int, str]

OK_TEXT = "Successful operation"

INVALID_ITEM: ItemError = (400, "Invalid profile data: expected an object")
INVALID_WRAPPER: ItemError = (400, 'Invalid profile data: expected {"data": {...}}')
INVALID_EMAIL: ItemError = (400, "Invalid email")
INVALID_PHONE: ItemError = (400, "Invalid phone: international format expected")
INVALID_SUBSCRIPTION: ItemError = (400, "Invalid subscription")
PROFILE_NOT_FOUND: ItemError = (404, "Profile not found")
AMBIGUOUS: ItemError = (435, "Ambiguous search, there are several objects with given attributes")

# Pragmatic address syntax (ASCII, dotted domain, alphabetic TLD); RFC 5322 quoting is not accepted.
_EMAIL = (
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]++(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]++)*+"
    r"@(?:[A-Za-z0-9-]++\.)++[A-Za-z]{2,63}"
)
# E.164: a plus sign, a non-zero country digit, at most 15 digits in all.
_PHONE = r"\+[1-9][0-9]{6,14}"
# Short alternatives first: most octets have one or two digits.
_OCTET = r"(?:[1-9]?[0-9]|1[0-9][0-9]|2[0-4][0-9]|25[0-5])"
_IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
_EMAIL_RE = re.compile(_EMAIL, re.ASCII)
_PHONE_RE = re.compile(_PHONE, re.ASCII)
_IPV4_RE = re.compile(_IPV4, re.ASCII)
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_RFC3339_RE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_EMAIL_MAX = 254

_email_match = _EMAIL_RE.fullmatch
_phone_match = _PHONE_RE.fullmatch
_ipv4_match = _IPV4_RE.fullmatch


def missing_value(field: str) -> ItemError:
    """The per-item error for an item that lacks the value its matching mode needs."""
    return (400, f"Matching value is missing: {field}")


def invalid_ip(field: str) -> ItemError:
    return (400, f"Invalid IPv4 address in {field}")


def invalid_date(field: str) -> ItemError:
    return (400, f"Invalid date in {field}: YYYY-MM-DD or RFC 3339 expected")


def is_email(value: object) -> bool:
    return type(value) is str and len(value) <= _EMAIL_MAX and _email_match(value) is not None


def is_phone(value: object) -> bool:
    return type(value) is str and _phone_match(value) is not None


def is_ipv4(value: object) -> bool:
    return type(value) is str and _ipv4_match(value) is not None


def is_date(value: object) -> bool:
    """``YYYY-MM-DD`` or an RFC 3339 date-time, and a real calendar date."""
    return type(value) is str and _date_ok(value)


@functools.lru_cache(maxsize=1 << 16)
def _date_ok(value: str) -> bool:
    # Cached: birth dates repeat a lot, and this runs once per imported profile.
    try:
        if len(value) == 10:
            return _DATE_RE.fullmatch(value) is not None and date.fromisoformat(value) is not None
        if _RFC3339_RE.fullmatch(value):
            return datetime.fromisoformat(value.replace("z", "Z")) is not None
    except ValueError:
        return False
    return False


def all_emails(values: list[str]) -> bool:
    """:func:`is_email` for a whole column of strings (C-level iteration: the batch fast path)."""
    return all(map(_email_match, values)) and max(map(len, values), default=0) <= _EMAIL_MAX


def all_phones(values: list[str]) -> bool:
    return all(map(_phone_match, values))


def all_ipv4(values: list[str]) -> bool:
    return all(map(_ipv4_match, values))


def all_plain_dates(values: list[str]) -> bool:
    """Every value is a real ``YYYY-MM-DD`` date (RFC 3339 ones answer False: the slow path knows)."""
    try:
        return all(map(_DATE_RE.fullmatch, values)) and all(map(date.fromisoformat, values))
    except ValueError:
        return False


def phones_of(value: object) -> list[str] | None:
    """The phone list of a ``phones`` value (a string or a list of strings); None if malformed."""
    if type(value) is str:
        return [value]
    if type(value) is list and all(type(p) is str for p in value):
        return value
    return None


def check_fields(fields: dict[str, Any]) -> ItemError | None:
    """Validate the formatted system fields of one profile; the first problem wins.

    Empty values (``""``, ``None``, ``[]``) are not checked: they clear a field.
    """
    get = fields.get
    v = get("email")
    if v and (type(v) is not str or len(v) > _EMAIL_MAX or _email_match(v) is None):
        return INVALID_EMAIL
    v = get("phones")
    if v:
        if type(v) is str:
            if _phone_match(v) is None:
                return INVALID_PHONE
        elif type(v) is list:
            for p in v:
                if type(p) is not str or _phone_match(p) is None:
                    return INVALID_PHONE
        else:
            return INVALID_PHONE
    v = get("phone")
    if v and (type(v) is not str or _phone_match(v) is None):
        return INVALID_PHONE
    v = get("_regip")
    if v and (type(v) is not str or _ipv4_match(v) is None):
        return invalid_ip("_regip")
    v = get("_ip")
    if v and (type(v) is not str or _ipv4_match(v) is None):
        return invalid_ip("_ip")
    v = get("_bdate")
    if v and (type(v) is not str or not _date_ok(v)):
        return invalid_date("_bdate")
    v = get("_regdate")
    if v and (type(v) is not str or not _date_ok(v)):
        return invalid_date("_regdate")
    return None


def subscription_email(sub: dict[str, Any]) -> object:
    """The address of an email subscription: ``email`` or ``email_data.email``."""
    v = sub.get("email")
    if v is None:
        data = sub.get("email_data")
        if type(data) is dict:
            v = data.get("email")
    return v


def subscription_phone(sub: dict[str, Any]) -> object:
    """The number of an SMS subscription: ``phone`` or ``sms_data.phone``."""
    v = sub.get("phone")
    if v is None:
        data = sub.get("sms_data")
        if type(data) is dict:
            v = data.get("phone")
    return v


def is_valid_subscription(sub: object) -> bool:
    """An object with an integer ``resource_id`` whose email/phone, when given, are well formed."""
    if type(sub) is not dict:
        return False
    rid = sub.get("resource_id")
    if type(rid) is not int or rid <= 0:
        return False
    email = subscription_email(sub)
    if email is not None and not is_email(email):
        return False
    phone = subscription_phone(sub)
    return phone is None or is_phone(phone)


def check_subscriptions(value: object, skip_invalid: bool) -> tuple[ItemError | None, list[dict[str, Any]]]:
    """Validate a ``subscriptions`` value; with ``skip_invalid`` bad ones are dropped instead.

    A single object (what an XML body without ``array='true'`` gives) counts as a list of one.
    """
    subs = [value] if type(value) is dict else value
    if type(subs) is not list:
        return (None, []) if skip_invalid else (INVALID_SUBSCRIPTION, [])
    kept: list[dict[str, Any]] = []
    for sub in subs:
        if is_valid_subscription(sub):
            kept.append(sub)
        elif not skip_invalid:
            return INVALID_SUBSCRIPTION, []
    return None, kept
