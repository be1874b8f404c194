"""Dead letters: what is written when the whole record does not fit, and what a refusal leads to."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Message

from connector import dlq
from connector.dlq import (
    CUT,
    FATAL,
    HEAD_BYTES,
    MISSING_TOPIC,
    ORIGINAL_SIZE_HEADER,
    PASSING,
    REFUSED,
    TOO_LARGE,
    TRUNCATED_HEADER,
    UNAUTHORIZED,
    DeadLetters,
    Reason,
    cut_to_fit,
    headers_size,
    judge,
    message_max_bytes,
    provenance,
)
from tests.broker.kafka import free_port
from tests.support import FakeClock, native_threads

LIMIT = 1_000_000
ADDED = [("__connect.errors.stage", b"size"), ("__connect.errors.offset", b"7")]


def _wire_size(letter: dlq.Letter) -> int:
    key = letter.key.encode() if isinstance(letter.key, str) else (letter.key or b"")
    return len(key) + len(letter.value or b"") + headers_size(letter.headers) + dlq.WIRE_OVERHEAD


# ------------------------------------------------------------------------------------ judge


@pytest.mark.parametrize(
    ("code", "kw", "verdict"),
    [
        (KafkaError.MSG_SIZE_TOO_LARGE, {}, CUT),  # producer's message.max.bytes or the topic's limit
        (KafkaError.RECORD_LIST_TOO_LARGE, {}, CUT),
        (KafkaError.MSG_SIZE_TOO_LARGE, {"cut": True}, TOO_LARGE),  # even the head is refused
        (KafkaError.UNKNOWN_TOPIC_OR_PART, {}, MISSING_TOPIC),
        (KafkaError._UNKNOWN_TOPIC, {}, MISSING_TOPIC),
        (KafkaError.TOPIC_AUTHORIZATION_FAILED, {}, UNAUTHORIZED),
        (KafkaError.CLUSTER_AUTHORIZATION_FAILED, {}, UNAUTHORIZED),
        (KafkaError.SASL_AUTHENTICATION_FAILED, {}, UNAUTHORIZED),
        (KafkaError.INVALID_RECORD, {}, REFUSED),
        (KafkaError.POLICY_VIOLATION, {}, REFUSED),
        (KafkaError._MSG_TIMED_OUT, {}, PASSING),
        (KafkaError.NOT_ENOUGH_REPLICAS, {}, PASSING),
        (KafkaError._ALL_BROKERS_DOWN, {}, PASSING),
        (KafkaError.INVALID_RECORD, {"retriable": True}, PASSING),  # librdkafka's own flag wins
        (KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, {"fatal": True}, FATAL),
        (KafkaError.MSG_SIZE_TOO_LARGE, {"fatal": True}, FATAL),
    ],
)
def test_a_refusal_is_cut_retried_quietly_or_named(code: int, kw: dict[str, bool], verdict: str) -> None:
    assert judge(code, **kw) == verdict


def test_every_halt_label_is_in_the_closed_set() -> None:
    labels = {judge(c, **kw) for c, kw in [(10, {"cut": True}), (3, {}), (29, {}), (87, {}), (0, {"fatal": True})]}
    assert labels == dlq.HALT_REASONS


# ------------------------------------------------------------------------------------ cut_to_fit


def test_a_12_mb_value_keeps_its_first_64_kib_and_says_so() -> None:
    value = bytes(range(256)) * (12_000_000 // 256)
    letter = cut_to_fit(b"key-1", value, [("trace", b"abc")], ADDED, LIMIT)
    assert letter.value == value[:HEAD_BYTES]
    assert letter.key == b"key-1"
    headers = dict(letter.headers)
    assert headers["trace"] == b"abc" and headers["__connect.errors.stage"] == b"size"
    assert headers[TRUNCATED_HEADER] == b"true"
    assert headers[ORIGINAL_SIZE_HEADER] == str(len(value)).encode()
    assert _wire_size(letter) <= LIMIT


def test_the_head_shrinks_when_key_and_headers_leave_less_room() -> None:
    big_header = ("context", b"h" * 40_000)
    letter = cut_to_fit(b"k" * 20_000, b"v" * 2_000_000, [big_header], ADDED, 100_000)
    assert 0 < len(letter.value or b"") < HEAD_BYTES
    assert ("context", big_header[1]) in letter.headers
    assert _wire_size(letter) <= 100_000


def test_original_headers_are_dropped_when_they_alone_exceed_the_limit() -> None:
    huge = [("a", b"x" * 600_000), ("b", b"y" * 600_000)]
    letter = cut_to_fit(b"k", b"v" * 3_000_000, huge, ADDED, LIMIT)
    headers = dict(letter.headers)
    assert "a" not in headers and "b" not in headers
    assert headers[dlq.HEADERS_DROPPED_HEADER] == b"2"
    assert headers["__connect.errors.offset"] == b"7"
    assert len(letter.value or b"") == HEAD_BYTES
    assert _wire_size(letter) <= LIMIT


def test_a_small_value_refused_by_a_tiny_topic_limit_is_written_whole_with_the_marks() -> None:
    letter = cut_to_fit(None, b"tiny", [], ADDED, LIMIT)
    assert letter.value == b"tiny"
    assert dict(letter.headers)[ORIGINAL_SIZE_HEADER] == b"4"


def test_the_limit_is_the_producer_setting_or_librdkafkas_default() -> None:
    assert message_max_bytes({}) == 1_000_000
    assert message_max_bytes({"message.max.bytes": "5000000"}) == 5_000_000


def test_the_api_debug_text_becomes_a_header_cut_like_the_others() -> None:
    msg = Message(topic="src", partition=2, offset=9, value=b"{}")
    reason = Reason("api", "AltcraftRejected", "m", 400, "bad", "rid", api_debug="d" * 5000)
    headers = dict(provenance(msg, reason))
    assert headers["altcraft.error.debug"] == b"d" * 1000
    assert "altcraft.error.debug" not in dict(provenance(msg, Reason("decode", "E", "m")))


# ------------------------------------------------------------------------------------ the publisher


class FakeProducer:
    """Queues produce calls; the test answers them like the broker would."""

    refuse_over: int | None = None  # synchronous MSG_SIZE_TOO_LARGE above this many value bytes
    refuse_with: int | None = None  # synchronous KafkaException with this code

    def __init__(self, props: dict[str, Any]) -> None:
        self.props = props
        self.queued: list[dict[str, Any]] = []
        self.reports: list[Callable[[], None]] = []
        FakeProducer.last = self

    last: FakeProducer

    def produce(self, topic: str, **kw: Any) -> None:
        if self.refuse_with is not None:
            raise KafkaException(KafkaError(self.refuse_with))
        if self.refuse_over is not None and len(kw["value"] or b"") > self.refuse_over:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        self.queued.append({"topic": topic, **kw})

    def answer(self, code: int | None = None) -> None:
        """Deliver (None) or fail the oldest queued record."""
        record = self.queued.pop(0)
        err = None if code is None else KafkaError(code)
        record["on_delivery"](err, None)

    def poll(self, _timeout: float) -> int:
        return 0

    topic_exists = True  # what the broker's metadata says of the dead-letter topic

    def list_topics(self, topic: str, timeout: float) -> Any:
        error = None if self.topic_exists else KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)
        return SimpleNamespace(topics={topic: SimpleNamespace(error=error)})

    def flush(self, _timeout: float) -> int:
        return len(self.queued)


@pytest.fixture
def producer(monkeypatch: pytest.MonkeyPatch) -> type[FakeProducer]:
    FakeProducer.refuse_over = None
    FakeProducer.refuse_with = None
    FakeProducer.topic_exists = True
    monkeypatch.setattr(dlq, "Producer", FakeProducer)
    return FakeProducer


def _msg(value: bytes, offset: int = 7) -> Message:
    return Message(topic="src", partition=0, offset=offset, key=b"k", value=value, timestamp=(1, 1000))


def test_a_record_the_producer_refuses_for_size_is_written_as_its_head(producer: type[FakeProducer]) -> None:
    clock = FakeClock()
    letters = DeadLetters({}, "dlq", clock=clock)
    producer.refuse_over = 1_000_000
    confirmed: list[int] = []
    letters.publish(_msg(b"x" * 12_000_000), Reason("size", "RecordTooLarge", "too big"), lambda: confirmed.append(7))
    letters.poll()  # the head goes out at the next poll
    fake = producer.last
    assert len(fake.queued) == 1
    headers = dict(fake.queued[0]["headers"])
    assert len(fake.queued[0]["value"]) == HEAD_BYTES
    assert headers[TRUNCATED_HEADER] == b"true" and headers[ORIGINAL_SIZE_HEADER] == b"12000000"
    fake.answer()
    assert confirmed == [7]
    assert (letters.failing, letters.halt_reason) == (False, None)


def test_a_record_the_topic_refuses_for_size_is_written_again_as_its_head(producer: type[FakeProducer]) -> None:
    letters = DeadLetters({"message.max.bytes": 16_000_000}, "dlq", clock=FakeClock())
    confirmed: list[int] = []
    letters.publish(_msg(b"y" * 2_000_000), Reason("decode", "DecodeError", "bad"), lambda: confirmed.append(1))
    fake = producer.last
    assert len(fake.queued[0]["value"]) == 2_000_000
    fake.answer(KafkaError.MSG_SIZE_TOO_LARGE)  # the broker: the topic's max.message.bytes
    assert not fake.queued and not confirmed
    letters.poll()
    assert len(fake.queued[0]["value"]) == HEAD_BYTES
    fake.answer()
    assert confirmed == [1] and not letters.failing


def test_a_topic_that_refuses_even_the_head_stalls_with_a_reason(producer: type[FakeProducer]) -> None:
    clock = FakeClock()
    letters = DeadLetters({}, "dlq", clock=clock)
    letters.publish(_msg(b"z" * 500_000), Reason("decode", "E", "m"), lambda: None)
    producer.last.answer(KafkaError.MSG_SIZE_TOO_LARGE)
    letters.poll()
    producer.last.answer(KafkaError.MSG_SIZE_TOO_LARGE)
    assert (letters.failing, letters.halt_reason) == (True, TOO_LARGE)
    assert letters.waiting_retry == 1


def test_other_refusals_never_raise_stall_with_a_reason_and_clear_on_the_next_delivery(
    producer: type[FakeProducer],
) -> None:
    clock = FakeClock()
    letters = DeadLetters({}, "dlq", clock=clock)
    confirmed: list[int] = []
    producer.refuse_with = KafkaError._UNKNOWN_TOPIC  # what librdkafka raises once it knows the topic is missing
    letters.publish(_msg(b"v"), Reason("decode", "E", "m"), lambda: confirmed.append(1))
    assert (letters.failing, letters.halt_reason) == (True, MISSING_TOPIC)
    producer.refuse_with = None
    clock.now += dlq.RETRY_PAUSE_S - 0.1
    letters.poll()
    assert not producer.last.queued  # not before the pause is over
    clock.now += 0.2
    letters.poll()
    producer.last.answer(KafkaError.TOPIC_AUTHORIZATION_FAILED)
    assert (letters.failing, letters.halt_reason) == (True, UNAUTHORIZED)
    clock.now += dlq.RETRY_PAUSE_S
    letters.poll()
    producer.last.answer(KafkaError._MSG_TIMED_OUT)
    assert (letters.failing, letters.halt_reason) == (True, None)  # stalled, but nothing to name
    letters.poll()  # the broker is asked about the topic: it exists, so still nothing to name
    assert (letters.failing, letters.halt_reason) == (True, None)
    clock.now += dlq.RETRY_PAUSE_S
    letters.poll()
    producer.last.answer()
    assert confirmed == [1]
    assert (letters.failing, letters.halt_reason) == (False, None)


def test_a_stall_is_logged_once_per_change_without_the_value(
    producer: type[FakeProducer], caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    letters = DeadLetters({}, "dlq", clock=clock)
    producer.refuse_with = KafkaError.TOPIC_AUTHORIZATION_FAILED
    for _ in range(3):
        letters.publish(_msg(b"secret-value"), Reason("decode", "E", "m"), lambda: None)
    producer.refuse_with = KafkaError.INVALID_RECORD
    letters.publish(_msg(b"secret-value", offset=8), Reason("decode", "E", "m"), lambda: None)
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 2
    assert "dead_letter_unauthorized" in errors[0] and "src[0] stalls at offset 7" in errors[0]
    assert "dead_letter_refused" in errors[1] and "offset 8" in errors[1]
    assert not any("secret-value" in r.getMessage() for r in caplog.records)


def test_a_delivery_timeout_on_a_missing_topic_is_named_after_asking_the_broker(producer: type[FakeProducer]) -> None:
    clock = FakeClock()
    letters = DeadLetters({}, "dlq", clock=clock)
    producer.topic_exists = False
    letters.publish(_msg(b"v"), Reason("decode", "E", "m"), lambda: None)
    producer.last.answer(KafkaError._MSG_TIMED_OUT)  # librdkafka's word while it waits for the metadata
    assert (letters.failing, letters.halt_reason) == (True, None)
    letters.poll()
    assert (letters.failing, letters.halt_reason) == (True, MISSING_TOPIC)


def test_close_stops_the_producer_without_waiting_out_a_letter_the_broker_never_took(
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = native_threads()
    gone = f"127.0.0.1:{free_port()}"  # nothing listens there: the broker is away
    letters = DeadLetters({"bootstrap.servers": gone, "message.timeout.ms": 300_000, "log_level": 0}, "dlq",
                          clock=FakeClock())  # fmt: skip
    confirmed: list[int] = []
    letters.publish(_msg(b"v"), Reason("decode", "E", "m"), lambda: confirmed.append(7))
    assert native_threads() > before
    started = time.monotonic()
    letters.close(0.2)
    # Producer.close alone would wait for the letter up to message.timeout.ms (300 s here).
    assert time.monotonic() - started < 60
    assert native_threads() <= before  # its threads are gone: nothing reconnects to the absent broker any more
    # Given up, not confirmed (its record's offset stays uncommitted) and not reported as a refusal.
    assert confirmed == [] and not letters.failing
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
