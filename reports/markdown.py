"""The leaderboard as GitHub-flavoured markdown; every name from a result file is escaped."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import pandas as pd

from reports.records import task_label
from reports.scoring import SAFE_ACCURACY_DROP, SIGNIFICANCE_LEVEL

_SPECIAL = re.compile(r"([\\`*\[\]<>|#])")
_LONE_UNDERSCORE = re.compile(r"(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")


def escape(text: Any) -> str:
    """Markdown-safe text for a table cell: ``|``, backslash, ``*``, backticks, brackets, ``<``,
    ``>``, ``#`` and underscores that could start emphasis are escaped; newlines become spaces.
    Underscores inside a word (``fisher_sampled``) stay readable as they are.
    """
    text = " ".join(str(text).split())
    text = _SPECIAL.sub(r"\\\1", text)
    return _LONE_UNDERSCORE.sub(r"\\_", text)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> str:
    """A markdown table; cells must already be escaped. ``align``: one of l/r/c per column."""
    align = align or "l" * len(headers)
    marks = {"l": "---", "r": "---:", "c": ":---:"}
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(marks[a] for a in align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def number(value: Any, digits: int = 3) -> str:
    """A float with ``digits`` decimals, or an en dash for missing values."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or pd.isna(value):
        return "–"
    return f"{float(value):.{digits}f}"


def seconds(value: Any) -> str:
    """Seconds with precision that fits their size."""
    if value is None or pd.isna(value):
        return "–"
    value = float(value)
    return f"{value:.3f} s" if value < 1 else f"{value:.2f} s" if value < 100 else f"{value:.0f} s"


def section_title(section: dict[str, Any]) -> str:
    """``planted · weight · global, noise`` (escaped)."""
    task = task_label(section["task"], section.get("variant"))
    return escape(f"{task} · {section['level']} · {section['scope']} scope, {section['replace']} replacement")


def leaderboard_section(frame: pd.DataFrame) -> str:
    """One ranked table: rank, measure, robustness score with 95% CI, safe fraction, lift, compute time."""
    rows = []
    for _, r in frame.iterrows():
        if pd.isna(r.get("robustness")):
            rows.append(["–", escape(r["measure"]), f"failed: {escape(_short(r['error']))}",
                         "–", "–", "–", "–"])
            continue
        interval = "–" if r["seeds"] < 2 else f"[{number(r['low'])}, {number(r['high'])}]"
        lift = number(r.get("lift"))
        if lift != "–" and bool(r.get("significant")):
            lift += "\\*"
        name = escape(r["measure"])
        if r.get("error"):
            name += f" (failed on some seeds: {escape(_short(r['error']))})"
        rows.append([str(int(r["rank"])), name, number(r["robustness"]), interval,
                     number(r["safe"], 2), lift, seconds(r.get("seconds"))])
    headers = ["rank", "measure", "robustness score ↓", "95% CI", "largest safe fraction",
               "lift over random", "compute time"]
    return table(headers, rows, align="rlrrrrr")


def overall_section(frame: pd.DataFrame) -> str:
    """The overall ranking: mean rank across tasks, overall and per aggregation level."""
    levels = [c for c in frame.columns if c not in ("rank", "measure", "mean_rank", "sections")]
    headers = ["rank", "measure", "mean rank", *[f"mean rank ({escape(lv)})" for lv in levels], "sections"]
    rows = [
        [str(int(r["rank"])), escape(r["measure"]), number(r["mean_rank"], 2),
         *[number(r[lv], 2) for lv in levels], str(int(r["sections"]))]
        for _, r in frame.iterrows()
    ]
    return table(headers, rows, align="rl" + "r" * (len(headers) - 2))


def device_section(frame: pd.DataFrame) -> str:
    """The Fisher timing table, one row per (task, measure, device)."""
    headers = ["task", "measure", "device", "device name", "examples", "time", "runs"]
    rows = []
    for _, r in frame.iterrows():
        task = task_label(r["task"], r.get("variant"))
        rows.append([escape(task), escape(r["measure"]), escape(r["device"]), escape(r["device_name"]),
                     str(int(r["examples"])), seconds(r["seconds"]), str(int(r["runs"]))])
    return table(headers, rows, align="llllrrr")


def coverage_section(notes: dict[str, str]) -> str:
    """One row per measure that scores some layer types by a stated fallback."""
    return table(["measure", "where the criterion is undefined"],
                 [[escape(m), escape(n)] for m, n in sorted(notes.items())], align="ll")


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
        ("command", f"`{str(meta['command']).replace('`', chr(39))}`" if meta.get("command") else None),
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


def _short(text: Any, limit: int = 120) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
