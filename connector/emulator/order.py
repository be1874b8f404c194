"""Per profile, the values of one item field in the order the emulator applied them. Pure.

A test puts an increasing number in every item (``seq``, named by ``EmulatorConfig.order_field`` or
``--order-field``); after a run, a profile's list shows whether its changes were applied in their
source order, and whether one was applied twice or never. Only applied items count: a rejected item,
a duplicate request (answered from the store, not executed) and a request stopped by a fault add
nothing. Items of one request are applied in item order, requests in the order they are executed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass(slots=True)
class ProfileOrder:
    """One profile's values, oldest first, and how the last request that applied one matched it."""

    matching: str
    field_name: str | None
    values: list[object] = field(default_factory=list)


class OrderLog:
    def __init__(self, field_name: str) -> None:
        # The item field whose values are recorded.
        self.field = field_name
        # Applied items that did not carry the field (nothing recorded for them).
        self.missing = 0
        self._profiles: dict[str, ProfileOrder] = {}

    def __len__(self) -> int:
        """How many profiles have at least one value."""
        return len(self._profiles)

    def add(self, pid: str, fields: dict[str, object], matching: str, field_name: str | None) -> None:
        """Record the value an applied item carried for profile ``pid`` (if it carried one)."""
        if self.field not in fields:
            self.missing += 1
            return
        rec = self._profiles.get(pid)
        if rec is None:
            rec = self._profiles[pid] = ProfileOrder(matching, field_name)
        else:
            rec.matching, rec.field_name = matching, field_name
        rec.values.append(fields[self.field])

    def records(self, profile_id: str | None = None) -> Iterator[tuple[str, ProfileOrder]]:
        """``(profile id, record)`` in the order profiles first got a value, optionally one profile."""
        if profile_id is not None:
            rec = self._profiles.get(profile_id)
            if rec is not None:
                yield profile_id, rec
            return
        yield from self._profiles.items()
