"""The progress line of long operator commands: at most one per interval, built only when written."""

from __future__ import annotations

from connector.tools.progress import Progress
from tests.support import FakeClock


def test_a_line_at_most_once_per_interval() -> None:
    clock = FakeClock(100.0)
    lines: list[str] = []
    built: list[int] = []

    def line() -> str:
        built.append(1)
        return f"read {len(built)}"

    progress = Progress(lines.append, 10.0, clock)
    progress(line)
    clock.now = 109.9
    progress(line)
    assert lines == [] and built == []
    clock.now = 110.0
    progress(line)
    clock.now = 115.0
    progress(line)
    clock.now = 120.5
    progress(line)
    assert lines == ["read 1\n", "read 2\n"]


def test_an_interval_of_zero_writes_nothing() -> None:
    clock = FakeClock()
    lines: list[str] = []
    progress = Progress(lines.append, 0, clock)
    clock.now += 1000
    progress(lambda: "x")
    assert lines == []
