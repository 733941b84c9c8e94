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


def plot_rank_heatmap(ranks: Any, path: pathlib.Path, *, title: str) -> pathlib.Path:
    """Draw a rank heat-map: one row per measure, one column per table, best rank darkest.

    Args:
        ranks: A ``pandas.DataFrame`` indexed by measure, one column per table (task, level or
            axis), holding ranks (1 = best; NaN where a measure has no rank there, drawn blank).
            Rows are drawn in the frame's order (pass it sorted by overall rank).
        path: The PNG to write (atomically).
        title: The figure's title.

    Returns:
        ``path``.
    """
    import numpy as np

    plt = pyplot()
    values = ranks.to_numpy(dtype=float)
    rows, cols = values.shape
    # No tight_layout: with few rows and long rotated labels it cannot fit and warns; the
    # figure is sized for its labels and save_figure crops to the drawn area.
    fig, ax = plt.subplots(figsize=(2.6 + 0.55 * cols, 2.0 + 0.28 * rows))
    shown = np.ma.masked_invalid(values)
    top = np.nanmax(values) if np.isfinite(values).any() else 1.0
    image = ax.imshow(shown, aspect="auto", cmap="viridis", vmin=1, vmax=max(top, 2.0))
    for i in range(rows):
        for j in range(cols):
            if np.isfinite(values[i, j]):
                dark = values[i, j] <= 1 + 0.45 * (max(top, 2.0) - 1)
                ax.text(j, i, f"{values[i, j]:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if dark else "black")
    ax.set_xticks(range(cols), [str(c) for c in ranks.columns], rotation=60, ha="right",
                  fontsize=8)
    ax.set_yticks(range(rows), [str(r) for r in ranks.index], fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="rank (1 = best)")
    save_figure(fig, path)
    plt.close(fig)
    return path
