"""The README's first command: the demo runs with nothing but the package, and its summary is true."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_and_its_summary_matches_the_emulator() -> None:
    exe = shutil.which("altcraft-connector", path=str(Path(sys.executable).parent))
    assert exe, "the console script is installed with the package"
    done = subprocess.run(
        [exe, "demo", "--events", "8000", "--seed", "3"], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "FAIL" not in out
    assert len(re.findall(r"^  ok   ", out, re.M)) == 4
    consumed = int(re.search(r"events consumed\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    engaged = int(re.search(r"engaged\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    recorded = re.search(r"(\d+) engagements of", out)
    assert consumed == 8000
    assert recorded is not None and int(recorded.group(1)) == engaged > 0
    assert "in the dead-letter topic" in out
