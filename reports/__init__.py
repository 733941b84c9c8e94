"""reports: benchmark result files -> leaderboard (markdown), tidy CSV and plots.

Reports read result records (JSON lines, see :mod:`reports.records`); they never recompute an
experiment. From Python::

    import reports
    records = reports.read_records(["reports/results.jsonl"])
    paths = reports.write_reports(records, "reports")    # leaderboard.md, results.csv, plots/

From the shell, for one or several result files (e.g. the shards of a split run)::

    python -m reports reports/out/RUN/*.jsonl --out reports
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

from reports.records import (
    RESULT_KINDS,
    SKIPPED,
    MixedRunsError,
    RecordWriter,
    atomic_write_text,
    read_records,
    write_records,
)

__all__ = [
    "RESULT_KINDS",
    "MixedRunsError",
    "RecordWriter",
    "atomic_write_text",
    "leaderboard_markdown",
    "merge_meta",
    "read_records",
    "skipped_lines",
    "write_records",
    "write_reports",
]


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
    merged["tasks"] = sorted({r["task"] + (f" ({r['variant']})" if r.get("variant") else "") for r in points})
    merged["skipped"] = skipped_lines(records)
    return merged


def skipped_lines(records: list[dict[str, Any]]) -> list[str]:
    """``file:line: reason`` for every line the reader skipped (see :func:`reports.records.iter_records`)."""
    return [f"{r['file']}:{r['line']}: {r['reason']}" for r in records if r["kind"] == SKIPPED]


def leaderboard_markdown(records: list[dict[str, Any]]) -> str:
    """The whole leaderboard: header, overall ranking, one ranked table per section, timings."""
    from reports import markdown, saliency, tables

    points = tables.points_frame(records)
    curves = tables.curves_frame(points)
    sections = tables.section_tables(curves, records)
    from reports import consolidation

    parts = [markdown.header(merge_meta(records))]
    overall = tables.overall_ranking(sections)
    parts += [consolidation.both_axes(overall, records), consolidation.markdown_section(records)]
    if not sections:
        parts.append("No finished thresholding case in these result files.")
    else:
        parts += ["## Overall ranking (mean rank across tasks)", "", markdown.overall_section(overall)]
        for section, frame in sections:
            parts += [f"## {markdown.section_title(section)}", "", markdown.leaderboard_section(frame)]
    notes = tables.coverage_notes(records)
    if notes:
        parts += ["## Measure coverage", "", markdown.coverage_section(notes)]
    from reports import cam_training

    parts.append(cam_training.section(records))
    parts += saliency.sections(records)
    devices = tables.device_timings(records)
    parts += ["## Fisher computation per device", ""]
    if devices.empty:
        parts.append("No Fisher timing in these result files.")
    else:
        parts.append(markdown.device_section(devices))
    return "\n\n".join(p.strip("\n") for p in parts if p != "") + "\n"


def results_csv(records: list[dict[str, Any]]) -> str:
    """The tidy table as CSV text: one row per measure, task, level, scope, replace, seed, threshold."""
    from reports import tables

    frame = tables.points_frame(records)[tables.RESULT_COLUMNS]
    return frame.to_csv(index=False, lineterminator="\n", float_format="%.6g")


def write_reports(
    records: list[dict[str, Any]], out_dir: str | os.PathLike[str], *, plots: bool = True
) -> dict[str, Any]:
    """Write ``leaderboard.md``, ``results.csv`` and ``plots/loss-<task>.png`` into ``out_dir``.

    Every file is written atomically. Returns the paths by name (``plots`` is a list).
    """
    out_dir = pathlib.Path(out_dir)
    paths: dict[str, Any] = {
        "leaderboard": atomic_write_text(out_dir / "leaderboard.md", leaderboard_markdown(records)),
        "results": atomic_write_text(out_dir / "results.csv", results_csv(records)),
        "plots": [],
    }
    if plots:
        from reports import consolidation, tables
        from reports import plots as plotting

        points = tables.points_frame(records)
        if not points.empty:
            paths["plots"] = plotting.plot_tasks(points, out_dir / "plots")
        from reports import saliency

        paths["plots"] += saliency.plot_curves(records, out_dir / "plots")
        paths["plots"] += consolidation.write_plots(records, out_dir / "plots")
    return paths
