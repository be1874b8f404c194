"""Dead letters read back: provenance, selection, terminal-safe previews, one letter per source record."""

from __future__ import annotations

from typing import Any

from connector.tools.letters import DeadLetter, Selection, first_per_source, parse_letter, preview, printable

PROVENANCE = [
    ("__connect.errors.topic", b"cdc.customers"),
    ("__connect.errors.partition", b"3"),
    ("__connect.errors.offset", b"1042"),
    ("__connect.errors.stage", b"map"),
    ("__connect.errors.exception.class.name", b"MappingError"),
    ("__connect.errors.exception.message", b"missing matching field 'email'"),
]


def letter(offset: int = 0, partition: int = 0, headers: Any = None, **kw: Any) -> DeadLetter:
    return parse_letter(partition, offset, 1_700_000_000_000, kw.get("key", b"k"), kw.get("value", b"{}"),
                        PROVENANCE if headers is None else headers)  # fmt: skip


def test_the_provenance_headers_say_where_the_record_came_from_and_why_it_died() -> None:
    got = parse_letter(0, 7, 123, "k", b"v", [("trace", b"t1"), *PROVENANCE, ("other", "text")])
    assert got.source == ("cdc.customers", 3, 1042)
    assert (got.stage, got.exception, got.message) == ("map", "MappingError", "missing matching field 'email'")
    assert got.reason == "MappingError"
    assert got.key == b"k"
    # Only the record's own headers are original: what a dead letter written again carries.
    assert got.original_headers == (("trace", b"t1"), ("other", b"text"))
    assert not got.truncated


def test_an_api_rejection_counts_by_altcrafts_code_and_text() -> None:
    headers = [*PROVENANCE[:3], ("__connect.errors.stage", b"api"),
               ("__connect.errors.exception.class.name", b"AltcraftRejected"),
               ("__connect.errors.exception.message", b"Altcraft error 400: Invalid email"),
               ("altcraft.error.code", b"400"), ("altcraft.error.text", b"Invalid email"),
               ("altcraft.request.id", b"akc-1")]  # fmt: skip
    got = letter(headers=headers)
    assert got.reason == "AltcraftRejected 400: Invalid email"
    assert all(not name.startswith("altcraft.") for name, _ in got.original_headers)


def test_the_last_provenance_header_wins_and_truncation_is_noticed() -> None:
    headers = [("__connect.errors.stage", b"decode"), *PROVENANCE, ("altcraft.dead_letter.truncated", b"true"),
               ("altcraft.dead_letter.original_size", b"2000000")]  # fmt: skip
    got = letter(headers=headers)
    assert got.stage == "map"
    assert got.truncated


def test_a_record_without_provenance_is_shown_as_unknown() -> None:
    got = letter(headers=[("x", b"y")])
    assert got.source is None
    assert (got.stage, got.reason) == ("unknown", "unknown")
    assert letter(headers=[*PROVENANCE[:2], ("__connect.errors.offset", b"not-a-number")]).source is None


def test_headers_may_come_as_a_mapping() -> None:
    assert letter(headers=dict(PROVENANCE)).source == ("cdc.customers", 3, 1042)


def test_selection_by_stage_and_by_a_part_of_the_reason() -> None:
    one = letter()
    assert Selection().matches(one)
    assert Selection(stage="map").matches(one)
    assert not Selection(stage="api").matches(one)
    assert Selection(reason="mappingerror").matches(one)
    assert Selection(reason="MATCHING FIELD").matches(one)  # the message
    assert not Selection(stage="map", reason="Invalid email").matches(one)


def test_printable_escapes_what_a_terminal_would_obey_and_cuts() -> None:
    assert printable("a\x1b[31mred\x07\n\tz", 100) == "a\\x1b[31mred\\x07\\n\\tz"
    assert printable("zero\u200bwidth", 100) == "zero\\u200bwidth"
    assert printable("abcdef", 3) == "abc…"
    assert printable("ab\x1bcd", 4) == "ab…"  # an escape is never cut in half


def test_a_preview_shows_text_bytes_and_the_size_when_cut() -> None:
    assert preview(None, 10) == "(null)"
    assert preview(b'{"email":"a@b.c"}', 100) == '{"email":"a@b.c"}'
    assert preview(b"\x00\x00\x00\x00\x02\xff", 100) == "\\x00\\x00\\x00\\x00\\x02\\xff"
    assert preview(b"x" * 500, 20) == "x" * 20 + "… (500 bytes)"


def test_one_connector_letter_per_source_record_the_first() -> None:
    a1 = letter(offset=1)
    b = parse_letter(0, 2, None, None, b"{}", [*PROVENANCE[:2], ("__connect.errors.offset", b"7")])
    a2 = letter(offset=5)  # the same record dead-lettered again (at-least-once)
    loose = letter(offset=3, headers=[])
    again = letter(offset=6, headers=[*PROVENANCE, ("altcraft.replay.of", b"dlq/0/1")])  # --dead-letter-again
    chosen, others = first_per_source([a2, again, b, a1, loose])
    assert [x.offset for x in chosen] == [1, 2, 3, 6]
    assert others == [a2]
    assert again.replay_of == ("dlq", 0, 1)
    assert letter(headers=[*PROVENANCE, ("altcraft.replay.of", b"dlq/x/1")]).replay_of is None
