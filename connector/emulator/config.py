"""The emulator's settings: a frozen value, checked once, every problem reported at once."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from connector.emulator.faults import FaultConfig

DEFAULT_TOKEN = "test-token"
DEFAULT_IDS = range(1, 101)
DEFAULT_MAX_BODY_BYTES = 10_000_000
DEFAULT_DEDUP_WINDOW_S = 86_400.0


@dataclass(frozen=True)
class EmulatorConfig:
    # Interface and port to listen on; port 0 picks a free one (see Emulator.url).
    host: str = "127.0.0.1"
    port: int = 0
    # Accepted API tokens (body "token" or "Authorization: Bearer").
    tokens: Sequence[str] = (DEFAULT_TOKEN,)
    # Existing workflow ids (scenarios) and database ids; others answer error 404.
    workflows: Collection[int] = DEFAULT_IDS
    dbs: Collection[int] = DEFAULT_IDS
    # Largest accepted request body; larger ones answer error 400 "http: request body too large".
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    # Seed of the fault decisions and of the generated profile and task ids.
    seed: int = 0
    # How long a Request-ID (per token) is remembered, in seconds.
    dedup_window_s: float = DEFAULT_DEDUP_WINDOW_S
    # Time a batch task takes before tasks/status reports it completed, in seconds.
    task_delay_s: float = 0.2
    # Memory budget, in bytes, for stored duplicate answers and, separately, for task results.
    answer_cache_bytes: int = 512 * 1024 * 1024
    # Most recent requests kept for GET /_emulator/requests.
    request_log_size: int = 10_000
    # Items carrying this field (Unix time in ms when the event was produced) have their delivery
    # latency measured when their request is executed and answered (produced -> acknowledged), for
    # benchmarks: GET /_emulator/stats shows its quantiles.
    latency_field: str | None = None
    # Items carrying this field have its value recorded, per profile, in the order they were applied
    # (created or updated), for tests of per-profile order: GET /_emulator/order shows the lists.
    order_field: str | None = None
    # Worker processes that parse and validate big bodies in parallel (0: all in the server process).
    workers: int = 0
    # Faults active from the start (and again after a reset).
    faults: FaultConfig = field(default_factory=FaultConfig)

    def __post_init__(self) -> None:
        problems: list[str] = []
        tokens = (self.tokens,) if isinstance(self.tokens, str) else tuple(self.tokens)
        if not tokens or not all(isinstance(t, str) and t for t in tokens):
            problems.append("tokens: at least one non-empty token is needed")
        for name in ("workflows", "dbs"):
            ids = getattr(self, name)
            if not all(type(i) is int and i > 0 for i in ids):
                problems.append(f"{name}: positive integer ids expected")
            object.__setattr__(self, name, frozenset(ids))
        object.__setattr__(self, "tokens", tokens)
        if not 0 <= self.port <= 65535:
            problems.append(f"port: {self.port} is not a TCP port")
        if self.max_body_bytes < 1:
            problems.append("max_body_bytes: must be positive")
        if self.dedup_window_s < 0:
            problems.append("dedup_window_s: must be >= 0")
        if self.task_delay_s < 0:
            problems.append("task_delay_s: must be >= 0")
        if self.answer_cache_bytes < 0:
            problems.append("answer_cache_bytes: must be >= 0")
        if not 0 <= self.workers <= 64:
            problems.append("workers: between 0 and 64")
        if self.order_field is not None and (not isinstance(self.order_field, str) or not self.order_field):
            problems.append("order_field: a non-empty field name, or None")
        if self.request_log_size < 1:
            problems.append("request_log_size: must be >= 1")
        if problems:
            raise ValueError("invalid emulator settings: " + "; ".join(problems))
