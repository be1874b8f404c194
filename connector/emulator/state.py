"""Everything the emulator remembers, in one value: profiles, engagements, duplicate answers, tasks,
the request log, counters, quota usage, the fault random stream, the per-profile order of a chosen
field's values (when one is chosen) and how many API requests were in flight at once.

Pure and single-threaded (the server holds a lock around every use); time is passed in.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter, deque
from dataclasses import asdict, dataclass

from connector.emulator.dedup import DedupStore
from connector.emulator.engagements import Engagements
from connector.emulator.order import OrderLog
from connector.emulator.profiles import ProfileStore
from connector.emulator.tasks import TaskStore


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One API request, as GET /_emulator/requests shows it (never the body)."""

    seq: int
    at: float
    endpoint: str
    request_id: str | None
    # Items in the request's data array (None when it was not read: faults, auth errors...).
    items: int | None
    body_bytes: int
    # HTTP status sent (0: the connection was reset instead) and the body's error code.
    http_status: int
    error: int | None
    duplicate: bool
    fault: str | None

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def id_prefix(seed: int, salt: str) -> str:
    """Eight hex characters derived from the seed, so generated ids are reproducible."""
    return hashlib.sha256(f"{salt}:{seed}".encode()).hexdigest()[:8]


class EmulatorState:
    def __init__(
        self,
        *,
        seed: int,
        dedup_window_s: float,
        answer_cache_bytes: int,
        request_log_size: int,
        order_field: str | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.profiles = ProfileStore(id_prefix(seed, "profile"))
        self.engagements = Engagements()
        self.dedup = DedupStore(dedup_window_s, answer_cache_bytes)
        self.tasks = TaskStore(id_prefix(seed, "task"), answer_cache_bytes)
        self.log: deque[RequestRecord] = deque(maxlen=request_log_size)
        self.seq = 0
        self.counters: Counter[str] = Counter()
        self.faults_injected: Counter[str] = Counter()
        # Usage counted against the quotas since they were last set.
        self.quota_profiles_used = 0
        self.quota_requests_used = 0
        # Produced-to-acknowledged latencies in ms (see EmulatorConfig.latency_field), the most recent ones.
        self.latencies_ms: deque[int] = deque(maxlen=2_000_000)
        # Per profile, the values of EmulatorConfig.order_field in applied order (None: not recorded).
        self.order: OrderLog | None = OrderLog(order_field) if order_field else None
        # API requests between their headers being read and their answer written (or the reset), now
        # and at most so far: how many a client kept in flight at once.
        self.requests_in_flight = 0
        self.requests_in_flight_max = 0

    def request_started(self) -> None:
        self.requests_in_flight += 1
        self.requests_in_flight_max = max(self.requests_in_flight_max, self.requests_in_flight)

    def request_finished(self) -> None:
        self.requests_in_flight = max(0, self.requests_in_flight - 1)

    def record(
        self,
        *,
        now: float,
        endpoint: str,
        request_id: str | None,
        items: int | None,
        body_bytes: int,
        http_status: int,
        error: int | None,
        duplicate: bool = False,
        fault: str | None = None,
    ) -> None:
        self.seq += 1
        self.log.append(
            RequestRecord(self.seq, now, endpoint, request_id, items, body_bytes, http_status, error, duplicate, fault)
        )
        c = self.counters
        c["requests"] += 1
        c["body_bytes"] += body_bytes
        if duplicate:
            c["duplicates"] += 1
        if fault is not None:
            self.faults_injected[fault] += 1

    def latency_stats(self) -> dict[str, float] | None:
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        n = len(ordered)

        def q(x: float) -> float:
            return float(ordered[min(n - 1, int(x * n))])

        return {"count": n, "p50_ms": q(0.5), "p90_ms": q(0.9), "p99_ms": q(0.99), "max_ms": float(ordered[-1])}

    def stats(self) -> dict[str, object]:
        c = self.counters
        return {
            "latency": self.latency_stats(),
            "requests": c["requests"],
            "requests_executed": c["executed"],
            "duplicates": c["duplicates"],
            "body_bytes": c["body_bytes"],
            "items_received": c["items_received"],
            "items_accepted": c["items_accepted"],
            "items_rejected": c["items_rejected"],
            "profiles": len(self.profiles),
            "profiles_created": c["profiles_created"],
            "profiles_updated": c["profiles_updated"],
            "profiles_engaged": self.engagements.distinct(),
            "engagements": self.engagements.total,
            "tasks_submitted": c["tasks_submitted"],
            "tasks_completed": c["tasks_completed"],
            "tasks_pending": self.tasks.pending,
            "dedup_keys": len(self.dedup),
            "dedup_bytes": self.dedup.bytes,
            "faults_injected": dict(sorted(self.faults_injected.items())),
            "quota_profiles_used": self.quota_profiles_used,
            "quota_requests_used": self.quota_requests_used,
            "bodies_parsed_by_workers": c["bodies_parsed_by_workers"],
            "requests_in_flight": self.requests_in_flight,
            "requests_in_flight_max": self.requests_in_flight_max,
            "order_field": self.order.field if self.order is not None else None,
            "order_profiles": len(self.order) if self.order is not None else 0,
            "order_missing": self.order.missing if self.order is not None else 0,
        }
