"""The loop over in-memory fakes: no broker, no thread, no clock (connector.ports).

Each test drives :class:`connector.app.Connector` turn by turn and checks what a user would see:
what reached the API (the sender's jobs, with their Request-IDs), what was committed (offset and
replay metadata), what was dead-lettered, and what the health endpoints and halt gauges say.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import orjson
from prometheus_client import CollectorRegistry

from connector.app import Connector, Parts
from connector.config import Settings
from connector.decode.json_events import decode_plain_json
from connector.errors import TransientError
from connector.metrics import Metrics
from connector.models import ChangeEvent, SendOutcome
from connector.ports import FakeBroker, FakeDeadLetters, FakeSource, ManualExecutor, ScriptedSender, reject
from connector.replay import parse_metadata, request_id
from connector.routing import Route
from connector.senders import Senders
from connector.sink.client import AltcraftClient, SendJob
from connector.sink.halt import BREAKER_REASON, HaltState
from tests.support import FakeClock

TOPIC = "profiles"


def settings(**sections: Any) -> Settings:
    raw: dict[str, Any] = {
        "kafka": {"group_id": "g", "consume_timeout_s": 0.01},
        "altcraft": {"token": "secret-token", "max_in_flight": 4},
        "batching": {"max_items": 3, "linger_s": 0.5},
        "routes": [
            {
                "name": "r",
                "topics": [TOPIC],
                "format": "json",
                "workflow_id": 7,
                "db_id": 7,
                "fields": {"email": "email"},
            }
        ],
        "dead_letter": {"breaker_window": 10, "breaker_max_share": 0.5, "breaker_max_consecutive": 0},
    }
    for key, value in sections.items():
        raw[key] = {**raw[key], **value}
    return Settings.model_validate(raw)


class Bed:
    """One fake broker, one fake API; members join with :meth:`member`."""

    def __init__(self, partitions: int = 1, answer: Callable[[Any], SendOutcome] | None = None, **sections: Any):
        self.clock = FakeClock()
        self.broker = FakeBroker(partitions)
        self.sender = ScriptedSender(answer)
        self.executor = ManualExecutor()
        self.dead = FakeDeadLetters()
        self.settings = settings(**sections)
        self.registry_down = False

    def decoder(self, value: bytes | None) -> ChangeEvent:
        if self.registry_down:
            raise TransientError("the Schema Registry is unreachable")
        return decode_plain_json(value)

    def member(self, sender: Any = None, executor: Any = None) -> Connector:
        route = Route(self.settings.routes[0], self.settings.altcraft.max_body_bytes, self.decoder)
        parts = Parts(
            source=FakeSource(self.broker),
            dead_letters=self.dead,
            senders=Senders(sender or self.sender, executor or self.executor),
            routes={TOPIC: route},
            metrics=Metrics(CollectorRegistry()),
        )
        connector = Connector(self.settings, parts, clock=self.clock, sleep=self.sleep)
        connector.start()
        return connector

    def sleep(self, seconds: float) -> None:
        """The loop waits (a revoke's drain): the senders get on meanwhile."""
        self.executor.run()
        self.clock.advance(seconds)

    def produce(self, n: int, partition: int = 0, start: int = 0, **extra: Any) -> None:
        for i in range(start, start + n):
            row = {"email": f"u{i}@example.com", **extra}
            self.broker.produce(TOPIC, partition, orjson.dumps(row))

    def turns(self, c: Connector, n: int = 1, advance: float = 0.6, send: bool = True) -> None:
        for _ in range(n):
            c.step()
            if send:
                self.executor.run()
            self.clock.advance(advance)

    def emails(self, jobs: list[SendJob] | None = None) -> list[str]:
        return [orjson.loads(item)["data"]["email"] for job in (jobs or self.sender.jobs) for item in job.items]

    def committed(self, partition: int = 0) -> tuple[int, list[tuple[int, int]]]:
        offset, metadata = self.broker.committed[(TOPIC, partition)]
        return offset, parse_metadata(metadata)

    def key(self, first: int, last: int, partition: int = 0) -> str:
        return request_id("g", self.settings.routes[0], TOPIC, partition, first, last)


def source(c: Connector) -> FakeSource:
    src = c._p.source
    assert isinstance(src, FakeSource)
    return src


def gauge(c: Connector, name: str, **labels: str) -> float | None:
    return c.registry.get_sample_value(name, labels)


# ------------------------------------------------------------------------------ the happy path


def test_every_record_is_sent_once_in_order_and_committed_past() -> None:
    bed = Bed(partitions=2)
    bed.produce(7, partition=0)
    bed.produce(4, partition=1, start=100)
    c = bed.member()
    bed.turns(c, 6)
    assert sorted(bed.emails()) == sorted([f"u{i}@example.com" for i in [*range(7), *range(100, 104)]])
    by_partition = [[j.request_id for j in bed.sender.jobs if j.items[0] and j.request_id == bed.key(*r)]
                    for r in [(0, 2), (3, 5)]]  # fmt: skip
    assert all(len(keys) == 1 for keys in by_partition)
    assert bed.committed(0) == (7, []) and bed.committed(1) == (4, [])


def test_a_batch_is_recorded_before_it_is_sent() -> None:
    bed = Bed()
    bed.produce(3)
    c = bed.member()
    c.step()  # the range is committed, asynchronously; nothing goes to a sender before the answer
    assert bed.committed() == (0, [(0, 2)])
    assert bed.executor.waiting == 0
    c.step()  # the commit's answer (served inside consume) hands the batch to a sender
    assert bed.executor.waiting == 1 and not bed.sender.jobs
    bed.executor.run()
    bed.turns(c, 3)
    assert bed.emails() == ["u0@example.com", "u1@example.com", "u2@example.com"]
    assert bed.committed() == (3, [])


def test_one_commit_records_every_batch_a_turn_sends() -> None:
    bed = Bed(partitions=2)
    bed.produce(6, partition=0)
    bed.produce(3, partition=1, start=10)
    c = bed.member()
    c.step()
    assert bed.broker.commits[0] == {(TOPIC, 0): (0, "akc1:0-2;3-5"), (TOPIC, 1): (0, "akc1:0-2")}
    assert bed.executor.waiting == 0


def test_a_batch_recorded_ahead_goes_out_in_the_turn_a_request_ends() -> None:
    bed = Bed(altcraft={"max_in_flight": 1})
    bed.produce(6)
    c = bed.member()
    c.step()  # 0-2 recorded
    c.step()  # that commit answered: 0-2 goes; 3-5 is recorded ahead while it is out
    assert bed.executor.waiting == 1
    assert bed.committed() == (0, [(0, 2), (3, 5)])
    c.step()  # 3-5's commit answered; the only request is taken
    assert bed.executor.waiting == 1
    bed.executor.run()  # 0-2 answered
    assert [j.request_id for j in bed.sender.jobs] == [bed.key(0, 2)]
    commits = len(bed.broker.commits)
    c.step()  # 3-5 goes in this very turn: no commit to wait for
    assert bed.executor.waiting == 1 and len(bed.broker.commits) <= commits + 1  # at most the progress commit
    bed.executor.run()
    assert [j.request_id for j in bed.sender.jobs] == [bed.key(0, 2), bed.key(3, 5)]
    bed.turns(c, 3)
    assert bed.emails() == [f"u{i}@example.com" for i in range(6)]
    assert bed.committed() == (6, [])


def test_nothing_is_sent_while_the_recording_commit_fails() -> None:
    bed = Bed()
    bed.produce(3)
    bed.broker.fail_commits = 1
    c = bed.member()
    bed.turns(c, 2, advance=0.1)  # the commit's answer: failed
    assert not bed.sender.jobs and bed.executor.waiting == 0
    bed.turns(c, 6)
    assert bed.emails() == ["u0@example.com", "u1@example.com", "u2@example.com"]
    assert bed.committed() == (3, [])


# ------------------------------------------------------------------------------ replay after a crash


def test_a_crash_with_requests_in_flight_replays_the_same_ranges_under_the_same_keys() -> None:
    bed = Bed(batching={"linger_s": 5.0})
    bed.produce(8)
    first = bed.member()
    first.step()  # 0-2 and 3-5 recorded in one commit
    first.step()  # and handed to two senders
    assert bed.executor.run(1) == 1  # 0-2 answered; 3-5 still in flight...
    bed.turns(first, 3, send=False, advance=0.3)
    assert bed.committed() == (3, [(3, 5)])
    # ...when the process dies: its request may or may not have reached Altcraft.
    lost = bed.executor.waiting
    bed.executor.shutdown(cancel_futures=True)
    bed.broker.members.clear()
    assert lost == 1
    sent_before = [j.request_id for j in bed.sender.jobs]
    second = bed.member(executor=ManualExecutor())
    bed.executor = second._p.senders._executor  # type: ignore[attr-defined,assignment]
    bed.turns(second, 6, advance=2.0)
    after = [j.request_id for j in bed.sender.jobs[len(sent_before) :]]
    # The recorded range is cut again exactly, under its key; what follows is batched afresh.
    assert after[0] == bed.key(3, 5)
    assert sent_before == [bed.key(0, 2)]
    assert bed.emails(bed.sender.jobs[len(sent_before) :]) == [f"u{i}@example.com" for i in range(3, 8)]
    assert bed.committed() == (8, [])


def test_a_replayed_range_is_cut_exactly_whatever_the_new_batch_size() -> None:
    bed = Bed()
    bed.produce(10)
    bed.broker.committed[(TOPIC, 0)] = (2, "akc1:2-8")  # left by a member with max_items 7
    c = bed.member()
    bed.turns(c, 8)
    keys = [j.request_id for j in bed.sender.jobs]
    assert keys[0] == bed.key(2, 8) and len(bed.sender.jobs[0].items) == 7
    assert bed.emails() == [f"u{i}@example.com" for i in range(2, 10)]


def test_shutdown_with_a_half_read_replayed_range_leaves_it_for_the_next_owner() -> None:
    bed = Bed()
    bed.produce(4)  # the range recorded below runs to offset 5: its last records are not written yet
    bed.broker.committed[(TOPIC, 0)] = (0, "akc1:0-5")
    c = bed.member()
    bed.turns(c, 2)
    assert not bed.sender.jobs  # a recorded range is sent only whole
    c.request_stop()
    assert c.shutdown() == 0
    assert not bed.sender.jobs
    assert bed.broker.committed[(TOPIC, 0)] == (0, "akc1:0-5")  # replayed whole, under its key, next time
    bed.produce(2, start=4)
    nxt = bed.member()
    bed.turns(nxt, 4)
    assert [j.request_id for j in bed.sender.jobs] == [bed.key(0, 5)]
    assert bed.committed() == (6, [])


# ------------------------------------------------------------------------------ rebalances


def test_a_revoked_partition_finishes_its_request_commits_and_lets_go() -> None:
    bed = Bed(partitions=2)
    bed.produce(3, partition=0)
    bed.produce(3, partition=1, start=10)
    one = bed.member()
    bed.turns(one, 2, send=False)  # both partitions' batches in flight
    assert bed.executor.waiting == 2
    two = bed.member(executor=bed.executor)
    bed.broker.rebalance([(TOPIC, 1)], to=source(two))
    one.step()  # the revoke drains: the in-flight request ends, its offset is committed, then let go
    assert (TOPIC, 1) not in one.partitions
    assert bed.committed(1) == (3, [])
    bed.produce(2, partition=1, start=13)
    bed.turns(two, 5)
    bed.turns(one, 3)
    assert sorted(bed.emails()) == sorted(f"u{i}@example.com" for i in [0, 1, 2, 10, 11, 12, 13, 14])
    assert len(bed.emails()) == 8  # nobody twice


def test_a_revoke_sends_what_was_being_recorded_and_what_was_still_open() -> None:
    bed = Bed(partitions=2, batching={"linger_s": 30.0}, altcraft={"max_in_flight": 1})
    bed.produce(4, partition=1, start=10)  # 10-12 sealed and being recorded; 13 open
    one = bed.member()
    one.step()
    assert bed.executor.waiting == 0 and source(one).assignment == {(TOPIC, 0), (TOPIC, 1)}
    two = bed.member(executor=bed.executor)
    bed.broker.rebalance([(TOPIC, 1)], to=source(two))
    one.step()  # the revoke: both batches recorded synchronously, sent, answered, committed, let go
    assert sorted(bed.emails()) == [f"u{i}@example.com" for i in range(10, 14)]
    assert bed.committed(1) == (4, [])
    bed.turns(two, 3)
    assert len(bed.emails()) == 4  # the new owner starts past them


def test_a_lost_partition_commits_nothing_and_its_new_owner_replays_the_recorded_range() -> None:
    bed = Bed()
    bed.produce(3)
    one = bed.member()
    bed.turns(one, 2, send=False)  # recorded, in flight
    assert bed.executor.waiting == 1
    bed.broker.lose(source(one), [(TOPIC, 0)])
    one.step()
    assert not one.partitions
    bed.executor.run()  # the old request ends after all: its answer is ignored
    one.step()
    assert bed.committed() == (0, [(0, 2)])
    two = bed.member()
    bed.broker.rebalance([(TOPIC, 0)], to=source(two))
    bed.turns(two, 4)
    assert [j.request_id for j in bed.sender.jobs] == [bed.key(0, 2)] * 2  # the same key: deduplicated
    assert bed.committed() == (3, [])


# ------------------------------------------------------------------------------ faults of the moment


def test_a_transient_decode_fault_holds_the_partition_and_reads_the_record_again() -> None:
    bed = Bed(partitions=2)
    bed.produce(3, partition=0)
    bed.produce(3, partition=1, start=10)
    bed.registry_down = True
    c = bed.member()
    c.step()
    assert not bed.dead.letters and not bed.sender.jobs
    assert source(c).paused == {(TOPIC, 0), (TOPIC, 1)}
    bed.registry_down = False
    bed.clock.advance(1.0)
    c.step()
    assert not bed.sender.jobs  # still held (2 s)
    bed.clock.advance(1.5)
    bed.turns(c, 5)
    assert sorted(bed.emails()) == sorted(f"u{i}@example.com" for i in [0, 1, 2, 10, 11, 12])
    assert not bed.dead.letters


def test_a_sender_fault_resends_the_batch_with_the_same_key_after_a_pause() -> None:
    calls: list[str] = []

    def flaky(job: Any) -> SendOutcome:
        calls.append(job.request_id)
        if len(calls) == 1:
            raise RuntimeError("a bug in the sender")
        return SendOutcome(len(job.items), (), job.request_id, 1, 0)

    bed = Bed(answer=flaky)
    bed.produce(3)
    c = bed.member()
    bed.turns(c, 4, advance=1.0)
    assert len(calls) == 1  # paused 5 s after the fault
    bed.turns(c, 6, advance=1.0)
    assert calls == [bed.key(0, 2)] * 2
    assert bed.committed() == (3, [])


# ------------------------------------------------------------------------------ dead letters


def test_rejected_items_are_dead_lettered_and_the_offset_waits_for_their_confirmation() -> None:
    bed = Bed(answer=reject([1]))
    bed.produce(3)
    bed.dead.refusing = "dead_letter_missing_topic"
    c = bed.member()
    bed.turns(c, 3)
    assert bed.committed() == (0, [(0, 2)])  # answered, but its dead letter is not confirmed
    assert c.health.ready()[0] is False
    assert gauge(c, "altcraft_connector_halted", reason="dead_letter_missing_topic") == 1
    bed.dead.refusing = None
    bed.turns(c, 2)
    assert [(m.offset(), r.stage) for m, r in bed.dead.letters] == [(1, "api")]
    assert bed.committed() == (3, [])
    assert gauge(c, "altcraft_connector_halted", reason="dead_letter_missing_topic") == 0


def test_the_breaker_halts_when_most_records_are_dead_lettered() -> None:
    bed = Bed()
    for i in range(12):
        bed.broker.produce(TOPIC, 0, b"not json" if i % 4 else orjson.dumps({"email": f"u{i}@example.com"}))
    c = bed.member()
    bed.turns(c, 4)
    assert BREAKER_REASON in c.halt.reasons()
    assert gauge(c, "altcraft_connector_halted", reason=BREAKER_REASON) == 1
    assert c.health.ready()[0] is False
    sent = len(bed.sender.jobs)
    bed.produce(6, start=100)
    bed.turns(c, 4)
    assert len(bed.sender.jobs) == sent  # halted: nothing new goes out
    assert source(c).paused == {(TOPIC, 0)}


# ------------------------------------------------------------------------------ halts and readiness


def test_readiness_does_not_flap_while_a_token_is_refused_between_server_errors() -> None:
    """A real AltcraftClient in a real sender thread, answered 401, 503, 401, 503, ... then 200: the
    halt holds through the 503s (which alone would be retried) and ends only on the accepted answer."""
    script = [401, 503, 401, 503, 503, 401, 200]
    gate, arrived = threading.Semaphore(0), threading.Semaphore(0)
    seen: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        arrived.release()
        gate.acquire()
        status = script[len(seen)]
        seen.append(status)
        if status == 200:
            n = len(orjson.loads(request.content)["data"])
            return httpx.Response(200, json={"error": 0, "result": [{"profile_id": "p"}] * n})
        error = {401: "API token required", 503: "Service unavailable"}[status]
        return httpx.Response(status, json={"error": 500 if status == 503 else 401, "error_text": error})

    bed = Bed()
    bed.produce(3)
    client = AltcraftClient(bed.settings.altcraft, "secret-token", Metrics(CollectorRegistry()), HaltState(),
                            transport=httpx.MockTransport(handler), wait=lambda ev, s: ev.is_set())  # fmt: skip
    pool = ThreadPoolExecutor(1)
    c = bed.member(sender=client, executor=pool)
    client._halt = client._tls._halt = c.halt  # the loop's halt state, as compose.build wires it
    readiness: list[bool] = []
    try:
        c.step()  # recorded...
        c.step()  # ...and handed to the sender thread
        assert arrived.acquire(timeout=10)
        for status in script[:-1]:
            gate.release()  # answer this request...
            assert arrived.acquire(timeout=10)  # ...which the sender has acted on when it sends the next
            bed.clock.advance(0.1)
            c.step()
            readiness.append(c.health.ready()[0])
            assert seen[-1] == status
        gate.release()
        for _ in range(1000):
            bed.clock.advance(0.1)
            c.step()
            if bed.broker.committed[(TOPIC, 0)][0] == 3:
                break
            threading.Event().wait(0.01)
    finally:
        gate.release()
        pool.shutdown(wait=True)
    assert seen == script
    # Not ready from the first 401 until the accepted answer, whatever came between.
    assert readiness == [False] * (len(script) - 1)
    assert c.health.ready()[0] is True
    assert gauge(c, "altcraft_connector_halted", reason="unauthorized") == 0
    assert bed.committed() == (3, [])
