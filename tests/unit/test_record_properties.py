"""Every record gets a verdict, whatever its bytes: an item, a counted skip, or a dead letter naming its
stage; nothing escapes ``Route.prepare`` but a transient registry fault.

Hypothesis draws a few hundred base examples (an input kind and a seed); a seeded mutator derives
hundreds of structure-aware mutants from each: Debezium JSON envelopes with and without the
schema/payload wrapper (schemas with Date, Timestamp, MicroTimestamp, NanoTimestamp and Decimal
columns), flattened ExtractNewRecordState rows, plain JSON rows, and Avro payloads in the Confluent
wire format. Values change type, grow huge or deep, keys vanish or repeat, schema blocks take wrong
shapes, bytes are cut and flipped. Each mutant goes through several routes (unmapped pass and drop,
nested paths, content and custom_data, every op policy, small body limits).

The run prints its seed; ``RECORD_FUZZ_SEED=<seed>`` repeats it exactly. A failure names the example
(kind and seed) and the mutant, and hypothesis prints the falsifying example.
"""

from __future__ import annotations

import base64
import copy
import io
import os
import random
import re
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import fastavro
import orjson
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from connector.config import RouteSettings
from connector.decode.avro import AvroDecoder
from connector.decode.registry import RegisteredSchema, RegistryUnavailable, SchemaNotFound
from connector.errors import TransientError
from connector.models import ImportItem, Reason, Unsent
from connector.routing import Route
from connector.schema_registry.samples import CUSTOMER_ENVELOPE, PROFILE_CHANGE, load_schema

EXAMPLES = 270  # base examples; each one's mutants go through two routes
MUTANTS_PER_EXAMPLE = 400
MIN_MUTANTS = 100_000
SLOW_S = 1.0  # one record taking this long is a hang in the making (a corrupt count looping)

UNAVAILABLE = "__debezium_unavailable_value"
STAGES = frozenset({"decode", "op", "map", "size"})
SKIPS = frozenset({"tombstone", "op_c", "op_r", "op_u", "op_d", "op_t", "op_m"})

# ------------------------------------------------------------------------------------------ routes


def _route(**kw: Any) -> RouteSettings:
    base: dict[str, Any] = {"name": "fuzz", "topics": ["t"], "workflow_id": 7, "db_id": 7}
    base.update(kw)
    return RouteSettings.model_validate(base)


JSON_ROUTES: list[tuple[RouteSettings, int]] = [
    # email matching, columns passed through, nested path
    (_route(fields={"email": "email", "_fname": "first_name", "_city": "address.city"}, unmapped="pass"), 10_000_000),
    # phones, dropped columns, content and custom_data from nested paths, every op engaged, small bodies
    (
        _route(
            matching="phone",
            fields={"phones": "phones", "phone": "phone", "_zip": "address.zip", "_bd": "birth_date"},
            content={"city": "address.city", "born": "birth_date"},
            custom_data={"id": "id", "lat": "address.geo.lat"},
            ops={"c": "engage", "r": "skip", "u": "engage", "d": "engage", "tombstone": "dead-letter"},
        ),
        700,
    ),
    # plain JSON, import mode, custom matching, constants, deletes and snapshots dead-lettered
    (
        _route(
            name="plain",
            format="json",
            mode="import",
            db_id=3,
            workflow_id=None,
            matching="custom",
            field_name="CRM_ID",
            fields={"CRM_ID": "id"},
            constants={"source": "cdc"},
            unmapped="pass",
            ops={"d": "dead-letter", "r": "dead-letter", "u": "engage"},
        ),
        400,
    ),
    # email or phone, engage-task, deep paths only, updates dead-lettered
    (
        _route(
            mode="engage-task",
            matching="email_phone",
            fields={"email": "contact.email", "phone": "contact.phone", "_deep": "a.a.a.a"},
            custom_data={"c": "contact"},
            ops={"u": "dead-letter", "d": "skip"},
        ),
        10_000_000,
    ),
]
AVRO_ROUTES: list[tuple[RouteSettings, int]] = [
    (_route(format="debezium-avro", fields={"email": "email", "_bd": "birth_date"}, unmapped="pass"), 10_000_000),
    (_route(format="avro", fields={"email": "email", "_x": "attrs.x"}, content={"t": "tags"}), 600),
]

# ------------------------------------------------------------------------------------------ Avro

KITCHEN: dict[str, Any] = {
    "type": "record",
    "name": "Kitchen",
    "fields": [
        {"name": "email", "type": ["null", "string"]},
        {"name": "born", "type": {"type": "int", "logicalType": "date"}},
        {"name": "seen", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "local", "type": {"type": "long", "logicalType": "local-timestamp-millis"}},
        {"name": "at", "type": {"type": "int", "logicalType": "time-millis"}},
        {"name": "dec", "type": {"type": "bytes", "logicalType": "decimal", "precision": 20, "scale": 2}},
        {"name": "uid", "type": {"type": "fixed", "name": "U16", "size": 16, "logicalType": "uuid"}},
        {"name": "day", "type": {"type": "int", "connect.name": "io.debezium.time.Date"}},
        {"name": "ts", "type": {"type": "long", "connect.name": "io.debezium.time.Timestamp"}},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "nulls", "type": {"type": "array", "items": "null"}},
        {"name": "grid", "type": {"type": "array", "items": {"type": "array", "items": "null"}}},
        {"name": "attrs", "type": {"type": "map", "values": ["null", "long", "string"]}},
        {"name": "color", "type": {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN"]}},
        {"name": "score", "type": "double"},
        {"name": "__op", "type": ["null", "string"], "default": None},
        {"name": "next", "type": ["null", "Kitchen"], "default": None},
    ],
}
CHAIN = {"type": "record", "name": "Node", "fields": [{"name": "next", "type": ["null", "Node"]}]}
FLAT: dict[str, Any] = {
    "type": "record",
    "name": "Value",
    "namespace": "dbserver1.inventory.customers",
    "fields": [
        {"name": "id", "type": "int"},
        {"name": "email", "type": ["null", "string"]},
        {"name": "birth_date", "type": ["null", {"type": "int", "connect.name": "io.debezium.time.Date"}]},
        {"name": "updated", "type": ["null", {"type": "long", "connect.name": "io.debezium.time.Timestamp"}]},
        {"name": "seen", "type": ["null", {"type": "long", "connect.name": "io.debezium.time.MicroTimestamp"}]},
        {"name": "__op", "type": ["null", "string"], "default": None},
        {"name": "__deleted", "type": ["null", "string"], "default": None},
        {"name": "__source_ts_ms", "type": ["null", "long"], "default": None},
    ],
}
SCHEMAS: dict[int, Any] = {
    1: load_schema(CUSTOMER_ENVELOPE),
    2: FLAT,
    3: load_schema(PROFILE_CHANGE),
    4: KITCHEN,
    5: CHAIN,
}
PARSED = {k: fastavro.parse_schema(copy.deepcopy(v)) for k, v in SCHEMAS.items()}
DOWN_ID = 7  # the registry is down for this id: TransientError, the one exception allowed out
SCHEMA_IDS = [1, 2, 3, 4, 5, DOWN_ID, 42, 0, 2**31 - 1]


class FakeRegistry:
    """The registry client's read path, in memory: known ids, an id it cannot reach, unknown ids."""

    def schema(self, schema_id: int) -> RegisteredSchema:
        if schema_id == DOWN_ID:
            raise RegistryUnavailable(f"schema id {schema_id}: the registry is down")
        if schema_id not in SCHEMAS:
            raise SchemaNotFound(f"schema id {schema_id} is not in the schema registry (error 40403)")
        return RegisteredSchema(schema_id, orjson.dumps(SCHEMAS[schema_id]).decode())


def _frame(schema_id: int, body: bytes) -> bytes:
    return b"\x00" + schema_id.to_bytes(4, "big") + body


def _avro(schema_id: int, record: Any) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, PARSED[schema_id], record)
    return out.getvalue()


# ------------------------------------------------------------------------------------------ values

OPS = ["c", "r", "u", "d", "t", "m", "x", "", "C", "tombstone", "op_c"]
HUGE_TEXT = [  # numbers orjson cannot hold in 64 bits, spliced into the JSON text
    b"18446744073709551616",
    b"-9223372036854775809",
    b"1" + b"0" * 400,
    b"1e400",
    b"-1e400",
    b"123456789012345678901234567890",
    b"1.7976931348623157e308",
    b"-0",
]
DEPTHS = [40, 253, 254, 255, 256, 400, 500, 1000, 1023, 1100]
TEMPORAL_EXTREMES: list[Any] = [10**12, -(10**12), 2**63 - 1, -(2**63), 2**31 - 1, -(2**31), 3.5, "2024-01-01", None]
KEYS = ["op", "before", "after", "payload", "schema", "fields", "field", "name", "type", "__op", "__deleted",
        "__source_ts_ms", "ts_ms", "email", "phone", "phones", "id", "address", "contact", "a"]  # fmt: skip
ENVELOPE_KEYS = ("schema", "fields", "op", "before", "after", "payload", "__op", "__deleted", "ts_ms")
TEMPORAL_COLUMNS = ("birth_date", "updated", "seen", "nanos", "created", "day")
LOGICAL = [
    "io.debezium.time.Date",
    "io.debezium.time.Timestamp",
    "io.debezium.time.MicroTimestamp",
    "io.debezium.time.NanoTimestamp",
    "org.apache.kafka.connect.data.Date",
    "org.apache.kafka.connect.data.Timestamp",
    "org.apache.kafka.connect.data.Decimal",
]


def _any_value(rng: random.Random) -> Any:
    pick = rng.randrange(20)
    if pick == 0:
        return None
    if pick == 1:
        return rng.random() < 0.5
    if pick == 2:
        return rng.randint(-(2**63), 2**63 - 1)
    if pick == 3:
        return f"\u00a7INT:{rng.randrange(len(HUGE_TEXT))}\u00a7"
    if pick == 4:
        return rng.choice([0.0, -1.5, 1e308, 5e-324])
    if pick == 5:
        return rng.choice(["", "x", UNAVAILABLE, "a@b.co", "+79001112233", "\ud7ff\u0000", "true", "d"])
    if pick == 6:
        return []
    if pick == 7:
        return [rng.randrange(10), "a", None, {"k": UNAVAILABLE}]
    if pick == 8:
        return {}
    if pick == 9:
        return {"a": {"a": rng.randrange(5)}, "city": UNAVAILABLE}
    if pick == 10 and rng.random() < 0.3:
        return f"\u00a7DEEP:{rng.choice('{[')}:{rng.choice(DEPTHS)}\u00a7"
    if pick == 11:
        return "x" * rng.choice([300, 700, 5_000])
    if pick == 12:
        return rng.choice(OPS)
    if pick == 13:
        return rng.choice(TEMPORAL_EXTREMES)
    if pick == 14:
        return ["+7900", 5] if rng.random() < 0.5 else ["+79001112233", "+79001112234"]
    return rng.randint(-5, 5)


def _row(rng: random.Random) -> dict[str, Any]:
    n = rng.randrange(1, 10**6)
    row: dict[str, Any] = {
        "id": n,
        "email": f"user{n}@example.com",
        "first_name": rng.choice(["Ann", "Bob", UNAVAILABLE, None]),
        "phone": f"+7900{n:07d}",
        "phones": [f"+7900{n:07d}"],
        "birth_date": rng.randint(-30_000, 30_000),
        "updated": rng.randint(0, 2 * 10**12),
        "seen": rng.randint(0, 2 * 10**15),
        "nanos": rng.randint(0, 2 * 10**18),
        "created": rng.randint(0, 2 * 10**12),
        "day": rng.randint(0, 30_000),
        "balance": base64.b64encode(rng.randbytes(rng.randint(1, 9))).decode(),
        "address": {"city": rng.choice(["Oslo", UNAVAILABLE, None]), "zip": "0150", "geo": {"lat": 59.9}},
        "contact": {"email": f"c{n}@example.com", "phone": f"+7911{n:07d}"},
        "tags": ["a", "b"],
        "vip": rng.random() < 0.5,
        "score": rng.random(),
    }
    for key in rng.sample(list(row), rng.randrange(4)):  # some columns absent, as in narrower tables
        if key not in ("email", "phone"):
            del row[key]
    return row


_CONNECT_COLUMNS = [
    ("id", "int32", None),
    ("email", "string", None),
    ("first_name", "string", None),
    ("phone", "string", None),
    ("birth_date", "int32", "io.debezium.time.Date"),
    ("updated", "int64", "io.debezium.time.Timestamp"),
    ("seen", "int64", "io.debezium.time.MicroTimestamp"),
    ("nanos", "int64", "io.debezium.time.NanoTimestamp"),
    ("created", "int64", "org.apache.kafka.connect.data.Timestamp"),
    ("day", "int32", "org.apache.kafka.connect.data.Date"),
    ("balance", "bytes", "org.apache.kafka.connect.data.Decimal"),
    ("vip", "boolean", None),
    ("score", "float64", None),
]


def _connect_row_schema(field: str | None = None) -> dict[str, Any]:
    fields: list[dict[str, Any]] = []
    for name, kind, logical in _CONNECT_COLUMNS:
        f: dict[str, Any] = {"type": kind, "optional": name != "id", "field": name}
        if logical:
            f["name"] = logical
            f["version"] = 1
            if logical.endswith("Decimal"):
                f["parameters"] = {"scale": "2"}
        fields.append(f)
    city = {"type": "string", "optional": True, "field": "city"}
    fields.append({"type": "struct", "optional": True, "field": "address", "fields": [city, {**city, "field": "zip"}]})
    schema: dict[str, Any] = {"type": "struct", "fields": fields, "optional": True, "name": "db.t.Value"}
    if field:
        schema["field"] = field
    return schema


def _envelope(rng: random.Random) -> dict[str, Any]:
    op = rng.choice(["c", "r", "u", "u", "d", "t"])
    row = _row(rng)
    return {
        "before": row if op in ("d", "u") and rng.random() < 0.7 else None,
        "after": None if op == "d" else row,
        "source": {"version": "2.7.0.Final", "connector": "postgresql", "db": "inventory", "lsn": rng.randrange(10**9)},
        "op": op,
        "ts_ms": rng.randint(0, 2 * 10**12),
        "transaction": None,
    }


def _flat(rng: random.Random) -> dict[str, Any]:
    row = _row(rng)
    deleted = rng.random() < 0.2
    row.update({"__op": "d" if deleted else rng.choice(["c", "r", "u"]), "__deleted": "true" if deleted else "false",
                "__source_ts_ms": rng.randint(0, 2 * 10**12)})  # fmt: skip
    return row


def _wrapped(rng: random.Random) -> dict[str, Any]:
    schema = {
        "type": "struct",
        "fields": [
            _connect_row_schema("before"),
            _connect_row_schema("after"),
            {"type": "struct", "optional": False, "field": "source", "fields": []},
            {"type": "string", "optional": False, "field": "op"},
            {"type": "int64", "optional": True, "field": "ts_ms"},
        ],
        "optional": False,
        "name": "db.t.Envelope",
    }
    return {"schema": schema, "payload": _envelope(rng)}


def _flat_wrapped(rng: random.Random) -> dict[str, Any]:
    schema = _connect_row_schema()
    schema["fields"] += [
        {"type": "string", "optional": True, "field": "__op"},
        {"type": "string", "optional": True, "field": "__deleted"},
    ]
    return {"schema": schema, "payload": _flat(rng)}


JSON_KINDS: dict[str, Callable[[random.Random], Any]] = {
    "debezium-envelope": _envelope,
    "debezium-wrapped": _wrapped,
    "flattened": _flat,
    "flattened-wrapped": _flat_wrapped,
    "plain": _row,
}

# ------------------------------------------------------------------------------------------ JSON mutations


_INNER = ("payload", "schema", "before", "after", "address", "contact", "geo", "source")


def _objects(doc: Any) -> list[dict[str, Any]]:
    """The objects worth changing: the top, the payload, the schema, the rows and their nested columns."""
    out: list[dict[str, Any]] = []
    todo = [doc]
    while todo:
        node = todo.pop()
        if type(node) is dict:
            out.append(node)
            todo += [node[k] for k in _INNER if k in node]
    return out


def _field_lists(doc: Any) -> list[tuple[dict[str, Any], str]]:
    """The ``fields`` lists of a schema block: the top one and those of its struct fields."""
    schema = doc.get("schema") if type(doc) is dict else None
    if type(schema) is not dict or type(schema.get("fields")) is not list:
        return []
    out = [(schema, "fields")]
    out += [(f, "fields") for f in schema["fields"] if type(f) is dict and type(f.get("fields")) is list]
    return out


def _slot(doc: Any, objects: list[dict[str, Any]], rng: random.Random) -> tuple[Any, Any] | None:
    """A random (container, key or index), reached by a random walk from an object worth changing."""
    node: Any = rng.choice(objects) if objects else doc
    while True:
        if type(node) is dict:
            if not node:
                return None
            key: Any = rng.choice(list(node))
        elif type(node) is list:
            if not node:
                return None
            key = rng.randrange(len(node))
        else:
            return None
        child = node[key]
        if type(child) in (dict, list) and child and rng.random() < 0.4:
            node = child
            continue
        return node, key


def _mutate_doc(doc: Any, rng: random.Random) -> Any:
    """One structure-aware change to a JSON document (in place when possible); returns the document."""
    objects = _objects(doc)
    slot = _slot(doc, objects, rng) if type(doc) in (dict, list) else None
    if slot is None:
        return rng.choice([_any_value(rng), {"payload": doc, "schema": {}}, [doc], {"after": doc, "op": "c"}])
    container, key = slot
    what = rng.randrange(13)
    if what in (0, 1):  # a value of another type
        container[key] = _any_value(rng)
    elif what == 2:  # a key or an element gone
        del container[key]
    elif what == 3 and type(container) is dict:  # a key twice, the second with another value
        container[f"\u00a7DUP:{key}\u00a7"] = _any_value(rng)
    elif what == 4:  # an envelope key with a wrong type
        target = [(o, k) for o in objects for k in ENVELOPE_KEYS if k in o]
        if target:
            c, k = rng.choice(target)
            c[k] = _any_value(rng)
        elif objects:
            rng.choice(objects)[rng.choice(KEYS)] = _any_value(rng)
    elif what == 5:  # temporal columns at the edges of (and beyond) the representable
        target = [(o, k) for o in objects for k in TEMPORAL_COLUMNS if k in o]
        if target:
            c, k = rng.choice(target)
            c[k] = rng.choice([*TEMPORAL_EXTREMES, f"\u00a7INT:{rng.randrange(3)}\u00a7"])
    elif what == 6:  # a schema block of the wrong shape
        lists = _field_lists(doc)
        if lists:
            c, k = rng.choice(lists)
            entries = c[k]
            choice = rng.randrange(4)
            if choice == 0 and entries:
                entries[rng.randrange(len(entries))] = _any_value(rng)
            elif choice == 1:
                entries.insert(rng.randrange(len(entries) + 1), _any_value(rng))
            elif choice == 2 and entries:
                entries[rng.randrange(len(entries))] = {"field": _any_value(rng), "name": rng.choice(LOGICAL)}
            else:
                c[k] = rng.choice([_any_value(rng), {"field": "after"}, "after"])
    elif what == 7:  # a logical type on a column that does not hold one
        entries = [f for c, k in _field_lists(doc) for f in c[k] if type(f) is dict]
        if entries:
            rng.choice(entries)["name"] = rng.choice(LOGICAL)
    elif what == 8:  # an extra key
        if objects:
            rng.choice(objects)[rng.choice(KEYS)] = _any_value(rng)
    elif what == 9:  # a container turned into the other kind
        v = container[key]
        if type(v) is dict:
            container[key] = list(v.values())
        elif type(v) is list:
            container[key] = {str(i): x for i, x in enumerate(v)}
    elif what == 10:  # wrapped, unwrapped
        if type(doc) is dict and "payload" in doc and rng.random() < 0.5:
            return doc["payload"]
        return {"schema": rng.choice([{}, None, {"fields": []}, _any_value(rng)]), "payload": doc}
    elif what == 11:  # the placeholder anywhere, the matching columns included
        container[key] = UNAVAILABLE
    elif rng.random() < 0.3:  # deep nesting where a value was
        container[key] = f"\u00a7DEEP:{rng.choice('{[')}:{rng.choice(DEPTHS)}\u00a7"
    return doc


_SENTINEL = re.compile(rb'"\xc2\xa7(INT|DEEP|DUP):([^"]*?)\xc2\xa7"')


def _splice(m: re.Match[bytes]) -> bytes:
    kind, arg = m.group(1), m.group(2)
    if kind == b"INT":
        return HUGE_TEXT[int(arg)]
    if kind == b"DUP":
        return b'"' + arg + b'"'
    bracket, depth = arg.split(b":")
    n = int(depth)
    return b'{"a":' * n + b"1" + b"}" * n if bracket == b"{" else b"[" * n + b"]" * n


def _serialize(doc: Any) -> bytes:
    data = orjson.dumps(doc)
    return _SENTINEL.sub(_splice, data) if b"\xc2\xa7" in data else data


def _mutate_bytes(data: bytes, rng: random.Random) -> bytes | None:
    what = rng.randrange(9)
    if what == 0:
        return data[: rng.randrange(len(data) + 1)]
    if what in (1, 2) and data:
        b = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)
    if what == 3:
        at = rng.randrange(len(data) + 1)
        return data[:at] + rng.choice([b"\xff\xfe", b"\xc3", b"\xed\xa0\x80", b"\\ud800", b"\x00", b"\x80"]) + data[at:]
    if what == 4:
        return rng.choice([b"", None, b"null", b"[]", b'"x"', b"1", b"\xef\xbb\xbf" + data, data + b"}", data * 2])
    if what == 5:
        return data.replace(b'"op"', b'"op":"x","op"', 1)  # a duplicate key in the text
    if what == 6:
        return data.replace(b":", b":-", 1)
    if what == 7:
        return b"\x00\x00\x00\x00\x01" + data  # JSON behind an Avro header
    return data.replace(b"{", b"[", 1)


# ------------------------------------------------------------------------------------------ Avro mutations


def _avro_record(schema_id: int, rng: random.Random) -> Any:
    if schema_id == 1:
        op = rng.choice(["c", "r", "u", "d", "t", "m", "x", "", "tombstone"])
        row = {
            "id": rng.randint(-(2**31), 2**31 - 1),
            "email": rng.choice([f"a{rng.randrange(99)}@b.co", None, UNAVAILABLE, ""]),
            "first_name": "Ann",
            "last_name": None,
            "phone": "+79001112233",
            "birth_date": rng.choice([rng.randint(-30_000, 30_000), 2**31 - 1, -(2**31), None]),
            "city": None,
        }
        source = {"version": "2", "connector": "pg", "name": "db", "ts_ms": 1, "db": "d", "schema": "s", "table": "t",
                  "snapshot": "false", "lsn": rng.choice([None, 5])}  # fmt: skip
        return {"before": row if op == "d" else None, "after": None if op == "d" else row, "source": source,
                "op": op, "ts_ms": rng.choice([None, 2**63 - 1, 5])}  # fmt: skip
    if schema_id == 2:
        return {"id": rng.randint(0, 10), "email": rng.choice(["f@b.co", None, UNAVAILABLE]),
                "birth_date": rng.choice([0, 2**31 - 1, -(2**31), None]),
                "updated": rng.choice([0, 2**63 - 1, -(2**63), None]), "seen": rng.choice([0, 2**63 - 1, None]),
                "__op": rng.choice(["c", "u", "d", None, "x", ""]), "__deleted": rng.choice(["true", "false", None]),
                "__source_ts_ms": rng.choice([None, 1])}  # fmt: skip
    if schema_id == 3:
        profile: dict[str, Any] = {
            "email": rng.choice(["p@b.co", UNAVAILABLE, ""]),
            "age": rng.randint(-(2**63), 2**63 - 1),
            "tags": ["a", None, 2.5],
            "attrs": {"x": rng.choice([1, "s", None])},
        }
        return {"op": rng.choice(["c", "r", "u", "d"]), "ts_ms": rng.choice([None, 1]), "profile": profile}
    if schema_id == 4:

        def kitchen(depth: int) -> dict[str, Any]:
            return {
                "email": rng.choice(["k@b.co", None, UNAVAILABLE]),
                "born": rng.choice([0, 2**31 - 1, -(2**31), 19_000]),
                "seen": rng.choice([0, 2**63 - 1, -(2**63)]),
                "local": rng.choice([0, 2**63 - 1]),
                "at": rng.choice([0, 86_399_999, 2**31 - 1, -1]),
                "dec": rng.randbytes(rng.randint(0, 20)),
                "uid": rng.randbytes(16),
                "day": rng.choice([0, 2**31 - 1, -(2**31)]),
                "ts": rng.choice([0, 2**63 - 1, -(2**63)]),
                "tags": ["t"] * rng.randrange(3),
                "nulls": [None] * rng.randrange(5),
                "grid": [[None] * rng.randrange(3)] * rng.randrange(3),
                "attrs": {"x": rng.choice([None, 2**63 - 1, "s"]), "y": UNAVAILABLE},
                "color": rng.choice(["RED", "GREEN"]),
                "score": rng.choice([0.5, float("nan"), float("inf")]),
                "__op": rng.choice([None, "c", "x"]),
                "next": kitchen(depth - 1) if depth > 0 else None,
            }

        return kitchen(rng.randrange(3))
    return {"next": None}


_VARINTS = [b"\xff" * 9 + b"\x01", b"\xfe\xff\xff\xff\xff\xff\xff\xff\x7f", b"\xff" * 10 + b"\x01", b"\x01", b"\x03",
            b"\xfd\xff\xff\xff\x0f", b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", b"\x00"]  # fmt: skip


def _mutate_avro(value: bytes, rng: random.Random) -> bytes | None:
    head, body = value[:5], value[5:]
    what = rng.randrange(10)
    if what == 0:
        return value[: rng.randrange(len(value) + 1)]
    if what in (1, 2) and body:
        b = bytearray(body)
        for _ in range(rng.randint(1, 3)):
            b[rng.randrange(len(b))] = rng.randrange(256) if rng.random() < 0.5 else b[rng.randrange(len(b))] ^ 0x80
        return head + bytes(b)
    if what == 3:  # a huge, negative or overlong varint where a count, length or index was
        at = rng.randrange(len(body) + 1)
        cut = rng.randrange(3)
        return head + body[:at] + rng.choice(_VARINTS) + body[at + cut :]
    if what == 4:
        return _frame(rng.choice(SCHEMA_IDS), body)
    if what == 5:
        return rng.choice([b"", None, b"\x00", head, b"\x01" + value[1:], b"{" + value[1:], value + b"\x00"])
    if what == 6 and rng.random() < 0.2:  # a recursive record nested beyond any stack
        return _frame(5, b"\x02" * rng.choice([10, 500, 2_000]) + b"\x00")
    if what == 7:
        at = rng.randrange(len(body) + 1)
        return head + body[:at] + rng.randbytes(rng.randint(1, 8)) + body[at:]
    if what == 8:  # arrays of nulls claiming millions of items, nested
        return _frame(4, body[:1] + b"\x00" * 3 + b"\xfe\xff\xff\x07" * rng.randint(1, 40) + body[4:])
    return head + body[::-1]


# ------------------------------------------------------------------------------------------ the check


class Campaign:
    def __init__(self) -> None:
        self.json_routes = [Route(s, limit) for s, limit in JSON_ROUTES]
        registry = FakeRegistry()
        self.avro_routes = [
            Route(s, limit, decoder=AvroDecoder(s.format, registry))
            for s, limit in AVRO_ROUTES  # type: ignore[arg-type]
        ]
        self.counts: Counter[str] = Counter()

    def judge(self, route: Route, value: bytes | None, avro: bool, where: str) -> None:
        started = time.perf_counter()
        try:
            out = route.prepare(value)
        except TransientError:
            assert avro and value is not None and value[1:5] == DOWN_ID.to_bytes(4, "big"), where
            self.counts["transient"] += 1
            return
        except BaseException as exc:
            raise AssertionError(f"{where}: {type(exc).__name__}: {exc} escaped prepare for {_shown(value)}") from exc
        took = time.perf_counter() - started
        assert took < SLOW_S, f"{where}: {took:.1f} s for one record {_shown(value)}"
        if type(out) is ImportItem:
            out = out.item  # a snapshot read, imported without engaging
        if type(out) is bytes:
            assert 0 < len(out) <= route._max_item and out[:1] == b"{" and out[-1:] == b"}", where
            self.counts["item"] += 1
            return
        assert type(out) is Unsent, f"{where}: verdict {out!r}"
        assert not out.unexpected, f"{where}: unexpected {out.dead} for {_shown(value)}"
        if out.skip is not None:
            assert out.dead is None and out.skip in SKIPS, f"{where}: {out!r}"
            self.counts["skip"] += 1
            return
        dead = out.dead
        assert type(dead) is Reason, f"{where}: {out!r}"
        assert dead.stage in STAGES and dead.exception and type(dead.message) is str and dead.message, where
        dead.message.encode()  # it becomes a header: no lone surrogate may hide in it
        self.counts[f"dead:{dead.stage}"] += 1

    def run_json(self, kind: str, rng: random.Random, where: str) -> None:
        base = _serialize(JSON_KINDS[kind](rng))
        for n in range(MUTANTS_PER_EXAMPLE):
            doc = orjson.loads(base)
            for _ in range(rng.randint(1, 4)):
                doc = _mutate_doc(doc, rng)
            value: bytes | None = _serialize(doc)
            if rng.random() < 0.15:
                value = _mutate_bytes(value or b"", rng)
            self.counts["mutants"] += 1
            for i in (n % 4, (n + 1) % 4):  # two of the four routes, in turn
                self.judge(self.json_routes[i], value, False, f"{where} mutant {n} route {i}")

    def run_avro(self, schema_id: int, rng: random.Random, where: str) -> None:
        bases = [_frame(schema_id, _avro(schema_id, _avro_record(schema_id, rng))) for _ in range(4)]
        for n in range(MUTANTS_PER_EXAMPLE):
            value: bytes | None = rng.choice(bases)
            for _ in range(rng.choice([0, 1, 1, 1, 2, 3])):
                value = _mutate_avro(value, rng) if value is not None else None
            self.counts["mutants"] += 1
            for i, route in enumerate(self.avro_routes):
                self.judge(route, value, True, f"{where} mutant {n} route avro-{i}")


def _shown(value: bytes | None) -> str:
    return repr(value) if value is None or len(value) < 300 else f"{value[:300]!r}... ({len(value)} bytes)"


KINDS = [*JSON_KINDS, "avro-1", "avro-2", "avro-3", "avro-4"]


def test_every_mutant_of_every_input_shape_gets_a_verdict() -> None:
    run_seed = int(os.environ.get("RECORD_FUZZ_SEED") or random.randrange(2**32))
    print(f"\nrecord fuzz: seed {run_seed} (RECORD_FUZZ_SEED={run_seed} repeats this run)")
    campaign = Campaign()
    started = time.perf_counter()

    @seed(run_seed)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=False,
        print_blob=True,
        phases=(Phase.explicit, Phase.generate),  # no shrinking: a smaller seed is not a simpler mutant
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(kind=st.sampled_from(KINDS), example_seed=st.integers(0, 2**64 - 1))
    def one_example(kind: str, example_seed: int) -> None:
        rng = random.Random(example_seed)
        where = f"run seed {run_seed}, {kind} example seed {example_seed}"
        if kind.startswith("avro-"):
            campaign.run_avro(int(kind.removeprefix("avro-")), rng, where)
        else:
            campaign.run_json(kind, rng, where)

    one_example()
    took = time.perf_counter() - started
    counts = campaign.counts
    print(f"record fuzz: {counts['mutants']:,} mutants in {took:.1f} s: {dict(sorted(counts.items()))}")
    assert counts["mutants"] >= MIN_MUTANTS
    assert counts["item"] and counts["skip"] and counts["transient"]
    assert all(counts[f"dead:{stage}"] for stage in STAGES)
