"""Generic plotting: a headless pyplot, atomic PNG files, file-safe names.

The figures themselves belong to their sections (:mod:`reports.sections`). matplotlib is
imported only when a figure is drawn.
"""

from __future__ import annotations

import pathlib
import re
from typing import Any

from reports.io import atomic_path


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: pathlib.Path) -> None:
    """Save ``fig`` as PNG at ``path`` atomically (see :func:`reports.io.atomic_path`)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")


def slug(text: str) -> str:
    """``text`` as a file-name part: runs of other characters than ``A-Za-z0-9_.-`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_") or "task"
