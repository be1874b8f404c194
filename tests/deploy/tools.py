"""The deploy tests' command-line tools: where they live and how they get there.

.ci/install-deploy-tools.sh installs kustomize, promtool, checkov, kubernetes-validate and hadolint
into ``<repo>/.cache/deploy-tools/bin`` (or ``$DEPLOY_TOOLS_DIR/bin``), each pinned, and its
``--check`` says in a fraction of a second whether every tool is there and current. The tests run
the same script on first use (tests/deploy/conftest.py), as the broker's jars are fetched on first
use: one install script for CI and tests, serialised by its own file lock.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TextIO

REPO = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = ".ci/install-deploy-tools.sh"
# A cold install (promtool compiled from source) took 1340 s on 2 cores; leave room for a slower machine.
INSTALL_TIMEOUT_S = 3600


class InstallError(RuntimeError):
    """The install script failed or left a tool missing."""


def tools_dir() -> Path:
    return Path(os.environ.get("DEPLOY_TOOLS_DIR") or REPO / ".cache" / "deploy-tools")


def tools_bin() -> Path:
    return tools_dir() / "bin"


def _script(*args: str) -> list[str]:
    return ["bash", str(REPO / INSTALL_SCRIPT), *args]


def installed() -> bool:
    """Every tool is in the bin folder with the pin the script would install now."""
    proc = subprocess.run(_script("--check"), capture_output=True, text=True, check=False, timeout=60)
    if proc.returncode not in (0, 1):
        raise InstallError(f"{INSTALL_SCRIPT} --check failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc.returncode == 0


def install(progress: TextIO | None = None) -> float:
    """Run the install script, echoing its lines to ``progress`` (stderr); returns its seconds, raises InstallError.

    Its output also goes to ``<tools dir>/install.log``, and the last lines into the error.
    """
    log_path = tools_dir() / "install.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail: collections.deque[str] = collections.deque(maxlen=60)
    started = time.monotonic()
    out = progress or sys.stderr  # looked up now: pytest swaps sys.stderr while it captures
    with (
        open(log_path, "w") as log,
        subprocess.Popen(_script(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO) as proc,
    ):
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            log.flush()
            tail.append(line)
            out.write(line)
            out.flush()
        rc = proc.wait()
    elapsed = time.monotonic() - started
    if rc != 0:
        raise InstallError(
            f"{INSTALL_SCRIPT} failed (exit {rc}) after {elapsed:.0f} s; full log in {log_path}:\n" + "".join(tail)
        )
    if not installed():
        raise InstallError(f"{INSTALL_SCRIPT} succeeded but `{INSTALL_SCRIPT} --check` still fails; see {log_path}")
    return elapsed
