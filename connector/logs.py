"""Logging: plain text for people, JSON lines for log pipelines, and bounded repetition.

- :func:`setup_logging` installs one stderr handler; with ``json`` every line is one JSON object
  (``ts``, ``level``, ``logger``, ``msg``, plus any ``extra`` fields of the call).
- :func:`librdkafka_logger` is the ``logger`` given to the Kafka clients (confluent-kafka routes
  librdkafka's own lines through it, served by ``poll``/``consume``): they become records like any
  other, with ``facility`` and ``kafka_client`` fields, so JSON output stays JSON. librdkafka repeats a
  failing connection's line many times a second; identical lines past a few a minute are counted and
  summarised instead.
- :class:`DeadLetterLog` says each dead letter at WARNING (where the record was, the stage, the
  reason; never its key or value), the first few of each minute one by one, then a summary by stage.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

import orjson

if TYPE_CHECKING:
    from connector.models import Reason

log = logging.getLogger(__name__)

# Attributes every LogRecord has; anything else on a record came from ``extra`` and is written out.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, in UTC; ``extra`` fields are kept (never overriding the four base keys)."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                doc.setdefault(key, value)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        formatter: logging.Formatter = JsonFormatter()
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Python warnings (a library's RuntimeWarning) go through the same handler: with log_format json
    # every line the process writes is JSON, as log collectors expect.
    logging.captureWarnings(True)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


# ------------------------------------------------------------------------------------ bounded repetition

K = TypeVar("K", bound=Hashable)


@dataclass(slots=True)
class _Window:
    start: float
    passed: int = 0
    held: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class Held(Generic[K]):
    """Events of one key not logged one by one in a window that is over: how many, by tally label."""

    key: K
    counts: Counter[str]
    window_s: float

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class Throttle(Generic[K]):
    """Per key: the first ``burst`` events of each ``window_s`` pass, the rest are held (counted by a
    tally label) until :meth:`ended` reports them. A key's window opens at its first event. Pure: time
    is passed in."""

    def __init__(self, burst: int, window_s: float) -> None:
        self.burst = burst
        self.window_s = window_s
        self._windows: dict[K, _Window] = {}

    def allow(self, key: K, now: float, tally: str = "") -> bool:
        window = self._windows.get(key)
        if window is None or now - window.start >= self.window_s:
            # A window that ended with held events is reported by ended() before it is replaced:
            # callers call ended() first.
            window = self._windows[key] = _Window(now)
        if window.passed < self.burst:
            window.passed += 1
            return True
        window.held[tally] += 1
        return False

    def ended(self, now: float) -> list[Held[K]]:
        """The windows that are over and held events, oldest key first; every ended window is forgotten."""
        out: list[Held[K]] = []
        for key, window in list(self._windows.items()):
            if now - window.start >= self.window_s:
                del self._windows[key]
                if window.held:
                    out.append(Held(key, window.held, self.window_s))
        return out


# ------------------------------------------------------------------------------------ librdkafka's lines

LIBRDKAFKA_LOGGER = "librdkafka"
LIBRDKAFKA_BURST = 5  # identical librdkafka lines logged one by one per window
LIBRDKAFKA_WINDOW_S = 60.0
# Parts of a librdkafka line that change from one repetition to the next.
_VARYING = re.compile(r"\(after \d+ms in state \w+\)|\d+ms")


class LibrdkafkaRecords(logging.Filter):
    """On a librdkafka logger: the record's message becomes librdkafka's text, with ``facility`` and
    ``kafka_client`` fields, and identical lines past :data:`LIBRDKAFKA_BURST` a minute are held and
    summarised (by :meth:`flush`, also called on the next line)."""

    def __init__(self, summary: logging.Logger, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._summary = summary
        self._clock = clock
        self._throttle: Throttle[tuple[int, str, str]] = Throttle(LIBRDKAFKA_BURST, LIBRDKAFKA_WINDOW_S)

    def filter(self, record: logging.LogRecord) -> bool:
        # confluent-kafka logs ``logger.log(level, "%s [%s] %s", facility, client name, text)``.
        args = record.args
        if not (isinstance(args, tuple) and len(args) == 3):
            return True
        facility, client, text = (str(a) for a in args)
        record.msg, record.args = text, None
        record.__dict__.update(facility=facility, kafka_client=client)
        now = self._clock()
        self.flush(now)
        return self._throttle.allow((record.levelno, facility, _VARYING.sub("", text)), now)

    def flush(self, now: float) -> None:
        for held in self._throttle.ended(now):
            level, facility, text = held.key
            self._summary.log(
                level, "%d more librdkafka lines like this one in the last %.0f s: %s %s", held.total,
                held.window_s, facility, text, extra={"facility": facility, "repeated": held.total},
            )  # fmt: skip


def librdkafka_logger(
    client: str, clock: Callable[[], float] = time.monotonic
) -> tuple[logging.Logger, LibrdkafkaRecords]:
    """The logger to give a Kafka client as its ``logger`` property (``librdkafka.<client>``), and its filter.

    One filter per logger: asking again (another connector in the same process) replaces it.
    """
    logger = logging.getLogger(f"{LIBRDKAFKA_LOGGER}.{client}")
    for old in [f for f in logger.filters if isinstance(f, LibrdkafkaRecords)]:
        logger.removeFilter(old)
    records = LibrdkafkaRecords(logger.getChild("repeats"), clock)
    logger.addFilter(records)
    return logger, records


# ------------------------------------------------------------------------------------ dead letters

DEAD_LETTER_BURST = 10  # dead letters logged one by one per window
DEAD_LETTER_WINDOW_S = 60.0
REASON_CHARS = 300  # of the reason's message in the log (the dead letter's header keeps 1,000)


class DeadLetterLog:
    """Each dead letter at WARNING: topic, partition, offset, stage and reason (the exception's class and
    message, and Altcraft's error code for an API rejection); never the record's key or value.

    The first :data:`DEAD_LETTER_BURST` of a minute are logged one by one, the rest are counted by stage
    and summarised in one line once the minute is over (:meth:`flush`, called by the loop)."""

    def __init__(
        self,
        *,
        burst: int = DEAD_LETTER_BURST,
        window_s: float = DEAD_LETTER_WINDOW_S,
        logger: logging.Logger | None = None,
    ) -> None:
        self._throttle: Throttle[str] = Throttle(burst, window_s)
        self._log = logger or logging.getLogger("connector.dead_letters")

    def record(self, topic: str, partition: int, offset: int, reason: Reason, now: float) -> None:
        self.flush(now)
        if not self._throttle.allow("dead", now, reason.stage):
            return
        text = reason.message[:REASON_CHARS]
        self._log.warning(
            "dead letter: %s[%d] offset %d, stage %s: %s: %s", topic, partition, offset, reason.stage,
            reason.exception, text,
            extra={
                "topic": topic, "partition": partition, "offset": offset, "stage": reason.stage,
                "reason": reason.exception, "reason_message": text, "api_code": reason.api_code,
            },
        )  # fmt: skip

    def flush(self, now: float) -> None:
        for held in self._throttle.ended(now):
            by_stage = dict(sorted(held.counts.items()))
            self._log.warning(
                "%d more dead letters in the last %.0f s, not logged one by one; by stage: %s", held.total,
                held.window_s, ", ".join(f"{stage} {n}" for stage, n in by_stage.items()),
                extra={"dead_letters": held.total, "by_stage": by_stage},
            )  # fmt: skip


# ------------------------------------------------------------------------------------ the loop's reminders

UNEXPECTED_LOG_EVERY_S = 10.0
HALT_LOG_EVERY_S = 60.0


class UnexpectedLog:
    """Records that met a fault no rule foresaw (a bug meeting odd input) are dead-lettered like any
    bad record, and said loudly: one ERROR line at most every ``every_s``, with a count of the rest."""

    def __init__(self, every_s: float = UNEXPECTED_LOG_EVERY_S) -> None:
        self._every_s = every_s
        self._logged_at = float("-inf")
        self._unlogged = 0

    def record(self, topic: str, partition: int, offset: int, reason: Reason, now: float) -> None:
        self._unlogged += 1
        if now - self._logged_at < self._every_s:
            return
        logging.getLogger("connector.app").error(
            "%s[%d] offset %d: unexpected %s at stage %s: %s; the record is dead-lettered (%d such record(s) "
            "since the last report)", topic, partition, offset, reason.exception, reason.stage, reason.message,
            self._unlogged,
        )  # fmt: skip
        self._logged_at = now
        self._unlogged = 0


class HaltLog:
    """While halted, an ERROR line every ``every_s`` naming each reason and its detail."""

    def __init__(self, every_s: float = HALT_LOG_EVERY_S) -> None:
        self._every_s = every_s
        self._logged_at = float("-inf")

    def remind(self, reasons: dict[str, str], now: float) -> None:
        if not reasons or now - self._logged_at < self._every_s:
            return
        self._logged_at = now
        logging.getLogger("connector.app").error(
            "still halted (%s); nothing is sent, dead-lettered or committed past until the cause is fixed",
            "; ".join(f"{k}: {v}" for k, v in sorted(reasons.items())),
        )
