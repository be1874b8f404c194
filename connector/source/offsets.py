"""Per-partition offset tracking: commit only the contiguous prefix of resolved work.

A *unit* is a run of consecutive consumed offsets ``[first, last]`` of one partition that is resolved
as a whole (in the pipeline: one batch, including the records in it that were skipped or
dead-lettered). Units are resolved in any order; the committable offset is the first offset of the
oldest unresolved unit, or one past the newest tracked unit when everything is resolved.

Pure: no Kafka, no clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(slots=True)
class _Unit:
    first: int
    last: int
    resolved: bool = False


@dataclass(slots=True)
class PartitionOffsets:
    """Offsets of one partition.

    ``start`` is the position consumption began at (the committed offset), or None when nothing was
    committed yet: then the first tracked offset is the start.
    """

    start: int | None
    _units: deque[_Unit] = field(default_factory=deque)
    _by_first: dict[int, _Unit] = field(default_factory=dict)
    _done: int | None = None  # the committable offset: everything below it is resolved

    def __post_init__(self) -> None:
        self._done = self.start

    def track(self, first: int, last: int | None = None) -> None:
        """Register consumed offsets ``first..last`` (inclusive) as one unit awaiting resolution."""
        last = first if last is None else last
        if last < first:
            raise ValueError(f"empty unit {first}..{last}")
        if self._units and first <= self._units[-1].last:
            raise ValueError(f"unit {first}..{last} overlaps or precedes {self._units[-1].last}")
        if self._done is None:
            self._done = first
        unit = _Unit(first, last)
        self._units.append(unit)
        self._by_first[first] = unit

    def resolve(self, first: int) -> None:
        """Mark the unit starting at ``first`` resolved (accepted, skipped or dead letter confirmed)."""
        unit = self._by_first.pop(first, None)
        if unit is None:
            raise KeyError(f"no unresolved unit starts at offset {first}")
        unit.resolved = True
        units = self._units
        while units and units[0].resolved:
            self._done = units.popleft().last + 1

    def committable(self) -> int | None:
        """The offset to commit: every offset below it is resolved (None: nothing consumed yet)."""
        return self._done

    @property
    def pending(self) -> int:
        """Units tracked and not yet resolved."""
        return len(self._by_first)
