"""The leaderboard assembly: result records -> leaderboard.md, results.csv and plots.

The tidy points frame is built once per write and handed to the markdown, the CSV and the plots.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import pandas as pd

from reports import cam_training, consolidation, markdown, saliency, tables
from reports.records import SKIPPED, atomic_write_text, task_label


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
    """``file:line: reason`` for every line the reader skipped (see :func:`reports.records.iter_records`)."""
    return [f"{r['file']}:{r['line']}: {r['reason']}" for r in records if r["kind"] == SKIPPED]


def leaderboard_markdown(records: list[dict[str, Any]], *, points: pd.DataFrame | None = None) -> str:
    """The whole leaderboard: header, overall ranking, one ranked table per section, timings.

    ``points`` is ``tables.points_frame(records)`` when the caller has it already.
    """
    points = tables.points_frame(records) if points is None else points
    curves = tables.curves_frame(points)
    sections = tables.section_tables(curves, records)
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
    parts.append(cam_training.section(records))
    parts += saliency.sections(records)
    devices = tables.device_timings(records)
    parts += ["## Fisher computation per device", ""]
    if devices.empty:
        parts.append("No Fisher timing in these result files.")
    else:
        parts.append(markdown.device_section(devices))
    return "\n\n".join(p.strip("\n") for p in parts if p != "") + "\n"


def results_csv(records: list[dict[str, Any]], *, points: pd.DataFrame | None = None) -> str:
    """The tidy table as CSV text: one row per measure, task, level, scope, replace, seed, threshold."""
    points = tables.points_frame(records) if points is None else points
    frame = points[tables.RESULT_COLUMNS]
    return frame.to_csv(index=False, lineterminator="\n", float_format="%.6g")


def write_reports(
    records: list[dict[str, Any]], out_dir: str | os.PathLike[str], *, plots: bool = True
) -> dict[str, Any]:
    """Write ``leaderboard.md``, ``results.csv`` and ``plots/loss-<task>.png`` into ``out_dir``.

    Every file is written atomically. Returns the paths by name (``plots`` is a list).
    """
    out_dir = pathlib.Path(out_dir)
    points = tables.points_frame(records)  # built once for the three outputs
    paths: dict[str, Any] = {
        "leaderboard": atomic_write_text(out_dir / "leaderboard.md", leaderboard_markdown(records, points=points)),
        "results": atomic_write_text(out_dir / "results.csv", results_csv(records, points=points)),
        "plots": [],
    }
    if plots:
        from reports import plots as plotting  # matplotlib only when plotting

        if not points.empty:
            paths["plots"] = plotting.plot_tasks(points, out_dir / "plots")
        paths["plots"] += saliency.plot_curves(records, out_dir / "plots")
        paths["plots"] += consolidation.write_plots(records, out_dir / "plots")
    return paths
