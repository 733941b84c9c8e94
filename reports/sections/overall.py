"""The overall section: every measure on the three axes, with rank uncertainty and tests.

One table, first in the leaderboard: per measure, its place on **removal** (thresholding
robustness, :func:`reports.sections.thresholding.removal_axis`), **consolidation** (ACC as the
importance of EWC, :func:`consolidation_axis`), **explanation** (Grad-CAM kept under
thresholding, :func:`explanation_axis`) and the **combined** place (mean of the three axis mean
ranks, over the measures every axis scores). Each axis ranks the measures within blocks (one
independent training run: a task, or scenario, and a seed), and shows the mean rank, the
position and its bootstrap interval (:func:`reports.stats.rank_axis`); a Friedman test and the
Nemenyi critical difference say which differences are real (Demsar 2006); a measure an axis
cannot score shows why. ``plots/critical-difference.png`` draws one critical-difference diagram
per axis. Reads the records of the other sections; declares no kind of its own.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

import numpy as np
import pandas as pd

from reports.markdown import escape, join, table
from reports.plots import pyplot, save_figure
from reports.records import task_label
from reports.sections import consolidation
from reports.sections.contract import Context, Record
from reports.sections.thresholding import axis_sentence
from reports.stats import (
    BOOTSTRAP_SAMPLES,
    BOOTSTRAP_SEED,
    AxisRanking,
    AxisScores,
    block_ranks,
    bootstrap_combined_interval,
    cliques,
    positions,
    rank_axis,
)

KINDS: tuple[str, ...] = ()  # reads the kinds of the thresholding, consolidation, saliency sections
AXES = ("removal", "consolidation", "explanation")
FIGURE = "critical-difference.png"
SIGNED = "signed scores: EWC needs a weight ω ≥ 0"


def markdown(records: Sequence[Record], context: Context) -> str:
    """The three-axis table with its tests (``""`` when the records hold no consolidation or
    explanation result: the removal axis alone is the thresholding section's overall ranking)."""
    rankings = axis_rankings(records, context)
    present = [a for a in AXES if rankings.get(a) is not None and len(rankings[a].table)]
    if not set(present) - {"removal"}:
        return ""
    combined = combined_ranking([rankings[a] for a in present])
    parts = ["## Overall: three axes", "", _intro(rankings, present, combined), "",
             _table(rankings, present, combined), "", f"![critical differences](plots/{FIGURE})"]
    return join(parts)


def plots(
    records: Sequence[Record], context: Context, out_dir: str | os.PathLike[str]
) -> list[pathlib.Path]:
    """``critical-difference.png``: one Demsar critical-difference diagram per tested axis."""
    rankings = axis_rankings(records, context)
    drawn = [rankings[a] for a in AXES
             if rankings.get(a) is not None and rankings[a].cd is not None]
    if not drawn:
        return []
    return [plot_critical_difference(drawn, pathlib.Path(out_dir) / FIGURE)]


# --- records -> axes -----------------------------------------------------------------------


def axis_rankings(records: Sequence[Record], context: Context) -> dict[str, AxisRanking | None]:
    """The ranking of each axis (None where the records hold nothing for it)."""
    consolidation_scores = consolidation_axis(records)
    explanation_scores = explanation_axis(records)
    return {
        "removal": context.removal,
        "consolidation": rank_axis(consolidation_scores) if consolidation_scores else None,
        "explanation": rank_axis(explanation_scores) if explanation_scores else None,
    }


def consolidation_axis(records: Sequence[Record]) -> AxisScores | None:
    """EWC(measure)'s ACC per scenario and seed (higher is better); separate mode when both
    modes ran. A measure that failed (signed scores) is missing with the reason."""
    frame = consolidation.records_frame(records)
    ewc = frame[frame["strategy"] == "ewc"]
    if ewc.empty:
        return None
    if (ewc["mode"] == "separate").any():
        ewc = ewc[ewc["mode"] == "separate"]
    missing = {}
    for measure, rows in ewc.groupby("measure"):
        errors = rows["error"].dropna()
        if len(errors):
            text = str(errors.iloc[0])
            missing[measure] = SIGNED if "Signed" in text else "failed: " + _short(text)
    ok = ewc[ewc["error"].isna() & ~ewc["measure"].isin(list(missing))]
    # Only the scenarios that ran the most measures (as consolidation_ranks): a scenario run with
    # a few chosen measures (the quick permuted-MNIST power check) would leave every other
    # measure unscored on its blocks; its own verdict is in the consolidation section.
    widths = ewc.groupby("scenario")["measure"].nunique()
    widest = widths[widths == widths.max()].index if len(widths) else []
    ok = ok[ok["scenario"].isin(list(widest))]
    return _axis("consolidation", ok, ["scenario", "seed"], "acc", True, missing,
                 "scenario x seed (ACC of EWC with the measure; the scenarios run with every "
                 "measure)")


def explanation_axis(records: Sequence[Record]) -> AxisScores | None:
    """Mean explanation kept over the thresholds, per task and seed (higher is better)."""
    rows = [r for r in records if r["kind"] == "explanation"]
    if not rows:
        return None
    frame = pd.DataFrame(rows)
    frame["variant"] = frame["variant"].fillna("")
    frame["task"] = [task_label(t, v) for t, v in zip(frame["task"], frame["variant"],
                                                      strict=True)]
    frame = frame.groupby(["task", "seed", "measure"], as_index=False)["explanation_kept"].mean()
    tasks = set(frame["task"])
    missing = {r["measure"]: "failed: " + _short(str(r["error"])) for r in records
               if r["kind"] == "failure" and task_label(r["task"], r.get("variant")) in tasks}
    thresholds = sorted({float(r["threshold"]) for r in rows})
    return _axis("explanation", frame, ["task", "seed"], "explanation_kept", True, missing,
                 "task x seed (Grad-CAM kept, mean over p = "
                 + ", ".join(f"{p:g}" for p in thresholds) + ")")


def _axis(name: str, frame: pd.DataFrame, block: list[str], value: str, higher: bool,
          missing: dict[str, str], blocks: str) -> AxisScores:
    wide = frame.pivot_table(index=block, columns="measure", values=value, aggfunc="mean")
    missing = dict(missing)
    for measure in wide.columns[wide.isna().any()]:
        missing.setdefault(measure, f"no score on {int(wide[measure].isna().sum())} of "
                                    f"{len(wide)} blocks")
    wide = wide.drop(columns=[m for m in missing if m in wide.columns])
    groups = tuple(str(key[0]) for key in wide.index)
    wide.index = [" seed ".join(map(str, key)) for key in wide.index]
    return AxisScores(name, wide, groups, higher, missing, blocks)


def combined_ranking(rankings: Sequence[AxisRanking]) -> pd.DataFrame:
    """Over the measures every axis scores: each axis re-ranked among them, the mean of the axis
    mean ranks, its position and a bootstrap interval (each axis's blocks resampled).

    Returns:
        Columns measure, mean_rank, position, low, high (empty with no common measure).
    """
    common = sorted(set.intersection(*(set(r.axis.scores.columns) for r in rankings)))
    if len(common) < 2 or len(rankings) < 2:
        return pd.DataFrame(columns=["measure", "mean_rank", "position", "low", "high"])
    parts = [(block_ranks(r.axis.scores[common].to_numpy(),
                          higher_is_better=r.axis.higher_is_better), r.axis.groups)
             for r in rankings]
    mean = np.mean([ranks.mean(axis=0) for ranks, _ in parts], axis=0)
    low, high = bootstrap_combined_interval(parts)
    out = pd.DataFrame({"measure": common, "mean_rank": mean, "position": positions(mean),
                        "low": low, "high": high})
    return out.sort_values(["mean_rank", "measure"], kind="stable").reset_index(drop=True)


# --- markdown ------------------------------------------------------------------------------


def _intro(rankings: dict[str, AxisRanking | None], present: list[str],
           combined: pd.DataFrame) -> str:
    lines = [
        "Each cell: **position** of the measure on the axis by mean rank (1 = best) "
        f"[95% bootstrap interval of the position, B = {BOOTSTRAP_SAMPLES}, seed "
        f"{BOOTSTRAP_SEED}] and its mean rank. Ranks are taken within blocks, one independent "
        "training run each; the bootstrap resamples tasks, then seeds within a task. "
        "**Combined**: the mean of the three axis mean ranks over the "
        f"{len(combined)} measures every axis scores (no test: its axes are different "
        "experiments). A position interval says how sure the place is; only the Nemenyi test "
        "says which measures differ."]
    for name in present:
        lines += ["", f"- **{name}**: " + axis_sentence(rankings[name])]
    absent = [a for a in AXES if a not in present]
    if absent:
        lines += ["", f"- not in these records: {', '.join(absent)}."]
    return "\n".join(lines)


def _cell(row: pd.Series | None) -> str:
    if row is None:
        return "–"
    return (f"{int(row['position'])} [{int(row['low'])}–{int(row['high'])}] · "
            f"{row['mean_rank']:.2f}")


def _table(rankings: dict[str, AxisRanking | None], present: list[str],
           combined: pd.DataFrame) -> str:
    by_axis = {a: rankings[a].table.set_index("measure") for a in present}
    combined_by = combined.set_index("measure")
    measures = set(combined_by.index)
    for a in present:
        measures |= set(by_axis[a].index) | set(rankings[a].axis.missing)
    order = sorted(measures, key=lambda m: (
        combined_by["mean_rank"].get(m, np.inf),
        np.mean([by_axis[a]["mean_rank"].get(m, np.nan) for a in present
                 if m in by_axis[a].index] or [np.inf]), m))
    rows = []
    for m in order:
        cells = []
        for a in AXES:
            if a not in present:
                cells.append("not run")
            elif m in by_axis[a].index:
                cells.append(_cell(by_axis[a].loc[m]))
            else:
                cells.append("– " + escape(rankings[a].axis.missing.get(m, "not run")))
        if m in combined_by.index:
            cells.append(_cell(combined_by.loc[m]))
        else:
            lacking = [a for a in present if m not in by_axis[a].index]
            cells.append("– (no " + ", ".join(lacking) + ")")
        rows.append([escape(m), *cells])
    headers = ["measure", *(f"{a}: position [95%] · mean rank" for a in AXES), "combined"]
    return table(headers, rows, align="lrrrr")


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- figure --------------------------------------------------------------------------------


def plot_critical_difference(
    rankings: Sequence[AxisRanking], path: str | os.PathLike[str]
) -> pathlib.Path:
    """Critical-difference diagrams (Demsar 2006), one panel per axis, written atomically.

    The axis runs from rank 1 (best, left) to k; each measure is a tick at its mean rank with a
    leader to its name (the better half on the left, the rest on the right); the bar above the
    axis is the Nemenyi critical difference; thick horizontal lines join measures whose mean
    ranks lie within it (not shown to differ). When the Friedman test does not reject, the panel
    says so and every measure is one group.
    """
    plt = pyplot()
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    heights = [1.6 + 0.22 * (len(r.table) + 1) / 2 for r in rankings]
    fig, axes = plt.subplots(len(rankings), 1, figsize=(11, sum(heights)),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, ranking in zip(axes[:, 0], rankings, strict=True):
        _cd_panel(ax, ranking)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


def _cd_panel(ax, ranking: AxisRanking) -> None:
    frame = ranking.table
    k = len(frame)
    names, means = list(frame["measure"]), frame["mean_rank"].to_numpy()
    test = ranking.test
    rejects = test is not None and test.p < 0.05
    groups = cliques(means, ranking.cd) if rejects else [(0, k - 1)]
    band = 0.3 + 0.25 * len(groups)  # the clique bars sit between the axis and the labels
    half = (k + 1) // 2
    rows = max(half, k - half)
    ax.set_xlim(0.5 - 0.3 * k, k + 0.5 + 0.3 * k)
    ax.set_ylim(band + rows * 0.55 + 0.5, -2.0)
    ax.axis("off")
    ax.hlines(0.0, 1, k, color="black", linewidth=1)
    for tick in range(1, k + 1):
        ax.vlines(tick, -0.15, 0.0, color="black", linewidth=1)
        ax.text(tick, -0.25, str(tick), ha="center", va="bottom", fontsize=7)
    for i, (name, mean) in enumerate(zip(names, means, strict=True)):
        left = i < half
        row = band + 0.55 * ((i if left else k - 1 - i) + 1)
        end = 0.5 - 0.05 * k if left else k + 0.5 + 0.05 * k
        ax.plot([mean, mean, end], [0.0, row, row], color="black", linewidth=0.7)
        ax.text(end + (-0.1 if left else 0.1), row, f"{name} ({mean:.2f})", fontsize=7,
                ha="right" if left else "left", va="center")
    for j, (a, b) in enumerate(groups):
        y = 0.3 + 0.25 * j
        ax.plot([means[a] - 0.08, means[b] + 0.08], [y, y], color="tab:red", linewidth=2.5,
                solid_capstyle="butt")
    ax.plot([1, 1 + ranking.cd], [-1.3, -1.3], color="black", linewidth=1.5)
    ax.text(1 + ranking.cd / 2, -1.4, f"CD = {ranking.cd:.2f}", ha="center", va="bottom",
            fontsize=8)
    verdict = f"Friedman p = {test.p:.2g}" if test is not None else "no test"
    verdict += "" if rejects else ": not significant, no post-hoc test (one group)"
    ax.set_title(f"{ranking.axis.name}: mean rank over {ranking.ranks.shape[0]} blocks "
                 f"(lower is better); {verdict}", fontsize=9, loc="left")
