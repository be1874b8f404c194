"""Per-item checks of the emulator's import: what is rejected, with which error."""

from __future__ import annotations

import pytest

from connector.emulator.validation import (
    INVALID_EMAIL,
    INVALID_PHONE,
    INVALID_SUBSCRIPTION,
    check_fields,
    check_subscriptions,
    invalid_date,
    invalid_ip,
    is_date,
    is_email,
    is_ipv4,
    is_phone,
)


@pytest.mark.parametrize(
    "value", ["example@example.com", "a.b+tag@sub.example.org", "X_Y-z@mail-1.example.co", "o'neil@example.ie"]
)
def test_valid_emails(value: str) -> None:
    assert is_email(value)


@pytest.mark.parametrize(
    "value",
    ["", "plain", "a@b", "a@b.c", "a..b@example.com", ".a@example.com", "a.@example.com", "a b@example.com",
     "a@@example.com", "a@example..com", "a@example.com1", "a@example.com.", 42, None],
)  # fmt: skip
def test_invalid_emails(value: object) -> None:
    assert not is_email(value)


@pytest.mark.parametrize("value", ["+79000000000", "+12025550123", "+4930123456"])
def test_valid_phones(value: str) -> None:
    assert is_phone(value)


@pytest.mark.parametrize("value", ["79000000000", "+0123456789", "+7 900 000 00 00", "+7900", "+7900000000000000", 7])
def test_invalid_phones(value: object) -> None:
    assert not is_phone(value)


@pytest.mark.parametrize(("value", "ok"), [("10.0.0.1", True), ("255.255.255.255", True), ("0.0.0.0", True),
                                           ("256.1.1.1", False), ("1.2.3", False), ("01.2.3.4", False),
                                           ("::1", False), ("1.2.3.4 ", False)])  # fmt: skip
def test_ipv4(value: str, ok: bool) -> None:
    assert is_ipv4(value) is ok


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("1990-05-17", True),
        ("1992-02-29", True),
        ("1990-02-29", False),
        ("1990-13-01", False),
        ("17.05.1990", False),
        ("19900517", False),
        ("2024-01-01T10:00:00Z", True),
        ("2024-01-01T10:00:00.123+03:00", True),
        ("2024-01-01T25:00:00Z", False),
        ("2024-01-01T10:00:00", False),
        (19900517, False),
    ],
)
def test_dates(value: object, ok: bool) -> None:
    assert is_date(value) is ok


def test_a_complete_valid_profile_passes() -> None:
    fields = {
        "email": "a@example.com",
        "phones": ["+79000000000", "+79000000001"],
        "phone": "+79000000002",
        "_regip": "10.1.2.3",
        "_ip": "192.168.0.1",
        "_bdate": "1990-05-17",
        "_regdate": "2024-01-01T10:00:00Z",
        "_fname": "Alisa",
        "CRM_ID": "00066",
    }
    assert check_fields(fields) is None


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"email": "not-an-email"}, INVALID_EMAIL),
        ({"email": 12}, INVALID_EMAIL),
        ({"phones": "89000000000"}, INVALID_PHONE),
        ({"phones": ["+79000000000", "8 900"]}, INVALID_PHONE),
        ({"phones": {"a": 1}}, INVALID_PHONE),
        ({"phone": "12"}, INVALID_PHONE),
        ({"_regip": "300.1.1.1"}, invalid_ip("_regip")),
        ({"_ip": "2001:db8::1"}, invalid_ip("_ip")),
        ({"_bdate": "31.12.1990"}, invalid_date("_bdate")),
        ({"_regdate": "2024-02-30"}, invalid_date("_regdate")),
    ],
)
def test_each_formatted_field_is_checked(fields: dict[str, object], error: tuple[int, str]) -> None:
    assert check_fields({"_fname": "x", **fields}) == error
    assert error[0] == 400


def test_empty_values_clear_a_field_and_are_not_checked() -> None:
    assert check_fields({"email": "", "phones": [], "_bdate": None, "_regip": ""}) is None


def test_subscriptions_are_checked_or_dropped_when_asked() -> None:
    good = {"resource_id": 7, "channel": "email", "email_data": {"email": "a@example.com"}}
    bad = {"resource_id": 7, "email": "nope"}
    assert check_subscriptions([good], skip_invalid=False) == (None, [good])
    assert check_subscriptions([good, bad], skip_invalid=False) == (INVALID_SUBSCRIPTION, [])
    assert check_subscriptions([good, bad], skip_invalid=True) == (None, [good])
    assert check_subscriptions({"resource_id": 3, "phone": "+79000000000"}, skip_invalid=False)[0] is None
    assert check_subscriptions([{"email": "a@example.com"}], skip_invalid=False)[0] == INVALID_SUBSCRIPTION
