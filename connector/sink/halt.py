"""Shared halt state: set by the senders when the platform refuses the configuration, read by the loop."""

from __future__ import annotations

import threading

# Set by the loop when too many records are dead-lettered; cleared only by a restart.
BREAKER_REASON = "dead_letter_breaker"


class HaltState:
    """Reasons the connector is halted (closed set of labels), with the latest detail of each."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reasons: dict[str, str] = {}

    def set(self, reason: str, detail: str) -> bool:
        """Record a halt reason; True if it is new."""
        with self._lock:
            new = reason not in self._reasons
            self._reasons[reason] = detail
            return new

    def clear(self, reason: str | None = None) -> bool:
        """Clear one reason (or all); True if something was cleared."""
        with self._lock:
            if reason is None:
                had = bool(self._reasons)
                self._reasons.clear()
                return had
            return self._reasons.pop(reason, None) is not None

    def reasons(self) -> dict[str, str]:
        with self._lock:
            return dict(self._reasons)

    def __bool__(self) -> bool:
        with self._lock:
            return bool(self._reasons)
