"""The benchmark's order of measurements and its ratios: what makes a side-by-side comparison fair."""

from __future__ import annotations

import statistics
from typing import Any

import pytest

from tests.benchmark.__main__ import paired, rotated


def _plan(names: str) -> list[tuple[str, Any]]:
    return [(name, lambda: {}) for name in names]


def test_every_part_takes_every_place_once_in_as_many_repetitions_as_there_are_parts() -> None:
    plan = _plan("abcdefg")
    orders = ["".join(name for name, _ in rotated(plan, rep)) for rep in range(len(plan))]
    for place in range(len(plan)):
        assert sorted(order[place] for order in orders) == list("abcdefg")
    # Each repetition runs every part once, in the base order turned round.
    assert all(sorted(order) == list("abcdefg") and order in "abcdefg" * 2 for order in orders)
    assert orders[0] == "abcdefg" and rotated(plan, len(plan)) == plan


def test_a_ratio_compares_the_two_parts_of_the_same_repetition() -> None:
    # The host's speed drifts from one repetition to the next; each ratio is taken within a repetition.
    runs = {
        "floor": [{"events_per_s": v} for v in (40_000.0, 30_000.0, 44_000.0)],
        "connector": [{"events_per_s": v} for v in (36_000.0, 28_500.0, 30_800.0)],
    }
    assert paired(runs, "connector", "floor") == [0.9, 0.95, 0.7]
    # Not the ratio of the medians (30,800 / 40,000 = 0.77), which sets runs of different moments apart.
    assert statistics.median(paired(runs, "connector", "floor")) == 0.9
    runs["connector"].pop()
    with pytest.raises(ValueError):  # a repetition without its pair is not paired with another one's
        paired(runs, "connector", "floor")
