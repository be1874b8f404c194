"""Request deduplication: the first answer to a ``Request-ID`` (per token), kept for a window.

Pure; ``now`` is passed in (seconds on any monotonic clock). Answers are kept as the bytes that
were sent, so a duplicate receives exactly the original body. Memory is bounded by ``max_bytes``:
past it the oldest answers are dropped early, which behaves like an expired window (a later
duplicate of a dropped key executes again).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    status: int
    # The body's error code, for the request log.
    error: int
    body: bytes
    content_type: str
    stored_at: float


class DedupStore:
    def __init__(self, window_s: float, max_bytes: int) -> None:
        self.window_s = window_s
        self.max_bytes = max_bytes
        self._answers: OrderedDict[tuple[str, str], StoredAnswer] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._answers)

    @property
    def bytes(self) -> int:
        return self._bytes

    def get(self, token: str, key: str, now: float) -> StoredAnswer | None:
        """The stored answer for ``key`` under ``token``, if it was stored within the window."""
        self._expire(now)
        return self._answers.get((token, key))

    def put(self, token: str, key: str, answer: StoredAnswer, now: float) -> None:
        old = self._answers.pop((token, key), None)
        if old is not None:
            self._bytes -= len(old.body)
        self._answers[(token, key)] = answer
        self._bytes += len(answer.body)
        self._expire(now)
        while self._bytes > self.max_bytes and len(self._answers) > 1:
            _, dropped = self._answers.popitem(last=False)
            self._bytes -= len(dropped.body)

    def clear(self) -> None:
        self._answers.clear()
        self._bytes = 0

    def _expire(self, now: float) -> None:
        # Insertion order is time order, so expired answers sit at the front.
        answers = self._answers
        while answers:
            key, first = next(iter(answers.items()))
            if now - first.stored_at < self.window_s:
                return
            del answers[key]
            self._bytes -= len(first.body)
