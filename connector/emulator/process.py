"""The emulator as a child process (the demo, the benchmark): started on a free loopback port, its
URL read from the line it prints, and stopped by its PID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence


def spawn(args: Sequence[str], timeout_s: float = 30.0) -> tuple[subprocess.Popen[str], str]:
    """``altcraft-connector emulator --port 0 ARGS...``; returns the process and its URL."""
    cmd = [sys.executable, "-m", "connector.cli", "emulator", "--port", "0", *args]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("EMULATOR_URL="):
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # drain the rest
            return proc, line.strip().split("=", 1)[1]
    stop(proc)
    raise RuntimeError("the emulator did not start")


def stop(proc: subprocess.Popen[str], timeout_s: float = 20.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout_s``."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout_s)
