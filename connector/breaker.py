"""The dead-letter breaker: when most records fail, the cause is the configuration, not the data. Pure.

It trips when, among the most recent ``window`` records that reached a verdict, more than
``max_share`` were dead-lettered, or when ``max_consecutive`` records in a row were. Verdicts are fed
per batch (``ok`` accepted, ``dead`` dead-lettered), in the order batches finish.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(slots=True)
class Breaker:
    window: int
    max_share: float
    max_consecutive: int  # 0: no limit on a run
    _recent: deque[tuple[int, int]] = field(default_factory=deque)
    _ok: int = 0
    _dead: int = 0
    _run: int = 0
    tripped: str | None = None  # why, once tripped

    def record(self, ok: int, dead: int) -> str | None:
        """Feed one batch's verdicts; returns the reason when this call trips the breaker."""
        if self.tripped is not None or (ok == 0 and dead == 0):
            return None
        self._run = self._run + dead if ok == 0 else dead
        self._recent.append((ok, dead))
        self._ok += ok
        self._dead += dead
        while len(self._recent) > 1 and self._ok + self._dead - sum(self._recent[0]) >= self.window:
            old_ok, old_dead = self._recent.popleft()
            self._ok -= old_ok
            self._dead -= old_dead
        seen = self._ok + self._dead
        if self.max_consecutive and self._run >= self.max_consecutive:
            self.tripped = f"{self._run} records in a row were dead-lettered"
        elif seen >= self.window and self._dead / seen > self.max_share:
            self.tripped = f"{self._dead} of the last {seen} records were dead-lettered"
        return self.tripped
