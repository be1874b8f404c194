"""TransactionalDeadLetters over a scripted producer: what a refused transaction leaves behind, letters
cut for their size, halts; and the stage's rules (connector.transactions). On a real broker: the
transactional sink's contract (tests/integration/test_ports_contract.py) and the end-to-end tests."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from connector import transactions
from connector.dlq import MISSING_TOPIC, TOO_LARGE, TRUNCATED_HEADER
from connector.models import Reason
from connector.ports import FakeRecord
from connector.source.consumer import CommitFailed
from connector.transactions import Stage, Staged, TransactionalDeadLetters
from tests.broker.kafka import free_port
from tests.support import native_threads

TP = ("profiles", 0)
REASON = Reason("decode", "DecodeError", "not JSON")


def record(offset: int, value: bytes = b"{bad", partition: int = 0) -> FakeRecord:
    return FakeRecord("profiles", partition, offset, value)


def error(code: int, *, abortable: bool = False, fatal: bool = False, retriable: bool = False) -> KafkaException:
    return KafkaException(KafkaError(code, "scripted", fatal=fatal, retriable=retriable, txn_requires_abort=abortable))


class Producer:
    """A transactional producer's calls, scripted: ``fail[call]`` raises once; delivery reports fail as
    ``deliveries`` says; what a committed transaction wrote is in ``written``."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.fail: dict[str, list[KafkaException]] = {}
        self.refuse_size_over = 0  # produce() refuses values longer than this (0: never)
        self.deliveries: list[KafkaError] = []  # delivery errors of the next commit, one per letter
        self.topic_exists = True
        self.block = threading.Event()
        self.block.set()
        self.pending: list[tuple[bytes | None, Any, Any]] = []
        self.written: list[tuple[bytes | None, dict[str, bytes]]] = []
        self.offsets: list[list[Any]] = []
        self.calls: list[str] = []

    def _maybe_fail(self, call: str) -> None:
        self.calls.append(call)
        if self.fail.get(call):
            raise self.fail[call].pop(0)

    def init_transactions(self, timeout: float) -> None:
        self._maybe_fail("init")

    def begin_transaction(self) -> None:
        self._maybe_fail("begin")
        self.pending = []

    def produce(self, topic: str, value: bytes | None = None, key: Any = None, headers: Any = None,
                timestamp: int = 0, on_delivery: Any = None) -> None:  # fmt: skip
        if self.refuse_size_over and value is not None and len(value) > self.refuse_size_over:
            raise error(KafkaError.MSG_SIZE_TOO_LARGE)
        self.pending.append((value, headers, on_delivery))

    def poll(self, timeout: float = 0) -> int:
        return 0

    def send_offsets_to_transaction(self, offsets: list[Any], group: Any, timeout: float) -> None:
        self.block.wait(10)
        self._maybe_fail("send_offsets")
        self.offsets.append(offsets)

    def commit_transaction(self, timeout: float) -> None:
        for i, (_, _, report) in enumerate(self.pending):
            if i < len(self.deliveries) and report is not None:
                report(self.deliveries[i], None)
        if self.deliveries:
            self.deliveries = []
            raise error(KafkaError._MSG_TIMED_OUT, abortable=True)
        self._maybe_fail("commit")
        self.written += [(v, dict(h)) for v, h, _ in self.pending]
        self.pending = []

    def abort_transaction(self, timeout: float) -> None:
        self.calls.append("abort")
        self.pending = []

    def flush(self, timeout: float = 0) -> int:
        return 0

    def list_topics(self, topic: str, timeout: float) -> Any:
        class Meta:
            topics = {topic: type("T", (), {"error": None})()} if self.topic_exists else {}

        return Meta()


@pytest.fixture
def sink(monkeypatch: pytest.MonkeyPatch) -> TransactionalDeadLetters:
    monkeypatch.setattr(transactions, "Producer", Producer)
    s = TransactionalDeadLetters({}, "dlq", "test-id")
    yield s
    s.close()


def producer(s: TransactionalDeadLetters) -> Producer:
    p = s._producer
    assert isinstance(p, Producer)
    return p


def wait_answer(s: TransactionalDeadLetters, answers: list[Exception | None]) -> None:
    for _ in range(1000):
        s.poll()
        if answers:
            return
        threading.Event().wait(0.005)
    raise AssertionError("no answer")


# ------------------------------------------------------------------------------------------ the stage


def test_the_stage_hands_out_letters_below_each_offset_in_offset_order_and_takes_back_refused_ones() -> None:
    stage = Stage()
    for off in (5, 2, 9):
        stage.add(TP, Staged(off, None, REASON))
    stage.add(("profiles", 1), Staged(1, None, REASON))
    taken = stage.take({TP: 6})
    assert [(tp, s.offset) for tp, s in taken] == [(TP, 2), (TP, 5)]
    assert len(stage) == 2
    stage.put_back(taken)
    assert [s.offset for _, s in stage.take({TP: 100})] == [2, 5, 9]
    assert stage.forget(("profiles", 1)) == 1 and len(stage) == 0


# ------------------------------------------------------------------------------------------ the sink


def test_a_letter_is_written_only_by_the_transaction_that_passes_its_record(sink: TransactionalDeadLetters) -> None:
    done: list[int] = []
    sink.publish(record(3), REASON, lambda: done.append(3))
    assert done == [3]  # staged: its offset may pass it
    sink.commit({TP: 3}, {TP: "akc1:0-2"}, "group")
    assert producer(sink).written == []
    sink.commit({TP: 4}, {TP: "akc1:"}, "group")
    [(value, headers)] = producer(sink).written
    assert value == b"{bad" and headers["__connect.errors.offset"] == b"3"
    assert [(o[0].offset, o[0].metadata) for o in producer(sink).offsets] == [(3, "akc1:0-2"), (4, "akc1:")]
    assert producer(sink).config["transactional.id"] == "test-id"


def test_a_refused_transaction_is_aborted_and_its_letters_go_with_the_next(sink: TransactionalDeadLetters) -> None:
    sink.publish(record(0), REASON, lambda: None)
    producer(sink).fail["send_offsets"] = [error(KafkaError.ILLEGAL_GENERATION, abortable=True)]
    with pytest.raises(CommitFailed, match="ILLEGAL_GENERATION"):
        sink.commit({TP: 1}, {}, "stale")
    assert "abort" in producer(sink).calls and producer(sink).written == []
    assert sink.failing and sink.staged == 1 and sink.halt_reason is None
    sink.commit({TP: 1}, {}, "fresh")
    assert len(producer(sink).written) == 1 and not sink.failing and sink.staged == 0


def test_a_partition_let_go_while_its_transaction_runs_gets_no_letter_back(sink: TransactionalDeadLetters) -> None:
    sink.publish(record(0), REASON, lambda: None)
    p = producer(sink)
    p.block.clear()
    p.fail["send_offsets"] = [error(KafkaError.ILLEGAL_GENERATION, abortable=True)]
    answers: list[Exception | None] = []
    sink.commit({TP: 1}, {}, "group", answers.append)
    assert sink.busy
    sink.forget(TP)  # lost meanwhile: the next owner writes its letters
    p.block.set()
    wait_answer(sink, answers)
    assert isinstance(answers[0], CommitFailed)
    assert sink.staged == 0, "a letter put back for a partition let go would be written twice if it came back"


def test_a_letter_too_large_is_written_as_its_head_in_the_same_transaction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transactions, "Producer", Producer)
    sink = TransactionalDeadLetters({"message.max.bytes": 3000}, "dlq", "test-id")
    producer(sink).refuse_size_over = 3000
    sink.publish(record(0, value=b"x" * 5000), REASON, lambda: None)
    sink.commit({TP: 1}, {}, "group")
    [(value, headers)] = producer(sink).written
    assert value is not None and 0 < len(value) < 3000 and value == b"x" * len(value)
    assert headers[TRUNCATED_HEADER] == b"true" and headers["altcraft.dead_letter.original_size"] == b"5000"
    sink.close()


def test_a_delivery_that_times_out_on_a_missing_topic_names_the_halt(sink: TransactionalDeadLetters) -> None:
    sink.publish(record(0), REASON, lambda: None)
    p = producer(sink)
    p.deliveries = [KafkaError(KafkaError._MSG_TIMED_OUT)]
    p.topic_exists = False
    with pytest.raises(CommitFailed):
        sink.commit({TP: 1}, {}, "group")
    assert sink.halt_reason == MISSING_TOPIC and sink.failing and sink.staged == 1
    p.topic_exists = True
    sink.commit({TP: 1}, {}, "group")
    assert sink.halt_reason is None and not sink.failing and len(p.written) == 1


def test_a_refused_authorization_halts(sink: TransactionalDeadLetters) -> None:
    sink.publish(record(0), REASON, lambda: None)
    producer(sink).fail["init"] = [error(KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED)]
    with pytest.raises(CommitFailed):
        sink.commit({TP: 1}, {}, "group")
    assert sink.halt_reason == "dead_letter_unauthorized" and sink.staged == 1
    sink.commit({TP: 1}, {}, "group")  # granted meanwhile
    assert sink.halt_reason is None and len(producer(sink).written) == 1


def test_a_fatal_producer_error_halts(sink: TransactionalDeadLetters) -> None:
    sink.publish(record(0), REASON, lambda: None)
    producer(sink).fail["commit"] = [error(KafkaError._FENCED, fatal=True)]
    with pytest.raises(CommitFailed):
        sink.commit({TP: 1}, {}, "group")
    assert sink.halt_reason == "dead_letter_fatal" and sink.staged == 1


def test_a_letter_refused_for_size_even_cut_is_a_halt_of_its_own(sink: TransactionalDeadLetters) -> None:
    sink.publish(record(0), REASON, lambda: None)
    p = producer(sink)
    p.deliveries = [KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)]
    with pytest.raises(CommitFailed):
        sink.commit({TP: 1}, {}, "group")
    assert sink.staged == 1 and sink.halt_reason is None  # cut next time
    p.deliveries = [KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)]
    with pytest.raises(CommitFailed):
        sink.commit({TP: 1}, {}, "group")
    assert sink.halt_reason == TOO_LARGE


def test_a_transaction_stuck_inside_the_client_is_given_up_and_a_new_producer_takes_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(transactions, "Producer", Producer)
    now = [0.0]
    sink = TransactionalDeadLetters({}, "dlq", "test-id", clock=lambda: now[0])
    stuck = producer(sink)
    stuck.block.clear()  # send_offsets_to_transaction hangs (for 10 s in this script)
    sink.publish(record(0), REASON, lambda: None)
    answers: list[Exception | None] = []
    sink.commit({TP: 1}, {}, "group", answers.append)
    sink.poll()
    assert answers == [] and sink.busy
    now[0] += transactions.STUCK_S + 1
    sink.poll()
    assert isinstance(answers[0], CommitFailed) and not sink.busy and sink.staged == 1
    fresh = producer(sink)
    assert fresh is not stuck and fresh.config["transactional.id"] == "test-id"
    sink.commit({TP: 1}, {}, "group")  # on the new producer, which initialises itself first
    assert len(fresh.written) == 1 and fresh.calls[0] == "init" and stuck.written == []
    stuck.block.set()
    sink.close()


def test_after_the_group_is_lost_the_next_transaction_starts_on_a_new_producer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transactions, "Producer", Producer)
    sink = TransactionalDeadLetters({}, "dlq", "test-id")
    first = producer(sink)
    sink.commit({TP: 1}, {}, "group")
    assert first.calls[0] == "init"
    sink.lost()  # the broker was away longer than the session
    sink.publish(record(1), REASON, lambda: None)
    sink.commit({TP: 2}, {}, "group")
    fresh = producer(sink)
    assert fresh is not first and fresh.config["transactional.id"] == "test-id"
    assert fresh.calls[0] == "init" and len(fresh.written) == 1  # its init fences the producer that lived through it
    sink.close()


def test_close_stops_the_producer_and_its_threads_when_no_transaction_is_under_way() -> None:
    before = native_threads()
    gone = f"127.0.0.1:{free_port()}"  # nothing listens there
    sink = TransactionalDeadLetters({"bootstrap.servers": gone, "log_level": 0}, "dlq", "close-test")
    assert native_threads() > before
    sink.close()
    assert native_threads() <= before  # nothing keeps reconnecting to a broker that has gone
