"""Log lines an operator can ship: JSON for every line (librdkafka's included) and bounded repetition."""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer

from connector.logs import (
    LIBRDKAFKA_BURST,
    DeadLetterLog,
    JsonFormatter,
    Throttle,
    librdkafka_logger,
    setup_logging,
)
from connector.models import Reason


class Lines(logging.Handler):
    """Formats every record it gets as the JSON handler of ``log_format: json`` would."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    @property
    def docs(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.lines]


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, Lines]]:
    logger = logging.getLogger("test.logs")
    handler = Lines()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield logger, handler
    finally:
        logger.removeHandler(handler)


# ------------------------------------------------------------------------------------ the throttle


def test_the_first_burst_of_a_window_passes_and_the_rest_is_counted_by_tally() -> None:
    throttle: Throttle[str] = Throttle(burst=2, window_s=60)
    passed = [
        throttle.allow("k", t, tally) for t, tally in [(0, "map"), (1, "map"), (2, "api"), (3, "map"), (4, "api")]
    ]
    assert passed == [True, True, False, False, False]
    assert throttle.ended(59.9) == []
    (held,) = throttle.ended(60)
    assert (held.key, dict(held.counts), held.total, held.window_s) == ("k", {"api": 2, "map": 1}, 3, 60)
    assert throttle.ended(120) == [], "a window is reported once"
    assert throttle.allow("k", 130), "a new window opens with the next event"


def test_keys_have_windows_of_their_own_and_a_quiet_window_reports_nothing() -> None:
    throttle: Throttle[str] = Throttle(burst=1, window_s=10)
    assert throttle.allow("a", 0) and throttle.allow("b", 5)
    assert not throttle.allow("a", 6)
    assert [h.key for h in throttle.ended(10)] == ["a"]
    assert throttle.ended(15) == [], "b passed everything: nothing to summarise"


# ------------------------------------------------------------------------------------ JSON lines


def test_a_json_line_carries_the_calls_extra_fields_but_never_replaces_the_base_keys() -> None:
    record = logging.LogRecord("connector.x", logging.WARNING, __file__, 1, "moved %d", (3,), None)
    record.__dict__.update(topic="t", partition=2, level="not this", when=object())
    doc = json.loads(JsonFormatter().format(record))
    assert doc["msg"] == "moved 3" and doc["level"] == "WARNING" and doc["logger"] == "connector.x"
    assert doc["topic"] == "t" and doc["partition"] == 2
    assert isinstance(doc["when"], str), "values JSON cannot hold are written as text"
    assert doc["ts"].endswith("Z") and "T" in doc["ts"]


def test_librdkafka_lines_from_a_real_consumer_become_json_records() -> None:
    """confluent-kafka's ``logger`` property, served by consume(): librdkafka's connection failures
    (a closed loopback port) reach Python logging, and the JSON formatter writes each as one object."""
    logger, _ = librdkafka_logger("test-consumer")
    handler = Lines()
    logger.addHandler(handler)
    consumer = Consumer(
        {"bootstrap.servers": "127.0.0.1:1", "group.id": "test-logs", "logger": logger, "error_cb": lambda _e: None}
    )
    try:
        consumer.subscribe(["t"])
        deadline = time.monotonic() + 10
        while not handler.lines and time.monotonic() < deadline:
            consumer.consume(10, 0.2)
    finally:
        consumer.close()
        logger.removeHandler(handler)
    docs = handler.docs
    assert docs, "librdkafka said nothing through the logger"
    fail = [d for d in docs if d.get("facility") == "FAIL"]
    assert fail and fail[0]["level"] == "ERROR" and fail[0]["logger"] == "librdkafka.test-consumer"
    assert "127.0.0.1:1" in str(fail[0]["msg"]) and "Connection refused" in str(fail[0]["msg"])
    assert str(fail[0]["kafka_client"]).startswith("rdkafka#consumer")


def test_a_repeating_librdkafka_line_is_logged_a_few_times_a_minute_then_summarised() -> None:
    now = [0.0]
    logger, records = librdkafka_logger("test-repeats", clock=lambda: now[0])
    handler = Lines()
    logger.addHandler(handler)
    try:
        for i in range(LIBRDKAFKA_BURST + 7):
            text = f"[thrd:x]: x: Connect to ipv4#127.0.0.1:1 failed: Connection refused (after {i}ms in state CONNECT)"
            logger.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#consumer-1", text)
        logger.log(logging.WARNING, "%s [%s] %s", "OTHER", "rdkafka#consumer-1", "another line")
        assert len(handler.lines) == LIBRDKAFKA_BURST + 1
        now[0] = 61.0
        records.flush(now[0])
    finally:
        logger.removeHandler(handler)
    summary = handler.docs[-1]
    assert summary["repeated"] == 7 and summary["level"] == "ERROR" and summary["facility"] == "FAIL"
    assert str(summary["msg"]).startswith("7 more librdkafka lines like this one in the last 60 s: FAIL")


# ------------------------------------------------------------------------------------ dead letters


def test_dead_letters_are_logged_one_by_one_then_summarised_by_stage(captured: tuple[logging.Logger, Lines]) -> None:
    logger, handler = captured
    dead = DeadLetterLog(burst=2, window_s=60, logger=logger)
    reasons = [
        Reason("decode", "DecodeError", "not valid JSON: unexpected character"),
        Reason("api", "AltcraftRejected", "Altcraft error 400: bad email", api_code=400),
        Reason("map", "MappingError", "missing matching field ['email']"),
        Reason("map", "MappingError", "missing matching field ['email']"),
        Reason("api", "AltcraftRejected", "Altcraft error 400: bad email", api_code=400),
    ]
    for offset, reason in enumerate(reasons):
        dead.record("shop.customers", 3, 100 + offset, reason, now=float(offset))
    first, second = handler.docs
    assert first["level"] == "WARNING"
    assert first["msg"] == "dead letter: shop.customers[3] offset 100, stage decode: DecodeError: not valid JSON: " \
        "unexpected character"  # fmt: skip
    assert {k: first[k] for k in ("topic", "partition", "offset", "stage", "reason")} == {
        "topic": "shop.customers", "partition": 3, "offset": 100, "stage": "decode", "reason": "DecodeError",
    }  # fmt: skip
    assert second["api_code"] == 400 and second["stage"] == "api"
    dead.flush(59.0)
    assert len(handler.lines) == 2, "the summary waits for the end of the minute"
    dead.flush(60.0)
    summary = handler.docs[-1]
    assert summary["msg"] == "3 more dead letters in the last 60 s, not logged one by one; by stage: api 1, map 2"
    assert summary["by_stage"] == {"api": 1, "map": 2} and summary["dead_letters"] == 3
    dead.record("shop.customers", 0, 7, reasons[0], now=61.0)
    assert handler.docs[-1]["offset"] == 7, "a new minute logs one by one again"


def test_a_dead_letter_line_holds_a_bounded_reason_and_never_the_record(captured: tuple[logging.Logger, Lines]) -> None:
    logger, handler = captured
    DeadLetterLog(logger=logger).record("t", 0, 1, Reason("map", "MappingError", "x" * 5000), now=0.0)
    (doc,) = handler.docs
    assert len(str(doc["reason_message"])) == 300
    assert not {"key", "value", "headers"} & doc.keys()


def test_a_python_warning_is_written_as_a_json_line_like_every_other(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # shown, not turned into an error as the test settings do
        try:
            setup_logging("INFO", "json")
            warnings.warn("a library speaks up", RuntimeWarning, stacklevel=1)
        finally:
            logging.captureWarnings(False)
            root.handlers[:], level = saved
            root.setLevel(level)
    lines = capsys.readouterr().err.splitlines()
    docs = [json.loads(line) for line in lines]  # every line is JSON
    assert any(d["logger"] == "py.warnings" and "a library speaks up" in d["msg"] for d in docs), lines
