"""``routes[].when``: what a condition sees, what it decides, and what becomes of the records it cannot
judge. Compile problems are settings problems; evaluation problems are one record's dead letter."""

from __future__ import annotations

import base64
import math
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from connector.condition import (
    MAX_DEPTH,
    ROW_VARIABLES,
    ConditionFailed,
    ConditionInvalid,
    cel_value,
    compile_condition,
)
from connector.config import RouteSettings
from connector.models import ImportItem, Unsent
from connector.routing import Route

EXAMPLE = 'after.tier == "vip" && (before == null || before.tier != "vip")'
EMAIL = "a@example.com"


def route(**kw: Any) -> Route:
    base: dict[str, Any] = {"name": "r", "topics": ["t"], "workflow_id": 7, "db_id": 7, "fields": {"email": "email"}}
    base.update(kw)
    return Route(RouteSettings.model_validate(base), max_body_bytes=1_000_000)


def change(op: str, before: dict[str, Any] | None, after: dict[str, Any] | None, **extra: Any) -> bytes:
    source = {"connector": "postgresql", "db": "shop", "schema": "public", "table": "customers"}
    return orjson.dumps({"op": op, "before": before, "after": after, "source": source, "ts_ms": 1, **extra})


def row(tier: str | None = None, **columns: Any) -> dict[str, Any]:
    return {"email": EMAIL, **({"tier": tier} if tier is not None else {}), **columns}


def engaged(out: bytes | ImportItem | Unsent) -> bool:
    """Engaged, or not: skipped by the condition, or imported (snapshot reads, by default, never reach it)."""
    assert isinstance(out, (bytes, ImportItem)) or out.skip == "condition", out
    return isinstance(out, bytes)


# What a condition decides


def test_the_example_engages_a_record_that_becomes_vip_and_only_then() -> None:
    r = route(when=EXAMPLE)
    assert engaged(r.prepare(change("c", None, row("vip"))))  # created vip: no before
    assert engaged(r.prepare(change("u", None, row("vip"))))  # an update without before (REPLICA IDENTITY DEFAULT)
    assert engaged(r.prepare(change("u", row("gold"), row("vip"))))  # gold -> vip
    assert not engaged(r.prepare(change("u", row("vip"), row("vip"))))  # was vip already
    assert not engaged(r.prepare(change("u", row("vip"), row("gold"))))  # vip -> gold
    assert not engaged(r.prepare(change("r", None, row("basic"))))


@pytest.mark.parametrize(
    ("expression", "after", "verdict"),
    [
        ('after.tier == "vip"', row("vip"), True),
        ("before == null", row(), True),  # before absent from the record: null
        ("source.table == 'customers' && source.db == 'shop'", row(), True),
        ('op == "u"', row(), True),
        ('op in ["c", "r"]', row(), False),
        ("has(after.tier)", row(), False),
        ("has(after.tier)", row("vip"), True),
        ("!has(after.tier) || after.tier == 'vip'", row(), True),
        ("after.?tier.orValue('basic') == 'basic'", row(), True),
        ("after.points > 100", row(points=150), True),
        ("after.points > 99.5", row(points=100), True),  # int against double
        ("after.points == 100.0", row(points=100), True),
        ("after.balance >= 1000", row(balance=999.99), False),
        ("after.tier == 1", row("vip"), False),  # equality across types is false, not an error
        ("after.email.endsWith('@example.com')", row(), True),
        ("after.email.lowerAscii() == 'a@example.com'", row(email="A@Example.com"), True),
        ("after.name.matches('^Ann')", row(name="Anna"), True),
        ("after.tags.exists(t, t == 'vip')", row(tags=["new", "vip"]), True),
        ("size(after.tags) == 0", row(tags=[]), True),
        ("after.prefs.tz.startsWith('Europe/')", row(prefs={"tz": "Europe/Riga"}), True),
        ("after.nickname == null", row(nickname=None), True),  # a column set to NULL
        ("after.active", row(active=True), True),  # a dyn expression giving a boolean
        ('timestamp(after.at) > timestamp("2024-01-01T00:00:00Z")', row(at="2024-05-01T10:20:30Z"), True),
    ],
)
def test_conditions_decide_like_cel(expression: str, after: dict[str, Any], verdict: bool) -> None:
    assert engaged(route(when=expression).prepare(change("u", None, after))) is verdict


def test_a_decimal_is_compared_as_a_number() -> None:
    """Precise decimals come out of the decoder as their exact digits (an orjson.Fragment)."""
    schema = {"type": "struct", "fields": [
        {"field": "after", "type": "struct", "fields": [
            {"field": "email", "type": "string"},
            {"field": "balance", "type": "bytes", "name": "org.apache.kafka.connect.data.Decimal",
             "parameters": {"scale": "2"}}]},
        {"field": "op", "type": "string"}]}  # fmt: skip
    balance = base64.b64encode((123456).to_bytes(3, "big", signed=True)).decode()  # 1234.56
    value = orjson.dumps({"schema": schema, "payload": {"op": "u", "before": None, "after": row(balance=balance)}})
    assert engaged(route(when="after.balance > 1234.5").prepare(value))
    assert not engaged(route(when="after.balance > 1234.56").prepare(value))


def test_before_is_read_as_the_after_is_with_the_schema_block_and_placeholders() -> None:
    date = {"field": "birth_date", "type": "int32", "name": "io.debezium.time.Date", "optional": True}
    side = {"type": "struct", "fields": [{"field": "email", "type": "string"}, date,
                                         {"field": "notes", "type": "string", "optional": True}]}  # fmt: skip
    schema = {"type": "struct", "fields": [{**side, "field": "before"}, {**side, "field": "after"},
                                           {"field": "op", "type": "string"}]}  # fmt: skip
    payload = {"op": "u", "before": row(birth_date=0, notes="__debezium_unavailable_value"),
               "after": row(birth_date=1)}  # fmt: skip
    value = orjson.dumps({"schema": schema, "payload": payload})
    r = route(when='before.birth_date == "1970-01-01" && after.birth_date == "1970-01-02" && !has(before.notes)')
    assert engaged(r.prepare(value))


def test_a_delete_reaches_the_condition_only_when_its_op_engages() -> None:
    delete = change("d", row("vip"), None)
    assert route(when="false").prepare(delete) == Unsent(skip="op_d")  # the default: deletes are skipped
    dead = route(when="true", ops={"d": "dead-letter"}).prepare(delete)
    assert isinstance(dead, Unsent) and dead.dead is not None and dead.dead.stage == "op"
    assert route(when="true", ops={"r": "skip"}).prepare(change("r", None, row())) == Unsent(skip="op_r")
    # A delete that engages: its row is before, and after is null.
    r = route(when='op == "d" && after == null && before.tier == "vip"', ops={"d": "engage"})
    assert engaged(r.prepare(delete))
    assert r.prepare(None) == Unsent(skip="tombstone")


def test_flattened_and_plain_records_have_no_before_and_no_source() -> None:
    flat = orjson.dumps({**row("vip"), "__op": "u", "__source_ts_ms": 5})
    assert engaged(route(when=EXAMPLE).prepare(flat))
    assert engaged(route(when="before == null && source == null && after.tier == 'vip'").prepare(flat))
    plain = orjson.dumps(row("vip"))
    r = route(format="json", when="op == 'u' && before == null && source == null && after.tier == 'vip'")
    assert engaged(r.prepare(plain))


# What cannot be judged: a dead letter with stage condition


@pytest.mark.parametrize(
    ("expression", "value", "needle"),
    [
        ('after.tier == "vip"', change("u", None, row()), 'Key not found in map : "tier"'),
        ('before.tier == "vip"', change("u", None, row("vip")), "field read from null"),
        ("after.tier > 1", change("u", None, row("vip")), "No matching overloads"),
        ("after.points / after.zero > 1", change("u", None, row(points=1, zero=0)), "divide by zero"),
        ("after.tier", change("u", None, row("vip")), "the condition gave string 'vip', not a boolean"),
        ("after.name.matches(after.pattern)", change("u", None, row(name="a", pattern="[")), "regular expression"),
    ],
)
def test_a_record_the_condition_cannot_judge_is_dead_lettered_with_stage_condition(
    expression: str, value: bytes, needle: str
) -> None:
    out = route(when=expression).prepare(value)
    assert isinstance(out, Unsent) and out.dead is not None, out
    assert (out.dead.stage, out.dead.exception, out.unexpected) == ("condition", "ConditionFailed", False)
    assert needle in out.dead.message


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ({"x": object()}, "after.x: a value of type object has no CEL equivalent"),
        ({"x": [1, {"y": {1, 2}}]}, "after.x[1].y: a value of type set"),
        ({"x": 2**70}, "out of range"),
        ({"x": -(2**63) - 1}, "out of range"),
        ({"x": "\ud800"}, "cannot be evaluated"),
        ({"x": orjson.Fragment(b"not a number")}, "after.x: not a number is not a number"),
    ],
)
def test_values_cel_cannot_hold_fail_the_record_not_the_process(value: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConditionFailed) as caught:
        compile_condition("has(after.x) && after.x == after.x").holds("u", None, value, None)
    assert needle in str(caught.value)


def test_nesting_deeper_than_the_runtime_reads_safely_fails_the_record() -> None:
    deep: Any = "leaf"
    for _ in range(MAX_DEPTH + 1):
        deep = {"k": deep}
    with pytest.raises(ConditionFailed, match=f"nested deeper than {MAX_DEPTH} levels"):
        compile_condition("has(after.x)").holds("u", None, {"x": deep}, None)
    shallow: Any = "leaf"
    for _ in range(MAX_DEPTH - 2):
        shallow = [shallow]
    assert compile_condition("has(after.x)").holds("u", None, {"x": shallow}, None)


def test_values_are_passed_as_they_are_or_converted_once() -> None:
    flat = {"a": 1, "b": "x", "c": None, "d": 1.5, "e": True}
    assert cel_value(flat, "after") is flat  # no copy for the common row
    nested = {"a": {"b": [1, 2]}, "c": (1, 2), "d": orjson.Fragment(b"2.28"), "e": bytearray(b"z")}
    assert cel_value(nested, "after") == {"a": {"b": [1, 2]}, "c": [1, 2], "d": 2.28, "e": b"z"}
    assert nested["c"] == (1, 2)  # the decoder's row is left as it was


# Compile problems


@pytest.mark.parametrize(
    ("expression", "needle"),
    [
        ('after.tier == "vip" &&', "at 1:23: Syntax error: mismatched input '<EOF>'"),
        ("op > 1", "at 1:4: found no matching overload for '_>_' applied to '(string, int)'"),
        ("aftr.tier == 'vip'", "at 1:5: undeclared reference to 'aftr.tier'"),
        ("op", "must give a boolean, gives string"),
        ("1 + 1", "must give a boolean, gives int"),
        ("", "Syntax error"),
    ],
)
def test_expressions_that_cannot_work_are_refused_at_compile_time(expression: str, needle: str) -> None:
    with pytest.raises(ConditionInvalid) as caught:
        compile_condition(expression)
    assert needle in str(caught.value) and "\n" not in str(caught.value)


def test_avro_routes_offer_op_and_after_only_for_now() -> None:
    assert compile_condition('after.tier == "vip"', ROW_VARIABLES).reads == frozenset()
    with pytest.raises(ConditionInvalid, match="before is not available for Avro routes yet"):
        compile_condition(EXAMPLE, ROW_VARIABLES)
    with pytest.raises(ValidationError, match="source is not available for Avro routes yet"):
        RouteSettings.model_validate(
            {
                "name": "r",
                "topics": ["t"],
                "workflow_id": 7,
                "db_id": 7,
                "format": "debezium-avro",
                "when": "source.db == 'x'",
            }
        )


def test_a_condition_knows_which_envelope_sides_it_reads() -> None:
    assert compile_condition(EXAMPLE).reads == {"before"}
    assert compile_condition("source.table == 'x' && op == 'u'").reads == {"source"}
    assert compile_condition("after.x == 1").reads == frozenset()
    assert compile_condition("[1].exists(before, before > 0)").reads == frozenset()  # a macro's own name


def test_otherwise_import_imports_the_records_the_condition_does_not_engage() -> None:
    r = route(when=EXAMPLE, otherwise="import")
    assert engaged(r.prepare(change("u", row("gold"), row("vip"))))
    out = r.prepare(change("u", row("vip"), row("vip")))
    assert isinstance(out, ImportItem) and orjson.loads(out.item) == {"email": EMAIL}  # profile fields, no wrapper
    with pytest.raises(ValidationError, match="otherwise: import needs db_id"):
        RouteSettings.model_validate({"name": "r", "topics": ["t"], "workflow_id": 7, "ops": {"r": "engage"},
                                      "when": "true", "otherwise": "import"})  # fmt: skip


# Nothing a record holds stops the process

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.binary(max_size=4)
    | st.sampled_from(["vip", "gold", ""])
    | st.builds(lambda d: orjson.Fragment(d.encode()), st.sampled_from(["2.28", "-0.050", "1e400", "x"]))
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["tier", "x", "y"]), inner, max_size=3),
    max_leaves=12,
)
_rows = st.none() | st.dictionaries(st.sampled_from(["tier", "email", "points", "tags", "prefs"]), _values, max_size=5)
_EXPRESSIONS = [
    EXAMPLE,
    'has(after.tier) && after.tier == "vip"',
    "after.points > 10 || before.points < 3.5",
    "after.tags.exists(t, t == 'vip') && size(after.tags) > 0",
    "after.prefs.x.y == before.prefs.x.y",
    "source.table == 'customers' && op != 'd'",
    "after == before",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    expression=st.sampled_from(_EXPRESSIONS),
    op=st.sampled_from(["c", "u", "d", "r"]),
    before=_rows,
    after=_rows,
    source=_rows,
)
def test_random_rows_give_a_verdict_or_a_condition_failure_never_a_crash(
    expression: str, op: str, before: Any, after: Any, source: Any
) -> None:
    condition = compile_condition(expression)
    try:
        verdict = condition.holds(op, before, after, source)
    except ConditionFailed as exc:
        assert exc.stage == "condition" and str(exc)
        return
    assert verdict is True or verdict is False
    partial = condition.holds_without(op, after)
    assert partial is None or partial is verdict  # a verdict told without before and source is the verdict


_json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.text(max_size=8), st.floats(allow_nan=False)
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["tier", "x"]), inner, max_size=3),
    max_leaves=10,
)
_json_rows = st.dictionaries(st.sampled_from(["tier", "points", "tags", "prefs", "x"]), _json_values, max_size=5)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    expression=st.sampled_from(_EXPRESSIONS),
    op=st.sampled_from(["c", "u", "r"]),
    before=st.none() | _json_rows,
    after=_json_rows,
)
def test_random_records_are_engaged_skipped_or_dead_lettered_with_stage_condition(
    expression: str, op: str, before: dict[str, Any] | None, after: dict[str, Any]
) -> None:
    r = route(when=expression)
    out = r.prepare(change(op, None if before is None else {**before, "email": EMAIL}, {**after, "email": EMAIL}))
    if isinstance(out, bytes):
        assert orjson.loads(out) == {"data": {"email": EMAIL}}
    elif isinstance(out, ImportItem):
        assert op == "r" and orjson.loads(out.item) == {"email": EMAIL}  # snapshot reads import, by default
    else:
        assert out.skip == "condition" or (out.dead is not None and out.dead.stage == "condition"), out
        assert not out.unexpected


def test_nan_compares_as_ieee_says() -> None:
    assert not compile_condition("after.x > 1.0 || after.x <= 1.0").holds("u", None, {"x": math.nan}, None)
