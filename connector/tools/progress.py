"""A progress line on stderr every few seconds of a long run. Time is passed in (an injected clock)."""

from __future__ import annotations

import time
from collections.abc import Callable


class Progress:
    """Calls ``write`` with a line at most once per ``interval_s``; ``interval_s`` 0 turns it off."""

    def __init__(
        self, write: Callable[[str], object], interval_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._write = write
        self._interval = interval_s
        self._clock = clock
        self._next = clock() + interval_s

    def __call__(self, line: Callable[[], str]) -> None:
        """Write ``line()`` if the interval is over (the text is built only then)."""
        if self._interval <= 0:
            return
        now = self._clock()
        if now >= self._next:
            self._next = now + self._interval
            self._write(line() + "\n")
