"""Loss against threshold, one PNG per task, bands over seeds (as in the original study's figures)."""

from __future__ import annotations

import math
import os
import pathlib
import re
import tempfile

import pandas as pd

from reports.tables import LEVEL_ORDER


def plot_tasks(points: pd.DataFrame, out_dir: str | os.PathLike[str]) -> list[pathlib.Path]:
    """Write ``loss-<task>[-<variant>].png`` per task into ``out_dir``; return the paths.

    One panel per (aggregation level, scope, replacement); one line per measure: the mean loss
    over seeds, with a band from the lowest to the highest seed; the dashed line is ln K.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for (task, variant), frame in points.groupby(["task", "variant"], sort=True):
        panels = frame[["level", "scope", "replace"]].drop_duplicates()
        panels = sorted(map(tuple, panels.to_numpy()), key=lambda p: (LEVEL_ORDER.get(p[0], 9), p[1:]))
        measures = sorted(frame["measure"].unique())
        colours = plt.get_cmap("tab10")
        styles = ("-", "--", ":", "-.")
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False,
                                 sharey=True)
        for ax, (level, scope, replace) in zip(axes[0], panels, strict=True):
            panel = frame[(frame["level"] == level) & (frame["scope"] == scope) & (frame["replace"] == replace)]
            for i, measure in enumerate(measures):
                curve = panel[panel["measure"] == measure]
                if curve.empty:
                    continue
                stats = curve.groupby("threshold")["loss"].agg(["mean", "min", "max"])
                colour = colours(i % 10)
                ax.plot(stats.index, stats["mean"], label=measure, color=colour, linewidth=1.4,
                        linestyle=styles[(i // 10) % len(styles)])
                ax.fill_between(stats.index, stats["min"], stats["max"], color=colour, alpha=0.18,
                                linewidth=0)
            chance = math.log(int(frame["num_classes"].iloc[0]))
            ax.axhline(chance, color="grey", linestyle="--", linewidth=1)
            ax.set_title(f"{level} · {scope} · {replace}", fontsize=10)
            ax.set_xlabel("fraction of weights replaced (least important first)")
            ax.set_xlim(0, 1)
        axes[0][0].set_ylabel("test loss")
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
                   frameon=False)
        name = f"{task} ({variant})" if variant else task
        fig.suptitle(f"{name}: loss vs threshold (mean over seeds, band = min–max; dashed = ln K)",
                     fontsize=11)
        fig.tight_layout()
        path = out_dir / f"loss-{_slug(task)}{'-' + _slug(variant) if variant else ''}.png"
        _save_atomic(fig, path)
        plt.close(fig)
        written.append(path)
    return written


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_") or "task"


def _save_atomic(fig, path: pathlib.Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
