"""Times given to the operator commands: ISO-8601 or a duration ago, always read as the same moment."""

from __future__ import annotations

import pytest

from connector.tools.timespec import format_ms, parse_time

NOW = 1_714_558_830.0  # 2024-05-01T10:20:30Z


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("30m", (NOW - 1800) * 1000),
        ("1h", (NOW - 3600) * 1000),
        ("2d", (NOW - 2 * 86_400) * 1000),
        ("1w", (NOW - 604_800) * 1000),
        ("90s", (NOW - 90) * 1000),
        ("1.5h", (NOW - 5400) * 1000),
        (" 1H ", (NOW - 3600) * 1000),
    ],
)
def test_a_duration_is_that_long_before_now(text: str, ms: float) -> None:
    assert parse_time(text, NOW) == int(ms)


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        ("2024-05-01T10:20:30Z", "2024-05-01T10:20:30Z"),
        ("2024-05-01T12:20:30+02:00", "2024-05-01T10:20:30Z"),
        ("2024-05-01T10:20:30", "2024-05-01T10:20:30Z"),  # no offset: UTC, not the host's zone
        ("2024-05-01", "2024-05-01T00:00:00Z"),
        ("2024-05-01 10:20", "2024-05-01T10:20:00Z"),
    ],
)
def test_an_iso_time_is_read_as_utc_unless_it_says_otherwise(text: str, iso: str) -> None:
    assert format_ms(parse_time(text, NOW)) == iso


@pytest.mark.parametrize("text", ["", "yesterday", "1y", "-1h", "h", "2024-13-01", "1h30m"])
def test_anything_else_is_refused_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match="ISO-8601") as exc:
        parse_time(text, NOW)
    assert repr(text) in str(exc.value)


def test_unknown_timestamps_show_as_a_dash() -> None:
    assert format_ms(None) == "-"
    assert format_ms(-1) == "-"
