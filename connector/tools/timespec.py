"""Times given to the operator commands: ISO-8601, or a duration ago. Pure (``now`` is passed in)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d|w)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
HELP = "ISO-8601 (2024-05-01T10:00:00Z, 2024-05-01; UTC unless an offset is given) or a duration ago (30m, 1h, 2d)"


def parse_time(text: str, now_s: float) -> int:
    """Milliseconds since the epoch of ``text``: ISO-8601, or a duration before ``now_s`` (``30m``, ``1h``,
    ``2d``, ``1w``, ``90s``). A time without an offset is UTC: the connector's hosts and containers run
    on UTC, and a local zone would make the same command mean another moment elsewhere."""
    value = text.strip()
    relative = _RELATIVE.match(value.lower())
    if relative:
        return int((now_s - float(relative.group(1)) * _UNIT_S[relative.group(2)]) * 1000)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{text!r} is not a time: give {HELP}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def format_ms(ms: int | None) -> str:
    """An epoch-milliseconds timestamp as ISO-8601 UTC text (``-`` when unknown)."""
    if ms is None or ms < 0:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
