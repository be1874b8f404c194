"""``altcraft-connector check-config`` as an operator runs it: every problem of a file in one run, exit
code 2, and no secret in what it prints."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from connector.cli import EXIT_BAD_SETTINGS, EXIT_OK, main
from connector.config import ENV_PREFIX, MASK

TOKEN = "s3cr3t-\u00e9-token"  # the é is what a header cannot carry
GOOD_TOKEN = "good-token-4711"
REGISTRY_TOKEN = "reg-\u00e9-token-0815"


@pytest.fixture(autouse=True)
def _no_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    """check-config reads the process environment: none of the test runner's overrides may leak in."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def check_config(capsys: pytest.CaptureFixture[str], path: Path, *extra: str) -> tuple[int, str, str]:
    code = main(["check-config", "--config", str(path), *extra])
    out, err = capsys.readouterr()
    return code, out, err


def problems_of(err: str) -> list[str]:
    return [line.removeprefix("  - ") for line in err.splitlines() if line.startswith("  - ")]


def test_every_problem_of_a_file_is_reported_in_one_run_without_its_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("\ufeff" + TOKEN + "\n")  # a BOM and a newline, which are fine, and an é, which is not
    config = tmp_path / "settings.yaml"
    config.write_text(
        f"""\
kafka:
  bootstrap_servers: "kafka:9092"
  group_id: connector
  group_id: connector-2
altcraft:
  base_url: "https://api:api-pw-77@altcraft.example"
  token_file: {token_file}
schema_registry:
  url: "http://registry:8081"
routes:
  - name: customers
    topics: ['^cdc\\..*']
    format: debezium-avro
    workflow_id: true
    db_id: 7
    reader_schema: {tmp_path / "customer.avsc"}
"""
    )
    code, out, err = check_config(capsys, config)
    assert code == EXIT_BAD_SETTINGS
    assert out == ""
    assert problems_of(err) == [
        f"kafka.group_id: duplicate key (at {config} line 4, column 3; first at line 3, column 3)",
        "altcraft.token_file: in the file, character 8 is not printable ASCII, which an HTTP header cannot carry "
        f"(got '{token_file}')",
        r"routes[0].topics[0]: topic patterns are not supported: list every topic by its exact name (got '^cdc\\..*')",
        "routes[0].workflow_id: expected a number, not a boolean (got True)",
        f"routes[0].reader_schema: cannot read the file: No such file or directory (got '{tmp_path}/customer.avsc')",
    ]
    assert err.startswith(f"{config}: 5 problem(s):\n")
    for secret in (TOKEN, "s3cr3t", "api-pw-77"):
        assert secret not in out + err


def test_a_bom_token_is_fine_while_a_bad_registry_token_is_refused_unseen(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file = tmp_path / "token"
    token_file.write_bytes(("\ufeff" + GOOD_TOKEN + "\r\n").encode())
    reader = tmp_path / "customer.avsc"
    reader.write_text('{"type": "record", "name": "Customer", "fields": [{"name": "email", "type": "string"}]}')
    config = tmp_path / "settings.yaml"
    config.write_text(
        f"""\
altcraft: {{token_file: {token_file}}}
schema_registry: {{url: "http://registry:8081"}}
routes: [{{name: customers, topics: [cdc.customers], format: avro, workflow_id: 12, db_id: 7, reader_schema: {reader}}}]
"""
    )
    monkeypatch.setenv(ENV_PREFIX + "SCHEMA_REGISTRY__BEARER_TOKEN", REGISTRY_TOKEN)
    code, out, err = check_config(capsys, config)
    assert code == EXIT_BAD_SETTINGS
    assert problems_of(err) == [
        "schema_registry.bearer_token: character 5 is not printable ASCII, which an HTTP header cannot carry "
        "(got a hidden value)"
    ]
    assert REGISTRY_TOKEN not in out + err and GOOD_TOKEN not in out + err

    monkeypatch.setenv(ENV_PREFIX + "SCHEMA_REGISTRY__BEARER_TOKEN", "\ufeffreg-token-0815\n")
    code, out, err = check_config(capsys, config, "--format", "json")
    assert code == EXIT_OK, err
    assert err == f"{config}: valid\n"
    shown = json.loads(out)
    assert shown["altcraft"]["token"] == MASK and shown["schema_registry"]["bearer_token"] == MASK
    assert GOOD_TOKEN not in out and "reg-token-0815" not in out


def test_url_credentials_are_masked_in_what_check_config_prints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text(
        """\
altcraft:
  base_url: "https://api-user:api-pw-77@altcraft.example/"
  token: inline-token-1
schema_registry:
  url: "https://registry.example/?access_token=reg-tok-88"
routes: [{name: customers, topics: [cdc.customers], workflow_id: 12, db_id: 7}]
"""
    )
    code, out, err = check_config(capsys, config)
    assert code == EXIT_OK, err
    shown = yaml.safe_load(out)
    assert shown["altcraft"]["base_url"] == f"https://api-user:{MASK}@altcraft.example"
    assert shown["schema_registry"]["url"] == f"https://registry.example/?access_token={MASK}"
    for secret in ("api-pw-77", "reg-tok-88", "inline-token-1"):
        assert secret not in out + err


def test_a_yaml_syntax_error_is_located_but_not_echoed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text("altcraft:\n  token: inline-s3cr3t: oops\nroutes: []\n")
    code, out, err = check_config(capsys, config)
    assert code == EXIT_BAD_SETTINGS
    assert problems_of(err) == [
        f"altcraft.token: not valid YAML: mapping values are not allowed here (at {config} line 2, column 23)"
    ]
    assert "inline-s3cr3t" not in out + err and "oops" not in out + err


def test_route_conditions_are_compiled_by_check_config_with_every_other_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text(
        """\
altcraft: {token: inline-token-1}
schema_registry: {url: "http://registry:8081"}
routes:
  - name: customers
    topics: [cdc.customers]
    workflow_id: 12
    db_id: 7
    when: 'after.tier == "vip" &&'
  - name: orders
    topics: [cdc.orders]
    workflow_id: 0
    db_id: 7
    when: 'op > 1'
    otherwise: import
  - name: events
    topics: [cdc.events]
    format: debezium-avro
    workflow_id: 13
    db_id: 7
    when: 'after.tier == "vip" && before == null'
"""
    )
    code, out, err = check_config(capsys, config)
    assert code == EXIT_BAD_SETTINGS
    assert out == ""
    assert problems_of(err) == [
        "routes[0].when: at 1:23: Syntax error: mismatched input '<EOF>' expecting {'[', '{', '(', '.', '-', '!', "
        "'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER} "
        "(got 'after.tier == \"vip\" &&')",
        "routes[1].workflow_id: Input should be greater than or equal to 1 (got 0)",
        "routes[1].when: at 1:4: found no matching overload for '_>_' applied to '(string, int)' (got 'op > 1')",
        "routes[2].when: before is not available for Avro routes yet (their decoder yields the row only): use op "
        "and after (got 'after.tier == \"vip\" && before == null')",
    ]


def test_a_route_condition_that_compiles_is_shown_with_the_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "settings.yaml"
    when = 'after.tier == "vip" && (before == null || before.tier != "vip")'
    config.write_text(
        f"""\
altcraft: {{token: inline-token-1}}
routes: [{{name: customers, topics: [cdc.customers], workflow_id: 12, db_id: 7, when: '{when}'}}]
"""
    )
    code, out, err = check_config(capsys, config, "--format", "json")
    assert code == EXIT_OK, err
    shown = json.loads(out)["routes"][0]
    assert (shown["when"], shown["otherwise"]) == (when, "skip")


def test_matching_modes_the_api_pages_do_not_describe_are_refused_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text(
        """\
altcraft: {token: inline-token-1}
routes:
  - {name: devices, topics: [cdc.devices], workflow_id: 12, db_id: 7, matching: push_sub}
  - {name: members, topics: [cdc.members], workflow_id: 12, db_id: 7, matching: custom_sub, field_name: CRM_ID}
  - {name: contacts, topics: [cdc.contacts], workflow_id: 12, db_id: 7, matching: email_phone_sub}
  - {name: imports, topics: [cdc.imports], mode: import, db_id: 7, request_content: {campaign: spring}}
"""
    )
    code, out, err = check_config(capsys, config)
    assert code == EXIT_BAD_SETTINGS
    assert out == ""
    assert problems_of(err) == [
        "routes[0].matching: matching push_sub is not supported: the Altcraft API pages name this mode and describe "
        "push subscriptions (provider, subscription_id), but not where a batch item carries the values push_sub "
        "matches by; match by another mode (email, phone, custom) (got 'push_sub')",
        "routes[1].matching: matching custom_sub is not supported: the Altcraft API pages name this mode but document "
        "field_name and field_value for matching custom only, not what an item must carry to be matched by "
        "custom_sub; match by a profile field with matching: custom and field_name (got 'custom_sub')",
        "routes[3].request_content: mode import sends profiles/import_batch, which takes no content: use an engage "
        "mode",
    ]


def test_request_content_is_shown_with_the_settings_and_can_come_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text(
        """\
altcraft: {token: inline-token-1}
routes:
  - name: customers
    topics: [cdc.customers]
    workflow_id: 12
    db_id: 7
    request_content: {campaign: spring, discount: 10}
"""
    )
    monkeypatch.setenv(f"{ENV_PREFIX}ROUTES__0__REQUEST_CONTENT__SEASON", "2025")
    code, out, err = check_config(capsys, config, "--format", "json")
    assert code == EXIT_OK, err
    assert json.loads(out)["routes"][0]["request_content"] == {"campaign": "spring", "discount": 10, "season": 2025}
