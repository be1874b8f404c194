"""The deploy tests fetch their tools on first use, as the broker's jars are.

A session fixture, used by every test here, runs .ci/install-deploy-tools.sh when its ``--check``
finds a tool missing or out of date: the tools land in ``.cache/deploy-tools`` (or
``$DEPLOY_TOOLS_DIR``) and later sessions find them there. The script's file lock keeps parallel
sessions from installing over each other. An install that fails fails the tests, with the script's
last lines: nothing here skips.

The first install compiles promtool, about 20 minutes on 2 cores, longer than the suite's per-test
timeout; so when the tools must be installed, the deploy tests get ``INSTALL_TIMEOUT_S`` instead.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from tests.deploy import tools

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests here ``deploy``; give them room for the install when the tools are missing."""
    ours = [item for item in items if item.path.is_relative_to(HERE)]
    if not ours:
        return
    must_install = not tools.installed()
    for item in ours:
        item.add_marker(pytest.mark.deploy)
        if must_install:
            item.add_marker(pytest.mark.timeout(tools.INSTALL_TIMEOUT_S))


@pytest.fixture(scope="session", autouse=True)
def deploy_tools(request: pytest.FixtureRequest) -> Path:
    """The folder holding the tools, installed first if needed; fails the tests if that fails."""
    if tools.installed():
        return tools.tools_bin()
    capture = request.config.pluginmanager.getplugin("capturemanager")
    # Show the install's progress as it goes: a 20-minute silence looks like a hang.
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print(
            f"\n[deploy] installing the deploy tools into {tools.tools_dir()} with {tools.INSTALL_SCRIPT} "
            "(first use; about 20 minutes on 2 cores when promtool must be compiled, seconds later on)",
            flush=True,
        )
        failure = ""
        try:
            print(f"[deploy] tools ready in {tools.install():.0f} s", flush=True)
        except tools.InstallError as exc:
            failure = str(exc)
    if failure:
        pytest.fail(failure, pytrace=False)
    return tools.tools_bin()
