"""Engage nobody twice: what is recorded before a batch is sent, and what the next owner resends. Pure.

The rule, in five parts:

1. **A batch is a range.** A batch is cut from one partition as consecutive offsets ``first..last``.
   Its Request-ID (:func:`request_id`) is derived from the consumer group, the route (name, mode and
   the workflow or database it targets), the topic, the partition, that range and
   ``altcraft.request_id_epoch``: nothing else. The same range of the same route always gets the same
   key, and Altcraft answers a key it has already executed as a duplicate, without executing it again.
2. **Recorded before sent.** Before a batch is handed to a sender, its range is written into its
   partition's commit metadata (:func:`format_metadata`), with every other range of that partition
   that may have reached the API and is not committed yet, in a commit that must succeed first
   (:func:`record_before_send`). The offset of that commit never passes an unresolved record. If the
   commit fails, nothing is sent.
3. **Committed only when resolved.** A partition's committed offset moves past a batch only once the
   platform has answered for every item in it and every dead letter of it is confirmed by the broker;
   the metadata committed with it still lists the ranges sent and not yet passed.
4. **Replayed exactly.** The next owner of the partition (after a crash, a restart or a rebalance)
   reads the committed offset and its metadata, and cuts the recorded ranges at or beyond that
   offset again, exactly, whatever its own batch policy (:func:`ranges_to_replay`); they get the
   same Request-IDs, and Altcraft deduplicates the ones it had executed. Records past them are
   batched afresh, as they were never sent. Until it passes them, its own commits list those ranges
   too, resent yet or not: a second crash before they are all resent loses none of them.
5. **Derived keys for parts.** The halves of a split batch, a resend after Altcraft kept replaying a
   failed answer, and the rest of a bisected batch get keys derived from their parent's
   (:func:`sub_request_id`, :func:`resend_request_id`, :func:`rest_request_id`): a replay that meets the
   same answers derives the same keys.

``tests/unit/test_replay.py`` walks the whole story in memory: batches recorded, a crash with requests
in flight, the next owner resending the same keys and nothing else.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from connector.config import Mode, RouteSettings

METADATA_PREFIX = "akc1:"

Range = tuple[int, int]


def format_metadata(ranges: Iterable[Range]) -> str:
    """Commit metadata naming the ranges that may have reached the API: ``akc1:100-199;200-299``."""
    return METADATA_PREFIX + ";".join(f"{a}-{b}" for a, b in ranges)


def parse_metadata(text: str) -> list[Range]:
    """The ranges recorded by :func:`format_metadata`; anything else (another tool's metadata) is none."""
    if not text.startswith(METADATA_PREFIX):
        return []
    out = []
    for part in text[len(METADATA_PREFIX) :].split(";"):
        a, sep, b = part.partition("-")
        if sep and a.isdigit() and b.isdigit() and int(a) <= int(b):
            out.append((int(a), int(b)))
    return out


def ranges_to_replay(committed: int | None, metadata: str) -> list[Range]:
    """What the next owner cuts again, in offset order: the recorded ranges not wholly below ``committed``."""
    ranges = parse_metadata(metadata)
    if committed is not None:
        ranges = [r for r in ranges if r[1] >= committed]
    return sorted(set(ranges))


def record_before_send(committable: int | None, recorded: list[Range]) -> tuple[int, str]:
    """The commit that must succeed before batches are sent: ``recorded`` holds every range that may
    reach the API (those about to be sent included). The offset is the partition's resolved prefix
    (``committable``), or, before anything is resolved, the start of the first range; ranges wholly
    below it are left out."""
    offset = committable if committable is not None else min((r[0] for r in recorded), default=0)
    return offset, format_metadata(r for r in recorded if r[1] >= offset)


def request_id(
    group_id: str,
    route: RouteSettings,
    topic: str,
    partition: int,
    first: int,
    last: int,
    epoch: str = "",
    *,
    imports: bool = False,
    piece: int = 0,
) -> str:
    """Deterministic key of a batch: the same records of the same route always give the same key.

    ``epoch`` (``altcraft.request_id_epoch``) is mixed in when not empty: a new epoch makes every batch
    a new request for Altcraft's deduplication. The empty epoch gives the keys of the versions without
    one, so batches recorded before it existed replay under their original keys. ``imports``: the batch
    holds the records an op (or ``otherwise``) imports without engaging (``profiles/import_batch`` into
    the route's ``db_id``). ``piece``: the n-th batch cut from one recorded range (a replay whose records
    now split into engaged and imported ones).
    """
    mode = Mode.IMPORT if imports else route.mode
    target = route.db_id if mode is Mode.IMPORT else route.workflow_id
    parts: tuple[object, ...] = (group_id, route.name, mode.value, target, topic, partition, first, last)
    if epoch:
        parts += (f"epoch={epoch}",)
    if piece:
        parts += (f"piece={piece}",)
    text = "\x1f".join(str(p) for p in parts)
    return "akc-" + hashlib.sha256(text.encode()).hexdigest()[:40]


def sub_request_id(parent: str, index: int, halves: int = 2) -> str:
    """Key of a part of a split batch: derived from the parent's, so a replay splits alike."""
    return f"{parent}.{index}of{halves}"


def resend_request_id(key: str, generation: int) -> str:
    """Key under which a request is sent again when Altcraft keeps replaying a failed answer (error 500
    as a duplicate) for ``key``: ``<key>.resend<generation>``, derived, so a replay derives it alike."""
    return f"{key}.resend{generation}"


def rest_request_id(key: str, skipped: int) -> str:
    """Key of the part of a request after its first ``skipped`` items: ``<key>.from<skipped>``."""
    return f"{key}.from{skipped}"
