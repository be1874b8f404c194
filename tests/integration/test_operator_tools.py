"""The operator commands on a real broker and the emulator, run as a user runs them (child processes):
``dlq inspect``, ``dlq replay`` and ``offsets show|reset``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from confluent_kafka import KafkaException, Message

from connector.dlq import DeadLetters
from connector.emulator.config import EmulatorConfig
from connector.emulator.server import Emulator
from connector.models import Reason
from tests.support import ROOT, ConnectorProcess, header_map, wait_until

TOKEN = "operator-tools-secret-token"
WORKFLOW = 31

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(EmulatorConfig(tokens=[TOKEN], workflows=[WORKFLOW], seed=9)) as emu:
        yield emu


def settings(
    kafka: Any, topic: str, dlq: str, url: str, group: str, fields: dict[str, str], **extra: Any
) -> dict[str, Any]:
    batching = extra.pop("batching", {})
    altcraft = extra.pop("altcraft", {})
    return {
        "kafka": {"bootstrap_servers": kafka.bootstrap, "group_id": group,
                  "consumer": {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}},
        "altcraft": {"base_url": url, "token": TOKEN, "retry": {"initial_backoff_s": 0.05, "max_backoff_s": 1},
                     **altcraft},
        "batching": {"max_items": 5, "linger_s": 2.0, **batching},
        "routes": [{"name": "customers", "topics": [topic], "format": "json", "workflow_id": WORKFLOW,
                    "db_id": 7, "ops": {"r": "engage"}, "matching": "email", "fields": fields}],
        "dead_letter": {"topic": dlq},
        "shutdown": {"drain_timeout_s": 10},
        **extra,
    }  # fmt: skip


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def tool(config: Path, *args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``altcraft-connector <args> --config FILE`` as a child process; its exit code, stdout and stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "connector.cli", *args, "--config", str(config)],
        cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, input=stdin or "", capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
    assert TOKEN not in done.stdout + done.stderr, "a secret was printed"
    return done


def engaged_by_email(emu: Emulator) -> Counter[str]:
    return Counter({e["matching_value"]: e["count"] for e in emu.engagements(workflow_id=WORKFLOW)})


def run_to_end(kafka: Any, proc: ConnectorProcess, group: str, topic: str, timeout: float = 120) -> None:
    """Start the connector, wait until its committed offsets reach the end offsets, stop it (SIGTERM)."""
    ends = kafka.end_offsets(topic)
    proc.start()
    try:

        def done() -> bool:
            if not proc.alive():
                raise AssertionError(f"the connector exited early:\n{proc.log_tail()}")
            try:
                return kafka.committed(group, topic) == ends
            except KafkaException:
                return False

        try:
            wait_until(done, timeout, "committed offsets at the end offsets", interval=0.5)
        except AssertionError:
            print(proc.log_tail())
            raise
        code, _ = proc.terminate()
        assert code == 0, proc.log_tail()
    finally:
        proc.stop()


def wait_group_empty(kafka: Any, config: Path) -> None:
    wait_until(lambda: "no active members" in tool(config, "offsets", "show").stdout, 60, "the group to be empty", 1)


# ------------------------------------------------------------------------------------ dlq inspect


def write_dead_letters(kafka: Any, dlq: str, letters: list[tuple[Message, Reason]]) -> None:
    """Dead letters written by the connector's own publisher."""
    writer = DeadLetters({"bootstrap.servers": kafka.bootstrap}, dlq, clock=time.monotonic)
    confirmed: list[int] = []
    for msg, reason in letters:
        writer.publish(msg, reason, lambda: confirmed.append(1))
    deadline = time.monotonic() + 60
    while len(confirmed) < len(letters) and time.monotonic() < deadline:
        writer.poll()
        writer.flush(0.2)
    assert len(confirmed) == len(letters)


def test_inspect_counts_dead_letters_by_stage_and_reason_and_shows_samples(
    kafka: Any, emulator: Emulator, tmp_path: Path
) -> None:
    topic, dlq = kafka.new_topic(2), kafka.new_topic(2, prefix="dlq")
    now = int(time.time() * 1000)
    old = now - 3 * 3600 * 1000

    def record(offset: int, value: bytes, ts: int) -> Message:
        return Message(topic=topic, partition=offset % 2, offset=offset, key=f"k{offset}".encode(), value=value,
                       headers=[("trace", b"t")], timestamp=(1, ts))  # fmt: skip

    mapping = Reason("map", "MappingError", "missing matching field 'email'")
    decode = Reason("decode", "DecodeError", "not valid JSON: unexpected end of data")
    api = Reason("api", "AltcraftRejected", "Altcraft error 400: Invalid email", 400, "Invalid email", "akc-x")
    letters = [(record(i, b'{"id": %d, "mail": "p%d@example.com"}' % (i, i), old), mapping) for i in range(5)]
    letters += [(record(10 + i, b'{"id": \x1b[2J', now), decode) for i in range(2)]
    letters += [(record(20, b'{"email": "not-an-email"}', now), api)]
    write_dead_letters(kafka, dlq, letters)
    config = write_config(tmp_path / "c.yaml", settings(kafka, topic, dlq, emulator.url, f"g-{topic}",
                                                        {"email": "email"}))  # fmt: skip

    done = tool(config, "dlq", "inspect", "--limit", "3")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"dead-letter topic {dlq}: 8 dead letter(s) read" in out
    by_stage = out.split("by stage:\n")[1].split("\n\n")[0].splitlines()
    assert [line.split() for line in by_stage] == [["map", "5"], ["decode", "2"], ["api", "1"]]
    assert "decode  DecodeError" in out and "api     AltcraftRejected 400: Invalid email" in out
    assert out.count("     source  ") == 3
    assert f"source  {topic}[0]@0" in out
    assert "stage   map  MappingError" in out
    assert "message missing matching field 'email'" in out
    assert "\x1b" not in out

    api_only = tool(config, "dlq", "inspect", "--stage", "api")
    assert "selected: 1 (stage api)" in api_only.stdout
    assert 'value   {"email": "not-an-email"}' in api_only.stdout
    assert f"source  {topic}[0]@20" in api_only.stdout

    recent = tool(config, "dlq", "inspect", "--since", "1h", "--limit", "0")
    assert "selected: 3 (since 1h)" in recent.stdout and "MappingError" not in recent.stdout
    assert "samples" not in recent.stdout
    # It read the topic without joining or committing anything for the connector's group.
    assert kafka.committed(f"g-{topic}", dlq) == {}


# ------------------------------------------------------------------------------------ dlq replay


def test_replay_after_fixing_the_mapping_engages_once_and_a_second_replay_nobody(
    kafka: Any, emulator: Emulator, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    topic, dlq = kafka.new_topic(2), kafka.new_topic(1, prefix="dlq")
    group = f"g-{topic}"
    # 14 rows carry their address under "mail" (the route reads "email": a mapping fault), one of them an
    # address Altcraft refuses; 4 rows are fine from the start.
    rows = [{"id": i, "mail": f"fixed{i}@example.com"} for i in range(14)] + [{"id": 99, "mail": "not-an-email"}]
    good = [{"id": 100 + i, "email": f"good{i}@example.com"} for i in range(4)]
    kafka.produce(topic, [{"value": orjson.dumps(r), "key": str(r["id"]).encode(), "partition": r["id"] % 2}
                          for r in rows + good])  # fmt: skip
    broken = settings(kafka, topic, dlq, emulator.url, group, {"email": "email"})
    run_to_end(kafka, ConnectorProcess(broken, tmp_path, free_port()), group, topic)
    assert engaged_by_email(emulator) == Counter({f"good{i}@example.com": 1 for i in range(4)})
    assert len(kafka.read_all(dlq)) == 15

    fixed = write_config(tmp_path / "fixed.yaml", settings(kafka, topic, dlq, emulator.url, group, {"email": "mail"}))
    requests_before = emulator.stats()["requests"]
    dry = tool(fixed, "dlq", "replay", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "would replay    15 in" in dry.stdout and "Request-ID akc-replay-" in dry.stdout
    assert emulator.stats()["requests"] == requests_before  # a dry run sends nothing

    first = tool(fixed, "dlq", "replay", "--dead-letter-again")
    assert first.returncode == 1, first.stdout + first.stderr  # one item still refused
    assert "engaged         14" in first.stdout
    assert "rejected        1  (400 Invalid email: 1)" in first.stdout
    assert "dead-lettered again 1" in first.stdout
    assert f"{dlq}[0]@" in first.stdout and "api AltcraftRejected: Altcraft error 400: Invalid email" in first.stdout
    fixed_emails = {f"fixed{i}@example.com" for i in range(14)}
    assert {m: n for m, n in engaged_by_email(emulator).items() if m in fixed_emails} == dict.fromkeys(fixed_emails, 1)
    again = kafka.read_all(dlq)[-1]
    h = header_map(again)
    assert (h["__connect.errors.topic"], h["__connect.errors.stage"], h["altcraft.error.code"]) == (topic, "api", "400")
    assert h["altcraft.replay.of"].startswith(f"{dlq}/0/")
    assert orjson.loads(again.value() or b"") == {"id": 99, "mail": "not-an-email"}

    duplicates_before = emulator.stats()["duplicates"]
    second = tool(fixed, "dlq", "replay")
    assert "engaged         0" in second.stdout, second.stdout
    assert "already done    14" in second.stdout
    # The refused record goes once more, as its new letter, and is refused again; its first letter is sent in
    # its first group again, so that the group keeps its Request-ID. Nobody is engaged twice.
    assert "rejected        1" in second.stdout
    assert "replaced by a newer dead letter, resent in its first group to keep its Request-ID: 1" in second.stdout
    assert {m: n for m, n in engaged_by_email(emulator).items() if m in fixed_emails} == dict.fromkeys(fixed_emails, 1)
    assert emulator.stats()["duplicates"] > duplicates_before


# ------------------------------------------------------------------------------------ offsets


def test_show_prints_the_recorded_ranges_and_reset_refuses_while_a_connector_runs(
    kafka: Any, emulator: Emulator, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    topic, dlq = kafka.new_topic(1), kafka.new_topic(1, prefix="dlq")
    group = f"g-{topic}"
    kafka.produce(topic, [orjson.dumps({"id": i, "email": f"slow{i}@example.com"}) for i in range(12)])
    emulator.set_faults(latency_s=4.0)  # a batch stays in flight long enough to be seen in the metadata
    data = settings(kafka, topic, dlq, emulator.url, group, {"email": "email"}, batching={"max_items": 4},
                    altcraft={"max_in_flight": 1})  # fmt: skip
    proc = ConnectorProcess(data, tmp_path, free_port())
    proc.start()
    try:

        def recorded() -> bool:
            got = kafka.committed_with_metadata(group, topic)
            return bool(got) and got[0][1].startswith("akc1:") and "-" in got[0][1]

        wait_until(recorded, 60, "a batch range recorded in the commit metadata", 0.2)
        show = tool(proc.config_path, "offsets", "show")
        assert show.returncode == 0, show.stderr
        assert f"group {group}: Stable, 1 active member(s)" in show.stdout
        row = next(line for line in show.stdout.splitlines() if line.startswith(topic))
        assert row.split()[:4] == [topic, "0", row.split()[2], "12"]
        assert "akc1:" in row and "range(s)" in row

        refused = tool(proc.config_path, "offsets", "reset", "--to", "earliest", "--yes")
        assert refused.returncode == 1
        assert "refused" in refused.stderr and "1 active member(s)" in refused.stderr
        assert "nothing changed" in refused.stderr
        emulator.clear_faults()
        wait_until(lambda: kafka.committed(group, topic) == {0: 12}, 120, "the connector to finish", 0.5)
        assert proc.terminate()[0] == 0
    finally:
        proc.stop()
    wait_group_empty(kafka, proc.config_path)
    show = tool(proc.config_path, "offsets", "show").stdout
    row = next(line for line in show.splitlines() if line.startswith(topic))
    assert row.split()[:5] == [topic, "0", "12", "12", "0"]
    assert "total lag 0" in show


def test_reset_to_earliest_re_engages_only_with_a_new_epoch(
    kafka: Any, emulator: Emulator, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    topic, dlq = kafka.new_topic(2), kafka.new_topic(1, prefix="dlq")
    group = f"g-{topic}"
    emails = [f"rerun{i}@example.com" for i in range(20)]
    kafka.produce(topic, [{"value": orjson.dumps({"email": e}), "partition": i % 2} for i, e in enumerate(emails)])
    data = settings(kafka, topic, dlq, emulator.url, group, {"email": "email"})
    proc = ConnectorProcess(data, tmp_path, free_port())
    run_to_end(kafka, proc, group, topic)
    assert engaged_by_email(emulator) == Counter(dict.fromkeys(emails, 1))
    wait_group_empty(kafka, proc.config_path)

    # Asked, not confirmed: nothing changes.
    declined = tool(proc.config_path, "offsets", "reset", "--to", "earliest", stdin="no\n")
    assert declined.returncode == 1 and "not confirmed; nothing changed" in declined.stderr
    assert kafka.committed(group, topic) == {0: 10, 1: 10}

    # Same epoch: the re-run is answered as duplicates, nobody is engaged again.
    reset = tool(proc.config_path, "offsets", "reset", "--to", "earliest", stdin="yes\n")
    assert reset.returncode == 0, reset.stdout + reset.stderr
    assert "cleared on purpose" in reset.stdout
    assert "20 record(s) will be read again" in reset.stdout and "set a new altcraft.request_id_epoch" in reset.stdout
    assert kafka.committed_with_metadata(group, topic) == {0: (0, ""), 1: (0, "")}
    duplicates = emulator.stats()["duplicates"]
    run_to_end(kafka, proc, group, topic)
    assert engaged_by_email(emulator) == Counter(dict.fromkeys(emails, 1))
    assert emulator.stats()["duplicates"] >= duplicates + 4  # two batches of 5 per partition
    wait_group_empty(kafka, proc.config_path)

    # A new epoch: the re-run engages every profile once more, on purpose.
    assert tool(proc.config_path, "offsets", "reset", "--to", "earliest", "--yes").returncode == 0
    epoch = ConnectorProcess({**data, "altcraft": {**data["altcraft"], "request_id_epoch": "2"}}, tmp_path,
                             free_port(), name="epoch2")  # fmt: skip
    duplicates = emulator.stats()["duplicates"]
    run_to_end(kafka, epoch, group, topic)
    assert engaged_by_email(emulator) == Counter(dict.fromkeys(emails, 2))
    assert emulator.stats()["duplicates"] == duplicates
