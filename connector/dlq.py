"""Dead-letter publishing: the original record's bytes plus headers saying where it came from and why.

The producer is idempotent (acks=all); a dead letter counts only once its delivery report is positive.
Nothing the producer or the broker answers ends the process:

- a dead letter refused for its size (by the producer's ``message.max.bytes`` synchronously, or by the
  topic's ``max.message.bytes`` in its delivery report) is written again with only the first
  :data:`HEAD_BYTES` of its value and headers saying so (``altcraft.dead_letter.truncated``,
  ``altcraft.dead_letter.original_size``); its delivery then confirms as usual;
- any other failure is retried after :data:`RETRY_PAUSE_S`; until it succeeds the batch holding the record
  stays unresolved, so its partition's committed offset cannot pass it. :attr:`DeadLetters.failing` says
  so, and :attr:`DeadLetters.halt_reason` names a refusal that will not pass by itself (a closed set of
  labels, safe as a metric label) for the loop to show.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from connector.models import Reason

log = logging.getLogger(__name__)

FIXED_PRODUCER_PROPS: dict[str, Any] = {"enable.idempotence": True, "acks": "all"}
DEFAULT_PRODUCER_PROPS: dict[str, Any] = {"linger.ms": 20, "compression.type": "lz4"}
RETRY_PAUSE_S = 5.0
_MAX_TEXT = 1000

# A dead letter too large to write keeps this much of its value (the original size is in a header).
HEAD_BYTES = 64 * 1024
# librdkafka's own limit on one record (key, value, headers and framing) when kafka.producer does not set it.
DEFAULT_MESSAGE_MAX_BYTES = 1_000_000
# Room left for the record batch's framing and per-record varints (librdkafka counts about 100 bytes).
WIRE_OVERHEAD = 512

TRUNCATED_HEADER = "altcraft.dead_letter.truncated"
ORIGINAL_SIZE_HEADER = "altcraft.dead_letter.original_size"
HEADERS_DROPPED_HEADER = "altcraft.dead_letter.headers_dropped"

# What a refused dead letter calls for (see judge()): write its head instead, or retry after a pause...
CUT = "cut"
PASSING = "passing"
# ...or, for a refusal that will not pass by itself, one of these halt labels.
TOO_LARGE = "dead_letter_too_large"  # even the head is refused: the topic's max.message.bytes is tiny
MISSING_TOPIC = "dead_letter_missing_topic"  # the topic does not exist and the broker does not create it
UNAUTHORIZED = "dead_letter_unauthorized"  # the producer may not write to the topic, or cannot log in
FATAL = "dead_letter_fatal"  # the idempotent producer is in a fatal state: only a restart clears it
REFUSED = "dead_letter_refused"  # any other permanent refusal (invalid record, policy violation, ...)
METADATA_TIMEOUT_S = 2.0  # asking the broker whether the topic exists, after a delivery timed out
HALT_REASONS = frozenset({TOO_LARGE, MISSING_TOPIC, UNAUTHORIZED, FATAL, REFUSED})

_SIZE_CODES = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})
_MISSING_CODES = frozenset({KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION})
_AUTH_CODES = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError._AUTHENTICATION,
    }
)
# Failures librdkafka does not flag retriable but that pass with the cluster's weather.
_PASSING_CODES = frozenset(
    {
        KafkaError._MSG_TIMED_OUT,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._PURGE_QUEUE,
        KafkaError._PURGE_INFLIGHT,
        KafkaError._QUEUE_FULL,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.NETWORK_EXCEPTION,
        KafkaError.KAFKA_STORAGE_ERROR,
        KafkaError.BROKER_NOT_AVAILABLE,
    }
)

Header = tuple[str, str | bytes | None]


def headers_for(msg: Message, reason: Reason) -> list[Header]:
    """The original headers followed by the provenance headers (Kafka Connect's names, plus Altcraft's)."""
    return original_headers(msg) + provenance(msg, reason)


def original_headers(msg: Message) -> list[Header]:
    original = msg.headers() or []
    return list(original.items() if isinstance(original, dict) else original)


def provenance(msg: Message, reason: Reason) -> list[Header]:
    out: list[Header] = [
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
    if reason.api_debug is not None:
        out.append(("altcraft.error.debug", reason.api_debug[:_MAX_TEXT].encode()))
    if reason.request_id is not None:
        out.append(("altcraft.request.id", reason.request_id.encode()))
    return out


# ------------------------------------------------------------------------------------ pure decisions


def judge(code: int, *, retriable: bool = False, fatal: bool = False, cut: bool = False) -> str:
    """What a refused dead letter calls for: :data:`CUT` (write its head instead), :data:`PASSING` (retry
    after a pause, nothing to report beyond the stall) or a halt label (retry too, but someone must act)."""
    if fatal:
        return FATAL
    if code in _SIZE_CODES:
        return TOO_LARGE if cut else CUT
    if code in _MISSING_CODES:
        return MISSING_TOPIC
    if code in _AUTH_CODES:
        return UNAUTHORIZED
    if retriable or code in _PASSING_CODES:
        return PASSING
    return REFUSED


_PURGED = frozenset({KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT})


def close_producer(producer: Producer, timeout_s: float) -> None:
    """Stop ``producer`` and its threads within about ``timeout_s``.

    What it still holds then is purged: ``Producer.close`` alone waits for it up to
    ``message.timeout.ms`` while the broker is away. Nothing purged is lost: no offset passes a record
    whose dead letter is unconfirmed, so the next owner dead-letters it again. Left unclosed, a producer
    lives on until its owner is collected, reconnecting to a broker that may be gone. Best effort, and
    quiet: a transactional producer whose ``init_transactions`` never got an answer warns that it cannot
    abort at close, which says nothing about any record."""
    with contextlib.suppress(Exception), warnings.catch_warnings():  # closing only
        warnings.simplefilter("ignore")
        producer.flush(timeout_s)
        producer.purge()
        producer.close()


def message_max_bytes(props: dict[str, Any]) -> int:
    """The producer's limit on one record, as librdkafka applies it."""
    return int(props.get("message.max.bytes", DEFAULT_MESSAGE_MAX_BYTES))


def _size(data: str | bytes | None) -> int:
    if data is None:
        return 0
    return len(data.encode() if isinstance(data, str) else data)


def headers_size(headers: Sequence[Header]) -> int:
    """Bytes the headers take in a record (name, value and their length varints, counted generously)."""
    return sum(_size(name) + _size(value) + 10 for name, value in headers)


@dataclass(frozen=True, slots=True)
class Letter:
    key: str | bytes | None
    value: bytes | None
    headers: list[Header]


def cut_to_fit(
    key: str | bytes | None,
    value: bytes | None,
    original: Sequence[Header],
    added: Sequence[Header],
    max_message_bytes: int,
    head_bytes: int = HEAD_BYTES,
) -> Letter:
    """The dead letter as written when the whole record is refused for its size.

    The value keeps its first ``head_bytes`` bytes, fewer if the key and headers leave less room under
    ``max_message_bytes``; headers say it was cut and how large the value was. Should the original headers
    alone leave no room, they are dropped (a header says how many): the provenance headers matter more.
    """
    size = _size(value)
    marks: list[Header] = [(TRUNCATED_HEADER, b"true"), (ORIGINAL_SIZE_HEADER, str(size).encode())]
    budget = max_message_bytes - WIRE_OVERHEAD - _size(key)
    headers = [*original, *added, *marks]
    if original and headers_size(headers) > budget:
        headers = [*added, *marks, (HEADERS_DROPPED_HEADER, str(len(original)).encode())]
    room = max(0, min(head_bytes, size, budget - headers_size(headers)))
    return Letter(key, None if value is None else value[:room], headers)


# ------------------------------------------------------------------------------------ the publisher

Done = Callable[[], None]


@dataclass(slots=True, eq=False)
class _Pending:
    msg: Message
    reason: Reason
    done: Done
    cut: bool = False  # written as its head after a refusal for size


class DeadLetters:
    """Publishes dead letters; calls ``done`` for each once the broker confirmed it."""

    def __init__(self, props: dict[str, Any], topic: str, *, clock: Callable[[], float]) -> None:
        merged = {**DEFAULT_PRODUCER_PROPS, **props, **FIXED_PRODUCER_PROPS}
        self._producer = Producer(merged)
        self._max_bytes = message_max_bytes(merged)
        self._topic = topic
        self._clock = clock
        self._retry: deque[tuple[float, _Pending]] = deque()
        self.failing = False  # the last delivery failed and nothing succeeded since
        self._halt_reason: str | None = None
        self._ask_topic = False  # a delivery timed out: whether the topic exists is asked at the next poll

    @property
    def halt_reason(self) -> str | None:
        """While dead letters stall on a refusal that will not pass by itself: one of :data:`HALT_REASONS`."""
        return self._halt_reason

    def publish(self, msg: Message, reason: Reason, done: Done) -> None:
        self._produce(_Pending(msg, reason, done))

    def _produce(self, p: _Pending) -> None:
        msg = p.msg
        kind, ts = msg.timestamp()
        if p.cut:
            letter = cut_to_fit(
                msg.key(), msg.value(), original_headers(msg), provenance(msg, p.reason), self._max_bytes
            )
        else:
            letter = Letter(msg.key(), msg.value(), headers_for(msg, p.reason))

        def report(err: KafkaError | None, _delivered: Message) -> None:
            if err is None:
                self._confirmed(p)
            else:
                self._refused(p, err)

        while True:
            try:
                self._producer.produce(
                    self._topic,
                    value=letter.value,
                    key=letter.key,
                    headers=letter.headers,
                    timestamp=ts if kind else 0,
                    on_delivery=report,
                )
                return
            except BufferError:  # the local queue is full: serve delivery reports, then try again
                self._producer.poll(0.5)
            except KafkaException as exc:  # refused before it was queued (size, unknown topic, fatal state)
                self._refused(p, exc.args[0])
                return

    def _confirmed(self, p: _Pending) -> None:
        if self.failing:
            log.warning("the dead-letter topic %s accepts records again", self._topic)
        self.failing = False
        self._halt_reason = None
        p.done()

    def _refused(self, p: _Pending, err: KafkaError) -> None:
        if err.code() in _PURGED:  # given up at close(): not a refusal
            return
        msg = p.msg
        verdict = judge(err.code(), retriable=err.retriable(), fatal=err.fatal(), cut=p.cut)
        if verdict == CUT:
            p.cut = True
            log.warning(
                "dead letter of %s[%d] offset %d is too large for the dead-letter topic %s (%s): writing at most its "
                "first %d bytes of %d", msg.topic(), msg.partition(), msg.offset(), self._topic, err.name(),
                HEAD_BYTES, len(msg.value() or b""),
            )  # fmt: skip
            # Written again at the next poll(), not from inside a delivery report.
            self._retry.appendleft((self._clock(), p))
            return
        label = None if verdict == PASSING else verdict
        if label is None and err.code() == KafkaError._MSG_TIMED_OUT:
            # librdkafka reports a missing topic as a timeout until its metadata propagation wait
            # (30 s by default) is over, which is longer than the delivery timeout: the broker is asked
            # at the next poll() (not from inside a delivery report, where the client would block).
            self._ask_topic = True
        if not self.failing or label != self._halt_reason:
            log.error(
                "cannot write to the dead-letter topic %s (%s%s); %s[%d] stalls at offset %d until it works, "
                "retrying every %.0f s", self._topic, err.name(), f", {label}" if label else "", msg.topic(),
                msg.partition(), msg.offset(), RETRY_PAUSE_S,
            )  # fmt: skip
        self.failing = True
        self._halt_reason = label
        self._retry.append((self._clock() + RETRY_PAUSE_S, p))

    def _topic_exists(self) -> bool:
        """Whether the broker knows the dead-letter topic (True when it cannot be asked right now)."""
        try:
            meta = self._producer.list_topics(self._topic, timeout=METADATA_TIMEOUT_S)
        except KafkaException:
            return True
        topic = meta.topics.get(self._topic)
        return topic is not None and topic.error is None

    def poll(self) -> None:
        """Serve delivery reports and re-publish failed dead letters whose pause is over."""
        self._producer.poll(0)
        if self._ask_topic:
            self._ask_topic = False
            if self.failing and self._halt_reason is None and not self._topic_exists():
                self._halt_reason = MISSING_TOPIC
                log.error("the dead-letter topic %s does not exist; create it (the broker does not create it "
                          "on demand)", self._topic)  # fmt: skip
        now = self._clock()
        while self._retry and self._retry[0][0] <= now:
            _, p = self._retry.popleft()
            self._produce(p)

    def forget(self, tp: tuple[str, int]) -> None:
        """Nothing to forget: letters are published as they come (see :mod:`connector.transactions`)."""

    def flush(self, timeout_s: float) -> int:
        """Wait for outstanding deliveries; returns how many are still outstanding."""
        return int(self._producer.flush(timeout_s))

    def close(self, timeout_s: float = 5.0) -> None:
        """The producer stopped (:func:`close_producer`); what it still holds after ``timeout_s`` is given up."""
        close_producer(self._producer, timeout_s)

    @property
    def waiting_retry(self) -> int:
        return len(self._retry)
