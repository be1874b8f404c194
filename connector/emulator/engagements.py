"""Who was engaged in which workflow, how many times, by which requests. Pure.

Recording is the hot path, so each request adds one record holding the list of profile ids it
engaged (the list the answer is built from anyway); per-profile counts are folded from those
records when someone looks. The matching value shown is the profile's current value of the field
the request matched by; the content shown is the request-level ``content`` of the last request that
engaged the profile (what its messages would read as ``{apicontent.NAME}``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

REQUEST_IDS_KEPT = 8


@dataclass(frozen=True, slots=True)
class EngagedBatch:
    """The profiles one request engaged in one workflow, in item order (a profile may repeat)."""

    workflow_id: int
    request_id: str | None
    matching: str
    field_name: str | None
    pids: list[str]
    # The request-level content (None: the request had none).
    content: dict[str, Any] | None = None


@dataclass(slots=True)
class Engagement:
    """One profile in one workflow: how many times it was engaged, and by which requests."""

    count: int
    matching: str
    field_name: str | None
    # The last REQUEST_IDS_KEPT request ids, oldest first (None: a request without Request-ID).
    request_ids: list[str | None]
    # The request-level content of the last engaging request (None: it had none).
    content: dict[str, Any] | None = None


class Engagements:
    def __init__(self) -> None:
        self.batches: list[EngagedBatch] = []
        self.total = 0
        # Distinct (workflow, profile) pairs, folded from batches[: self._seen_upto] on demand.
        self._seen: dict[int, set[str]] = {}
        self._seen_upto = 0

    def add(
        self,
        workflow_id: int,
        request_id: str | None,
        matching: str,
        field_name: str | None,
        pids: list[str],
        content: dict[str, Any] | None = None,
    ) -> None:
        """Record that one request engaged ``pids`` (the list is kept, not copied)."""
        if pids:
            self.batches.append(EngagedBatch(workflow_id, request_id, matching, field_name, pids, content))
            self.total += len(pids)

    def distinct(self) -> int:
        """How many (workflow, profile) pairs were engaged at least once."""
        for b in self.batches[self._seen_upto :]:
            self._seen.setdefault(b.workflow_id, set()).update(b.pids)
        self._seen_upto = len(self.batches)
        return sum(len(s) for s in self._seen.values())

    def records(
        self, workflow_id: int | None = None, profile_id: str | None = None
    ) -> Iterator[tuple[int, str, Engagement]]:
        """Per (workflow, profile) records in first-engagement order, optionally filtered."""
        agg: dict[tuple[int, str], Engagement] = {}
        for b in self.batches:
            if workflow_id is not None and b.workflow_id != workflow_id:
                continue
            pids = [p for p in b.pids if p == profile_id] if profile_id is not None else b.pids
            for pid in pids:
                rec = agg.get((b.workflow_id, pid))
                if rec is None:
                    agg[(b.workflow_id, pid)] = Engagement(1, b.matching, b.field_name, [b.request_id], b.content)
                else:
                    rec.count += 1
                    rec.matching, rec.field_name, rec.content = b.matching, b.field_name, b.content
                    rec.request_ids.append(b.request_id)
                    if len(rec.request_ids) > REQUEST_IDS_KEPT:
                        del rec.request_ids[0]
        for (wid, pid), rec in agg.items():
            yield wid, pid, rec
