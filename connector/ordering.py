"""Per-profile order with several batches of one partition in flight. Pure.

The rule: a sealed batch may be sent while earlier batches of its partition are in flight, as long as
none of its profiles appears in an earlier batch of that partition that is in flight or still
waiting; otherwise it waits. So two changes of one profile reach Altcraft in their Kafka order, and
batches of unrelated profiles go in parallel (Confluent's Parallel Consumer orders by key the same
way). A batch holding an item whose profile cannot be told (:data:`None` key) is a *barrier*: it waits
for every earlier batch, and every later one waits for it.

A profile's key is what Altcraft matches it by in the route (:func:`profile_keys`): the e-mail
address (case-insensitively), the phone numbers, the custom field's value or the profile id. With
``email_phone`` matching a profile may be found by either, so an item has a key for each.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Sequence
from typing import Any, Protocol, TypeVar

ProfileKey = str
ProfileKeys = ProfileKey | tuple[ProfileKey, ...] | None  # one, several, or unknown

_SCALARS = (str, int)


class Ordered(Protocol):
    @property
    def keys(self) -> Collection[Hashable]: ...  # its profiles' keys, or their hashes

    @property
    def barrier(self) -> bool: ...


B = TypeVar("B", bound=Ordered)


def profile_keys(fields: dict[str, Any], match: Sequence[str]) -> ProfileKeys:
    """The keys of one item from its profile fields; ``match``: the fields Altcraft matches by."""
    if len(match) == 1:  # the common case: one matching field with one value
        value = fields.get(match[0])
        if type(value) is str and value:
            return _key(match[0], value)
    keys: list[ProfileKey] = []
    for name in match:
        value = fields.get(name)
        for v in value if type(value) is list else (value,):
            if type(v) in _SCALARS and v != "":
                keys.append(_key(name, str(v)))
    if not keys:
        return None
    return keys[0] if len(keys) == 1 else tuple(keys)


def _key(name: str, value: str) -> ProfileKey:
    if name == "email":
        return "e:" + value.lower()
    if name in ("phone", "phones"):
        return "p:" + value
    return name + ":" + value


def choose(waiting: Sequence[B], busy: Sequence[B], limit: int, ready: Callable[[B], bool] | None = None) -> list[B]:
    """The waiting batches (sealed, in offset order) that may be sent now, at most ``limit``, given the
    ``busy`` ones of the partition (in flight). ``ready``: whether a waiting batch can go at all (it is
    recorded); one that cannot still holds back the later batches that share a profile with it."""
    out: list[B] = []
    if limit <= 0 or any(b.barrier for b in busy):
        return out
    blocked: set[Hashable] = set().union(*(b.keys for b in busy))
    ahead = bool(busy)  # something before the next waiting batch is unanswered
    for batch in waiting:
        go = ready is None or ready(batch)
        if batch.barrier:
            if not ahead and go:
                out.append(batch)
            break  # nothing after a barrier may start before it is answered
        if go and blocked.isdisjoint(batch.keys):
            out.append(batch)
            if len(out) >= limit:
                break
        blocked.update(batch.keys)  # sent now or waiting: later batches must not overtake its profiles
        ahead = True
    return out
