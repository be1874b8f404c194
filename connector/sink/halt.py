"""Shared halt state: set by the senders when the platform refuses the configuration, read by the loop.

A reason is held by the batches (holders) that met it. It ends only when every holder has released
it: a sender releases its holds when Altcraft accepts one of its requests (not on a retry, a 5xx or a
pause), or when its batch is abandoned. So one batch accepted does not end a halt that another batch
(say, of another route's workflow) still meets, and readiness does not flap between probes.
"""

from __future__ import annotations

import threading

# Set by the loop when too many records are dead-lettered; cleared only by a restart.
BREAKER_REASON = "dead_letter_breaker"


class HaltState:
    """Reasons the connector is halted (closed set of labels), with the latest detail of each."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holds: dict[str, dict[str, str]] = {}  # reason -> holder -> detail
        self._latest: dict[str, str] = {}

    def set(self, reason: str, detail: str, holder: str = "") -> bool:
        """Record that ``holder`` meets ``reason``; True if the reason is new."""
        with self._lock:
            new = reason not in self._holds
            self._holds.setdefault(reason, {})[holder] = detail
            self._latest[reason] = detail
            return new

    def release(self, holder: str) -> list[str]:
        """Drop every hold of ``holder``; returns the reasons that no one holds any more."""
        ended = []
        with self._lock:
            for reason in list(self._holds):
                holders = self._holds[reason]
                if holders.pop(holder, None) is not None and not holders:
                    del self._holds[reason]
                    del self._latest[reason]
                    ended.append(reason)
        return ended

    def holds(self, holder: str) -> list[str]:
        """The reasons ``holder`` holds."""
        with self._lock:
            return [reason for reason, holders in self._holds.items() if holder in holders]

    def clear(self, reason: str | None = None) -> bool:
        """Clear one reason (or all), whoever holds it; True if something was cleared."""
        with self._lock:
            if reason is None:
                had = bool(self._holds)
                self._holds.clear()
                self._latest.clear()
                return had
            self._latest.pop(reason, None)
            return self._holds.pop(reason, None) is not None

    def reasons(self) -> dict[str, str]:
        with self._lock:
            return dict(self._latest)

    def __bool__(self) -> bool:
        with self._lock:
            return bool(self._holds)
