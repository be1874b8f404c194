"""dlq inspect's report, and the operator commands' arguments, without a broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.cli import EXIT_BAD_SETTINGS, main
from connector.tools.dlq_inspect import Tally, render
from connector.tools.letters import Selection, parse_letter


def letter(offset: int, stage: str, exception: str, message: str, value: bytes | None = b"{}", **extra: bytes):  # type: ignore[no-untyped-def]
    headers = [("__connect.errors.topic", b"cdc.customers"), ("__connect.errors.partition", b"1"),
               ("__connect.errors.offset", str(100 + offset).encode()), ("__connect.errors.stage", stage.encode()),
               ("__connect.errors.exception.class.name", exception.encode()),
               ("__connect.errors.exception.message", message.encode()), *extra.items()]  # fmt: skip
    return parse_letter(0, offset, 1_714_558_830_000, b"key", value, headers)


def sample_tally(selection: Selection = Selection(), limit: int = 2) -> Tally:  # noqa: B008
    tally = Tally(selection, limit)
    for i in range(5):
        tally.add(letter(i, "map", "MappingError", "missing matching field 'email'", b'{"id":%d}\x1b[2J' % i))
    tally.add(letter(5, "decode", "DecodeError", "not valid JSON", b"\x00\x01" * 200))
    api = {"altcraft.error.code": b"400", "altcraft.error.text": b"Invalid email"}
    tally.add(letter(6, "api", "AltcraftRejected", "Altcraft error 400: Invalid email", **api))
    tally.add(letter(7, "api", "AltcraftRejected", "Altcraft error 435: Ambiguous", **{**api, "altcraft.error.code":
                                                                                      b"435"}))  # fmt: skip
    return tally


def test_counts_by_stage_and_reason_and_the_first_samples() -> None:
    lines = render("dlq", {0: (0, 8)}, sample_tally(), None)
    text = "\n".join(lines)
    assert lines[0] == "dead-letter topic dlq: 8 dead letter(s) read (offsets 0: 0-7)"
    stages = lines[lines.index("by stage:") + 1 : lines.index("by stage:") + 4]
    assert [line.split() for line in stages] == [["map", "5"], ["api", "2"], ["decode", "1"]]
    assert "map     MappingError" in text
    assert "api     AltcraftRejected 400: Invalid email" in text
    assert "api     AltcraftRejected 435: Invalid email" in text
    assert "samples (the first 2 of 8, in partition order):" in text
    assert "#1 dlq[0]@0  2024-05-01T10:20:30Z" in text
    assert "source  cdc.customers[1]@100" in text
    assert 'value   {"id":0}\\x1b[2J' in text  # a terminal escape shown, not obeyed
    assert "#3" not in text


def test_the_selection_narrows_counts_and_samples() -> None:
    tally = sample_tally(Selection(stage="api", reason="invalid"), limit=10)
    text = "\n".join(render("dlq", {0: (0, 8)}, tally, "1h"))
    assert "selected: 2 (since 1h, stage api, reason containing 'invalid')" in text
    assert "MappingError" not in text
    assert text.count("#") == 2


def test_nothing_selected_says_so() -> None:
    tally = sample_tally(Selection(stage="size"))
    assert render("dlq", {0: (8, 8)}, tally, None)[-1] == "no dead letters match"
    assert render("dlq", {0: (8, 8)}, Tally(Selection(), 10), None)[-1] == "no dead letters"


def test_a_value_too_long_is_cut_with_its_size() -> None:
    text = "\n".join(render("dlq", {0: (0, 8)}, sample_tally(Selection(stage="decode")), None))
    assert "… (400 bytes)" in text


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["dlq", "inspect", "--since", "yesterday"], "'yesterday' is not a time"),
        (["dlq", "inspect", "--limit", "-1"], "--limit must be 0 or more"),
        (["dlq", "replay", "--since", "3 days"], "is not a time"),
        (["offsets", "reset", "--to", "beginning"], "--to 'beginning'"),
    ],
)
def test_bad_arguments_exit_2_before_anything_connects(
    argv: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "--config", str(tmp_path / "missing.yaml")]) == EXIT_BAD_SETTINGS
    assert says in capsys.readouterr().err


def test_dry_run_and_dead_letter_again_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["dlq", "replay", "--config", "c.yaml", "--dry-run", "--dead-letter-again"])
    assert exc.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_samples_are_the_first_by_partition_and_offset_whatever_the_reading_order() -> None:
    tally = Tally(Selection(), 2)
    for partition, offset in [(1, 0), (0, 9), (1, 1), (0, 3), (0, 4)]:
        tally.add(parse_letter(partition, offset, None, None, b"{}", []))
    assert [(x.partition, x.offset) for x in tally.samples] == [(0, 3), (0, 4)]
    assert tally.selected == 5
