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
# Optional (issue 24): ``road_morf`` / ``road_lerf`` (per-image means of the ROAD curves, Rong et
# al. 2022) with ``road_fractions``; on a task with a known region ``pointing_game`` and
# ``relevance_rank_accuracy`` (per image); where the insertion area saturates,
# ``insertion_early`` (mean area over the first ``early_fraction`` of pixels on a finer grid,
# divided by that fraction).
saliency_record = record_kind(
    "saliency",
    required=("method", "task", "variant", "seed", "images", "seconds_per_image", "deletion_area",
              "insertion_area", *FAITHFULNESS_CURVES),
    optional=("mass_inside", "road_morf", "road_lerf", "road_fractions", "pointing_game",
              "relevance_rank_accuracy", "insertion_early", "early_fraction"),
    identity=("method", "task", "variant", "seed"),
)
# One cascading model-parameter randomisation (Adebayo et al. 2018) of one method, task and seed:
# the ``layers`` randomised top first, after each step the mean over ``images`` of the Spearman
# rank correlation (``spearman``) and SSIM (``ssim``) of the maps with the trained model's, and
# the ``threshold`` the check passes below (mean Spearman with every layer random).
randomisation_record = record_kind(
    "randomisation",
    required=("method", "task", "variant", "seed", "images", "layers", "spearman", "ssim",
              "threshold"),
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
KINDS = ("saliency", "explanation", "randomisation")

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
        if _has_evaluation(frame):
            parts += [f"## Saliency sanity, ROAD and localisation · {escape(label)}", "",
                      _evaluation_markdown(frame)]
            if frame["randomisation_all"].notna().any():
                parts += [f"![randomisation cascade](plots/saliency-randomisation-{label}.png)"]
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
    randomisation: dict[tuple[str, str, str], list[Record]] = {}
    for r in records:
        if r["kind"] == "randomisation":
            key = (r["task"], r.get("variant") or "", r["method"])
            randomisation.setdefault(key, []).append(r)
    out = []
    for (task, variant), group in _groups(rows):
        control = {r["seed"]: r for r in group if r["method"] == CONTROL}
        for method in sorted({r["method"] for r in group}):
            mine = [r for r in group if r["method"] == method]
            deletion = [a for r in mine for a in r["deletion_area"]]
            insertion = [a for r in mine for a in r["insertion_area"]]
            # Areas under curves of probabilities lie in [0, 1]: so do their intervals.
            d_mean, d_low, d_high = _clipped(mean_interval(deletion))
            i_mean, i_low, i_high = _clipped(mean_interval(insertion))
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
                **_evaluation_columns(mine, randomisation.get((task, variant, method), [])),
            })  # fmt: skip
    frame = pd.DataFrame(out)
    if frame.empty:
        return frame
    return frame.sort_values(["task", "variant", "deletion", "method"]).reset_index(drop=True)


def _mean_of(mine: list[Record], key: str) -> float:
    """Mean of a per-image list (or per-seed number) field over the records that have it."""
    values = [v for r in mine if key in r for v in np.ravel(r[key])]
    return float(np.mean(values)) if values else np.nan


def _evaluation_columns(mine: list[Record], cascades: list[Record]) -> dict[str, float]:
    """ROAD, localisation, early insertion and randomisation columns of one method and task."""
    columns = {key: _mean_of(mine, key) for key in (
        "road_morf", "road_lerf", "pointing_game", "relevance_rank_accuracy", "insertion_early")}
    columns["early_fraction"] = _mean_of(mine, "early_fraction")
    if cascades:
        columns["randomisation_top"] = float(np.mean([c["spearman"][0] for c in cascades]))
        columns["randomisation_all"] = float(np.mean([c["spearman"][-1] for c in cascades]))
        columns["randomisation_ssim_all"] = float(np.mean([c["ssim"][-1] for c in cascades]))
        columns["randomisation_threshold"] = float(cascades[0]["threshold"])
        columns["randomisation_layers"] = len(cascades[0]["layers"])
    else:
        columns.update(dict.fromkeys(("randomisation_top", "randomisation_all",
                                      "randomisation_ssim_all", "randomisation_threshold",
                                      "randomisation_layers"), np.nan))  # fmt: skip
    return columns


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


def _clipped(interval: tuple[float, float, float]) -> tuple[float, float, float]:
    mean, low, high = interval
    return mean, max(0.0, low), min(1.0, high)


def _groups(rows: list[Record]) -> list[tuple[tuple[str, str], list[Record]]]:
    keys = sorted({(r["task"], r.get("variant") or "") for r in rows})
    return [(k, [r for r in rows if (r["task"], r.get("variant") or "") == k]) for k in keys]


# --- tables -> markdown --------------------------------------------------------------------


def _faith_markdown(frame: pd.DataFrame) -> str:
    early = "insertion_early" in frame and frame["insertion_early"].notna().any()
    random_early = (frame.loc[frame["method"] == CONTROL, "insertion_early"].mean()
                    if early else np.nan)  # fmt: skip
    rows = []
    for rank, row in enumerate(frame.itertuples(), start=1):
        insertion = (
            number(row.insertion_early)
            if early
            else f"{number(row.insertion)} [{number(row.insertion_low)}, {number(row.insertion_high)}]"
        )
        insertion_lift = row.insertion_early - random_early if early else row.insertion_lift
        rows.append([
            str(rank), escape(row.method),
            f"{number(row.deletion)} [{number(row.deletion_low)}, {number(row.deletion_high)}]",
            insertion, _signed(row.deletion_lift), _signed(insertion_lift),
            number(row.mass_inside, 2), f"{row.seconds_per_image * 1000:.1f} ms",
            f"{row.seeds} x {row.images // max(row.seeds, 1)}",
        ])  # fmt: skip
    fraction = frame["early_fraction"].dropna().mean() if early else np.nan
    insertion_header = (f"insertion area, first {fraction:.0%} of pixels ↑" if early
                        else "insertion area ↑ [95% CI]")  # fmt: skip
    headers = ["rank", "method", "deletion area ↓ [95% CI]", insertion_header,
               "deletion lift vs random_map", "insertion lift", "mass in region", "time / image",
               "seeds x images"]  # fmt: skip
    note = (
        "Areas under the target-class probability as the most important pixels are deleted "
        "(replaced by 0) or inserted into a blurred image (Petsiuk et al. 2018); intervals over "
        "images x seeds; lift: positive = better than random_map on the same seeds."
    )
    if early:
        note += (
            f" Insertion over the whole image saturates on this task (every informed map inserts "
            f"the evidence within the first grid step), so the insertion column is the area over "
            f"the first {fraction:.0%} of pixels on a fine grid, divided by that fraction (mean "
            f"over images and seeds)."
        )
    return table(headers, rows, "rllllrrrr") + "\n\n" + note


def _has_evaluation(frame: pd.DataFrame) -> bool:
    keys = ("road_morf", "pointing_game", "randomisation_all")
    return any(key in frame and frame[key].notna().any() for key in keys)


def _evaluation_markdown(frame: pd.DataFrame) -> str:
    """Per method: the randomisation check, ROAD, and localisation where the task has a region."""
    region = "pointing_game" in frame and frame["pointing_game"].notna().any()
    threshold = frame["randomisation_threshold"].dropna()
    threshold = float(threshold.iloc[0]) if len(threshold) else np.nan
    rows = []
    for row in frame.sort_values(["randomisation_all", "method"], na_position="last").itertuples():
        if pd.isna(row.randomisation_all):
            check = "–"
        else:
            check = "pass" if row.randomisation_all < threshold else "**fail**"
        cells = [escape(row.method), check, number(row.randomisation_top),
                 number(row.randomisation_all), number(row.randomisation_ssim_all),
                 number(row.road_morf), number(row.road_lerf)]  # fmt: skip
        if region:
            cells += [number(row.pointing_game), number(row.relevance_rank_accuracy)]
        rows.append(cells)
    headers = ["method", "randomisation check", "Spearman, top layer random",
               "Spearman, all layers random", "SSIM, all layers random", "ROAD MoRF ↓",
               "ROAD LeRF ↑"]  # fmt: skip
    if region:
        headers += ["pointing game ↑", "relevance rank accuracy ↑"]
    note = (
        "Randomisation check (Adebayo et al. 2018): the model's layers are re-initialised from "
        "the top, one after another, and each image's map is compared with the trained model's "
        "(absolute values; Spearman rank correlation, and SSIM of the min-max normalised maps); "
        f"a method passes when the mean Spearman with every layer random is below {threshold:g}. "
        "A map that survives a random model is drawn from the input, not from what the network "
        "learnt; the model-free controls fail by construction. ROAD (Rong et al. 2022): mean "
        "target-class probability as 10-90 % of the pixels, most (MoRF) or least (LeRF) relevant "
        "first, are removed by noisy linear imputation."
    )
    if region:
        note += (
            " Localisation on the planted region: pointing game (Zhang et al. 2018; the share of "
            "images whose map maximum lies in the region) and relevance rank accuracy (Arras et "
            "al. 2022; the share of the region among the map's top-K pixels, K its size)."
        )
    return table(headers, rows, "ll" + "r" * (len(headers) - 2)) + "\n\n" + note


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


def plot_randomisation_cascade(
    images: np.ndarray,
    cascades: Mapping[str, np.ndarray],
    layers: Sequence[str],
    path: str | os.PathLike[str],
    *,
    title: str = "",
) -> pathlib.Path:
    """The cascading randomisation drawn as Adebayo et al. 2018 (fig. 2) draw it.

    One row per method and image; columns: the image, the trained model's map, then the map
    after each further layer is re-initialised (top layer first). Each map is min-max scaled on
    its own, so what changes is the map's shape, not its scale.

    Args:
        images: (N, H, W, C) images (C = 1 or 3) in [0, 1].
        cascades: method name -> (L + 1, N, H, W) maps: original, then after each step.
        layers: The L layer names, in the order they were randomised.
        path: Where the PNG goes (written atomically).
        title: Figure title.
    """
    plt = pyplot()
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(cascades)
    n = len(images)
    columns = 2 + len(layers)
    height = 1.3 * len(names) * n + 0.7
    fig, axes = plt.subplots(len(names) * n, columns, figsize=(1.25 * columns + 1.2, height),
                             squeeze=False)  # fmt: skip
    shown = images[..., 0] if images.shape[-1] == 1 else images
    for m, name in enumerate(names):
        for i in range(n):
            row = axes[m * n + i]
            row[0].imshow(shown[i], cmap="gray", vmin=0, vmax=1)
            for step in range(len(layers) + 1):
                value = np.asarray(cascades[name][step, i], dtype=np.float64)
                span = value.max() - value.min()
                value = (value - value.min()) / span if span > 0 else np.zeros_like(value)
                row[1 + step].imshow(value, cmap="inferno", vmin=0, vmax=1)
            row[0].text(-0.15, 0.5, name if i == 0 else "", transform=row[0].transAxes,
                        ha="right", va="center", fontsize=7)  # fmt: skip
    headings = ["image", "trained", *(f"+ {layer}" for layer in layers)]
    for ax, heading in zip(axes[0], headings, strict=True):
        ax.set_title(heading, fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    fig.suptitle(title or "Cascading randomisation: layers re-initialised from the top, left to "
                 "right", fontsize=9)  # fmt: skip
    fig.subplots_adjust(left=0.2, right=0.98, bottom=0.01, top=1 - 0.6 / height, hspace=0.15)
    save_figure(fig, path)
    plt.close(fig)
    return path
