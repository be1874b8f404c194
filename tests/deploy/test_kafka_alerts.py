"""The Kafka alerts' promtool tests fail when a threshold or a delay is broken (copies of the rules
with one deliberate mistake each), so that alerts-test.yaml really guards them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.deploy.test_deploy import DEPLOY, prometheus_rule, promtool, rules_for_promtool

MISTAKES = {
    "AltcraftConnectorKafkaUnreachable": [
        ("expr", "== 0", "< 0"),  # never fires
        ("for", "5m", "1m"),  # fires on a blip
        ("expr", '{client="consumer"}', ""),  # an idle producer would page
    ],
    "AltcraftConnectorKafkaAuthFailing": [
        ("expr", "> 0", "> 100"),  # a steady stream of refusals does not fire
        ("expr", "[2m]", "[10m]"),  # a single refusal during a rotation fires
    ],
}


@pytest.mark.parametrize(
    ("alert", "field", "old", "new"),
    [(alert, *mistake) for alert, mistakes in MISTAKES.items() for mistake in mistakes],
)
def test_promtool_catches_a_broken_kafka_alert(tmp_path: Path, alert: str, field: str, old: str, new: str) -> None:
    rule = prometheus_rule()
    (target,) = [r for g in rule["spec"]["groups"] for r in g["rules"] if r.get("alert") == alert]
    assert old in target[field], f"{old!r} not in {alert}.{field}: update the deliberate mistake"
    target[field] = target[field].replace(old, new)
    rules_for_promtool(rule, tmp_path)
    shutil.copy(DEPLOY / "monitoring" / "alerts-test.yaml", tmp_path / "alerts-test.yaml")
    test = promtool("test", "rules", "alerts-test.yaml", cwd=tmp_path)
    assert test.returncode != 0 and alert in test.stdout + test.stderr, test.stdout + test.stderr
