"""The leaderboard assembly: result records -> leaderboard.md, results.csv and plots.

The header, then every section of :data:`reports.sections.SECTIONS` in order; the sections'
shared results (:class:`reports.sections.Context`, with the tidy points frame) are computed once
per write and handed to the markdown, the plots and the CSV.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence
from typing import Any

import pandas as pd

from reports.html import leaderboard_html
from reports.io import SKIPPED, atomic_write_text
from reports.markdown import escape, join
from reports.records import task_label
from reports.scoring import SAFE_ACCURACY_DROP, SIGNIFICANCE_LEVEL
from reports.sections import SECTIONS, Context, build_context, thresholding


def merge_meta(records: list[dict[str, Any]]) -> dict[str, Any]:
    """One header from the run facts of all meta records and what the points actually cover.

    Seeds, thresholds and tasks come from the curve points (so shards and split runs report
    what they hold); versions, date, mode and command from the meta records (distinct values
    joined with `` + ``).
    """
    metas = [r.get("run", {}) for r in records if r["kind"] == "meta"]
    merged: dict[str, Any] = {}
    for key in ("date", "mode", "tensorflow", "keras", "python", "platform", "command"):
        values = []
        for meta in metas:
            if meta.get(key) and meta[key] not in values:
                values.append(meta[key])
        if values:
            merged[key] = " + ".join(str(v) for v in sorted(values, key=str))
    points = [r for r in records if r["kind"] == "point"]
    merged["seeds"] = sorted({int(r["seed"]) for r in points})
    merged["thresholds"] = sorted({float(r["threshold"]) for r in points})
    merged["tasks"] = sorted({task_label(r["task"], r.get("variant")) for r in points})
    merged["skipped"] = skipped_lines(records)
    return merged


def skipped_lines(records: list[dict[str, Any]]) -> list[str]:
    """``file:line: reason`` for every line the reader skipped (:func:`reports.io.iter_records`)."""
    return [f"{r['file']}:{r['line']}: {r['reason']}" for r in records if r["kind"] == SKIPPED]


def header(meta: dict[str, Any]) -> str:
    """Title, run facts and how to read the tables."""
    facts = [
        ("date", meta.get("date")),
        ("mode", meta.get("mode")),
        ("TensorFlow / Keras", f"{meta.get('tensorflow', '?')} / {meta.get('keras', '?')}"),
        ("Python / platform", f"{meta.get('python', '?')} / {meta.get('platform', '?')}"),
        ("seeds", _join(meta.get("seeds"))),
        ("thresholds", _join(meta.get("thresholds"))),
        ("tasks", _join(meta.get("tasks"))),
        ("command",
         f"`{str(meta['command']).replace('`', chr(39))}`" if meta.get("command") else None),
    ]
    lines = ["# importance-bench leaderboard", ""]
    lines += [f"- **{k}**: {v if k == 'command' else escape(v)}" for k, v in facts if v]
    lines += skipped_note(meta.get("skipped") or [])
    lines += [
        "",
        "How to read: each measure ranks the trainable weights; the least important fraction p is "
        "replaced and the loss on the task's test split is measured. **Robustness score** = area "
        "under (loss(p) − loss(0)) / (ln K − loss(0)) over p in [0, 1], mean over seeds with a "
        "95% Student-t interval; **lower is better** (0: nothing lost, 1: at chance at once). "
        f"**Largest safe fraction**: largest p with accuracy within {SAFE_ACCURACY_DROP * 100:.0f} "
        "point of the untouched model up to p. **Lift over random** = random's score − the "
        "measure's, paired by seed; \\* = two-sided paired t-test (scipy.stats.ttest_rel) over "
        f"seeds, p < {SIGNIFICANCE_LEVEL}. Compute time: mean seconds of one computation of the "
        "measure on the task.",
    ]
    return "\n".join(lines)


def skipped_note(lines: Sequence[str]) -> list[str]:
    """Header lines listing every result line the reader skipped (nothing dropped silently)."""
    if not lines:
        return []
    return [f"- **skipped records**: {len(lines)} (not in the tables below)"] + [
        f"  - {escape(line)}" for line in lines
    ]


def _join(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return str(value)


def leaderboard_markdown(
    records: list[dict[str, Any]], *, points: pd.DataFrame | None = None
) -> str:
    """The whole leaderboard: the header, then every section of :data:`reports.sections.SECTIONS`.

    ``points`` is ``thresholding.points_frame(records)`` when the caller has it already.
    """
    return _markdown(records, build_context(records, points=points))


def _markdown(records: list[dict[str, Any]], context: Context) -> str:
    return _page(_blocks(records, context))


def _blocks(records: list[dict[str, Any]], context: Context) -> list[str]:
    """The header, then every section's markdown, in leaderboard order."""
    return [header(merge_meta(records))] + [section.markdown(records, context)
                                            for section in SECTIONS]


def _page(blocks: Sequence[str]) -> str:
    return join(blocks) + "\n"


def results_csv(records: list[dict[str, Any]], *, points: pd.DataFrame | None = None) -> str:
    """``results.csv`` as text: a row per measure, task, level, scope, replace, seed, threshold."""
    return thresholding.csv(thresholding.points_frame(records) if points is None else points)


def write_reports(
    records: list[dict[str, Any]], out_dir: str | os.PathLike[str], *, plots: bool = True
) -> dict[str, Any]:
    """Write ``leaderboard.md``, ``leaderboard.html``, ``results.csv`` and every section's plots
    into ``out_dir``.

    ``leaderboard.html`` is the same text as one self-contained page, each section's figures
    embedded after it (:mod:`reports.html`). The plots go to ``out_dir/plots/``
    (``loss-<task>.png``, ``ranks-removal.png``, ``consolidation-<scenario>.png``,
    ``saliency-curves-<task>.png``, ...). Every file is written atomically. Returns the paths by
    name (``plots`` is a list, in section order).
    """
    out_dir = pathlib.Path(out_dir)
    context = build_context(records)  # computed once for every output
    blocks = _blocks(records, context)
    figures: list[list[pathlib.Path]] = [[] for _ in blocks]
    if plots:
        for i, section in enumerate(SECTIONS, start=1):
            figures[i] = section.plots(records, context, out_dir / "plots")
    return {
        "leaderboard": atomic_write_text(out_dir / "leaderboard.md", _page(blocks)),
        "html": atomic_write_text(out_dir / "leaderboard.html",
                                  leaderboard_html(list(zip(blocks, figures, strict=True)))),
        "results": atomic_write_text(out_dir / "results.csv", thresholding.csv(context.points)),
        "plots": [path for paths in figures for path in paths],
    }
