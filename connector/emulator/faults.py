"""Fault injection: the configuration, its changes, and the decision for one API request.

Pure. Every ``/api/`` request, in arrival order, takes exactly two numbers from the emulator's one
``random.Random(seed)`` (:func:`draw`), whatever the configuration: one for the latency, one for the
fault. So the same seed and the same sequence of requests give the same decisions, and changing a
rate mid-run does not shift the sequence.

The fault draw is compared with the cumulative rates in a fixed order (error 500, HTTP 502, HTTP 503,
HTTP 429, reset before executing, reset after executing); the rates must add up to at most 1.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from enum import StrEnum


class FaultKind(StrEnum):
    NONE = "none"
    ERROR_500 = "error_500"  # HTTP 500 with an Altcraft error body {"error": 500, ...}
    HTTP_502 = "http_502"  # HTTP 502, as from a proxy in front of the API
    HTTP_503 = "http_503"
    RATE_LIMIT = "http_429"  # HTTP 429 with Retry-After
    RESET = "reset"  # the connection is reset before the request is executed
    RESET_AFTER_EXECUTE = "reset_after_execute"  # executed (and stored for dedup), answer lost
    OUTAGE = "outage"  # HTTP 503 for every API request until the outage ends


# Order in which the fault draw is compared with the cumulative rates.
_RATED = (
    ("error_500_rate", FaultKind.ERROR_500),
    ("http_502_rate", FaultKind.HTTP_502),
    ("http_503_rate", FaultKind.HTTP_503),
    ("rate_limit_rate", FaultKind.RATE_LIMIT),
    ("reset_rate", FaultKind.RESET),
    ("reset_after_execute_rate", FaultKind.RESET_AFTER_EXECUTE),
)


class FaultConfigError(ValueError):
    """Every problem found in a fault change, one per line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True, slots=True)
class FaultConfig:
    # Added latency in seconds; with latency_max_s, uniform in [latency_s, latency_max_s].
    latency_s: float = 0.0
    latency_max_s: float | None = None
    # Fractions of API requests given each fault (together at most 1).
    error_500_rate: float = 0.0
    http_502_rate: float = 0.0
    http_503_rate: float = 0.0
    rate_limit_rate: float = 0.0
    reset_rate: float = 0.0
    reset_after_execute_rate: float = 0.0
    # Retry-After of the HTTP 429 answers, in seconds.
    retry_after_s: int = 1
    # Clock time until which every API request gets HTTP 503 (math.inf: until cleared).
    outage_until: float | None = None
    # Error 402 once this many profiles (items of executed requests) / requests were taken.
    quota_profiles: int | None = None
    quota_requests: int | None = None
    # A batch with any invalid item fails whole with error 400 and no per-item detail. Not documented
    # for the real platform (whose per-item results suggest otherwise): the emulation of a possible
    # behaviour the connector must survive.
    strict: bool = False
    # Matching modes refused for every request, as a configuration fault: error 400 "Invalid request"
    # with an error_debug naming the mode, before anything is executed (or stored for deduplication).
    refuse_matching: tuple[str, ...] = ()
    # Accepted tokens, replacing the configured ones (None: the configured ones).
    tokens: tuple[str, ...] | None = None

    def outage_active(self, now: float) -> bool:
        return self.outage_until is not None and now < self.outage_until

    def to_json(self, now: float) -> dict[str, object]:
        """The configuration as the control endpoint shows it (outage as remaining seconds)."""
        out: dict[str, object] = asdict(self)
        del out["outage_until"]
        remaining = None
        if self.outage_active(now):
            assert self.outage_until is not None
            remaining = None if math.isinf(self.outage_until) else round(self.outage_until - now, 3)
        out["outage"] = self.outage_active(now)
        out["outage_remaining_s"] = remaining
        out["tokens"] = list(self.tokens) if self.tokens is not None else None
        out["refuse_matching"] = list(self.refuse_matching)
        return out


@dataclass(frozen=True, slots=True)
class FaultDecision:
    kind: FaultKind
    latency_s: float


CHANGE_KEYS = frozenset(
    {
        "clear",
        "latency_s",
        "latency_max_s",
        "error_500_rate",
        "http_502_rate",
        "http_503_rate",
        "rate_limit_rate",
        "reset_rate",
        "reset_after_execute_rate",
        "retry_after_s",
        "outage",
        "outage_s",
        "quota_profiles",
        "quota_requests",
        "strict",
        "tokens",
        "refuse_matching",
    }
)


def draw(rng: random.Random) -> tuple[float, float]:
    """The two numbers one API request takes from the emulator's random stream."""
    return rng.random(), rng.random()


def decide(config: FaultConfig, draws: tuple[float, float], now: float) -> FaultDecision:
    """What happens to one API request, from the configuration and its two draws."""
    u_latency, u_fault = draws
    latency = config.latency_s
    if config.latency_max_s is not None and config.latency_max_s > latency:
        latency += u_latency * (config.latency_max_s - latency)
    if config.outage_active(now):
        return FaultDecision(FaultKind.OUTAGE, latency)
    edge = 0.0
    for attr, kind in _RATED:
        rate: float = getattr(config, attr)
        edge += rate
        if rate > 0 and u_fault < edge:
            return FaultDecision(kind, latency)
    return FaultDecision(FaultKind.NONE, latency)


def apply_changes(current: FaultConfig, changes: Mapping[str, object], now: float) -> FaultConfig:
    """A new configuration: ``current`` (or the default, with ``clear: true``) with ``changes``.

    Keys are those of :class:`FaultConfig`, except the outage: ``outage_s`` (seconds from ``now``,
    ``null`` or 0 to end it) and ``outage`` (``true`` until cleared, ``false`` to end it). Every
    problem is reported at once in a :class:`FaultConfigError`.
    """
    problems = [f"unknown key: {k}" for k in changes if k not in CHANGE_KEYS]
    base = FaultConfig() if changes.get("clear") is True else current
    values: dict[str, object] = {}

    def number(key: str, lo: float, hi: float, *, integer: bool = False, nullable: bool = False) -> None:
        if key not in changes:
            return
        v = changes[key]
        if v is None and nullable:
            values[key] = None
            return
        if type(v) is bool or not isinstance(v, int | float) or (integer and not isinstance(v, int)):
            problems.append(f"{key}: expected {'an integer' if integer else 'a number'}, got {v!r}")
            return
        if not lo <= v <= hi:
            problems.append(f"{key}: must be between {lo} and {hi}, got {v!r}")
            return
        values[key] = v if integer else float(v)

    def flag(key: str) -> None:
        if key in changes:
            v = changes[key]
            if type(v) is not bool:
                problems.append(f"{key}: expected true or false, got {v!r}")
            else:
                values[key] = v

    flag("clear")
    values.pop("clear", None)
    number("latency_s", 0, 600)
    number("latency_max_s", 0, 600, nullable=True)
    for attr, _ in _RATED:
        number(attr, 0, 1)
    number("retry_after_s", 0, 86_400, integer=True)
    number("quota_profiles", 0, 10**15, integer=True, nullable=True)
    number("quota_requests", 0, 10**15, integer=True, nullable=True)
    flag("strict")
    if "outage" in changes:
        v = changes["outage"]
        if type(v) is not bool:
            problems.append(f"outage: expected true or false, got {v!r}")
        else:
            values["outage_until"] = math.inf if v else None
    if "outage_s" in changes:
        v = changes["outage_s"]
        if v is None or v == 0:
            values["outage_until"] = None
        elif type(v) is bool or not isinstance(v, int | float) or v < 0:
            problems.append(f"outage_s: expected a number of seconds >= 0, got {v!r}")
        else:
            values["outage_until"] = now + float(v)
    if "tokens" in changes:
        v = changes["tokens"]
        if v is None:
            values["tokens"] = None
        elif isinstance(v, list | tuple) and all(isinstance(t, str) and t for t in v):
            values["tokens"] = tuple(v)
        else:
            problems.append(f"tokens: expected a list of non-empty strings or null, got {v!r}")
    if "refuse_matching" in changes:
        v = changes["refuse_matching"]
        if v is None:
            values["refuse_matching"] = ()
        elif isinstance(v, list | tuple) and all(isinstance(m, str) and m for m in v):
            values["refuse_matching"] = tuple(v)
        else:
            problems.append(f"refuse_matching: expected a list of matching modes or null, got {v!r}")
    if problems:
        raise FaultConfigError(problems)
    new = replace(base, **values)  # type: ignore[arg-type]
    total = sum(getattr(new, attr) for attr, _ in _RATED)
    if total > 1 + 1e-9:
        raise FaultConfigError([f"fault rates add up to {total:g}, more than 1"])
    return new
