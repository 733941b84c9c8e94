"""The saliency section: faithfulness tables, explanation-kept table, pictures.

Reads ``saliency`` and ``explanation`` records, the two kinds declared here
(:func:`saliency_record`, :func:`explanation_record`, written by ``benchmarks/saliency/test_saliency.py``);
recomputes nothing.

* Faithfulness, per task: methods ranked by the mean deletion area (lower is better; Petsiuk et al.
  2018), with a 95 % Student-t interval over images x seeds, the insertion area (higher is
  better), the lift over ``random_map`` (deletion: random's area minus the method's; insertion:
  the method's minus random's; positive = better than chance), the mass inside the planted region
  where the task has one, and the compute time per image.
* Explanation kept: per weight measure, the mean Spearman correlation of the thresholded model's
  Grad-CAM with the untouched model's, at each threshold.
* Pictures: ``plots/saliency-curves-<task>.png`` (mean deletion and insertion curves per method)
  drawn here; ``plots/saliency-overlay-<task>.png`` drawn by the benchmark with
  :func:`plot_overlay_grid` (it needs the images and maps, which records do not hold).
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from reports.markdown import escape, join, number, table
from reports.plots import pyplot, save_figure
from reports.records import record_kind, task_label
from reports.scoring import mean_interval
from reports.sections.contract import Context, Record

# The faithfulness of one saliency method on one task and seed: ``method, task, variant, seed,
# images``, the per-image deletion and insertion areas (lists), the mean curves (``fraction``
# and the probability/accuracy lists over it), ``seconds_per_image`` and, on a planted task,
# ``mass_inside``.
FAITHFULNESS_CURVES = ("fraction", "deletion_probability", "deletion_accuracy",
                       "insertion_probability", "insertion_accuracy")
saliency_record = record_kind(
    "saliency",
    required=("method", "task", "variant", "seed", "images", "seconds_per_image", "deletion_area",
              "insertion_area", *FAITHFULNESS_CURVES),
    optional=("mass_inside",),
    identity=("method", "task", "variant", "seed"),
)
# One threshold of an explanation-under-thresholding sweep (Grad-CAM kept, rank correlation):
# ``measure, task, variant, seed, threshold, explanation_kept, loss, accuracy, method``.
explanation_record = record_kind(
    "explanation",
    required=("measure", "task", "variant", "seed", "method", "threshold", "explanation_kept",
              "loss", "accuracy"),
    identity=("measure", "task", "variant", "seed", "threshold"),
)
KINDS = ("saliency", "explanation")

CONTROL = "random_map"


# --- the section ---------------------------------------------------------------------------


def markdown(records: Sequence[Record], context: Context) -> str:
    """Per task, the faithfulness table with its pictures, then the explanation-kept tables."""
    parts: list[str] = []
    faith = faithfulness_table(records)
    for (task, variant), frame in (
        faith.groupby(["task", "variant"], sort=True) if not faith.empty else []
    ):
        label = task_label(task, variant)
        parts += [f"## Saliency faithfulness · {escape(label)}", "", _faith_markdown(frame), "",
                  f"![overlays](plots/saliency-overlay-{label}.png) "
                  f"![deletion and insertion curves](plots/saliency-curves-{label}.png)"]
    kept = explanation_table(records)
    for (task, variant), frame in (
        kept.groupby(["task", "variant"], sort=True) if not kept.empty else []
    ):
        parts += [f"## Explanation kept under thresholding · {escape(task_label(task, variant))}",
                  "", _kept_markdown(frame)]  # fmt: skip
    return join(parts)


def plots(
    records: Sequence[Record], context: Context, out_dir: str | os.PathLike[str]
) -> list[pathlib.Path]:
    """``saliency-curves-<task>.png``: mean deletion and insertion curves per method, per task."""
    plt = pyplot()
    out_dir = pathlib.Path(out_dir)
    paths = []
    for (task, variant), group in _groups([r for r in records if r["kind"] == "saliency"]):
        out_dir.mkdir(parents=True, exist_ok=True)
        fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
        for method in sorted({r["method"] for r in group}):
            mine = [r for r in group if r["method"] == method]
            fraction = np.asarray(mine[0]["fraction"])
            style = "--" if method in (CONTROL, "centre_prior") else "-"
            for ax, key in zip(
                axes, ("deletion_probability", "insertion_probability"), strict=True
            ):
                ax.plot(fraction, np.mean([r[key] for r in mine], axis=0), style, label=method)
        for ax, title in zip(
            axes, ("deletion (lower is better)", "insertion (higher is better)"), strict=True
        ):
            ax.set(title=title, xlabel="fraction of pixels", ylim=(0, 1.02))
        axes[0].set_ylabel("target-class probability")
        axes[1].legend(fontsize=7, loc="lower right")
        fig.suptitle(f"Saliency faithfulness · {task_label(task, variant)}")
        path = out_dir / f"saliency-curves-{task_label(task, variant)}.png"
        save_figure(fig, path)
        plt.close(fig)
        paths.append(path)
    return paths


# --- records -> tables ---------------------------------------------------------------------


def faithfulness_table(records: Sequence[Record]) -> pd.DataFrame:
    """One row per (task, variant, method) with areas, intervals, lifts, mass and time."""
    rows = [r for r in records if r["kind"] == "saliency"]
    out = []
    for (task, variant), group in _groups(rows):
        control = {r["seed"]: r for r in group if r["method"] == CONTROL}
        for method in sorted({r["method"] for r in group}):
            mine = [r for r in group if r["method"] == method]
            deletion = [a for r in mine for a in r["deletion_area"]]
            insertion = [a for r in mine for a in r["insertion_area"]]
            d_mean, d_low, d_high = mean_interval(deletion)
            i_mean, i_low, i_high = mean_interval(insertion)
            paired = [(r, control[r["seed"]]) for r in mine if r["seed"] in control]
            out.append({
                "task": task, "variant": variant or "", "method": method,
                "seeds": len(mine), "images": len(deletion),
                "deletion": d_mean, "deletion_low": d_low, "deletion_high": d_high,
                "insertion": i_mean, "insertion_low": i_low, "insertion_high": i_high,
                "deletion_lift": np.mean([np.mean(c["deletion_area"]) - np.mean(r["deletion_area"])
                                          for r, c in paired]) if paired else np.nan,
                "insertion_lift": np.mean([np.mean(r["insertion_area"])
                                           - np.mean(c["insertion_area"]) for r, c in paired])
                if paired else np.nan,
                "mass_inside": np.mean([r["mass_inside"] for r in mine if "mass_inside" in r])
                if any("mass_inside" in r for r in mine) else np.nan,
                "seconds_per_image": float(np.mean([r["seconds_per_image"] for r in mine])),
            })  # fmt: skip
    frame = pd.DataFrame(out)
    if frame.empty:
        return frame
    return frame.sort_values(["task", "variant", "deletion", "method"]).reset_index(drop=True)


def explanation_table(records: Sequence[Record]) -> pd.DataFrame:
    """Mean explanation kept over seeds per (task, variant, measure), one column per threshold."""
    rows = [r for r in records if r["kind"] == "explanation"]
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows)
    frame["variant"] = frame["variant"].fillna("")
    wide = frame.pivot_table(
        index=["task", "variant", "measure"],
        columns="threshold",
        values="explanation_kept",
        aggfunc="mean",
    )
    wide["mean"] = wide.mean(axis=1)
    wide["seeds"] = frame.groupby(["task", "variant", "measure"])["seed"].nunique()
    return wide.reset_index().sort_values(
        ["task", "variant", "mean"], ascending=[True, True, False]
    )


def _groups(rows: list[Record]) -> list[tuple[tuple[str, str], list[Record]]]:
    keys = sorted({(r["task"], r.get("variant") or "") for r in rows})
    return [(k, [r for r in rows if (r["task"], r.get("variant") or "") == k]) for k in keys]


# --- tables -> markdown --------------------------------------------------------------------


def _faith_markdown(frame: pd.DataFrame) -> str:
    rows = []
    for rank, row in enumerate(frame.itertuples(), start=1):
        rows.append([
            str(rank), escape(row.method),
            f"{number(row.deletion)} [{number(row.deletion_low)}, {number(row.deletion_high)}]",
            f"{number(row.insertion)} [{number(row.insertion_low)}, {number(row.insertion_high)}]",
            _signed(row.deletion_lift), _signed(row.insertion_lift),
            number(row.mass_inside, 2), f"{row.seconds_per_image * 1000:.1f} ms",
            f"{row.seeds} x {row.images // max(row.seeds, 1)}",
        ])  # fmt: skip
    headers = ["rank", "method", "deletion area ↓ [95% CI]", "insertion area ↑ [95% CI]",
               "deletion lift vs random_map", "insertion lift", "mass in region", "time / image",
               "seeds x images"]  # fmt: skip
    note = (
        "Areas under the target-class probability as the most important pixels are deleted "
        "(replaced by 0) or inserted into a blurred image (Petsiuk et al. 2018); intervals over "
        "images x seeds; lift: positive = better than random_map on the same seeds."
    )
    return table(headers, rows, "rllllrrrr") + "\n\n" + note


def _kept_markdown(frame: pd.DataFrame) -> str:
    thresholds = [c for c in frame.columns if isinstance(c, float)]
    rows = [
        [str(rank), escape(row["measure"]), *(number(row[p]) for p in thresholds),
         number(row["mean"]), str(row["seeds"])]
        for rank, (_, row) in enumerate(frame.iterrows(), start=1)
    ]  # fmt: skip
    headers = ["rank", "measure", *(f"kept at p={p:g}" for p in thresholds), "mean", "seeds"]
    note = (
        "Explanation kept: mean Spearman rank correlation between the Grad-CAM maps of the model "
        "thresholded by the measure (global scope, noise replacement, as threshold_sweep) and of "
        "the untouched model, over test images; 1 = the model still looks where it looked."
    )
    return table(headers, rows, "rl" + "r" * (len(thresholds) + 2)) + "\n\n" + note


def _signed(value: float) -> str:
    return "–" if pd.isna(value) else f"{value:+.3f}"


# --- pictures the benchmark draws (they need images and maps, which records do not hold) ----


def plot_overlay_grid(
    images: np.ndarray,
    maps: Mapping[str, np.ndarray],
    path: str | os.PathLike[str],
    *,
    title: str = "",
) -> pathlib.Path:
    """Overlay grid: one row per image; columns: the image, then per method its map over the image.

    Args:
        images: (N, H, W, C) images (C = 1 or 3) in [0, 1].
        maps: method name -> (N, H, W) maps.
        path: Where the PNG goes (written atomically).
        title: Figure title.
    """
    plt = pyplot()
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(maps)
    n = len(images)
    fig, axes = plt.subplots(
        n, 1 + 2 * len(names), figsize=(1.3 * (1 + 2 * len(names)), 1.4 * n), squeeze=False
    )
    shown = images[..., 0] if images.shape[-1] == 1 else images
    for i in range(n):
        axes[i, 0].imshow(shown[i], cmap="gray", vmin=0, vmax=1)
        for j, name in enumerate(names):
            m = maps[name][i]
            span = m.max() - m.min()
            m = (m - m.min()) / span if span > 0 else np.zeros_like(m)
            axes[i, 1 + 2 * j].imshow(m, cmap="jet", vmin=0, vmax=1)
            axes[i, 2 + 2 * j].imshow(shown[i], cmap="gray", vmin=0, vmax=1)
            axes[i, 2 + 2 * j].imshow(m, cmap="jet", alpha=0.5, vmin=0, vmax=1)
            if i == 0:
                axes[0, 1 + 2 * j].set_title(f"{name}\nmap", fontsize=7)
                axes[0, 2 + 2 * j].set_title("overlay", fontsize=7)
    axes[0, 0].set_title("image", fontsize=7)
    for ax in axes.ravel():
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=9)
    save_figure(fig, path)
    plt.close(fig)
    return path
