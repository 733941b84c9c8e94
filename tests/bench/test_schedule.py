"""The xdist queue order of the benchmark groups (benchmarks.plugin.schedule)."""

from __future__ import annotations

import pytest

from benchmarks.plugin import schedule


class _Item:
    def __init__(self, name: str, group: str | None):
        self.name = name
        self.marker = None if group is None else pytest.mark.xdist_group(group).mark

    def get_closest_marker(self, name: str):
        return self.marker if name == "xdist_group" else None


def _order(items):
    schedule.longest_groups_first(items)
    return [item.name for item in items]


def test_costliest_group_first_and_collection_order_within_a_group():
    items = [_Item("a1", "digits"), _Item("p1", "per_example"), _Item("a2", "digits"),
             _Item("c1", "mnist5k.cnn"), _Item("p2", "per_example"), _Item("free", None)]
    assert _order(items) == ["p1", "p2", "c1", "a1", "a2", "free"]


def test_unlisted_groups_are_costed_by_their_cases():
    many = [_Item(f"n{i}", "new-task") for i in range(1000)]  # 1000 x 0.5 s: above every hint
    few = [_Item("one", "other-task")]
    scenario = [_Item(f"s{i}", "consolidation-new") for i in range(2)]  # 2 x 8 s < digits' 26 s
    order = _order(few + scenario + [_Item("d", "digits")] + many)
    assert order[:1000] == [f"n{i}" for i in range(1000)]
    assert order[1000:] == ["d", "s0", "s1", "one"]

