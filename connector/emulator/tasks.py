"""Asynchronous batch tasks: submitted now, executed when due, their results kept for tasks/status.

Pure; ``now`` is passed in. A task holds the checked request until it runs, then only its answer,
serialised (the sync endpoint's JSON body). Completed results are kept up to a byte budget, oldest
dropped first; a dropped task is "not found" from then on.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from connector.emulator.importer import BatchCall


@dataclass(slots=True)
class Task:
    task_id: str
    token: str
    submitted_at: float
    due_at: float
    # The work, until it has run.
    call: BatchCall | None
    # The sync endpoint's answer as JSON bytes, once it has run.
    result: bytes | None = None

    def progress(self, now: float) -> int:
        """0..99 while pending (by elapsed time), 100 once completed."""
        if self.result is not None:
            return 100
        span = self.due_at - self.submitted_at
        if span <= 0:
            return 99
        return max(0, min(99, int((now - self.submitted_at) / span * 100)))


class TaskStore:
    def __init__(self, id_prefix: str, max_result_bytes: int) -> None:
        self._prefix = id_prefix
        self._next = 1
        self._max_bytes = max_result_bytes
        self._bytes = 0
        self._tasks: OrderedDict[str, Task] = OrderedDict()
        self._pending: list[Task] = []

    def new_id(self) -> str:
        """A deterministic UUID-shaped id: the seed-derived prefix and a counter."""
        h = f"{self._prefix}{self._next:024x}"
        self._next += 1
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def submit(self, task: Task) -> None:
        self._tasks[task.task_id] = task
        self._pending.append(task)

    def get(self, token: str, task_id: str) -> Task | None:
        """The task, if it exists and belongs to ``token``."""
        task = self._tasks.get(task_id)
        return task if task is not None and task.token == token else None

    def due(self, now: float) -> list[Task]:
        """Pending tasks whose time has come, in submission order (they leave the pending list)."""
        ready = [t for t in self._pending if t.due_at <= now]
        if ready:
            self._pending = [t for t in self._pending if t.due_at > now]
        return ready

    def complete(self, task: Task, result: bytes) -> None:
        task.call = None
        task.result = result
        self._bytes += len(result)
        while self._bytes > self._max_bytes:
            victim = next((t for t in self._tasks.values() if t.result is not None and t is not task), None)
            if victim is None:
                break
            del self._tasks[victim.task_id]
            assert victim.result is not None
            self._bytes -= len(victim.result)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def __len__(self) -> int:
        return len(self._tasks)

    def clear(self) -> None:
        self._tasks.clear()
        self._pending.clear()
        self._bytes = 0
