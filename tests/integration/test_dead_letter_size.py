"""Dead letters larger than Kafka takes: written as their head, and the pipeline goes on.

The real broker and the connector as a process. The source topic holds records up to 16 MB (a consumer
reads them fine); the dead-letter topic and the connector's producer keep their defaults (about 1 MB),
unless a test says otherwise.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from connector.demo_data import Event, generate
from connector.dlq import HEAD_BYTES, ORIGINAL_SIZE_HEADER, TRUNCATED_HEADER
from connector.emulator.config import EmulatorConfig
from connector.emulator.server import Emulator
from tests.integration.test_faults import DB, TOKEN, WORKFLOW, Bed
from tests.support import header_map, wait_until

pytestmark = pytest.mark.timeout(150)

BIG_TOPIC_BYTES = 16_000_000


def _too_large_event(cid: int) -> bytes:
    """A valid Debezium event whose profile item alone exceeds the 10 MB request body limit."""
    row = {"id": cid, "email": f"huge{cid}@example.com", "first_name": "Big", "city": "C" * 12_000_000}
    return orjson.dumps({"before": None, "after": row, "op": "c", "ts_ms": 1, "source": {"table": "customers"}})


@pytest.fixture
def big_bed(kafka: Any, tmp_path: Path, free_port: Callable[[], int]) -> Iterator[Callable[[list[Event]], Bed]]:
    """``big_bed(big_events)``: a stream of small events with ``big_events`` in its middle, on a topic that
    takes 16 MB records; the emulator and the connector processes are stopped at the end."""
    started: list[tuple[Emulator, Bed]] = []

    def make(big: list[Event]) -> Bed:
        emu = Emulator(EmulatorConfig(tokens=[TOKEN], workflows=[WORKFLOW], dbs=[DB], seed=61))
        emu.start()
        topic = kafka.new_topic(2, config={"max.message.bytes": str(BIG_TOPIC_BYTES)})
        stream = generate(600, 2, invalid_share=0.02, seed=61)
        half = len(stream.events) // 2
        small = [{"value": e.value, "key": e.key, "partition": e.partition} for e in stream.events]
        positions = kafka.produce(topic, small[:half])
        positions += _produce_big(kafka, topic, big)
        positions += kafka.produce(topic, small[half:])
        stream.events[half:half] = big
        for e in big:
            stream.outcomes[e.expect] += 1
        bed = Bed(kafka, emu, tmp_path, free_port, topic, kafka.new_topic(1, prefix="dlq"), f"g-{topic}", stream,
                  positions, 2)  # fmt: skip
        started.append((emu, bed))
        return bed

    try:
        yield make
    finally:
        for emu, bed in started:
            for proc in bed.procs:
                proc.stop()
            emu.stop()


def _produce_big(kafka: Any, topic: str, events: list[Event]) -> list[tuple[int, int]]:
    producer = Producer(kafka.config({"message.max.bytes": BIG_TOPIC_BYTES + 100_000, "acks": "all"}))
    out: list[tuple[int, int]] = []
    errors: list[str] = []

    def delivered(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            out.append((msg.partition(), msg.offset()))

    for e in events:  # one at a time, so that the positions come back in order
        producer.produce(topic, value=e.value, key=e.key, partition=e.partition, on_delivery=delivered)
        assert producer.flush(60) == 0
    assert not errors, errors
    return out


def _check_cut_letters(bed: Bed, big: list[Event], positions: list[tuple[int, int]]) -> None:
    by_pos = {(int(h["__connect.errors.partition"]), int(h["__connect.errors.offset"])): m
              for m in bed.kafka.read_all(bed.dlq) for h in [header_map(m)]}  # fmt: skip
    for event, pos in zip(big, positions, strict=True):
        msg = by_pos[pos]
        h = header_map(msg)
        assert h[TRUNCATED_HEADER] == "true"
        assert h[ORIGINAL_SIZE_HEADER] == str(len(event.value or b""))
        assert h["__connect.errors.stage"] == event.expect.split(":", 1)[1]
        assert msg.value() == (event.value or b"")[:HEAD_BYTES]
        assert msg.key() == event.key
    whole = [m for m in by_pos.values() if TRUNCATED_HEADER not in header_map(m)]
    assert len(whole) == len(by_pos) - len(big), "small dead letters must be written whole"


def test_dead_letters_of_2_mb_and_12_mb_are_written_as_their_head_with_default_limits(
    big_bed: Callable[[list[Event]], Bed],
) -> None:
    big = [
        Event(b'{"id": 900001}', b"\xff" + os.urandom(2_000_000), 0, "dead:decode", "bad_json", None),
        Event(b'{"id": 900002}', _too_large_event(900002), 1, "dead:size", "valid", "huge900002@example.com"),
    ]
    bed = big_bed(big)
    proc = bed.process(bed.settings())
    proc.start()
    bed.assert_delivered([proc], timeout=90)  # engagements, dead letters by stage, committed == end offsets
    positions = [bed.positions[bed.stream.events.index(e)] for e in big]
    _check_cut_letters(bed, big, positions)
    wait_until(lambda: proc.metric_sum("altcraft_connector_records_dead_lettered_total", stage="size") == 1, 20,
               "the size dead letter in the metrics")  # fmt: skip
    assert proc.metric_sum("altcraft_connector_dead_letter_stalled") == 0
    assert proc.alive() and proc.runs == 1


def test_a_dead_letter_the_topic_refuses_for_its_size_is_written_again_as_its_head(
    big_bed: Callable[[list[Event]], Bed],
) -> None:
    # The producer takes 16 MB records; the dead-letter topic keeps its default limit (about 1 MB), so the
    # broker refuses the whole record in its delivery report.
    big = [Event(b'{"id": 900003}', b"\xfe" + os.urandom(2_000_000), 1, "dead:decode", "bad_json", None)]
    bed = big_bed(big)
    settings = bed.settings()
    settings["kafka"]["producer"] = {"message.max.bytes": BIG_TOPIC_BYTES}
    proc = bed.process(settings, name=f"connector-{uuid.uuid4().hex[:6]}")
    proc.start()
    bed.assert_delivered([proc], timeout=90)
    _check_cut_letters(bed, big, [bed.positions[bed.stream.events.index(big[0])]])
    assert proc.alive() and proc.runs == 1
