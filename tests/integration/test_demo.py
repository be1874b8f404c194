"""The README's first command: the demo runs with nothing but the package, shows what a user picks the
connector for (a retried request, a replay answered as a duplicate, dead letters with their headers), and
its checks against the emulator hold."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _number(pattern: str, text: str) -> int:
    found = re.search(pattern, text, re.M)
    assert found, f"no match for {pattern!r} in:\n{text}"
    return int(found.group(1))


def test_demo_shows_the_guarantees_and_its_checks_hold() -> None:
    exe = shutil.which("altcraft-connector", path=str(Path(sys.executable).parent))
    assert exe, "the console script is installed with the package"
    done = subprocess.run(
        [exe, "demo", "--events", "8000", "--seed", "3"], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    lines = out.splitlines()

    # It says what it starts before the first progress line.
    first_progress = next(i for i, line in enumerate(lines) if re.match(r"^   read +\d+ +committed", line))
    startup = "\n".join(lines[:first_progress])
    assert "generating 8000 Debezium change events" in startup
    assert "embedded Kafka: librdkafka's in-process mock cluster" in startup
    assert re.search(r"Kafka is up at 127\.0\.0\.1:\d+", startup)
    assert re.search(r"the emulator listens on http://127\.0\.0\.1:\d+", startup)
    assert "producing the first 3200 events to shop.public.customers" in startup
    assert "joining the group" in startup

    # A retried request and a replay after the restart, both answered as duplicates by the emulator.
    assert _number(r"the connector retried (\d+) request", out) > 0
    assert _number(r"^    retried +(\d+) transport", out) > 0
    assert _number(r"^    answered as duplicates +\d+ +(\d+)$", out) > 0, "the second connector replayed"
    assert _number(r"emulator recorded .*?(\d+) answered as duplicates", out) > 0
    assert "nobody engaged twice" in out

    # One example dead letter per stage present, with its headers, values cut, no secrets.
    by_stage = re.search(r"dead letters +\d+ records \(([^)]*)\)", out)
    assert by_stage is not None
    stages = [s for _, s in re.findall(r"(\d+) (api|decode|map|op|size)\b", by_stage.group(1))]
    assert sorted(stages) == ["api", "decode", "map"]
    for stage in stages:
        block = out.split(f"  stage {stage}: shop.public.customers[", 1)[1].split("\n  stage ", 1)[0]
        assert re.search(rf"__connect\.errors\.stage +{stage}\n", block)
        assert "__connect.errors.exception.class.name" in block
        assert "__connect.errors.exception.message" in block
        value = re.search(r"^    value +(.*) \((\d+) bytes\)$", block, re.M)
        assert value is not None and len(value.group(1)) <= 100 < int(value.group(2))
    api = out.split("  stage api: ", 1)[1]
    assert re.search(r"altcraft\.error\.code +400", api) and "altcraft.error.text" in api
    assert "demo-token" not in out

    # Every check held, and the next steps follow.
    assert "FAIL" not in out
    assert len(re.findall(r"^  ok   ", out, re.M)) == 5
    assert "each customer engaged exactly as often as it changed" in out
    steps = out.split("\nnext steps\n", 1)[1]
    assert "config.example.yaml" in steps
    assert "altcraft-connector check-config --config " in steps
    assert "altcraft-connector run --config " in steps
    assert "Debezium values" in steps
