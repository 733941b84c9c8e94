"""Loss against threshold, one PNG per task, bands over seeds (as in the original study's figures)."""

from __future__ import annotations

import math
import os
import pathlib
import re

import pandas as pd

from reports.records import DEFAULT_REPLACE, DEFAULT_SCOPE, atomic_path, task_label
from reports.tables import LEVEL_ORDER


def plot_tasks(points: pd.DataFrame, out_dir: str | os.PathLike[str]) -> list[pathlib.Path]:
    """Write ``loss-<task>[.<variant>].png`` per task into ``out_dir``; return the paths.

    One row of panels per aggregation level, one column per (scope, replacement); one line per
    measure: the mean loss
    over seeds, with a band from the lowest to the highest seed; the dashed line is ln K.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for (task, variant), frame in points.groupby(["task", "variant"], sort=True):
        levels = sorted(frame["level"].unique(), key=lambda v: LEVEL_ORDER.get(v, 9))
        combos = sorted(map(tuple, frame[["scope", "replace"]].drop_duplicates().to_numpy()),
                        key=lambda c: (c != (DEFAULT_SCOPE, DEFAULT_REPLACE), c))
        measures = sorted(frame["measure"].unique())
        colours = plt.get_cmap("tab10")
        styles = ("-", "--", ":", "-.")
        fig, axes = plt.subplots(len(levels), len(combos), figsize=(4.2 * len(combos), 3.2 * len(levels)),
                                 squeeze=False, sharey=True)
        for row, level in enumerate(levels):
            for col, (scope, replace) in enumerate(combos):
                ax = axes[row][col]
                panel = frame[(frame["level"] == level) & (frame["scope"] == scope)
                              & (frame["replace"] == replace)]
                if panel.empty:
                    ax.set_visible(False)
                    continue
                _draw_panel(ax, panel, measures, colours, styles)
                ax.set_title(f"{level} · {scope} scope · {replace}", fontsize=10)
                ax.axhline(math.log(int(frame["num_classes"].iloc[0])), color="grey", linestyle="--",
                           linewidth=1)
                ax.set_xlim(0, 1)
                if row == len(levels) - 1:
                    ax.set_xlabel("fraction of weights replaced (least important first)")
                if col == 0:
                    ax.set_ylabel("test loss")
        handles, labels = max((ax.get_legend_handles_labels() for ax in axes.flat),
                              key=lambda hl: len(hl[1]))
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
                   frameon=False)
        name = task_label(task, variant)
        fig.suptitle(f"{name}: loss vs threshold (mean over seeds, band = min–max; dashed = ln K)",
                     fontsize=11)
        fig.tight_layout()
        path = out_dir / f"loss-{_slug(name)}.png"
        save_figure(fig, path)
        plt.close(fig)
        written.append(path)
    return written


def _draw_panel(ax, panel: pd.DataFrame, measures: list[str], colours, styles) -> None:
    """One line per measure (mean loss over seeds) with a min–max band."""
    for i, measure in enumerate(measures):
        curve = panel[panel["measure"] == measure]
        if curve.empty:
            continue
        stats = curve.groupby("threshold")["loss"].agg(["mean", "min", "max"])
        colour = colours(i % 10)
        ax.plot(stats.index, stats["mean"], label=measure, color=colour, linewidth=1.4,
                linestyle=styles[(i // 10) % len(styles)])
        ax.fill_between(stats.index, stats["min"], stats["max"], color=colour, alpha=0.15, linewidth=0)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_") or "task"



def save_figure(fig, path: pathlib.Path) -> None:
    """Save ``fig`` as PNG at ``path`` atomically (see :func:`reports.records.atomic_path`)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")


def plot_task_accuracy(histories: dict[str, pd.DataFrame], path: str | os.PathLike[str]) -> pathlib.Path:
    """The original project's continual-learning plot: each task's test accuracy over epochs.

    One panel per entry of ``histories`` (label -> tidy history of
    :class:`tasks.sequential.SequentialLearner`, optionally with a ``seed`` column: the line is
    the mean over seeds); dashed vertical lines mark the task boundaries. Written atomically.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(histories), figsize=(4.2 * len(histories), 3.2), squeeze=False, sharey=True)
    for ax, (label, history) in zip(axes[0], histories.items(), strict=True):
        test = history[history["split"] == "test"]
        for task, rows in test.groupby("evaluated", sort=False):
            mean = rows.groupby("epoch")["accuracy"].mean()
            ax.plot(mean.index, mean.to_numpy(), marker=".", label=str(task))
        ends = test.groupby("trained", sort=False)["epoch"].max().sort_values().to_numpy()[:-1]
        for end in ends:
            ax.axvline(end, color="grey", linestyle="--", linewidth=1)
        ax.set_title(str(label), fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylim(0, 1.02)
    axes[0][0].set_ylabel("test accuracy")
    axes[0][-1].legend(fontsize=8, frameon=False, loc="lower left")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path
