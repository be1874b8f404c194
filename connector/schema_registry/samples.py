"""The example schemas of ``schemas/`` and producer-side helpers built on them (tests, the demo).

- :func:`customer_change` makes a Debezium change of the ``inventory.customers`` example table as the
  Avro converter would write it (``schemas/debezium_customer_envelope.avsc``);
- :func:`debezium_json_twin` writes the same change as Debezium's JSON converter would (schemas
  enabled), so that a test can check that both formats reach Altcraft alike;
- :func:`with_added_field` evolves a schema the way a table gaining a column does.
"""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import orjson

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"
CUSTOMER_ENVELOPE = SCHEMAS_DIR / "debezium_customer_envelope.avsc"
PROFILE_CHANGE = SCHEMAS_DIR / "profile_change.avsc"
CUSTOMER_SUBJECT = "dbserver1.inventory.customers-value"

_CONNECT_TYPES = {
    "boolean": "boolean", "int": "int32", "long": "int64", "float": "float32", "double": "float64",
    "string": "string", "bytes": "bytes",
}  # fmt: skip


def load_schema(path: str | Path) -> dict[str, Any]:
    """An ``.avsc`` file as a JSON document (not yet parsed by fastavro)."""
    doc: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
    return doc


def customer_row(customer_id: int, **overrides: Any) -> dict[str, Any]:
    """A row of the example table with plausible values (``birth_date`` in days since 1970-01-01)."""
    row: dict[str, Any] = {
        "id": customer_id,
        "email": f"customer{customer_id}@example.com",
        "first_name": f"First{customer_id}",
        "last_name": f"Last{customer_id}",
        "phone": f"+7900{customer_id:07d}",
        "birth_date": 3_000 + customer_id % 10_000,
        "city": ("Moscow", "Kazan", "Perm", None)[customer_id % 4],
    }
    row.update(overrides)
    return row


def customer_change(
    op: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    ts_ms: int = 1_700_000_000_000,
) -> dict[str, Any]:
    """A Debezium envelope of the example table, as an Avro record (a dict fastavro can write)."""
    return {
        "before": before,
        "after": after,
        "source": {
            "version": "2.7.0.Final",
            "connector": "postgresql",
            "name": "dbserver1",
            "ts_ms": ts_ms - 5,
            "db": "inventory",
            "schema": "inventory",
            "table": "customers",
            "snapshot": "true" if op == "r" else "false",
            "lsn": 1000 + ts_ms % 1000,
        },
        "op": op,
        "ts_ms": ts_ms,
    }


def with_added_field(schema: dict[str, Any], record: str, new_field: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``schema`` whose record named ``record`` (short or full name) ends with ``new_field``."""
    evolved = copy.deepcopy(schema)
    found = _find_record(evolved, record)
    if found is None:
        raise KeyError(f"no record named {record!r} in the schema")
    found["fields"].append(new_field)
    return evolved


def _find_record(node: Any, name: str) -> dict[str, Any] | None:
    if isinstance(node, list):
        for item in node:
            hit = _find_record(item, name)
            if hit is not None:
                return hit
    elif isinstance(node, dict):
        if node.get("type") == "record" and name in (node.get("name"), str(node.get("name", "")).rsplit(".", 1)[-1]):
            return node
        for value in node.values():
            if isinstance(value, dict | list):
                hit = _find_record(value, name)
                if hit is not None:
                    return hit
    return None


def connect_schema(avro: Any, named: dict[str, Any] | None = None, field: str | None = None) -> dict[str, Any]:
    """The Kafka Connect (JSON converter) schema matching an Avro schema document, as Debezium writes it."""
    named = {} if named is None else named
    optional = False
    if isinstance(avro, list):
        branches = [b for b in avro if b != "null"]
        if len(branches) != 1:
            raise ValueError(f"only [null, T] unions have a Connect equivalent: {avro!r}")
        optional, avro = len(branches) != len(avro), branches[0]
    if isinstance(avro, str) and avro in named:
        avro = named[avro]
    out: dict[str, Any]
    if isinstance(avro, str):
        out = {"type": _CONNECT_TYPES[avro]}
    elif avro["type"] == "record":
        named[avro["name"]] = avro
        out = {
            "type": "struct",
            "fields": [connect_schema(f["type"], named, f["name"]) for f in avro["fields"]],
            "name": avro.get("connect.name", avro["name"]),
        }
    else:
        out = {"type": _CONNECT_TYPES[avro["type"]]}
        if "connect.name" in avro:
            out["name"] = avro["connect.name"]
        if "connect.version" in avro:
            out["version"] = avro["connect.version"]
    out["optional"] = optional
    if field is not None:
        out["field"] = field
    return out


def debezium_json_twin(change: dict[str, Any], avro_schema: dict[str, Any]) -> bytes:
    """The JSON converter's bytes (schemas enabled) of an Avro change record written with ``avro_schema``."""
    return orjson.dumps({"schema": connect_schema(avro_schema), "payload": _json_values(change)})


def _json_values(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_values(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_values(v) for v in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value
