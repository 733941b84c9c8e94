"""The order in which pytest-xdist hands the case groups to its workers: the longest first.

Under ``--dist loadgroup`` every group runs whole on one worker, and a worker that finishes takes
the next group in the queue. xdist orders that queue by the *number* of cases in a group
(``--loadscope-reorder``), which says little here: a consolidation group has 7 cases and a
minute of training, a thresholding group 100 cases of a second each. With the quick study's
largest consolidation group queued last, one worker ran it alone for the final ~50 s while the
other core idled. Queuing the groups by their expected cost, longest first (the classic
longest-processing-time rule), keeps both workers busy to the end.

The expected cost of a group is :data:`GROUP_SECONDS` (seconds its cases took in a quick study
on the 2-core machine, 2026-12-06, from ``./run bench --durations=0`` at load ~3; only their
order and rough proportions matter), and
for a group not listed (``--full``'s, a plugin's) its number of cases times
:data:`SECONDS_PER_CASE` (:data:`SECONDS_PER_CASE_BY_PREFIX` for a consolidation scenario).
Stale figures cost wall time, never a result: every case still runs, on the worker of its group.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

# Quick-study seconds per group (per-task thresholding and saliency groups, one per
# consolidation scenario, one per remaining axis folder); see the module docstring.
GROUP_SECONDS = {
    "per_example": 229.0,
    "mnist5k.cnn": 222.0,
    "mnist5k": 83.0,
    "consolidation-permuted": 58.0,
    "cam_training": 53.0,
    "planted": 39.0,
    "consolidation-evenodd": 35.0,
    "planted_region": 28.0,
    "digits": 26.0,
    "planted_noise": 16.0,
}
SECONDS_PER_CASE = 0.5
# A consolidation case trains every seed's tasks at every lambda of the grid: seconds, not a half.
SECONDS_PER_CASE_BY_PREFIX = {"consolidation-": 8.0}


def group_of(item: Any) -> str | None:
    """The ``xdist_group`` of a case (the first, as xdist joins several), or None."""
    marker = item.get_closest_marker("xdist_group")
    if marker is None:
        return None
    return str(marker.args[0] if marker.args else marker.kwargs.get("name", "default"))


def longest_groups_first(items: list[Any]) -> None:
    """Reorder ``items`` in place: the cases of the costliest group first, then the next group's.

    The order within a group, and between groups of equal cost, is the collection order (a stable
    sort), so every worker collects the same order, as xdist requires. Cases without a group keep
    their place after the grouped ones."""
    counts = Counter(group_of(item) for item in items)

    def cost(group: str | None) -> float:
        if group is None:
            return -1.0
        if group in GROUP_SECONDS:
            return GROUP_SECONDS[group]
        per_case = next((seconds for prefix, seconds in SECONDS_PER_CASE_BY_PREFIX.items()
                         if group.startswith(prefix)), SECONDS_PER_CASE)
        return counts[group] * per_case

    items.sort(key=lambda item: -cost(group_of(item)))
