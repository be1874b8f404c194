"""Optional ceilings on requests/s and profiles/s, shared by the sender threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class TokenBucket:
    """Pure token bucket: ``rate`` tokens per second, at most ``burst`` saved up. Time is passed in."""

    rate: float
    burst: float
    _tokens: float = 0.0
    _at: float | None = None

    def reserve(self, n: float, now: float) -> float:
        """Take ``n`` tokens (going into debt if needed); returns how long to wait before acting."""
        if self._at is None:
            self._tokens, self._at = self.burst, now
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        self._tokens -= n
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


class RateLimiter:
    """Both ceilings; ``wait`` blocks the calling sender thread as long as the buckets say."""

    def __init__(
        self,
        requests_per_s: float | None,
        profiles_per_s: float | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._requests = TokenBucket(requests_per_s, max(1.0, requests_per_s)) if requests_per_s else None
        self._profiles = TokenBucket(profiles_per_s, max(1.0, profiles_per_s)) if profiles_per_s else None

    @property
    def active(self) -> bool:
        return self._requests is not None or self._profiles is not None

    def delay(self, profiles: int) -> float:
        with self._lock:
            now = self._clock()
            wait = 0.0
            if self._requests is not None:
                wait = max(wait, self._requests.reserve(1, now))
            if self._profiles is not None:
                wait = max(wait, self._profiles.reserve(profiles, now))
            return wait
