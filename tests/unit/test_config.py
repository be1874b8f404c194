from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from connector.config import (
    ENV_PREFIX,
    MASK,
    Settings,
    SettingsError,
    load_settings,
    mask_url_credentials,
    masked_dump,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config.example.yaml"

MINIMAL = """
altcraft:
  token: s3cr3t-token-value
routes:
  - name: customers
    topics: [cdc.customers]
    workflow_id: 12
    db_id: 7
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
  - {name: a, topics: [t1], workflow_id: 1, db_id: 7, matching: custom}
""",
    )
    with pytest.raises(SettingsError) as err:
        load_settings(path, environ={})
    assert sorted(err.value.problems) == sorted([
        "routes[0].db_id: mode import needs db_id",
        "routes[1].field_name: matching custom needs field_name",
        "batching.max_bytes: must not exceed altcraft.max_body_bytes, 100000 (got 200000)",
        "routes[1].name: 'a' is the name of routes[0]",
        "routes[1].topics: 't1' is read by routes[0] already; a topic follows one route",
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
routes: [{{name: r, topics: [t], workflow_id: 1, db_id: 7}}]
""",
    )
    s = load_settings(path, environ={})
    assert s.token() == "file-token-123"
    dumped = repr(masked_dump(s)) + repr(s)
    for secret in ("file-token-123", "kafka-pass-456", "hush-789"):
        assert secret not in dumped
    assert masked_dump(s)["altcraft"]["token"] == MASK


def test_missing_secret_file_is_named(tmp_path: Path) -> None:
    text = "altcraft: {token_file: /nonexistent/tok}\nroutes: [{name: r, topics: [t], workflow_id: 1, db_id: 7}]"
    path = write(tmp_path, text)
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


# --------------------------------------------------------------------------------------------
# Every problem at once


def test_problems_in_one_section_do_not_hide_the_checks_that_span_fields(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
altcraft: {token: x, max_body_bytes: 100000, request_timeout_s: -1}
batching: {max_bytes: 200000, linger_s: soon}
routes:
  - {name: a, topics: [t1], mode: import, resource_id: 0}
  - {name: b, topics: [t1, dlq], matching: custom, workflow_id: x, db_id: 7}
  - {name: c, topics: [t2], format: avro, workflow_id: 3, db_id: 7}
dead_letter: {topic: dlq, breaker_window: 1}
""",
    )
    with pytest.raises(SettingsError) as err:
        load_settings(path, environ={})
    assert sorted(err.value.problems) == sorted([
        "altcraft.request_timeout_s: Input should be greater than 0 (got -1)",
        "batching.linger_s: Input should be a valid number, unable to parse string as a number (got 'soon')",
        "routes[0].db_id: mode import needs db_id",
        "routes[0].resource_id: Input should be greater than or equal to 1 (got 0)",
        "routes[1].workflow_id: Input should be a valid integer, unable to parse string as an integer (got 'x')",
        "routes[1].field_name: matching custom needs field_name",
        "dead_letter.breaker_window: Input should be greater than or equal to 10 (got 1)",
        "batching.max_bytes: must not exceed altcraft.max_body_bytes, 100000 (got 200000)",
        "routes[1].topics: 't1' is read by routes[0] already; a topic follows one route",
        "routes[1].topics: 'dlq' is the dead-letter topic (dead_letter.topic)",
        "schema_registry.url: required by routes with an Avro format (routes[2])",
    ])  # fmt: skip


def test_secret_file_problems_come_with_the_rest(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
altcraft: {{token_file: {tmp_path / "missing-token"}}}
kafka: {{sasl_password_file: {tmp_path / "missing-password"}, consume_batch_size: 0}}
routes: [{{name: r, topics: [t], db_id: 7}}]
""",
    )
    with pytest.raises(SettingsError) as err:
        load_settings(path, environ={})
    text = "\n".join(err.value.problems)
    assert "altcraft.token_file: cannot read the file: No such file or directory" in text
    assert "kafka.sasl_password_file: cannot read the file: No such file or directory" in text
    assert "kafka.consume_batch_size: Input should be greater than or equal to 1 (got 0)" in text
    assert "routes[0].workflow_id: mode engage needs workflow_id" in text
    assert len(err.value.problems) == 4


def test_settings_built_directly_still_check_across_sections() -> None:
    with pytest.raises(ValidationError, match=r"is the name of routes\[0\]"):
        Settings.model_validate(
            {"altcraft": {"token": "t"}, "routes": [{"name": "a", "topics": ["x"], "workflow_id": 1, "db_id": 7}] * 2}
        )


# --------------------------------------------------------------------------------------------
# YAML: duplicate keys and syntax errors, located, never echoed


def test_duplicate_keys_are_errors_with_file_line_and_key_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """altcraft:
  token: t
kafka:
  group_id: first
  group_id: second
routes:
  - name: r
    topics: [t]
    db_id: 7
    workflow_id: 1
    workflow_id: 2
""",
    )
    with pytest.raises(SettingsError) as err:
        load_settings(path, environ={})
    assert err.value.problems == [
        f"kafka.group_id: duplicate key (at {path} line 5, column 3; first at line 4, column 3)",
        f"routes[0].workflow_id: duplicate key (at {path} line 11, column 5; first at line 10, column 5)",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "altcraft:\n  token: s3cr3t-value: oops\n",
            "altcraft.token: not valid YAML: mapping values are not allowed here (at {path} line 2, column 22)",
        ),
        (
            "altcraft:\n  token: 's3cr3t-value\n",
            "altcraft.token: not valid YAML: found unexpected end of stream, while scanning a quoted scalar on line 2 "
            "(at {path} line 3, column 1)",
        ),
        (
            "altcraft:\n  token: s3cr3t-value\x07\n",
            "altcraft.token: not valid YAML: character #x0007 is not allowed (at {path} line 2, column 22)",
        ),
        (
            "routes:\n  - topics: !!python/object:os.system s3cr3t-value\n",
            "routes[0].topics: not valid YAML: could not determine a constructor for the tag "
            "'tag:yaml.org,2002:python/object:os.system' (at {path} line 2, column 13)",
        ),
        (
            "kafka:\n  common: [s3cr3t-value,\n",
            "kafka.common[1]: not valid YAML: expected the node content, but found '<stream end>', while parsing a "
            "flow node on line 3 (at {path} line 3, column 1)",
        ),
        (
            "kafka:\n\tgroup_id: s3cr3t-value\n",
            "kafka: not valid YAML: found character '\\t' that cannot start any token, while scanning for the next "
            "token (at {path} line 2, column 1)",
        ),
    ],
)
def test_yaml_errors_give_the_place_but_never_the_line(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SettingsError) as err:
        load_settings(path, environ={})
    assert err.value.problems == [expected.format(path=path)]
    assert "s3cr3t-value" not in str(err.value)


def test_a_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_bytes(b"altcraft:\n  token: \xff\xfe\n")
    with pytest.raises(SettingsError) as err:
        load_settings(path, environ={})
    assert err.value.problems == [f"{path}: not UTF-8 text (byte 19)"]


# --------------------------------------------------------------------------------------------
# Scalars as meant: no booleans for numbers, numbers as written for text


@pytest.mark.parametrize(
    ("section", "key"),
    [("routes.0", "workflow_id"), ("batching", "linger_s"), ("observability", "port"),
     ("altcraft", "max_requests_per_s"), ("altcraft.retry", "max_attempts")],
)  # fmt: skip
def test_booleans_are_not_numbers(tmp_path: Path, section: str, key: str) -> None:
    path = write(tmp_path, MINIMAL)
    env = {ENV_PREFIX + "__".join([*section.upper().split("."), key.upper()]): "true"}
    with pytest.raises(SettingsError) as err:
        load_settings(path, environ=env)
    shown = section.replace(".0", "[0]")  # the environment names a list item by its index; problems show it in brackets
    assert err.value.problems == [f"{shown}.{key}: expected a number, not a boolean (got True)"]


def test_numbers_given_for_text_settings_are_that_text_as_written(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
kafka: {group_id: 012345}
altcraft: {token: 0123, request_id_epoch: 1.10}
routes:
  - {name: 2024, topics: [12345, 1e3], workflow_id: "12", db_id: 7, fields: {CRM_ID: 0x1F}}
dead_letter: {topic: 007}
""",
    )
    s = load_settings(path, environ={})
    assert s.kafka.group_id == "012345"
    assert s.token() == "0123"
    assert s.altcraft.request_id_epoch == "1.10"
    assert s.routes[0].name == "2024"
    assert s.routes[0].topics == ["12345", "1e3"]
    assert s.routes[0].workflow_id == 12  # a numeric string for a number setting is that number
    assert s.routes[0].fields == {"CRM_ID": "0x1F"}
    assert s.dead_letter.topic == "007"


def test_environment_numbers_for_text_settings_keep_their_digits(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    env = {ENV_PREFIX + "KAFKA__GROUP_ID": "0012", ENV_PREFIX + "ROUTES__0__WORKFLOW_ID": "42"}
    s = load_settings(path, environ=env)
    assert s.kafka.group_id == "0012"
    assert s.routes[0].workflow_id == 42


def test_librdkafka_values_keep_their_yaml_types(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "kafka: {consumer: {fetch.min.bytes: 1_000, check.crcs: true, x.y: 0.5}}\n")
    consumer = load_settings(path, environ={}).kafka.consumer
    assert consumer == {"fetch.min.bytes": 1000, "check.crcs": True, "x.y": 0.5}
    assert [type(v) for v in consumer.values()] == [int, bool, float]


# --------------------------------------------------------------------------------------------
# Topics: exact Kafka names only


@pytest.mark.parametrize(
    ("topic", "message"),
    [
        (r"^cdc\..*", "topic patterns are not supported: list every topic by its exact name"),
        ("cdc.*", "topic patterns are not supported: list every topic by its exact name"),
        ("cdc customers", "a Kafka topic name holds only the letters a-z and A-Z, digits, '.', '_' and '-'"),
        ("клиенты", "a Kafka topic name holds only the letters a-z and A-Z, digits, '.', '_' and '-'"),
        ("..", "not a Kafka topic name"),
        ("", "not a Kafka topic name"),
        ("t" * 250, "a Kafka topic name has at most 249 characters, this one 250"),
    ],
)
def test_topics_must_be_exact_kafka_names(tmp_path: Path, topic: str, message: str) -> None:
    path = write(
        tmp_path,
        MINIMAL.replace("[cdc.customers]", f"[ok.topic, {json.dumps(topic)}]")
        + f"dead_letter: {{topic: {json.dumps(topic)}}}\n",
    )
    with pytest.raises(SettingsError) as err:
        load_settings(path, environ={})
    assert err.value.problems == [
        f"routes[0].topics[1]: {message} (got {topic!r})",
        f"dead_letter.topic: {message} (got {topic!r})",
    ]


def test_the_longest_kafka_topic_name_is_accepted(tmp_path: Path) -> None:
    topic = "a-Z_0." * 41 + "xyz"
    assert len(topic) == 249
    path = write(tmp_path, MINIMAL.replace("[cdc.customers]", f"[{topic}]"))
    assert load_settings(path, environ={}).topics == [topic]


# --------------------------------------------------------------------------------------------
# Files the settings name


_TEST_CA = """-----BEGIN CERTIFICATE-----
MIIBiTCCAS+gAwIBAgIUcO/plCHpeE8ZrJGlNaHDctCmyzEwCgYIKoZIzj0EAwIw
GTEXMBUGA1UEAwwOQ29uZmlnIFRlc3QgQ0EwIBcNMjYxMTMwMDA1NzMzWhgPMjEy
NjExMDYwMDU3MzNaMBkxFzAVBgNVBAMMDkNvbmZpZyBUZXN0IENBMFkwEwYHKoZI
zj0CAQYIKoZIzj0DAQcDQgAEecADg9nGUIx+k6VxOvQRi/AQsdKVjPWdLho8ugRG
5eh0TtxZRnf86apgGF6eqdYKes/ajfazyRw46dECnuWu/qNTMFEwHQYDVR0OBBYE
FIUCT55ZccLg5ZIDZrqllnD1oCGnMB8GA1UdIwQYMBaAFIUCT55ZccLg5ZIDZrql
lnD1oCGnMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIhAKc+YPXF
X2uynGnQkNNskisSeu0mGCtKwzbbjqc43xajAiBDVLixhqdQ7lA4nYErqtZ/GPho
7kS6Tm39w3yYlEy4iQ==
-----END CERTIFICATE-----
"""  # a throwaway self-signed CA whose key was never kept: only its parsing matters

AVRO_ROUTE = """
altcraft: {token: t}
schema_registry: {url: "http://registry:8081"}
routes:
  - {name: r, topics: [t], format: debezium-avro, workflow_id: 1, db_id: 7, reader_schema: READER}
"""


def test_a_reader_schema_must_be_a_readable_avro_schema(tmp_path: Path) -> None:
    good = tmp_path / "good.avsc"
    good.write_text('{"type": "record", "name": "Customer", "fields": [{"name": "id", "type": "long"}]}')
    assert (
        load_settings(write(tmp_path, AVRO_ROUTE.replace("READER", str(good))), environ={}).routes[0].reader_schema
        == good
    )

    not_json = tmp_path / "not-json.avsc"
    not_json.write_text("{type: record")
    not_avro = tmp_path / "not-avro.avsc"
    not_avro.write_text('{"type": "record", "name": "Customer", "fields": [{"name": "id", "type": "lnog"}]}')
    expected = {
        tmp_path / "missing.avsc": "cannot read the file: No such file or directory",
        tmp_path: "cannot read the file: Is a directory",
        not_json: "the file is not JSON (line 1, column 2: Expecting property name enclosed in double quotes)",
        not_avro: "the file is not a valid Avro schema: UnknownType: lnog",
    }
    for reader, message in expected.items():
        with pytest.raises(SettingsError) as err:
            load_settings(write(tmp_path, AVRO_ROUTE.replace("READER", str(reader))), environ={})
        assert err.value.problems == [f"routes[0].reader_schema: {message} (got {str(reader)!r})"]


def test_a_reader_schema_on_a_json_route_is_refused_without_reading_it(tmp_path: Path) -> None:
    text = AVRO_ROUTE.replace("debezium-avro", "debezium-json").replace("READER", str(tmp_path / "missing.avsc"))
    with pytest.raises(SettingsError) as err:
        load_settings(write(tmp_path, text), environ={})
    assert err.value.problems == [
        "routes[0].reader_schema: reader_schema applies to Avro formats, not debezium-json "
        f"(got '{tmp_path}/missing.avsc')"
    ]


@pytest.mark.parametrize("section", ["altcraft", "schema_registry"])
def test_a_ca_file_must_hold_a_pem_certificate(tmp_path: Path, section: str) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text(_TEST_CA)
    env = {f"{ENV_PREFIX}{section.upper()}__CA_FILE": str(ca)}
    s = load_settings(write(tmp_path, MINIMAL), environ=env)
    assert getattr(s, section).ca_file == ca

    not_pem = tmp_path / "placeholder.pem"
    not_pem.write_text("placeholder\n")
    for path, message in [(tmp_path / "missing.pem", "cannot read the file: No such file or directory"),
                          (not_pem, "the file holds no PEM certificate")]:  # fmt: skip
        env = {f"{ENV_PREFIX}{section.upper()}__CA_FILE": str(path)}
        with pytest.raises(SettingsError) as err:
            load_settings(write(tmp_path, MINIMAL), environ=env)
        assert err.value.problems == [f"{section}.ca_file: {message} (got {str(path)!r})"]


@pytest.mark.parametrize(
    ("section", "key"),
    [("altcraft", "token_file"), ("kafka", "sasl_password_file"),
     ("schema_registry", "bearer_token_file"), ("schema_registry", "basic_auth_password_file")],
)  # fmt: skip
def test_every_secret_file_must_be_readable_and_not_empty(tmp_path: Path, section: str, key: str) -> None:
    (tmp_path / "empty").write_text("\ufeff \n")
    path = write(tmp_path, MINIMAL)
    env = {ENV_PREFIX + "SCHEMA_REGISTRY__BASIC_AUTH_USER": "svc"} if key == "basic_auth_password_file" else {}
    if section == "altcraft":
        path = write(tmp_path, MINIMAL.replace("token: s3cr3t-token-value", "token: null"))
    for target, message in [
        (tmp_path / "missing", "cannot read the file: No such file or directory"),
        (tmp_path, "cannot read the file: Is a directory"),
        (tmp_path / "empty", "the file is empty"),
    ]:
        file_var = ENV_PREFIX + f"{section}__{key}".upper()
        with pytest.raises(SettingsError) as err:
            load_settings(path, environ={**env, file_var: str(target)})
        assert err.value.problems == [f"{section}.{key}: {message} (got {str(target)!r})"]


# --------------------------------------------------------------------------------------------
# Tokens: what editors leave is stripped, what no HTTP header can carry is refused


def test_a_token_file_with_a_bom_and_a_newline_is_the_token(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_bytes("\ufefffile-token-123\r\n".encode())
    s = load_settings(write(tmp_path, MINIMAL.replace("token: s3cr3t-token-value", f"token_file: {token}")), environ={})
    assert s.token() == "file-token-123"


@pytest.mark.parametrize("bad", ["é", "\t", "\x00", "\u200b", "\ufeff", "\n"])
def test_a_token_file_with_a_character_no_header_carries_is_refused(tmp_path: Path, bad: str) -> None:
    token = tmp_path / "token"
    token.write_text(f"\ufeffabc{bad}def\n")
    path = write(tmp_path, MINIMAL.replace("token: s3cr3t-token-value", f"token_file: {token}"))
    with pytest.raises(SettingsError) as err:
        load_settings(path, environ={})
    assert err.value.problems == [
        f"altcraft.token_file: in the file, character 4 is not printable ASCII, which an HTTP header cannot carry "
        f"(got '{token}')"
    ]


@pytest.mark.parametrize(
    ("key", "env"),
    [("altcraft.token", {}),
     ("schema_registry.bearer_token", {}),
     ("schema_registry.basic_auth_password", {ENV_PREFIX + "SCHEMA_REGISTRY__BASIC_AUTH_USER": "svc"})],
)  # fmt: skip
def test_inline_and_environment_secrets_are_checked_too(tmp_path: Path, key: str, env: dict[str, str]) -> None:
    var = ENV_PREFIX + key.upper().replace(".", "__")
    ok = load_settings(write(tmp_path, MINIMAL), environ={**env, var: "\ufeffs3cr3t\n"})
    section, name = key.split(".")
    assert getattr(getattr(ok, section), name).get_secret_value() == "s3cr3t"
    with pytest.raises(SettingsError) as err:
        load_settings(write(tmp_path, MINIMAL), environ={**env, var: "s3cr\u00e9t"})
    assert err.value.problems == [
        f"{key}: character 5 is not printable ASCII, which an HTTP header cannot carry (got a hidden value)"
    ]


printable = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40)
unsendable = st.characters(blacklist_categories=("Zs",)).filter(lambda c: not " " <= c <= "~" and not c.isspace())


@pytest.fixture(scope="module")
def minimal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write(tmp_path_factory.mktemp("minimal"), MINIMAL)


@given(token=printable, padding=st.sampled_from(["", "\n", "\r\n", "  \n", "\t\n"]), bom=st.booleans())
def test_any_printable_token_survives_a_bom_and_trailing_whitespace(
    minimal: Path, token: str, padding: str, bom: bool
) -> None:
    env = {ENV_PREFIX + "ALTCRAFT__TOKEN": ("\ufeff" if bom else "") + token + padding}
    assert load_settings(minimal, environ=env).token() == token


@given(head=printable, bad=unsendable, tail=printable)
def test_any_token_with_an_unsendable_character_is_refused_unseen(
    minimal: Path, head: str, bad: str, tail: str
) -> None:
    token = head + bad + tail
    with pytest.raises(SettingsError) as err:
        load_settings(minimal, environ={ENV_PREFIX + "ALTCRAFT__TOKEN": token})
    assert err.value.problems == [
        f"altcraft.token: character {len(head) + 1} is not printable ASCII, which an HTTP header cannot carry "
        "(got a hidden value)"
    ]
    assert token not in str(err.value) and bad not in str(err.value)


# --------------------------------------------------------------------------------------------
# URL credentials masked wherever settings are printed


def test_url_credentials_are_masked_in_the_dump_the_repr_and_problems(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        MINIMAL
        + """
schema_registry: {url: "https://svc:reg-pw-1@registry:8081/x?token=reg-tok-2&region=eu"}
kafka: {common: {sasl.oauthbearer.jwks.url: "https://idp/keys?client_secret=idp-secret-3"}}
""",
    )
    env = {ENV_PREFIX + "ALTCRAFT__BASE_URL": "https://api-user:api-pw-4@altcraft.example/"}
    s = load_settings(path, environ=env)
    assert s.altcraft.base_url == "https://api-user:api-pw-4@altcraft.example"  # the real value is kept
    dumped = masked_dump(s)
    assert dumped["altcraft"]["base_url"] == f"https://api-user:{MASK}@altcraft.example"
    assert dumped["schema_registry"]["url"] == f"https://svc:{MASK}@registry:8081/x?token={MASK}&region={MASK}"
    assert dumped["kafka"]["common"]["sasl.oauthbearer.jwks.url"] == f"https://idp/keys?client_secret={MASK}"
    shown = repr(dumped) + repr(s) + str(s)
    for secret in ("reg-pw-1", "reg-tok-2", "idp-secret-3", "api-pw-4", "s3cr3t-token-value"):
        assert secret not in shown

    env = {ENV_PREFIX + "ALTCRAFT__BASE_URL": "ftp://api-user:api-pw-4@altcraft.example/"}
    with pytest.raises(SettingsError) as err:
        load_settings(path, environ=env)
    assert err.value.problems == [
        f"altcraft.base_url: must start with http:// or https:// (got 'ftp://api-user:{MASK}@altcraft.example/')"
    ]


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("http://host:8080/path", "http://host:8080/path"),
        ("http://user:pw@host", f"http://user:{MASK}@host"),
        ("http://token@host", f"http://{MASK}@host"),
        ("http://user:p@ss/w@host/api", f"http://user:{MASK}@host/api"),
        ("http://user:p?w@host/api", f"http://{MASK}"),
        ("https://host/api?email=a@b.c&token=x", f"https://{MASK}"),
        ("https://host/api?token=abc&x", f"https://host/api?token={MASK}&{MASK}"),
        ("https://host/cb#access_token=abc", f"https://host/cb#access_token={MASK}"),
        ("see https://u:pw@a and http://b?k=v", f"see https://u:{MASK}@a and http://b?k={MASK}"),
        ("not a url: user:pw@host", "not a url: user:pw@host"),
    ],
)
def test_url_masking_examples(text: str, masked: str) -> None:
    assert mask_url_credentials(text) == masked


url_text = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=30)


@given(
    scheme=st.sampled_from(["http", "https", "sasl+ssl"]),
    user=st.from_regex(r"[a-z]{0,8}", fullmatch=True),
    password=url_text,
    host=st.from_regex(r"[a-z]{1,10}(:[0-9]{2,5})?", fullmatch=True),
    path=st.from_regex(r"(/[a-z]{0,6}){0,3}", fullmatch=True),
    params=st.lists(st.tuples(st.from_regex(r"[a-z_]{1,8}", fullmatch=True), url_text), max_size=3),
)
def test_no_url_credential_is_ever_shown(
    scheme: str, user: str, password: str, host: str, path: str, params: list[tuple[str, str]]
) -> None:
    secrets = ["P" + password + "Z"] + ["Q" + value + "Z" for _, value in params]
    query = "&".join(f"{name}={value}" for (name, _), value in zip(params, secrets[1:], strict=True))
    url = f"{scheme}://{user}:{secrets[0]}@{host}{path}" + (f"?{query}" if query else "")
    masked = mask_url_credentials(url)
    for secret in secrets:
        assert secret not in masked
    assert masked.startswith(f"{scheme}://")
    assert mask_url_credentials(masked) == masked  # masking what is masked changes nothing


def test_a_route_condition_can_be_given_through_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    when = '!has(after.tier) || after.tier != "vip"'  # a leading ! is a YAML tag: the text is taken as it is
    s = load_settings(path, environ={ENV_PREFIX + "ROUTES__0__WHEN": when})
    assert s.routes[0].when == when
    with pytest.raises(SettingsError) as err:
        load_settings(path, environ={ENV_PREFIX + "ROUTES__0__WHEN": "after.tier =="})
    assert [p.split(":")[0] for p in err.value.problems] == ["routes[0].when"]
