"""Generic markdown rendering: escaping, tables, numbers, and joining a section's parts.

Every name that comes from a result file goes through :func:`escape`. The sections
(:mod:`reports.sections`) build their text from these pieces.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

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


def join(parts: Iterable[str]) -> str:
    """Blocks (titles, paragraphs, tables) separated by one blank line; empty parts are left out.

    The leaderboard joins the sections' text the same way, so a section may return several
    blocks joined by this or one block.
    """
    return "\n\n".join(p.strip("\n") for p in parts if p != "")


def details(summary: str, body: str) -> str:
    """A collapsible block (``<details>``, which GitHub renders) holding markdown ``body``.

    ``summary`` is the always-visible line (already escaped); the blank lines around the body
    let GitHub render the markdown inside.
    """
    return f"<details>\n<summary>{summary}</summary>\n\n{body.strip()}\n\n</details>"
