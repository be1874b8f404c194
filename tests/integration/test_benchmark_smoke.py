"""A small run of the benchmark, so that it keeps working (it checks that it runs and reports, not speed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_runs_every_part_and_reports_them(kafka: Any, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "tests.benchmark", "--events", "6000", "--partitions", "4", "--reps", "1",
         "--latency-rate", "2000", "--latency-seconds", "2", "--slow-seconds", "4", "--slow-latency", "0.2",
         "--bootstrap", kafka.bootstrap, "--out", str(out)],
        capture_output=True, text=True, timeout=400, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())
    for part in ("ceiling", "floor", "connector", "connector_avro"):
        figures = result["median"][part]
        assert figures["events_per_s"] > 0 and figures["cpu_s_per_million"] > 0 and figures["peak_rss_mb"] > 0
    assert result["ratios"]["connector_to_floor"] > 0
    assert result["latency"]["count"] > 0 and result["latency"]["p99_ms"] >= result["latency"]["p50_ms"]
    slow = result["slow_api"]
    assert slow["events_resolved"] > 0 and slow["peak_rss_mb"] >= slow["rss_mb_at_100pct"] > 0
    assert "connector / floor" in done.stdout
