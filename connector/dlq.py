"""Dead-letter publishing: the original record's bytes plus headers saying where it came from and why.

The producer is idempotent (acks=all); a dead letter counts only once its delivery report is positive.
A failed delivery is retried after a pause, and until it succeeds the batch holding the record stays
unresolved, so its partition's committed offset cannot pass it.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

log = logging.getLogger(__name__)

FIXED_PRODUCER_PROPS: dict[str, Any] = {"enable.idempotence": True, "acks": "all"}
DEFAULT_PRODUCER_PROPS: dict[str, Any] = {"linger.ms": 20, "compression.type": "lz4"}
RETRY_PAUSE_S = 5.0
_MAX_TEXT = 1000


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a record is dead: the stage, the exception class name and message, and the API's word if any."""

    stage: str
    exception: str
    message: str
    api_code: int | None = None
    api_text: str | None = None
    request_id: str | None = None


def headers_for(msg: Message, reason: Reason) -> list[tuple[str, str | bytes | None]]:
    """The original headers followed by the provenance headers (Kafka Connect's names, plus Altcraft's)."""
    original = msg.headers() or []
    out: list[tuple[str, str | bytes | None]] = list(original.items() if isinstance(original, dict) else original)
    out += [
        ("__connect.errors.topic", (msg.topic() or "").encode()),
        ("__connect.errors.partition", str(msg.partition()).encode()),
        ("__connect.errors.offset", str(msg.offset()).encode()),
        ("__connect.errors.stage", reason.stage.encode()),
        ("__connect.errors.exception.class.name", reason.exception.encode()),
        ("__connect.errors.exception.message", reason.message[:_MAX_TEXT].encode()),
    ]
    if reason.api_code is not None:
        out.append(("altcraft.error.code", str(reason.api_code).encode()))
        out.append(("altcraft.error.text", (reason.api_text or "")[:_MAX_TEXT].encode()))
    if reason.request_id is not None:
        out.append(("altcraft.request.id", reason.request_id.encode()))
    return out


Done = Callable[[], None]


class DeadLetters:
    """Publishes dead letters; calls ``done`` for each once the broker confirmed it."""

    def __init__(self, props: dict[str, Any], topic: str, *, clock: Callable[[], float]) -> None:
        self._producer = Producer({**DEFAULT_PRODUCER_PROPS, **props, **FIXED_PRODUCER_PROPS})
        self._topic = topic
        self._clock = clock
        self._retry: deque[tuple[float, Message, Reason, Done]] = deque()
        self.failing = False  # the last delivery failed and nothing succeeded since

    def publish(self, msg: Message, reason: Reason, done: Done) -> None:
        def report(err: KafkaError | None, _delivered: Message) -> None:
            if err is None:
                self.failing = False
                done()
                return
            if not self.failing:
                log.error(
                    "cannot write to the dead-letter topic %s (%s); %s[%d] stalls at offset %d until it works",
                    self._topic, err, msg.topic(), msg.partition(), msg.offset(),
                )  # fmt: skip
            self.failing = True
            self._retry.append((self._clock() + RETRY_PAUSE_S, msg, reason, done))

        self._produce(msg, reason, report)

    def _produce(self, msg: Message, reason: Reason, report: Callable[[KafkaError | None, Message], None]) -> None:
        kind, ts = msg.timestamp()
        while True:
            try:
                self._producer.produce(
                    self._topic,
                    value=msg.value(),
                    key=msg.key(),
                    headers=headers_for(msg, reason),
                    timestamp=ts if kind else 0,
                    on_delivery=report,
                )
                return
            except BufferError:  # the local queue is full: serve delivery reports, then try again
                self._producer.poll(0.5)

    def poll(self) -> None:
        """Serve delivery reports and re-publish failed dead letters whose pause is over."""
        self._producer.poll(0)
        now = self._clock()
        while self._retry and self._retry[0][0] <= now:
            _, msg, reason, done = self._retry.popleft()
            self.publish(msg, reason, done)

    def flush(self, timeout_s: float) -> int:
        """Wait for outstanding deliveries; returns how many are still outstanding."""
        return int(self._producer.flush(timeout_s))

    @property
    def waiting_retry(self) -> int:
        return len(self._retry)
