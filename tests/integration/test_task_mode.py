"""Asynchronous task mode (``engage-task``: submit, then poll tasks/status): a crash while tasks are
outstanding, then a restart. The test bed and the final checks are those of ``test_faults.py``."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.integration import test_faults as faults
from tests.support import wait_until

make_bed = faults.make_bed  # the fixture

pytestmark = pytest.mark.timeout(150)


def test_sigkill_with_tasks_outstanding_then_restart_loses_nothing_and_engages_nobody_twice(
    make_bed: Callable[..., faults.Bed],
) -> None:
    bed = make_bed(10_000, 4, seed=51, emulator={"task_delay_s": 1.0})
    proc = bed.process(bed.settings(max_items=250, max_in_flight=4, route={"mode": "engage-task"}))
    proc.start()
    wait_until(lambda: bed.emu.stats()["tasks_completed"] >= 4, 60, "some tasks to complete")
    wait_until(lambda: bed.emu.stats()["tasks_pending"] > 0, 30, "tasks outstanding")
    proc.kill()
    stats = bed.emu.stats()
    assert stats["engagements"] < bed.stream.outcomes["engage"], "finished before the crash"
    proc.start()
    bed.assert_delivered([proc], timeout=60)
    stats = bed.emu.stats()
    assert stats["tasks_pending"] == 0
    # The submissions outstanding at the crash were replayed under their Request-IDs: deduplicated, the
    # original task polled to completion, and no batch became a second task.
    assert stats["duplicates"] > 0
    submitted = [r for r in bed.emu.requests() if r["endpoint"] == "workflows/import_and_start_batch_task"]
    executed = [r for r in submitted if r["error"] == 0 and not r["duplicate"]]
    assert len(executed) == len({r["request_id"] for r in executed}) == stats["tasks_submitted"]
    assert {r["endpoint"] for r in bed.emu.requests()} == {"workflows/import_and_start_batch_task", "tasks/status"}
    code, _ = proc.terminate()
    assert code == 0, proc.log_tail()
