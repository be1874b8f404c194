from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from connector.config import MASK, SettingsError, load_settings, masked_dump

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config.example.yaml"

MINIMAL = """
altcraft:
  token: s3cr3t-token-value
routes:
  - name: customers
    topics: [cdc.customers]
    workflow_id: 12
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "settings.yaml"
    p.write_text(text)
    return p


def test_every_problem_is_reported_with_its_key_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        MINIMAL
        + """
kafka:
  bogus_key: 1
batching:
  linger_s: soon
  max_items: 20000
""",
    )
    with pytest.raises(SettingsError) as err:
        load_settings(path, environ={})
    text = "\n".join(err.value.problems)
    assert "kafka.bogus_key: unknown key" in text
    assert "batching.linger_s:" in text and "'soon'" in text
    assert "batching.max_items:" in text and "10000" in text
    assert len(err.value.problems) == 3


def test_cross_field_problems_are_reported(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
altcraft: {token: x, max_body_bytes: 100000}
batching: {max_bytes: 200000}
routes:
  - {name: a, topics: [t1], mode: import}
  - {name: a, topics: [t1], workflow_id: 1, matching: custom}
""",
    )
    with pytest.raises(SettingsError) as err:
        load_settings(path, environ={})
    assert sorted(err.value.problems) == sorted([
        "routes.0.db_id: mode import needs db_id",
        "routes.1.field_name: matching custom needs field_name",
        "batching.max_bytes: must not exceed altcraft.max_body_bytes, 100000 (got 200000)",
        "routes.1.name: 'a' is the name of routes.0",
        "routes.1.topics: 't1' is read by routes.0 already; a topic follows one route",
    ])  # fmt: skip


def test_environment_overrides_any_key(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    env = {
        "ALTCRAFT_CONNECTOR__BATCHING__LINGER_S": "0.25",
        "ALTCRAFT_CONNECTOR__ROUTES__0__WORKFLOW_ID": "99",
        "ALTCRAFT_CONNECTOR__KAFKA__COMMON__SECURITY_PROTOCOL": "SASL_SSL",
        "ALTCRAFT_CONNECTOR__ALTCRAFT__TOKEN": "from-env",
        "UNRELATED": "x",
    }
    s = load_settings(path, environ=env)
    assert s.batching.linger_s == 0.25
    assert s.routes[0].workflow_id == 99
    assert s.kafka.common == {"security.protocol": "SASL_SSL"}
    assert s.token() == "from-env"


def test_bad_environment_override_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    with pytest.raises(SettingsError) as err:
        load_settings(path, environ={"ALTCRAFT_CONNECTOR__ROUTES__3__WORKFLOW_ID": "1"})
    assert any("ALTCRAFT_CONNECTOR__ROUTES__3__WORKFLOW_ID" in p for p in err.value.problems)


def test_secrets_come_from_files_and_are_masked(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("file-token-123\n")
    pw = tmp_path / "pw"
    pw.write_text("kafka-pass-456")
    path = write(
        tmp_path,
        f"""
kafka:
  sasl_password_file: {pw}
  common: {{"sasl.username": u, "ssl.key.password": hush-789}}
altcraft:
  token_file: {token_file}
routes: [{{name: r, topics: [t], workflow_id: 1}}]
""",
    )
    s = load_settings(path, environ={})
    assert s.token() == "file-token-123"
    dumped = repr(masked_dump(s)) + repr(s)
    for secret in ("file-token-123", "kafka-pass-456", "hush-789"):
        assert secret not in dumped
    assert masked_dump(s)["altcraft"]["token"] == MASK


def test_missing_secret_file_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "altcraft: {token_file: /nonexistent/tok}\nroutes: [{name: r, topics: [t], workflow_id: 1}]")
    with pytest.raises(SettingsError) as err:
        load_settings(path, environ={})
    assert err.value.problems == [
        "altcraft.token_file: cannot read the file: No such file or directory (got '/nonexistent/tok')"
    ]


def test_reserved_librdkafka_properties_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "kafka: {consumer: {enable.auto.commit: true}}\n")
    with pytest.raises(SettingsError) as err:
        load_settings(path, environ={})
    assert any("enable.auto.commit" in p for p in err.value.problems)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "connector.cli", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_check_config_accepts_the_example_and_hides_the_token() -> None:
    token = load_settings(EXAMPLE, environ={}).token()
    done = run_cli("check-config", "--config", str(EXAMPLE))
    assert done.returncode == 0, done.stderr
    assert "workflow_id: 12" in done.stdout
    assert token not in done.stdout + done.stderr
    assert MASK in done.stdout


def test_check_config_lists_every_problem_and_fails(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        MINIMAL + "kafka:\n  nope: 1\nbatching:\n  linger_s: [1]\nobservability:\n  port: 70000\n",
    )
    done = run_cli("check-config", "--config", str(path))
    assert done.returncode != 0
    assert "3 problem(s)" in done.stderr
    for where in ("kafka.nope", "batching.linger_s", "observability.port"):
        assert where in done.stderr
    assert "s3cr3t-token-value" not in done.stdout + done.stderr
