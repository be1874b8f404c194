"""SIGTERM in the states where nothing can be finished: the process exits 0 within one drain budget.

The pod's grace period is sized on ``shutdown.drain_timeout_s`` plus a few seconds; a shutdown that
spends one budget draining and another in the revoke callback (or waits for a request the API never
answers) is killed by Kubernetes instead. Each test then restarts the connector with the cause removed
and checks that nothing was lost or engaged twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.integration import test_faults as faults
from tests.integration.test_faults import Bed
from tests.support import ConnectorProcess, wait_until

make_bed = faults.make_bed  # the fixture

pytestmark = pytest.mark.timeout(180)

DRAIN_S = 10  # the bed's shutdown.drain_timeout_s
SLACK_S = 5  # what the shutdown may take beyond the drain budget: commit, leave the group, exit


def _terminate_within_budget(bed: Bed, proc: ConnectorProcess) -> float:
    code, took = proc.terminate(timeout=DRAIN_S + 30)
    assert code == 0, proc.log_tail()
    assert took <= DRAIN_S + SLACK_S, f"SIGTERM took {took:.1f} s, budget {DRAIN_S} + {SLACK_S} s"
    return float(took)


def test_sigterm_while_halted_exits_within_the_drain_budget(make_bed: Callable[..., Bed]) -> None:
    bed = make_bed(events=3_000, partitions=4)
    bed.emu.set_faults(tokens=["rotated-token"])  # every request refused: 401, the connector halts
    proc = bed.process(bed.settings()).start()
    wait_until(lambda: proc.metric_sum("altcraft_connector_halted", reason="unauthorized") == 1, 30, "the halt")
    _terminate_within_budget(bed, proc)

    bed.emu.set_faults(tokens=None)
    again = bed.process(bed.settings(), name="after-halt").start()
    bed.assert_delivered([again], timeout=90)


def test_sigterm_during_an_api_outage_exits_within_the_drain_budget(make_bed: Callable[..., Bed]) -> None:
    bed = make_bed(events=3_000, partitions=4)
    bed.emu.set_faults(outage_s=3600)  # HTTP 503 for every request, Retry-After: the outage's remaining time
    proc = bed.process(bed.settings()).start()
    wait_until(lambda: proc.metric_sum("altcraft_connector_retries_total") >= 4, 30, "requests waiting to retry")
    _terminate_within_budget(bed, proc)

    bed.emu.clear_faults()
    again = bed.process(bed.settings(), name="after-outage").start()
    bed.assert_delivered([again], timeout=90)


def test_sigterm_while_the_api_never_answers_exits_within_the_drain_budget(make_bed: Callable[..., Bed]) -> None:
    bed = make_bed(events=3_000, partitions=4)
    bed.emu.set_faults(latency_s=60)  # requests are accepted and not answered for a minute
    proc = bed.process(bed.settings(altcraft={"request_timeout_s": 120})).start()
    wait_until(lambda: proc.metric_sum("altcraft_connector_inflight_requests") >= 1, 30, "requests in flight")
    time.sleep(1)
    _terminate_within_budget(bed, proc)

    bed.emu.clear_faults()
    again = bed.process(bed.settings(), name="after-hang").start()
    bed.assert_delivered([again], timeout=120)
