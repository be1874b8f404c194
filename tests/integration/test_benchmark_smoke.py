"""A small run of the benchmark, so that it keeps working (it checks that it runs and reports, not speed)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_runs_every_part_and_reports_them(kafka: Any, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "tests.benchmark", "--events", "6000", "--partitions", "4", "--reps", "1",
         "--latency-rate", "2000", "--latency-seconds", "2", "--slow-seconds", "4", "--slow-latency", "0.2",
         "--small-batch", "1000", "--latency-bound-seconds", "0.3", "--latency-bound-events", "1600",
         "--latency-bound-batch", "100", "--latency-bound-in-flight", "4",
         "--bootstrap", kafka.bootstrap, "--out", str(out)],
        capture_output=True, text=True, timeout=400, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())
    parts = ("ceiling", "floor", "connector", "connector_avro", "floor_small", "connector_small", "connector_alo",
             "connector_small_alo")  # fmt: skip
    for part in parts:
        figures = result["median"][part]
        assert figures["events_per_s"] > 0 and figures["cpu_s_per_million"] > 0 and figures["peak_rss_mb"] > 0
    assert result["ratios"]["connector_to_floor"] > 0 and result["ratios"]["connector_small_to_floor_small"] > 0
    for part in ("floor", "connector", "floor_small", "connector_small"):  # up to 95% answered, measured on both
        run = result["runs"][part][0]
        assert run["events_per_s_to_95pct"] > 0
    assert result["ratios"]["connector_small_to_floor_small_to_95pct"] > 0 and "up to 95% answered" in done.stdout
    bound = result["latency_bound"]
    assert bound["bound_events_per_s"] == pytest.approx(4 * 100 / 0.3) and 0 < bound["to_bound"] <= 1.2
    assert bound["requests_in_flight_max"] >= 1 and bound["batches"] == 16
    assert result["guarantees"]["floor"].startswith("none")
    assert result["latency"]["count"] > 0 and result["latency"]["p99_ms"] >= result["latency"]["p50_ms"]
    slow = result["slow_api"]
    assert slow["events_resolved"] > 0 and slow["peak_rss_mb"] >= slow["rss_mb_at_100pct"] > 0
    assert "connector / floor" in done.stdout and "latency-bound" in done.stdout
    assert "guarantees of the floor" in done.stdout
    assert "exactly_once_cost" in result["ratios"] and "exactly-once dead letters cost" in done.stdout


def _small_run(kafka: Any, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.benchmark", "--events", "3000", "--partitions", "2", "--reps", "1",
         "--latency-rate", "0", "--slow-seconds", "0", "--small-batch", "0", "--at-least-once", "0",
         "--latency-bound-seconds", "0", "--bootstrap", kafka.bootstrap, "--out", str(out), *extra],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip


def test_against_measures_another_checkouts_connector_in_the_same_repetitions(kafka: Any, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = _small_run(kafka, out, "--against", str(ROOT), "--latency-rate", "1000", "--latency-seconds", "1",
                      "--slow-seconds", "2", "--slow-latency", "0.2")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())
    assert result["against"] == str(ROOT)
    for part in ("against", "against_avro"):
        assert result["median"][part]["events_per_s"] > 0
    assert result["ratios"]["connector_to_against"] > 0 and "connector / against" in done.stdout
    assert result["latency_against"]["count"] > 0 and result["slow_api_against"]["peak_rss_mb"] > 0
    # The other checkout's own code runs: a copy whose command-line entry fails makes the run fail.
    other = tmp_path / "other"
    shutil.copytree(ROOT / "connector", other / "connector", ignore=shutil.ignore_patterns("__pycache__"))
    (other / "connector" / "cli.py").write_text("raise SystemExit(3)\n")
    failed = _small_run(kafka, tmp_path / "other.json", "--against", str(other))
    assert failed.returncode != 0 and "exit 3" in failed.stderr, failed.stderr[-2000:]
