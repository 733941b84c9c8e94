"""The "not applicable" section: what a task cannot take part in, and why.

A model given trained (``tasks.from_model``, ``--bench-model``) has no training run and no task
sequence, so online measures, consolidation and CAM-guided training cannot use it, and the
explanation axes need a 2-D convolution. The benchmark writes one ``not_applicable`` record per
(task, axis, measure) it leaves out, and this section lists them, so a missing row in a ranked
table is never silent. Reads only these records; no figure.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

from reports.markdown import escape, join, table
from reports.records import record_kind, task_label
from reports.sections.contract import Context, Record

not_applicable_record = record_kind(
    "not_applicable",
    required=("task", "variant", "axis", "reason"),
    optional=("measure",),
    identity=("task", "variant", "axis", "measure"),
)
KINDS: tuple[str, ...] = ()  # a left-out case is not a finished one


def markdown(records: Sequence[Record], context: Context) -> str:
    """``## Not applicable``: per task and axis, the measures left out (or the whole axis) and why;
    ``""`` when nothing was left out."""
    rows = not_applicable(records)
    if not rows:
        return ""
    body = table(
        ["task", "axis", "left out", "why"],
        [
            [
                escape(task),
                escape(axis),
                escape(", ".join(measures) or "the whole axis"),
                escape(reason),
            ]
            for (task, axis, reason), measures in rows.items()
        ],
        align="llll",
    )
    return join(["## Not applicable", "", body])


def plots(
    records: Sequence[Record], context: Context, out_dir: str | os.PathLike[str]
) -> list[pathlib.Path]:
    """No figure: the table says it all."""
    return []


def not_applicable(records: Sequence[Record]) -> dict[tuple[str, str, str], list[str]]:
    """``(task label, axis, reason) -> sorted measures`` (empty: the whole axis), in task order."""
    out: dict[tuple[str, str, str], set[str]] = {}
    for r in records:
        if r["kind"] == "not_applicable":
            key = (task_label(r["task"], r.get("variant")), str(r["axis"]), str(r["reason"]))
            measures = out.setdefault(key, set())
            if r.get("measure"):
                measures.add(str(r["measure"]))
    return {key: sorted(out[key]) for key in sorted(out)}
