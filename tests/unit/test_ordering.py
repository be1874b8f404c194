"""The ordering rule (connector.ordering): per-profile order with several batches of a partition in flight."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from connector.ordering import choose, profile_keys


@dataclass(eq=False)
class B:
    name: str
    keys: set[str] = field(default_factory=set)
    barrier: bool = False


def names(batches: list[B]) -> list[str]:
    return [b.name for b in batches]


def test_disjoint_batches_start_together_up_to_the_limit() -> None:
    waiting = [B("1", {"a"}), B("2", {"b"}), B("3", {"c"})]
    assert names(choose(waiting, [], 8)) == ["1", "2", "3"]
    assert names(choose(waiting, [], 2)) == ["1", "2"]


def test_a_profile_in_an_earlier_batch_in_flight_or_waiting_holds_a_batch_back() -> None:
    inflight = [B("0", {"a"})]
    waiting = [B("1", {"a", "x"}), B("2", {"x"}), B("3", {"y"})]
    # 1 shares a with 0 (in flight); 2 shares x with 1 (waiting); 3 is free.
    assert names(choose(waiting, inflight, 8)) == ["3"]


def test_a_batch_with_an_unknown_profile_orders_against_everything() -> None:
    assert names(choose([B("1", {"a"}, barrier=True), B("2", {"b"})], [B("0", {"z"})], 8)) == []
    assert names(choose([B("1", {"a"}, barrier=True), B("2", {"b"})], [], 8)) == ["1"]
    assert names(choose([B("2", {"b"})], [B("1", barrier=True)], 8)) == []


def test_keys_follow_what_altcraft_matches_by() -> None:
    assert profile_keys({"email": "Ann@Example.COM", "phone": "+1"}, ("email",)) == "e:ann@example.com"
    assert profile_keys({"phones": ["+1", "+2"]}, ("phones", "phone")) == ("p:+1", "p:+2")
    assert profile_keys({"email": "a@x.io", "phone": "+1"}, ("email", "phones", "phone")) == ("e:a@x.io", "p:+1")
    assert profile_keys({"crm_id": 42}, ("crm_id",)) == "crm_id:42"
    assert profile_keys({"email": None}, ("email",)) is None
    assert profile_keys({"email": ""}, ("email",)) is None


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.lists(st.sampled_from("abcdefgh"), max_size=3), min_size=1, max_size=12),
    st.integers(min_value=1, max_value=6),
    st.randoms(use_true_random=False),
)
def test_simulated_sends_apply_every_profile_in_kafka_order(batches: list[list[str]], cap: int, rnd: object) -> None:
    """Batches answered in random order, started by the rule: each profile's changes are applied in
    the order of the batches that hold them."""
    import random

    assert isinstance(rnd, random.Random)
    waiting = [B(str(i), set(keys), barrier=not keys) for i, keys in enumerate(batches)]
    inflight: list[B] = []
    applied: dict[str, list[int]] = {}
    while waiting or inflight:
        for b in choose(waiting, inflight, cap - len(inflight)):
            waiting.remove(b)
            inflight.append(b)
        assert inflight, "no progress"
        done = inflight.pop(rnd.randrange(len(inflight)))
        for k in done.keys:
            applied.setdefault(k, []).append(int(done.name))
    for k, order in applied.items():
        assert order == sorted(order), (k, order)
