"""Fault configuration changes and the per-request decision, with the random draws passed in."""

from __future__ import annotations

import math
import random

import pytest

from connector.emulator.faults import (
    FaultConfig,
    FaultConfigError,
    FaultKind,
    apply_changes,
    decide,
    draw,
)


def test_no_faults_by_default() -> None:
    decision = decide(FaultConfig(), (0.0, 0.0), now=0.0)
    assert decision.kind is FaultKind.NONE
    assert decision.latency_s == 0.0


@pytest.mark.parametrize(
    ("u", "kind"),
    [
        (0.05, FaultKind.ERROR_500),
        (0.15, FaultKind.HTTP_502),
        (0.25, FaultKind.HTTP_503),
        (0.35, FaultKind.RATE_LIMIT),
        (0.45, FaultKind.RESET),
        (0.55, FaultKind.RESET_AFTER_EXECUTE),
        (0.65, FaultKind.NONE),
    ],
)
def test_the_fault_draw_falls_into_the_cumulative_rates(u: float, kind: FaultKind) -> None:
    config = FaultConfig(
        error_500_rate=0.1,
        http_502_rate=0.1,
        http_503_rate=0.1,
        rate_limit_rate=0.1,
        reset_rate=0.1,
        reset_after_execute_rate=0.1,
    )
    assert decide(config, (0.0, u), now=0.0).kind is kind


def test_latency_is_fixed_or_uniform_in_the_range() -> None:
    assert decide(FaultConfig(latency_s=0.25), (0.9, 0.9), 0.0).latency_s == 0.25
    ranged = FaultConfig(latency_s=0.1, latency_max_s=0.5)
    assert decide(ranged, (0.0, 0.9), 0.0).latency_s == pytest.approx(0.1)
    assert decide(ranged, (0.5, 0.9), 0.0).latency_s == pytest.approx(0.3)


def test_outage_wins_until_its_end() -> None:
    config = apply_changes(FaultConfig(), {"outage_s": 10}, now=100.0)
    assert decide(config, (0.0, 0.99), now=105.0).kind is FaultKind.OUTAGE
    assert decide(config, (0.0, 0.99), now=110.0).kind is FaultKind.NONE
    forever = apply_changes(FaultConfig(), {"outage": True}, now=0.0)
    assert forever.outage_until == math.inf
    assert decide(forever, (0.0, 0.99), now=1e12).kind is FaultKind.OUTAGE
    assert apply_changes(forever, {"outage": False}, now=1.0).outage_until is None
    assert apply_changes(forever, {"outage_s": None}, now=1.0).outage_until is None


def test_changes_merge_and_clear_starts_over() -> None:
    a = apply_changes(FaultConfig(), {"error_500_rate": 0.5, "strict": True}, 0.0)
    b = apply_changes(a, {"retry_after_s": 7, "tokens": ["t1"]}, 0.0)
    assert (b.error_500_rate, b.strict, b.retry_after_s, b.tokens) == (0.5, True, 7, ("t1",))
    c = apply_changes(b, {"clear": True, "quota_requests": 3}, 0.0)
    assert c == FaultConfig(quota_requests=3)
    assert apply_changes(c, {"tokens": None}, 0.0).tokens is None


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(FaultConfigError) as err:
        apply_changes(
            FaultConfig(),
            {"error_500_rate": 2, "retry_after_s": 1.5, "strict": "yes", "tokens": "t", "nope": 1, "outage": 3},
            0.0,
        )
    problems = " | ".join(err.value.problems)
    for key in ("error_500_rate", "retry_after_s", "strict", "tokens", "unknown key: nope", "outage"):
        assert key in problems


def test_rates_cannot_add_up_past_one() -> None:
    with pytest.raises(FaultConfigError, match="add up to"):
        apply_changes(FaultConfig(), {"error_500_rate": 0.6, "http_503_rate": 0.6}, 0.0)


def test_to_json_shows_the_outage_as_remaining_seconds() -> None:
    config = apply_changes(FaultConfig(), {"outage_s": 10, "tokens": ["a"]}, now=50.0)
    shown = config.to_json(now=53.0)
    assert shown["outage"] is True
    assert shown["outage_remaining_s"] == 7.0
    assert shown["tokens"] == ["a"]
    assert "outage_until" not in shown
    assert config.to_json(now=61.0)["outage"] is False


def test_the_same_seed_draws_the_same_sequence() -> None:
    a, b, c = random.Random(5), random.Random(5), random.Random(6)
    seq_a = [draw(a) for _ in range(50)]
    assert seq_a == [draw(b) for _ in range(50)]
    assert seq_a != [draw(c) for _ in range(50)]


def test_refuse_matching_is_set_shown_and_removed_at_run_time() -> None:
    refused = apply_changes(FaultConfig(), {"refuse_matching": ["email", "custom"]}, 0.0)
    assert refused.refuse_matching == ("email", "custom")
    assert refused.to_json(0.0)["refuse_matching"] == ["email", "custom"]
    assert apply_changes(refused, {"refuse_matching": None}, 0.0).refuse_matching == ()
    assert apply_changes(refused, {"refuse_matching": []}, 0.0).refuse_matching == ()
    assert apply_changes(refused, {"clear": True}, 0.0).refuse_matching == ()
    with pytest.raises(FaultConfigError) as err:
        apply_changes(FaultConfig(), {"refuse_matching": "email"}, 0.0)
    assert "refuse_matching" in str(err.value)
