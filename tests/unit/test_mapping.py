from __future__ import annotations

import orjson
import pytest

from connector.config import RouteSettings
from connector.errors import DecodeError, MappingError, TransientError
from connector.mapping import MAX_DEPTH, Mapper
from connector.models import ChangeEvent, Unsent
from connector.routing import Route


def route(**kw: object) -> RouteSettings:
    base: dict[str, object] = {"name": "r", "topics": ["t"], "workflow_id": 7, "db_id": 7}
    base.update(kw)
    return RouteSettings.model_validate(base)


def test_fields_constants_content_and_custom_data() -> None:
    m = Mapper(route(
        fields={"email": "email", "_fname": "first_name", "_city": "address.city"},
        constants={"source": "cdc"}, content={"plan": "plan.name"}, custom_data={"crm": "id"},
    ))  # fmt: skip
    item = m.map({"id": 5, "email": "a@b.co", "first_name": "Ann", "address": {"city": "Oslo"}, "plan": {"name": "x"},
                  "secret_column": 1})  # fmt: skip
    assert item.fields == {"email": "a@b.co", "_fname": "Ann", "_city": "Oslo", "source": "cdc"}
    assert item.content == {"plan": "x"}
    assert item.custom_data == {"crm": 5}


def test_unmapped_columns_pass_through_when_asked() -> None:
    m = Mapper(route(fields={"_fname": "first_name"}, unmapped="pass"))
    item = m.map({"email": "a@b.co", "first_name": "Ann", "tier": "gold"})
    assert item.fields == {"email": "a@b.co", "tier": "gold", "_fname": "Ann"}


@pytest.mark.parametrize(
    ("kw", "row", "needle"),
    [
        ({"fields": {"email": "email"}}, {"id": 1}, "missing matching field 'email'"),
        ({"fields": {"email": "email"}}, {"email": 5}, "wrong type int"),
        ({"matching": "custom", "field_name": "CRM_ID", "fields": {"CRM_ID": "id"}}, {"x": 1}, "'CRM_ID'"),
        ({"matching": "phone", "fields": {"phones": "phone"}}, {"phone": ""}, "'phones' or 'phone'"),
    ],
)
def test_rows_that_cannot_match_a_profile_are_refused(
    kw: dict[str, object], row: dict[str, object], needle: str
) -> None:
    with pytest.raises(MappingError, match=needle):
        Mapper(route(**kw)).map(row)


def test_custom_matching_accepts_numbers() -> None:
    item = Mapper(route(matching="custom", field_name="CRM_ID", fields={"CRM_ID": "id"})).map({"id": 77})
    assert item.fields == {"CRM_ID": 77}


def test_email_phone_sub_reads_the_email_or_the_phones_and_orders_by_both() -> None:
    r = Route(route(matching="email_phone_sub", fields={"email": "email", "phones": "phone"}), max_body_bytes=10_000)
    assert r.mapper.match_fields == ("email", "phones", "phone")
    both = r.prepare(orjson.dumps({"op": "c", "after": {"email": "Ann@Example.com", "phone": "+79000000001"}}))
    assert isinstance(both, bytes) and r.key == ("e:ann@example.com", "p:+79000000001")
    phone_only = r.prepare(orjson.dumps({"op": "c", "after": {"email": None, "phone": "+79000000001"}}))
    assert isinstance(phone_only, bytes) and r.key == "p:+79000000001"
    neither = r.prepare(orjson.dumps({"op": "c", "after": {"email": "", "phone": None}}))
    assert isinstance(neither, Unsent) and neither.dead is not None
    assert neither.dead.message == "missing matching field 'email' or 'phones' or 'phone' (matching email_phone_sub)"


@pytest.mark.parametrize("matching", ["custom_sub", "push_sub"])
def test_modes_the_api_pages_do_not_describe_make_no_mapper(matching: str) -> None:
    unchecked = RouteSettings.model_construct(**{**route().__dict__, "matching": matching, "field_name": "X"})
    with pytest.raises(ValueError, match=f"matching {matching} is not supported"):
        Mapper(unchecked)


def test_route_prepares_the_wire_item_and_classifies_the_rest() -> None:
    r = Route(route(fields={"email": "email", "bio": "bio"}), max_body_bytes=10_000)
    ok = r.prepare(orjson.dumps({"op": "c", "after": {"email": "a@b.co"}}))
    assert isinstance(ok, bytes) and orjson.loads(ok) == {"data": {"email": "a@b.co"}}
    assert r.prepare(orjson.dumps({"op": "d", "before": {"email": "a@b.co"}})).skip == "op_d"
    assert r.prepare(None).skip == "tombstone"
    bad = r.prepare(b"nope")
    assert bad.dead is not None and bad.dead.stage == "decode" and bad.dead.exception == "DecodeError"
    unmapped = r.prepare(orjson.dumps({"op": "c", "after": {"name": "x"}}))
    assert unmapped.dead is not None and unmapped.dead.stage == "map"
    huge = r.prepare(orjson.dumps({"op": "c", "after": {"email": "a@b.co", "bio": "x" * 20_000}}))
    assert huge.dead is not None and huge.dead.stage == "size"


def test_ops_can_be_configured() -> None:
    r = Route(route(fields={"email": "email"}, ops={"d": "dead-letter", "r": "skip"}), max_body_bytes=10_000)
    d = r.prepare(orjson.dumps({"op": "d", "before": {"email": "a@b.co"}}))
    assert d.dead is not None and d.dead.stage == "op"
    assert r.prepare(orjson.dumps({"op": "r", "after": {"email": "a@b.co"}})).skip == "op_r"


def test_the_unavailable_placeholder_is_never_sent_at_any_depth() -> None:
    placeholder = "__debezium_unavailable_value"
    row = {"email": "a@b.co", "notes": placeholder, "addr": {"city": placeholder, "zip": "1"}}
    mapped = Mapper(route(fields={"email": "email", "_city": "addr.city", "zip": "addr.zip", "notes": "notes"})).map(
        {k: v for k, v in row.items() if v != placeholder}
    )
    assert mapped.fields == {"email": "a@b.co", "zip": "1"}
    passed = Mapper(route(fields={"email": "email"}, unmapped="pass")).map(row)
    assert placeholder not in repr(passed.fields)


@pytest.mark.parametrize(
    "extra",
    [{}, {"content": {"plan": "plan"}}, {"mode": "import", "db_id": 1, "workflow_id": None}],
    ids=["wrapped", "with-content", "import-only"],
)
def test_held_items_cost_about_their_own_size_in_memory(extra: dict[str, object]) -> None:
    """Items wait in memory until their batch is answered: 10,000 of them must not cost 10,000 output
    buffers of the JSON library (4 KiB each) but about their length."""
    import tracemalloc

    r = Route(route(fields={"email": "email", "_fname": "name"}, **extra), max_body_bytes=10_000_000)
    values = [orjson.dumps({"op": "c", "after": {"email": f"p{i}@example.com", "name": "Ann", "plan": "x"}})
              for i in range(10_000)]  # fmt: skip
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        items = [r.prepare(v) for v in values]
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    total = sum(len(i) for i in items if isinstance(i, bytes))
    assert len(items) == 10_000 and held < 2 * total + 100 * len(items), (held, total)


def _nested(depth: int) -> bytes:
    return b'{"op":"c","after":{"email":"a@b.co","tree":' + b'{"a":' * depth + b"1" + b"}" * depth + b"}}"


def _deep_stack(levels: int, call: object) -> object:
    """``call()`` with ``levels`` frames of the caller's own on the stack, as in the running connector."""
    return call() if levels == 0 else _deep_stack(levels - 1, call)  # type: ignore[operator]


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 500, 1000])
@pytest.mark.parametrize("unmapped", ["pass", "drop"])
def test_deep_nesting_is_a_mapping_error_not_a_crash(depth: int, unmapped: str) -> None:
    fields = {"email": "email"} if unmapped == "pass" else {"email": "email", "_leaf": "tree.a"}
    r = Route(route(fields=fields, unmapped=unmapped), max_body_bytes=100_000)
    out = _deep_stack(300, lambda: r.prepare(_nested(depth)))
    assert isinstance(out, Unsent) and out.dead is not None and not out.unexpected
    assert (out.dead.stage, out.dead.exception) == ("map", "MappingError")
    if unmapped == "pass":
        assert out.dead.message == f"column 'tree' nests objects more than {MAX_DEPTH} levels deep"
    else:
        assert out.dead.message.startswith("the item cannot be written as JSON")


def test_moderate_nesting_still_passes_through() -> None:
    r = Route(route(fields={"email": "email"}, unmapped="pass"), max_body_bytes=100_000)
    item = r.prepare(_nested(100))
    assert isinstance(item, bytes) and orjson.loads(item)["data"]["tree"]["a"]["a"]


class _Boom:
    """A value no stage expects: comparing or hashing it raises."""

    def __ne__(self, other: object) -> bool:
        raise RuntimeError("cannot compare")

    def __hash__(self) -> int:
        raise RecursionError("maximum recursion depth exceeded")


def _decoding_to(event: ChangeEvent | BaseException) -> object:
    def decode(value: bytes | None) -> ChangeEvent:
        if isinstance(event, BaseException):
            raise event
        return event

    return decode


@pytest.mark.parametrize(
    ("decoded", "stage", "exception"),
    [
        (MemoryError(), "decode", "MemoryError"),
        (RecursionError("maximum recursion depth exceeded"), "decode", "RecursionError"),
        (KeyError("surprise"), "decode", "KeyError"),
        (ChangeEvent(_Boom(), {"email": "a@b.co"}), "op", "RecursionError"),  # type: ignore[arg-type]
        (ChangeEvent("c", {"email": "a@b.co", "x": _Boom()}), "map", "RuntimeError"),
    ],
)
def test_an_unexpected_exception_is_a_dead_letter_marked_unexpected_with_its_stage(
    decoded: ChangeEvent | BaseException, stage: str, exception: str
) -> None:
    r = Route(route(fields={"email": "email"}, unmapped="pass"), max_body_bytes=10_000, decoder=_decoding_to(decoded))  # type: ignore[arg-type]
    out = r.prepare(b"{}")
    assert isinstance(out, Unsent) and out.unexpected and out.skip is None and out.dead is not None
    assert (out.dead.stage, out.dead.exception) == (stage, exception)
    assert out.dead.message


def test_known_bad_records_are_not_marked_unexpected() -> None:
    r = Route(route(fields={"email": "email"}), max_body_bytes=10_000, decoder=_decoding_to(DecodeError("bad")))  # type: ignore[arg-type]
    out = r.prepare(b"x")
    assert isinstance(out, Unsent) and not out.unexpected and out.dead is not None and out.dead.stage == "decode"


def test_a_transient_fault_is_the_one_exception_prepare_lets_through() -> None:
    r = Route(route(fields={"email": "email"}), max_body_bytes=10_000, decoder=_decoding_to(TransientError("down")))  # type: ignore[arg-type]
    with pytest.raises(TransientError):
        r.prepare(b"x")
