"""The compiled Avro reader reads what fastavro writes exactly as fastavro reads it (values then converted
as Altcraft expects), resolves writer and reader schemas as the Avro specification says, and refuses
malformed bytes with a reason instead of crashing or looping."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import io
import random
import time
import uuid
from typing import Any

import fastavro
import orjson
import pytest

from connector.decode.avro import Incompatible, compile_reader

INNER = {"type": "record", "name": "Inner", "fields": [{"name": "x", "type": "int"}]}

EVERYTHING: dict[str, Any] = {
    "type": "record",
    "name": "All",
    "namespace": "test.avro",
    "fields": [
        {"name": "n", "type": "null"},
        {"name": "b", "type": "boolean"},
        {"name": "i", "type": "int"},
        {"name": "l", "type": "long"},
        {"name": "f", "type": "float"},
        {"name": "d", "type": "double"},
        {"name": "s", "type": "string"},
        {"name": "by", "type": "bytes"},
        {"name": "fx", "type": {"type": "fixed", "name": "F4", "size": 4}},
        {"name": "e", "type": {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN", "BLUE"]}},
        {"name": "a", "type": {"type": "array", "items": "long"}},
        {"name": "m", "type": {"type": "map", "values": ["null", "string"]}},
        {"name": "u", "type": ["null", "int", "string", INNER]},
        {"name": "nested", "type": "Inner"},
        {"name": "date", "type": {"type": "int", "logicalType": "date"}},
        {"name": "tsm", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "tsu", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "ltsm", "type": {"type": "long", "logicalType": "local-timestamp-millis"}},
        {"name": "tm", "type": {"type": "int", "logicalType": "time-millis"}},
        {"name": "tu", "type": {"type": "long", "logicalType": "time-micros"}},
        {"name": "dec", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}},
        {"name": "dec0", "type": {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 0}},
        {
            "name": "fdec",
            "type": {"type": "fixed", "name": "FD", "size": 8, "logicalType": "decimal", "precision": 12, "scale": 3},
        },
        {"name": "uid", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "recs", "type": {"type": "array", "items": "Inner"}},
        {"name": "opt_date", "type": ["null", {"type": "int", "logicalType": "date"}]},
        {"name": "maps", "type": {"type": "map", "values": {"type": "array", "items": "string"}}},
    ],
}


def _text(rng: random.Random) -> str:
    alphabet = "abcXYZ019 _-é漢字🙂\u0000"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 70)))


def _random_record(rng: random.Random) -> dict[str, Any]:
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    union_pick = rng.randrange(4)
    return {
        "n": None,
        "b": rng.random() < 0.5,
        "i": rng.randint(-(2**31), 2**31 - 1),
        "l": rng.choice([0, -1, 63, 64, -65, rng.randint(-(2**63), 2**63 - 1)]),
        "f": rng.uniform(-1e6, 1e6),
        "d": rng.uniform(-1e300, 1e300),
        "s": _text(rng),
        "by": rng.randbytes(rng.randint(0, 90)),
        "fx": rng.randbytes(4),
        "e": rng.choice(["RED", "GREEN", "BLUE"]),
        "a": [rng.randint(-(2**40), 2**40) for _ in range(rng.randint(0, 70))],
        "m": {_text(rng): rng.choice([None, _text(rng)]) for _ in range(rng.randint(0, 5))},
        "u": [None, rng.randint(-5, 5), _text(rng), {"x": rng.randint(-9, 9)}][union_pick],
        "nested": {"x": rng.randint(-(2**31), 2**31 - 1)},
        "date": dt.date(1970, 1, 1) + dt.timedelta(days=rng.randint(-700_000, 2_900_000)),
        "tsm": epoch + dt.timedelta(milliseconds=rng.randint(-(10**12), 10**13)),
        "tsu": epoch + dt.timedelta(microseconds=rng.randint(-(10**15), 10**16)),
        "ltsm": dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=rng.randint(0, 10**13)),
        "tm": dt.time(rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59), rng.randint(0, 999) * 1000),
        "tu": dt.time(rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59), rng.randint(0, 999_999)),
        "dec": decimal.Decimal(rng.randint(-(10**9), 10**9)).scaleb(-2),
        "dec0": decimal.Decimal(rng.randint(-(10**11), 10**11)),
        "fdec": decimal.Decimal(rng.randint(-(10**11), 10**11)).scaleb(-3),
        "uid": str(uuid.UUID(int=rng.getrandbits(128))),
        "recs": [{"x": rng.randint(-100, 100)} for _ in range(rng.randint(0, 3))],
        "opt_date": rng.choice([None, dt.date(2000, 2, 29)]),
        "maps": {"k": [_text(rng)], "empty": []},
    }


def as_altcraft(value: Any) -> Any:
    """What fastavro's value must become for Altcraft (the conversions the module docstring promises)."""
    if isinstance(value, dict):
        return {k: as_altcraft(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_altcraft(v) for v in value]
    if isinstance(value, dt.datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):  # exactly its digits, as a JSON number
        return (
            int(value) if value.as_tuple().exponent == 0 and -(2**63) <= value < 2**63 else orjson.Fragment(str(value))
        )
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value


def write(schema: Any, record: Any) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return out.getvalue()


def read_both(writer: Any, reader: Any | None, payload: bytes) -> tuple[Any, Any]:
    w = fastavro.parse_schema(writer)
    r = fastavro.parse_schema(reader) if reader is not None else None
    expected = fastavro.schemaless_reader(io.BytesIO(payload), w, r)
    got, end = compile_reader(w, r)(payload, 0)
    assert end == len(payload)
    return as_altcraft(expected), got


def test_every_type_reads_as_fastavro_reads_it() -> None:
    rng = random.Random(20240501)
    for _ in range(300):
        payload = write(EVERYTHING, _random_record(rng))
        expected, got = read_both(EVERYTHING, None, payload)
        assert as_json(got) == as_json(expected)


def as_json(value: Any) -> bytes:
    """What is sent: decimals are ``orjson.Fragment`` (exact digits), compared as written."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def test_values_come_out_in_altcraft_formats() -> None:
    record = _random_record(random.Random(1))
    record.update(
        date=dt.date(1987, 6, 5),
        tsm=dt.datetime(2024, 5, 1, 10, 20, 30, 123_000, tzinfo=dt.UTC),
        ltsm=dt.datetime(2024, 5, 1, 10, 20, 30),
        tm=dt.time(7, 8, 9, 10_000),
        dec=decimal.Decimal("12.34"),
        dec0=decimal.Decimal("-42"),
        by=b"\x00\xffhi",
        e="GREEN",
    )
    got, _ = compile_reader(fastavro.parse_schema(EVERYTHING))(write(EVERYTHING, record), 0)
    assert got["date"] == "1987-06-05"
    assert got["tsm"] == "2024-05-01T10:20:30.123000Z"
    assert got["ltsm"] == "2024-05-01T10:20:30"
    assert got["tm"] == "07:08:09.010000"
    assert orjson.dumps(got["dec"]) == b"12.34"  # exactly the digits written, not a float
    assert got["dec0"] == -42 and type(got["dec0"]) is int
    assert got["by"] == "AP9oaQ=="
    assert got["e"] == "GREEN"


def test_debezium_temporal_types_convert_like_the_json_path() -> None:
    schema = {
        "type": "record",
        "name": "Row",
        "fields": [
            {"name": "born", "type": {"type": "int", "connect.name": "io.debezium.time.Date"}},
            {"name": "seen", "type": {"type": "long", "connect.name": "io.debezium.time.Timestamp"}},
            {"name": "micro", "type": {"type": "long", "connect.name": "io.debezium.time.MicroTimestamp"}},
            {"name": "nano", "type": {"type": "long", "connect.name": "io.debezium.time.NanoTimestamp"}},
            {"name": "zoned", "type": {"type": "string", "connect.name": "io.debezium.time.ZonedTimestamp"}},
            {"name": "clock", "type": {"type": "int", "connect.name": "io.debezium.time.Time"}},
            {
                "name": "connect_date",
                "type": {"type": "int", "connect.name": "org.apache.kafka.connect.data.Date", "logicalType": "date"},
            },
        ],
    }
    record = {
        "born": 10_000,
        "seen": 1_700_000_000_123,
        "micro": 1_700_000_000_123_456,
        "nano": 1_700_000_000_123_456_789,
        "zoned": "2023-11-14T22:13:20.123Z",
        "clock": 3_600_000,
        "connect_date": 19_000,
    }
    got, _ = compile_reader(fastavro.parse_schema(schema))(write(schema, record), 0)
    assert got == {
        "born": "1997-05-19",
        "seen": "2023-11-14T22:13:20.123000Z",
        "micro": "2023-11-14T22:13:20.123456Z",
        "nano": "2023-11-14T22:13:20.123457Z",  # the JSON path rounds to microseconds too
        "zoned": "2023-11-14T22:13:20.123Z",
        "clock": 3_600_000,  # Time is not converted on the JSON path either
        "connect_date": "2022-01-08",
    }


def test_recursive_records() -> None:
    node = {
        "type": "record",
        "name": "Node",
        "fields": [{"name": "v", "type": "int"}, {"name": "next", "type": ["null", "Node"]}],
    }
    chain: dict[str, Any] | None = None
    for v in range(5):
        chain = {"v": v, "next": chain}
    expected, got = read_both(node, None, write(node, chain))
    assert got == expected
    # ... and skipped when the reader does not want them
    holder = {
        "type": "record",
        "name": "Holder",
        "fields": [{"name": "list", "type": node}, {"name": "k", "type": "int"}],
    }
    reader = {"type": "record", "name": "Holder", "fields": [{"name": "k", "type": "int"}]}
    expected, got = read_both(holder, reader, write(holder, {"list": chain, "k": 7}))
    assert got == expected == {"k": 7}


def test_recursive_records_nested_too_deep_are_refused_whatever_the_stack_below_the_reader() -> None:
    """How deep a recursive value may go does not depend on how deep the reader is called from: the
    same record gets the same verdict, read at the top of the stack or 500 frames down."""
    node = {
        "type": "record",
        "name": "Node",
        "fields": [{"name": "v", "type": "int"}, {"name": "next", "type": ["null", "Node"]}],
    }
    read = compile_reader(fastavro.parse_schema(node))

    def chain(levels: int) -> bytes:  # written by hand: fastavro's own writer recurses per level too
        return b"".join(b"\x00\x02" for _ in range(levels - 1)) + b"\x00\x00"  # v=0, next=Node ... next=null

    def verdict(payload: bytes, frames: int = 0) -> str:
        if frames:
            return verdict(payload, frames - 1)
        try:
            value, end = read(payload, 0)
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        depth = 0
        while value is not None:
            depth, value = depth + 1, value["next"]
        return f"read {depth} levels, {end} bytes"

    assert verdict(chain(255)) == verdict(chain(255), 500) == "read 255 levels, 510 bytes"
    assert verdict(chain(256)) == verdict(chain(256), 500) == "_Corrupt: Node nests more than 254 levels deep"
    assert verdict(chain(5000)) == verdict(chain(5000), 500) == verdict(chain(256))


def test_arrays_written_in_sized_blocks() -> None:
    """Java writers may write negative block counts followed by the block's byte size."""
    schema = fastavro.parse_schema({"type": "array", "items": "int"})
    # block of 2 items (count -2 zig-zag = 3) with its byte size (2), items 1 and 2, then the end block
    payload = bytes([3, 4, 2, 4, 0])
    assert compile_reader(schema)(payload, 0) == ([1, 2], len(payload))


# ---------------------------------------------------------------------------------------- resolution

WRITER_V1 = {
    "type": "record",
    "name": "Customer",
    "namespace": "shop",
    "fields": [
        {"name": "id", "type": "int"},
        {"name": "email", "type": ["null", "string"], "default": None},
        {"name": "score", "type": "float"},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "level", "type": {"type": "enum", "name": "Level", "symbols": ["LOW", "MID", "HIGH", "VIP"]}},
        {"name": "blob", "type": "bytes"},
        {"name": "legacy", "type": {"type": "map", "values": {"type": "array", "items": INNER}}},
        {"name": "code", "type": {"type": "fixed", "name": "Code", "size": 3}},
        {"name": "count", "type": ["null", "int"]},
        {"name": "old_name", "type": "string"},
    ],
}

READER_V2 = {
    "type": "record",
    "name": "Customer",
    "namespace": "other.namespace",
    "fields": [
        {"name": "tags", "type": {"type": "array", "items": "string"}},  # reordered
        {"name": "id", "type": "long"},  # int -> long
        {"name": "score", "type": "double"},  # float -> double
        {"name": "email", "type": ["null", "string"], "default": None},
        {
            "name": "level",
            "type": {"type": "enum", "name": "Level", "symbols": ["LOW", "MID", "HIGH", "OTHER"], "default": "OTHER"},
        },
        {"name": "blob", "type": "string"},  # bytes -> string
        {"name": "count", "type": ["null", "long", "string"]},  # [null, int] -> [null, long, string]
        {"name": "new_name", "type": "string", "aliases": ["old_name"]},
        {"name": "segment", "type": "string", "default": "standard"},
        {"name": "joined", "type": {"type": "int", "logicalType": "date"}, "default": 0},
        {"name": "prefs", "type": {"type": "map", "values": "boolean"}, "default": {"sms": True}},
        {"name": "address", "type": ["null", INNER], "default": None},
        {"name": "raw", "type": "bytes", "default": "\u00ff\u0000"},
        # legacy and code are gone: skipped
    ],
}


def _v1_record(rng: random.Random) -> dict[str, Any]:
    return {
        "id": rng.randint(-(2**31), 2**31 - 1),
        "email": rng.choice([None, _text(rng)]),
        "score": rng.uniform(-100, 100),
        "tags": [_text(rng) for _ in range(rng.randint(0, 3))],
        "level": rng.choice(["LOW", "MID", "HIGH", "VIP"]),
        "blob": _text(rng).encode(),
        "legacy": {_text(rng): [{"x": rng.randint(-5, 5)} for _ in range(rng.randint(0, 2))] for _ in range(2)},
        "code": rng.randbytes(3),
        "count": rng.choice([None, rng.randint(-1000, 1000)]),
        "old_name": _text(rng),
    }


def test_resolution_matches_fastavro() -> None:
    rng = random.Random(7)
    for _ in range(200):
        payload = write(WRITER_V1, _v1_record(rng))
        expected, got = read_both(WRITER_V1, READER_V2, payload)
        # fastavro hands defaults over as raw JSON (no logical type, bytes as text): compared below instead
        for raw_default in ("raw", "joined"):
            del expected[raw_default], got[raw_default]
        assert got == expected


def test_resolution_fills_defaults_and_skips_dropped_fields() -> None:
    record = _v1_record(random.Random(3)) | {"level": "VIP", "id": 5, "count": 9, "old_name": "n"}
    _, got = read_both(WRITER_V1, READER_V2, write(WRITER_V1, record))
    assert got["level"] == "OTHER"  # unknown to the reader: its default
    assert got["id"] == 5 and got["count"] == 9 and got["new_name"] == "n"
    assert got["segment"] == "standard" and got["joined"] == "1970-01-01" and got["prefs"] == {"sms": True}
    assert got["raw"] == "/wA=" and got["address"] is None
    assert "legacy" not in got and "code" not in got and "old_name" not in got


def test_mutable_defaults_are_fresh_per_record() -> None:
    read = compile_reader(fastavro.parse_schema(WRITER_V1), fastavro.parse_schema(READER_V2))
    payload = write(WRITER_V1, _v1_record(random.Random(4)))
    first, _ = read(payload, 0)
    first["prefs"]["sms"] = False
    second, _ = read(payload, 0)
    assert second["prefs"] == {"sms": True}


def test_a_reader_field_without_default_that_the_writer_lacks_is_incompatible() -> None:
    reader = {"type": "record", "name": "Customer", "fields": [{"name": "loyalty", "type": "int"}]}
    with pytest.raises(Incompatible, match="'loyalty' has no default"):
        compile_reader(fastavro.parse_schema(WRITER_V1), fastavro.parse_schema(reader))


def test_records_of_other_names_or_types_are_incompatible() -> None:
    other = {"type": "record", "name": "Order", "fields": []}
    with pytest.raises(Incompatible):
        compile_reader(fastavro.parse_schema(WRITER_V1), fastavro.parse_schema(other))
    wrong_type = {"type": "record", "name": "Customer", "fields": [{"name": "id", "type": "string"}]}
    with pytest.raises(Incompatible, match="id: a int cannot be read as a string"):
        compile_reader(fastavro.parse_schema(WRITER_V1), fastavro.parse_schema(wrong_type))


def test_union_branches_without_counterpart_fail_only_when_they_occur() -> None:
    writer = {"type": "record", "name": "R", "fields": [{"name": "v", "type": ["null", "string", "int"]}]}
    reader = {"type": "record", "name": "R", "fields": [{"name": "v", "type": ["null", "string"]}]}
    read = compile_reader(fastavro.parse_schema(writer), fastavro.parse_schema(reader))
    assert read(write(writer, {"v": "a"}), 0)[0] == {"v": "a"}
    with pytest.raises(Exception, match="v: the writer's int has no counterpart"):
        read(write(writer, {"v": 3}), 0)


def test_enum_symbol_unknown_to_a_reader_without_default_fails_when_it_occurs() -> None:
    writer = {"type": "enum", "name": "E", "symbols": ["A", "B"]}
    reader = {"type": "enum", "name": "E", "symbols": ["A"]}
    read = compile_reader(fastavro.parse_schema(writer), fastavro.parse_schema(reader))
    assert read(write(writer, "A"), 0)[0] == "A"
    with pytest.raises(Exception, match="enum symbol 'B' is not in the reader schema"):
        read(write(writer, "B"), 0)


# ---------------------------------------------------------------------------------------- hostile bytes


def _decode_or_refuse(read: Any, payload: bytes) -> None:
    try:
        read(payload, 0)
    except (IndexError, ValueError, OverflowError, UnicodeDecodeError) as exc:
        assert str(exc) or isinstance(exc, IndexError)
    except Exception as exc:
        assert type(exc).__name__ in ("_Truncated", "_Corrupt", "error"), exc


def test_random_and_mutated_bytes_never_hang_or_escape_as_odd_errors() -> None:
    rng = random.Random(99)
    read = compile_reader(fastavro.parse_schema(EVERYTHING))
    good = write(EVERYTHING, _random_record(rng))
    for _ in range(2000):
        mutated = bytearray(good)
        for _ in range(rng.randint(1, 6)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        cut = rng.randint(0, len(mutated))
        _decode_or_refuse(read, bytes(mutated[:cut]))
        _decode_or_refuse(read, rng.randbytes(rng.randint(0, 200)))


def test_a_huge_block_of_empty_items_is_refused_not_looped() -> None:
    read = compile_reader(fastavro.parse_schema({"type": "array", "items": "null"}))
    payload = bytes([0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F])  # 2**62 - 1 items
    with pytest.raises(Exception, match="empty items"):
        read(payload, 0)


def test_deeply_nested_arrays_of_longs_are_read() -> None:
    """Ten arrays deep, with longs of every width at the bottom: the generated reader stays within
    Python's limit on nested blocks."""
    leaf: Any = {"type": "array", "items": "long"}
    value: Any = [0, 63, -64, 64, 8191, -8193, 2**40, -(2**63), 2**63 - 1]
    for _ in range(9):
        leaf = {"type": "array", "items": leaf}
        value = [value, []]
    schema = {"type": "record", "name": "Deep", "fields": [{"name": "a", "type": leaf}]}
    data = write(schema, {"a": value})
    got, end = compile_reader(fastavro.parse_schema(schema))(data, 0)
    assert got == {"a": value} and end == len(data)


def _varint(n: int) -> bytes:
    z = 2 * n if n >= 0 else -2 * n - 1  # zig-zag
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _refused_quickly(read: Any, payload: bytes, match: str) -> None:
    started = time.perf_counter()
    with pytest.raises(Exception, match=match) as caught:
        read(payload, 0)
    assert type(caught.value).__name__ == "_Corrupt"
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize("items", ["long", "string", "double", INNER, {"type": "map", "values": "int"}])
@pytest.mark.parametrize("count", [2**62, -(2**62), 1000])
@pytest.mark.parametrize("read_as", ["read", "skipped"])
def test_a_block_count_beyond_the_bytes_left_is_refused_at_once(items: Any, count: int, read_as: str) -> None:
    writer = {"type": "record", "name": "R", "fields": [{"name": "a", "type": {"type": "array", "items": items}}]}
    reader = {"type": "record", "name": "R", "fields": []} if read_as == "skipped" else None
    read = compile_reader(fastavro.parse_schema(writer), fastavro.parse_schema(reader) if reader else None)
    size = _varint(8) if count < 0 else b""  # a negative count is followed by the block's size in bytes
    _refused_quickly(read, _varint(count) + size + b"\x02" * 10, r"a: a block of \d+ items in \d+ bytes left")


@pytest.mark.parametrize("read_as", ["read", "skipped"])
def test_map_blocks_count_their_keys(read_as: str) -> None:
    writer = {"type": "record", "name": "R", "fields": [{"name": "m", "type": {"type": "map", "values": "null"}}]}
    reader = {"type": "record", "name": "R", "fields": []} if read_as == "skipped" else None
    read = compile_reader(fastavro.parse_schema(writer), fastavro.parse_schema(reader) if reader else None)
    _refused_quickly(read, _varint(2**40) + b"\x02a" * 4, r"m: a block of 1099511627776 items in 8 bytes left")
    good = write(writer, {"m": {"a": None, "b": None}})
    assert read(good, 0)[1] == len(good)


def test_empty_items_are_bounded_per_record_even_when_blocks_nest() -> None:
    """Arrays of arrays of nulls: each inner block is a few bytes saying "a million nulls"; what bounds
    them is a budget for the whole record, not per block."""
    schema = {"type": "array", "items": {"type": "array", "items": "null"}}
    read = compile_reader(fastavro.parse_schema(schema))
    inner = _varint(900_000) + b"\x00"
    _refused_quickly(read, _varint(50) + inner * 50 + b"\x00", "more than 1000000 empty items in one record")
    ok = _varint(1) + inner + b"\x00"
    for _ in range(3):  # the budget starts afresh with every record
        value, end = read(ok, 0)
        assert end == len(ok) and len(value[0]) == 900_000


def test_a_varint_beyond_64_bits_is_refused() -> None:
    read = compile_reader(
        fastavro.parse_schema({"type": "record", "name": "R", "fields": [{"name": "l", "type": "long"}]})
    )
    assert read(b"\xff" * 9 + b"\x01", 0)[0] == {"l": -(2**63)}
    _refused_quickly(read, b"\xff" * 9 + b"\x02", "runs over 64 bits")
    _refused_quickly(read, b"\xff" * 9 + b"\x7f", "runs over 64 bits")
