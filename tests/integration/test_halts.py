"""Configuration faults halt, data faults are dead-lettered: the real broker, the connector as a process,
the emulator refusing a matching mode or a batch for one bad item. The test bed and the final checks
are those of ``test_faults.py``."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from connector.demo_data import Event, generate
from tests.integration import test_faults as faults
from tests.support import wait_until

make_bed = faults.make_bed  # the fixture

pytestmark = pytest.mark.timeout(150)


def bound(n: int, k: int) -> int:
    """Requests to isolate k bad items among n by bisection (or to see a request refused whatever it holds)."""
    return 2 * k * math.ceil(math.log2(max(n, 2))) + 1


def by_batch(log: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The request log by batch: a batch's parts carry keys derived from its own (``<key>.1of2`` ...)."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in log:
        if r["request_id"]:
            out[r["request_id"].split(".")[0]].append(r)
    return out


def test_a_refused_matching_mode_halts_request_refused_dead_letters_nothing_and_resumes(
    make_bed: Callable[..., faults.Bed],
) -> None:
    bed = make_bed(4_000, 4, invalid_share=0.0, seed=61)
    bed.emu.set_faults(refuse_matching=["email"])
    proc = bed.process(bed.settings(max_items=1000, linger_s=0.5, max_in_flight=4))
    proc.start()
    wait_until(lambda: proc.metric_sum("altcraft_connector_halted", reason="request_refused") == 1, 30, "the halt")
    assert faults.readyz(proc) == 503
    time.sleep(2)  # halted: nothing moves
    assert faults.readyz(proc) == 503
    assert bed.dead_letter_count() == 0, "a configuration fault was dead-lettered"
    assert bed.emu.stats()["items_accepted"] == 0
    # Each batch halted within the bound: its requests before the first probe (its own key again).
    refused = by_batch(bed.emu.requests())
    assert refused
    for root, requests in refused.items():
        n = requests[0]["items"]
        probes = [i for i, r in enumerate(requests) if i > 0 and r["request_id"] == root]
        before_halt = probes[0] if probes else len(requests)
        assert before_halt <= bound(n, 1), (root, n, before_halt)
        assert all((r["http_status"], r["error"]) == (400, 400) for r in requests)
    messages = faults.log_messages(proc)
    assert any("request_refused" in m and "matching 'email' is not available for this account" in m
               for m in messages)  # fmt: skip
    # The cause is removed: the next probe (every 15 s) is accepted and everything flows.
    bed.emu.set_faults(refuse_matching=None)
    wait_until(lambda: faults.readyz(proc) == 200, faults.HALT_PROBE_S + 10, "readiness after the fix")
    bed.assert_delivered([proc], timeout=60)
    bed.assert_metrics_match_emulator(proc)
    assert proc.metric_sum("altcraft_connector_halted", reason="request_refused") == 0
    assert bed.dead_letter_count() == 0
    assert proc.metric_sum("altcraft_connector_requests_total", outcome="halt") == 0  # resumed on the first probe


def test_strict_mode_one_bad_item_in_1000_is_the_only_dead_letter_within_the_bound(
    make_bed: Callable[..., faults.Bed],
) -> None:
    bed = make_bed(0, 1, invalid_share=0.0, seed=62)
    stream = generate(1_000, 1, invalid_share=0.0, seed=62)
    bad = next(i for i, e in enumerate(stream.events) if i >= 537 and e.expect == "engage")
    event = stream.events[bad]
    value = orjson.loads(event.value or b"")
    value["after"]["phone"] = "8 (900) 12-34"
    stream.events[bad] = Event(event.key, orjson.dumps(value), event.partition, "dead:api", "bad_phone", event.email)
    assert event.email is not None
    stream.engagements[event.email] -= 1
    if stream.engagements[event.email] == 0:
        del stream.engagements[event.email]
    stream.outcomes["engage"] -= 1
    stream.outcomes["dead:api"] += 1
    bed.stream = stream
    records = [{"value": e.value, "key": e.key, "partition": e.partition} for e in stream.events]
    bed.positions = list(bed.kafka.produce(bed.topic, records))
    bed.emu.set_faults(strict=True)
    proc = bed.process(bed.settings(max_items=1000, linger_s=1.0))
    proc.start()
    bed.assert_delivered([proc], timeout=60)
    bed.assert_metrics_match_emulator(proc)
    dead = bed.dead_letters()
    assert list(dead) == [bed.positions[bad]]
    headers = dead[bed.positions[bad]]
    assert (headers["__connect.errors.stage"], headers["altcraft.error.code"]) == ("api", "400")
    batches = by_batch(bed.emu.requests())
    refused = {root: reqs for root, reqs in batches.items() if any(r["error"] == 400 for r in reqs)}
    assert len(refused) == 1
    (requests,) = refused.values()
    assert len(requests) <= bound(requests[0]["items"], 1), (len(requests), requests[0]["items"])
    assert all(len(reqs) == 1 for root, reqs in batches.items() if root not in refused)
    assert proc.metric_sum("altcraft_connector_halted", reason="request_refused") == 0
