"""Step 4 of the loop, what an answer leaves behind: the counts of an answered batch, a dead letter for
each record the platform refused (or that could not be routed), and the breaker that halts the
connector when most records become dead letters (a misconfiguration, not bad data).

The loop hands each answered batch and each record to dead-letter here; a dead letter is published
with its reason, and its batch settles when the broker confirms it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from connector.batching import Batch
from connector.breaker import Breaker
from connector.config import DeadLetterSettings
from connector.logs import DeadLetterLog
from connector.metrics import Metrics
from connector.models import Reason, SendOutcome
from connector.partition import Partition
from connector.ports import DeadLetterSink
from connector.routing import Route
from connector.sink.halt import BREAKER_REASON, HaltState

log = logging.getLogger(__name__)


class Answers:
    def __init__(
        self,
        routes: dict[str, Route],
        dead_letters: DeadLetterSink,
        metrics: Metrics,
        halt: HaltState,
        settings: DeadLetterSettings,
        clock: Callable[[], float],
    ) -> None:
        self._routes, self._sink, self._metrics, self._halt, self._clock = routes, dead_letters, metrics, halt, clock
        self._breaker = Breaker(settings.breaker_window, settings.breaker_max_share, settings.breaker_max_consecutive)
        self._log = DeadLetterLog()

    def apply(self, part: Partition, batch: Batch, outcome: SendOutcome) -> None:
        """The platform answered every item of ``batch``: count, dead-letter what it refused, judge."""
        route = self._routes[batch.tp[0]]
        m = self._metrics
        (m.imported if batch.imports else m.engaged).labels(route.name).inc(outcome.accepted)
        m.batch_records.observe(len(batch.items))
        m.batch_latency.observe(max(0.0, self._clock() - batch.opened_at))
        sources = part.answered(batch, len(outcome.rejected))
        if outcome.accepted and sources and hasattr(sources[0], "timestamp"):
            m.observe_freshness(sources[0].timestamp(), time.time())
        for rej in outcome.rejected:
            reason = Reason("api", "AltcraftRejected", f"Altcraft error {rej.code}: {rej.text}", rej.code, rej.text,
                            outcome.request_id, rej.debug or None)  # fmt: skip
            self.dead_letter(part, batch, sources[rej.index], reason, route.name)
        self.judge(outcome.accepted, len(outcome.rejected))

    def dead_letter(self, part: Partition, batch: Batch, msg: Any, reason: Reason, route: str) -> None:
        """Publish; the batch (already told a letter is on its way) settles when the broker confirms."""

        def done() -> None:
            part.dead_letter_confirmed(batch)
            self._metrics.count_dead_lettered(route, reason.stage)

        self._log.record(msg.topic() or "", msg.partition() or 0, msg.offset() or 0, reason, self._clock())
        self._sink.publish(msg, reason, done)

    def judge(self, ok: int, dead: int) -> None:
        """Feed the breaker; when it trips, halt: too many dead letters mean a misconfiguration."""
        why = self._breaker.record(ok, dead)
        if why is not None:
            self._halt.set(BREAKER_REASON, why)
            log.error("halted by the dead-letter breaker: %s; fix the cause (mapping, route, data) and restart", why)

    def flush_log(self, now: float) -> None:
        """The minute's summary of dead letters not logged one by one, once the minute is over."""
        self._log.flush(now)
