"""The thresholding section: measures ranked by how well the model survives removal.

Reads ``point`` and ``failure`` records (and the ``compute`` timing records for compute times
and coverage notes); recomputes nothing. Per task, variant, aggregation level, scope and
replacement, one table ranks the measures by robustness score (mean over seeds, 95 % Student-t
interval), with the largest safe fraction, the paired lift over ``random`` and the compute time;
before them, the overall ranking (mean rank across tables); after them, the coverage notes.

Also the tidy points table (``results.csv``, :func:`csv`) and ``plots/loss-<task>.png``.
"""

from __future__ import annotations

import math
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from reports.markdown import details, escape, join, number, seconds, table
from reports.plots import plot_rank_heatmap, pyplot, save_figure, slug
from reports.records import BASELINE, CURVE_KEYS, DEFAULT_REPLACE, DEFAULT_SCOPE, LEVELS, task_label
from reports.scoring import (
    SIGNIFICANCE_LEVEL,
    lift,
    mean_interval,
    paired_p_value,
    robustness_score,
    safe_fraction,
)
from reports.sections.contract import Context, Record
from reports.style import BASELINE_STYLES, LineStyle, line_kwargs, measure_styles

KINDS = ("point", "failure")  # core kinds, declared in reports.records
RESULT_COLUMNS = [*CURVE_KEYS, "threshold", "loss", "accuracy", "fraction_replaced"]
TABLE_KEYS = ["task", "variant", "level", "scope", "replace"]
LEVEL_ORDER = {level: i for i, level in enumerate(LEVELS)}
BASELINES = tuple(BASELINE_STYLES)  # drawn bold in every loss figure
Y_LIMIT = 1.5  # the loss figures' y-axis stops at Y_LIMIT x ln K


# --- the section ---------------------------------------------------------------------------


def markdown(records: Sequence[Record], context: Context) -> str:
    """The overall ranking, one ranked table per task/level/treatment, the coverage notes."""
    if not context.tables:
        parts = ["No finished thresholding case in these result files."]
    else:
        parts = ["## Overall ranking (mean rank across tasks)", "",
                 _overall_markdown(context.overall)]
        parts += ["## Per task, level and treatment", "",
                  "One table per task, aggregation level and treatment (click to open)."]
        parts += [details(_title(key), _ranked_markdown(frame)) for key, frame in context.tables]
    notes = coverage_notes(records)
    if notes:
        parts += ["## Measure coverage", "", _coverage_markdown(notes)]
    return join(parts)


def plots(
    records: Sequence[Record], context: Context, out_dir: str | os.PathLike[str]
) -> list[pathlib.Path]:
    """Write ``loss-<task>[.<variant>].png`` per task into ``out_dir``; return the paths.

    One row of panels per aggregation level, one column per (scope, replacement); one line per
    measure: the mean loss over seeds; the dashed line is ln K. Each measure keeps its colour
    and dash in every figure (:func:`reports.style.measure_styles`); the baselines and the
    five best measures of the overall ranking are bold (with a band from the lowest to the
    highest seed), the rest faded. The y-axis stops at :data:`Y_LIMIT` x ln K: a measure whose
    loss climbs past it is marked with a triangle where it leaves the panel and named
    "(off scale)" in the legend, instead of squashing every other curve into the bottom.
    """
    points = context.points
    if points.empty:
        return []
    plt = pyplot()
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    emphasised = emphasised_measures(context.overall)
    styles = measure_styles(_legend_order(points["measure"].unique(), emphasised,
                                          context.overall))
    written = []
    for (task, variant), frame in points.groupby(["task", "variant"], sort=True):
        levels = sorted(frame["level"].unique(), key=lambda v: LEVEL_ORDER.get(v, 9))
        combos = sorted(map(tuple, frame[["scope", "replace"]].drop_duplicates().to_numpy()),
                        key=lambda c: (c != (DEFAULT_SCOPE, DEFAULT_REPLACE), c))
        measures = _legend_order(frame["measure"].unique(), emphasised, context.overall)
        chance = math.log(int(frame["num_classes"].iloc[0]))
        means = frame.groupby([*CURVE_KEYS[:-1], "threshold"])["loss"].mean()
        top = max(min(Y_LIMIT * chance, float(means.max()) * 1.05), chance * 1.05)
        fig, axes = plt.subplots(len(levels), len(combos),
                                 figsize=(4.2 * len(combos), 3.2 * len(levels)),
                                 squeeze=False, sharey=True)
        off_scale: set[str] = set()
        for row, level in enumerate(levels):
            for col, (scope, replace) in enumerate(combos):
                ax = axes[row][col]
                panel = frame[(frame["level"] == level) & (frame["scope"] == scope)
                              & (frame["replace"] == replace)]
                if panel.empty:
                    ax.set_visible(False)
                    continue
                off_scale |= _draw_panel(ax, panel, measures, styles, emphasised, top)
                ax.set_title(f"{level} · {scope} scope · {replace}", fontsize=10)
                ax.axhline(chance, color="grey", linestyle="--", linewidth=1)
                ax.set_xlim(0, 1)
                ax.set_ylim(bottom=0.0, top=top)
                if row == len(levels) - 1:
                    ax.set_xlabel("fraction of weights replaced (least important first)")
                if col == 0:
                    ax.set_ylabel("test loss")
        _legend(fig, measures, styles, emphasised, off_scale)
        name = task_label(task, variant)
        best = len([m for m in emphasised if m not in BASELINES])
        fig.suptitle(f"{name}: test loss vs fraction replaced (mean over seeds; dashed = ln K)\n"
                     f"bold: random, uniform and the {best} best overall (band = min–max over "
                     "seeds); ▲ leaves the axis", fontsize=10)
        fig.tight_layout()
        path = out_dir / f"loss-{slug(name)}.png"
        save_figure(fig, path)
        plt.close(fig)
        written.append(path)
    if context.tables:
        written.append(plot_rank_heatmap(
            rank_matrix(context.tables, context.overall), out_dir / "ranks-removal.png",
            title="Removal: rank of each measure per task and level (default treatment; "
                  "rows by overall rank)"))
    return written


def rank_matrix(tables: list[tuple[dict, pd.DataFrame]], overall: pd.DataFrame) -> pd.DataFrame:
    """Ranks as a frame: one row per measure (overall order), one column per task · level.

    Only the default treatment (global scope, noise replacement) of each task and level, so a
    column is one question; a measure without a rank there is NaN.
    """
    columns: dict[str, pd.Series] = {}
    for where, ranked in tables:
        if (where["scope"], where["replace"]) != (DEFAULT_SCOPE, DEFAULT_REPLACE):
            continue
        name = f"{task_label(where['task'], where.get('variant'))} · {where['level']}"
        columns[name] = ranked.dropna(subset=["rank"]).set_index("measure")["rank"]
    frame = pd.DataFrame(columns)
    order = [m for m in overall.get("measure", pd.Series(dtype=str)) if m in frame.index]
    return frame.reindex(order + sorted(set(frame.index) - set(order)))


def emphasised_measures(overall: pd.DataFrame, *, best: int = 5) -> list[str]:
    """The baselines, then the ``best`` measures of the overall ranking: the lines drawn bold."""
    ranked = [m for m in overall.get("measure", pd.Series(dtype=str)) if m not in BASELINES]
    return [*BASELINES, *ranked[:best]]


def _legend_order(present: Any, emphasised: list[str], overall: pd.DataFrame) -> list[str]:
    """Emphasised measures first (baselines, then by rank), then the rest by overall rank."""
    order = {m: i for i, m in enumerate(overall.get("measure", pd.Series(dtype=str)))}
    present = set(present)
    first = [m for m in emphasised if m in present]
    rest = sorted(present - set(first), key=lambda m: (order.get(m, len(order)), m))
    return first + rest


def csv(points: pd.DataFrame) -> str:
    """``results.csv``: one row per measure, task, level, scope, replace, seed, threshold."""
    return points[RESULT_COLUMNS].to_csv(index=False, lineterminator="\n", float_format="%.6g")


# --- records -> tables (pure pandas) -------------------------------------------------------


def points_frame(records: Sequence[Record]) -> pd.DataFrame:
    """The tidy table: one row per curve point (the content of ``results.csv``)."""
    rows = [r for r in records if r["kind"] == "point"]
    extra = ["num_classes", "base_loss", "base_accuracy"]
    frame = pd.DataFrame(rows, columns=[*RESULT_COLUMNS, *extra])
    frame["variant"] = frame["variant"].fillna("")
    return frame.sort_values([*CURVE_KEYS, "threshold"], kind="stable").reset_index(drop=True)


def curves_frame(points: pd.DataFrame) -> pd.DataFrame:
    """One row per curve with its robustness score and largest safe fraction (NaN if undefined)."""
    rows = []
    for key, curve in points.groupby(list(CURVE_KEYS), sort=True):
        row = dict(zip(CURVE_KEYS, key, strict=True))
        k = int(curve["num_classes"].iloc[0])
        base_loss = _first(curve, "base_loss")
        base_acc = _first(curve, "base_accuracy")
        try:
            row["robustness"] = robustness_score(
                curve["threshold"], curve["loss"], num_classes=k, base_loss=base_loss
            )
        except ValueError:
            row["robustness"] = math.nan
        row["safe"] = safe_fraction(curve["threshold"], curve["accuracy"], base_accuracy=base_acc)
        rows.append(row)
    return pd.DataFrame(rows, columns=[*CURVE_KEYS, "robustness", "safe"])


def _first(curve: pd.DataFrame, column: str) -> float | None:
    value = curve[column].iloc[0] if column in curve else None
    return None if value is None or pd.isna(value) else float(value)


def compute_times(records: Sequence[Record]) -> dict[tuple[str, str, str], float]:
    """Mean seconds of a measure's computation per (measure, task, variant)."""
    times: dict[tuple[str, str, str], list[float]] = {}
    for r in records:
        if r["kind"] == "timing" and r.get("group") == "compute":
            key = (r["measure"], r["task"], r.get("variant") or "")
            times.setdefault(key, []).append(float(r["seconds"]))
    return {k: float(np.mean(v)) for k, v in times.items()}


def ranked_tables(
    curves: pd.DataFrame, records: Sequence[Record]
) -> list[tuple[dict, pd.DataFrame]]:
    """Per (task, variant, level, scope, replace), the measures ranked by robustness score.

    Each table has columns rank, measure, robustness (the mean robustness score), low, high,
    seeds, safe, lift, lift_p, significant, seconds, error (error is set for measures that failed
    on that task).
    """
    times = compute_times(records)
    failures = _failures(records)
    tables = []
    keys = curves[TABLE_KEYS].drop_duplicates()
    keys = keys.assign(_lvl=keys["level"].map(lambda v: LEVEL_ORDER.get(v, 9)))
    for _, key in keys.sort_values(["task", "variant", "_lvl", "scope", "replace"]).iterrows():
        where = {k: key[k] for k in TABLE_KEYS}
        mask = np.logical_and.reduce([curves[k] == where[k] for k in TABLE_KEYS])
        ranked = _rank(curves[mask], where, times)
        failed = failures.get((where["task"], where["variant"]), {})
        failed = {m: e for (m, lvl), e in failed.items() if lvl in (None, where["level"])}
        for measure, error in sorted(failed.items()):
            present = ranked["measure"] == measure
            if present.any():
                ranked.loc[present, "error"] = error
            else:
                ranked.loc[len(ranked)] = {"measure": measure, "error": error, "seeds": 0}
        tables.append((where, ranked))
    return tables


def _rank(curves: pd.DataFrame, where: dict, times: dict) -> pd.DataFrame:
    base = curves[curves["measure"] == BASELINE].set_index("seed")["robustness"]
    rows = []
    for measure, group in curves.groupby("measure", sort=True):
        values = group.set_index("seed")["robustness"].dropna()
        row: dict[str, Any] = {"measure": measure, "seeds": int(values.size), "error": ""}
        if values.empty:
            row["error"] = "no valid curve (untouched model at or above chance loss)"
            rows.append(row)
            continue
        row["robustness"], row["low"], row["high"] = mean_interval(values.to_numpy())
        row["safe"] = float(group["safe"].mean())
        paired = base.reindex(values.index).dropna()
        if measure != BASELINE and not paired.empty:
            mine = values.loc[paired.index]
            row["lift"] = float(lift(paired.to_numpy(), mine.to_numpy()).mean())
            row["lift_p"] = paired_p_value(paired.to_numpy(), mine.to_numpy())
            row["significant"] = row["lift_p"] is not None and row["lift_p"] < SIGNIFICANCE_LEVEL
        row["seconds"] = times.get((measure, where["task"], where["variant"]), math.nan)
        rows.append(row)
    columns = ["rank", "measure", "robustness", "low", "high", "seeds", "safe", "lift", "lift_p",
               "significant", "seconds", "error"]
    ranked = pd.DataFrame(rows, columns=columns)
    ranked = ranked.sort_values(["robustness", "measure"], na_position="last", kind="stable")
    ranked["rank"] = ranked["robustness"].rank(method="min")
    return ranked.reset_index(drop=True)


def _failures(records: Sequence[Record]) -> dict[tuple[str, str], dict[tuple, str]]:
    """(task, variant) -> {(measure, level or None): error}; level None: failed to compute."""
    out: dict[tuple[str, str], dict[tuple, str]] = {}
    for r in records:
        if r["kind"] == "failure":
            where = out.setdefault((r["task"], r.get("variant") or ""), {})
            where[(r["measure"], r.get("level"))] = str(r["error"])
    return out


def overall_ranking(tables: list[tuple[dict, pd.DataFrame]]) -> pd.DataFrame:
    """Mean rank of each measure across tasks: overall and per aggregation level."""
    rows = []
    for where, ranked in tables:
        for _, row in ranked.dropna(subset=["rank"]).iterrows():
            rows.append({"measure": row["measure"], "level": where["level"], "rank": row["rank"]})
    if not rows:
        return pd.DataFrame(columns=["rank", "measure", "mean_rank", "sections"])
    ranks = pd.DataFrame(rows)
    overall = ranks.groupby("measure")["rank"].agg(mean_rank="mean", sections="size").reset_index()
    levels = sorted(ranks["level"].unique(), key=lambda v: LEVEL_ORDER.get(v, 9))
    for level in levels:
        per = ranks[ranks["level"] == level].groupby("measure")["rank"].mean()
        overall[level] = overall["measure"].map(per)
    overall = overall.sort_values(["mean_rank", "measure"], kind="stable").reset_index(drop=True)
    overall.insert(0, "rank", overall["mean_rank"].rank(method="min"))
    return overall


def coverage_notes(records: Sequence[Record]) -> dict[str, str]:
    """measure -> what it does where its criterion is undefined, for the measures that declare it
    (the ``coverage`` field of their compute timing records: the measure function's ``coverage``
    attribute, see ``benchmarks/thresholding/study.py``)."""
    return {r["measure"]: str(r["coverage"]) for r in records
            if r["kind"] == "timing" and r.get("group") == "compute" and r.get("coverage")}


# --- tables -> markdown --------------------------------------------------------------------


def _title(where: dict[str, Any]) -> str:
    """``planted · weight · global, noise`` (escaped)."""
    task = task_label(where["task"], where.get("variant"))
    return escape(f"{task} · {where['level']} · {where['scope']} scope, "
                  f"{where['replace']} replacement")


def _ranked_markdown(frame: pd.DataFrame) -> str:
    """One ranked table: rank, measure, robustness score, 95% CI, safe fraction, lift, time."""
    rows = []
    for _, r in frame.iterrows():
        if pd.isna(r.get("robustness")):
            rows.append(["–", escape(r["measure"]), f"failed: {escape(_short(r['error']))}",
                         "–", "–", "–", "–"])
            continue
        interval = "–" if r["seeds"] < 2 else f"[{number(r['low'])}, {number(r['high'])}]"
        lift_text = number(r.get("lift"))
        if lift_text != "–" and bool(r.get("significant")):
            lift_text += "\\*"
        name = escape(r["measure"])
        if r.get("error"):
            name += f" (failed on some seeds: {escape(_short(r['error']))})"
        rows.append([str(int(r["rank"])), name, number(r["robustness"]), interval,
                     number(r["safe"], 2), lift_text, seconds(r.get("seconds"))])
    headers = ["rank", "measure", "robustness score ↓", "95% CI", "largest safe fraction",
               "lift over random", "compute time"]
    return table(headers, rows, align="rlrrrrr")


def _overall_markdown(frame: pd.DataFrame) -> str:
    """The overall ranking: mean rank across tasks, overall and per aggregation level."""
    levels = [c for c in frame.columns if c not in ("rank", "measure", "mean_rank", "sections")]
    headers = ["rank", "measure", "mean rank", *[f"mean rank ({escape(lv)})" for lv in levels],
               "sections"]
    rows = [
        [str(int(r["rank"])), escape(r["measure"]), number(r["mean_rank"], 2),
         *[number(r[lv], 2) for lv in levels], str(int(r["sections"]))]
        for _, r in frame.iterrows()
    ]
    return table(headers, rows, align="rl" + "r" * (len(headers) - 2))


def _coverage_markdown(notes: dict[str, str]) -> str:
    """One row per measure that scores some layer types by a stated fallback."""
    return table(["measure", "where the criterion is undefined"],
                 [[escape(m), escape(n)] for m, n in sorted(notes.items())], align="ll")


def _short(text: Any, limit: int = 120) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _draw_panel(ax, panel: pd.DataFrame, measures: list[str], styles: dict[str, LineStyle],
                emphasised: list[str], top: float) -> set[str]:
    """One line per measure (mean loss over seeds), a min–max band for the bold ones; returns
    the measures whose mean leaves the panel above ``top`` (a triangle marks the exit)."""
    off_scale = set()
    for measure in measures:
        curve = panel[panel["measure"] == measure]
        if curve.empty:
            continue
        stats = curve.groupby("threshold")["loss"].agg(["mean", "min", "max"])
        bold = measure in emphasised
        kwargs = line_kwargs(styles[measure], emphasised=bold)
        ax.plot(stats.index, stats["mean"], **kwargs)
        if bold:
            ax.fill_between(stats.index, stats["min"], stats["max"], color=kwargs["color"],
                            alpha=0.15, linewidth=0)
        above = stats.index[stats["mean"].to_numpy() > top]
        if len(above):
            off_scale.add(measure)
            ax.plot([above[0]], [top], marker="^", color=kwargs["color"], markersize=7,
                    clip_on=False, zorder=4)
    return off_scale


def _legend(fig, measures: list[str], styles: dict[str, LineStyle], emphasised: list[str],
            off_scale: set[str]) -> None:
    """One legend for the figure, bold entries first, each line as it is drawn."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], **line_kwargs(styles[m], emphasised=m in emphasised))
               for m in measures]
    labels = [m + (" (off scale ▲)" if m in off_scale else "") for m in measures]
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
               frameon=False)
