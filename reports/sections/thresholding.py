"""The thresholding section: measures ranked by how well the model survives removal.

Reads ``point`` and ``failure`` records (and the ``compute`` timing records for compute times
and coverage notes); recomputes nothing. Per task, variant, aggregation level, scope and
replacement, one table ranks the measures by robustness score (mean over seeds, 95 % Student-t
interval from 3 seeds on, :func:`reports.stats.seed_interval`), with the seeds, the largest safe
fraction, the paired lift over ``random`` with its Holm-adjusted p over the table's family of
tests, and the compute time; a degenerate table (:func:`degenerate_tables`: most measures tie)
is marked and ranks nothing. Before them, the overall ranking: the removal axis ranked over
task x seed blocks (:func:`removal_axis`, :func:`reports.stats.rank_axis`: position interval,
Friedman, Nemenyi) and the mean rank per level; after them, the coverage notes.

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
    holm,
    lift,
    paired_p_value,
    robustness_score,
    safe_fraction,
)
from reports.sections.contract import Context, Record
from reports.stats import AxisRanking, AxisScores, seed_interval
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
                 _overall_intro(context.removal), "",
                 _overall_markdown(context.overall, context.removal, context.tables)]
        parts += ["## Per task, level and treatment", "",
                  "One table per task, aggregation level and treatment (click to open)."]
        for key, frame in context.tables:
            body = _ranked_markdown(frame, degenerate=bool(key.get("degenerate")))
            if key.get("degenerate"):
                body = (f"Not ranked: {escape(key['degenerate'])}; left out of the overall "
                        f"ranking.\n\n{body}")
            parts.append(details(_title(key), body))
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
    matrix = rank_matrix(context.tables, context.overall) if context.tables else None
    if matrix is not None and matrix.notna().to_numpy().any():  # no figure of nothing ranked
        written.append(plot_rank_heatmap(
            matrix, out_dir / "ranks-removal.png",
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
    degenerate = degenerate_tables(curves)
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
        where["degenerate"] = degenerate.get(tuple(where[k] for k in TABLE_KEYS), "")
        tables.append((where, _holm_lifts(ranked)))
    return tables


def _holm_lifts(ranked: pd.DataFrame) -> pd.DataFrame:
    """Holm's adjustment over the table's family of lift tests (every measure against random on
    one task, level and treatment); ``significant`` is then adjusted p < 0.05."""
    raw = [None if p is None or pd.isna(p) else float(p) for p in ranked["lift_p"]]
    ranked["lift_p_holm"] = pd.Series(holm(raw), index=ranked.index, dtype=object)
    ranked["significant"] = [p is not None and p < SIGNIFICANCE_LEVEL
                             for p in ranked["lift_p_holm"]]
    return ranked


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
        # No interval below 3 seeds (reports.stats.seed_interval); the score is unbounded above.
        row["robustness"], row["low"], row["high"] = seed_interval(values.to_numpy())
        row["values"] = values.to_numpy().tolist()
        row["safe"] = float(group["safe"].mean())
        paired = base.reindex(values.index).dropna()
        if measure != BASELINE and not paired.empty:
            mine = values.loc[paired.index]
            row["lift"] = float(lift(paired.to_numpy(), mine.to_numpy()).mean())
            row["lift_p"] = paired_p_value(paired.to_numpy(), mine.to_numpy())
        row["seconds"] = times.get((measure, where["task"], where["variant"]), math.nan)
        rows.append(row)
    columns = ["rank", "measure", "robustness", "low", "high", "seeds", "safe", "lift", "lift_p",
               "significant", "seconds", "error", "values"]
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


def degenerate_tables(curves: pd.DataFrame) -> dict[tuple, str]:
    """Tables that cannot rank the measures, with the reason: table key -> text.

    A table is degenerate when, at every seed, its measures' robustness scores take at most half
    as many distinct values as there are measures: most measures tie, because the level leaves
    few orders to choose from (the ``layer`` level of a 2-layer MLP has two).
    """
    out = {}
    for key, frame in curves.dropna(subset=["robustness"]).groupby(TABLE_KEYS, sort=True):
        measures = frame["measure"].nunique()
        distinct = frame.groupby("seed")["robustness"].apply(lambda v: v.round(9).nunique())
        if measures >= 2 and int(distinct.max()) <= measures / 2:
            out[tuple(key)] = (f"degenerate: at most {int(distinct.max())} distinct scores among "
                               f"{measures} measures at every seed (most measures tie)")
    return out


def removal_axis(curves: pd.DataFrame, records: Sequence[Record] = ()) -> AxisScores:
    """The removal axis of the overall table: one block per task (and variant) and seed.

    In each block, the measures are ranked by robustness score (lower is better) in every
    non-degenerate table of the task (level, scope, replacement) and their ranks averaged: the
    block's score (lower is better). A measure without a score in every block is left out, with
    the reason (its failure, or the blocks it lacks).
    """
    degenerate = degenerate_tables(curves)
    usable = curves[[tuple(k) not in degenerate for k in curves[TABLE_KEYS].to_numpy()]]
    usable = usable.assign(_rank=usable.groupby([*TABLE_KEYS, "seed"])["robustness"].rank())
    blocks = usable.pivot_table(index=["task", "variant", "seed"], columns="measure",
                                values="_rank", aggfunc="mean")
    expected = usable.groupby(["task", "variant", "seed"])[[*TABLE_KEYS]].apply(
        lambda g: len(g.drop_duplicates()))
    counts = usable.dropna(subset=["_rank"]).pivot_table(
        index=["task", "variant", "seed"], columns="measure", values="_rank", aggfunc="size")
    complete = counts.reindex_like(blocks).eq(expected, axis=0)
    failures = {m: e for where in _failures(records).values() for (m, _), e in where.items()}
    missing = {}
    for measure in blocks.columns:
        if not complete[measure].all():
            missing[measure] = _reason(failures.get(measure), int((~complete[measure]).sum()),
                                       len(blocks))
    for measure, error in failures.items():
        if measure not in blocks.columns:
            missing[measure] = _reason(error, len(blocks), len(blocks))
    scores = blocks.drop(columns=list(set(missing) & set(blocks.columns)))
    scores.index = [f"{task_label(t, v)} seed {s}" for t, v, s in scores.index]
    groups = tuple(task_label(t, v) for t, v, _ in blocks.index)
    return AxisScores("removal", scores, groups, higher_is_better=False, missing=missing,
                      blocks="task x seed (mean rank over the task's non-degenerate tables)")


def _reason(error: str | None, lacking: int, total: int) -> str:
    if error:
        return "failed: " + _short(error, 80)
    return f"no score on {lacking} of {total} blocks"


def overall_ranking(tables: list[tuple[dict, pd.DataFrame]]) -> pd.DataFrame:
    """Mean rank of each measure across tasks: overall and per aggregation level."""
    rows = []
    for where, ranked in tables:
        for _, row in ranked.dropna(subset=["rank"]).iterrows():
            rows.append({"measure": row["measure"], "level": where["level"], "rank": row["rank"],
                         "degenerate": bool(where.get("degenerate"))})
    if not rows:
        return pd.DataFrame(columns=["rank", "measure", "mean_rank", "sections"])
    ranks = pd.DataFrame(rows)
    levels = sorted(ranks["level"].unique(), key=lambda v: LEVEL_ORDER.get(v, 9))
    ranks = ranks[~ranks["degenerate"]]  # degenerate tables rank nothing (marked in the table)
    overall = ranks.groupby("measure")["rank"].agg(mean_rank="mean", sections="size").reset_index()
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


def _ranked_markdown(frame: pd.DataFrame, *, degenerate: bool = False) -> str:
    """One ranked table: rank, measure, robustness score, 95% CI, seeds, safe fraction, lift with
    its Holm-adjusted p, time."""
    rows = []
    for _, r in frame.iterrows():
        if pd.isna(r.get("robustness")):
            rows.append(["–", escape(r["measure"]), f"failed: {escape(_short(r['error']))}",
                         "–", str(int(r["seeds"])) if not pd.isna(r["seeds"]) else "0",
                         "–", "–", "–", "–"])
            continue
        if r["low"] is None or pd.isna(r["low"]):
            values = r["values"] if isinstance(r["values"], list) else []
            interval = (f"n = {len(values)}, no interval" if len(values) != 2 else
                        "n = 2, no interval: " + ", ".join(f"{v:.3f}" for v in values))
        else:
            interval = f"[{number(r['low'])}, {number(r['high'])}]"
        lift_text = number(r.get("lift"))
        if lift_text != "–" and bool(r.get("significant")):
            lift_text += "\\*"
        adjusted = r.get("lift_p_holm")
        p_text = "–" if adjusted is None or pd.isna(adjusted) else _p(adjusted)
        name = escape(r["measure"])
        if r.get("error"):
            name += f" (failed on some seeds: {escape(_short(r['error']))})"
        rank = "–" if degenerate else str(int(r["rank"]))
        rows.append([rank, name, number(r["robustness"]), interval, str(int(r["seeds"])),
                     number(r["safe"], 2), lift_text, p_text, seconds(r.get("seconds"))])
    headers = ["rank", "measure", "robustness score ↓", "95% CI", "seeds",
               "largest safe fraction", "lift over random", "Holm p", "compute time"]
    return table(headers, rows, align="rlrrrrrrr")


def _pe(value: float) -> str:
    """``= 0.012`` or ``< 0.001``, for a sentence."""
    return "< 0.001" if value < 0.001 else f"= {value:.3f}"


def _p(value: float) -> str:
    """A p-value with the precision it needs (``<0.001`` below)."""
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _overall_intro(removal: AxisRanking | None) -> str:
    """How to read the overall ranking, and what its tests say."""
    text = ("Lower is better. **Mean rank (task x seed)**: in each task and seed, the measure's "
            "rank averaged over the task's non-degenerate tables, then averaged over tasks and "
            "seeds; **mean rank (level)**: over the tables of that level (a level whose tables "
            "are all degenerate shows *degenerate*).")
    if removal is None or removal.test is None:
        return text
    return text + " " + axis_sentence(removal)


def axis_sentence(ranking: AxisRanking) -> str:
    """One paragraph: the blocks, the bootstrap, Friedman, Nemenyi and what differs."""
    from reports.stats import BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED, significant_pairs

    test, axis = ranking.test, ranking.axis
    blocks, k = ranking.ranks.shape
    text = (f"**Position [95% interval]**: the measure's place by mean rank over {blocks} blocks "
            f"({escape(axis.blocks)}), with a percentile bootstrap interval (B = "
            f"{BOOTSTRAP_SAMPLES}, seed {BOOTSTRAP_SEED}, tasks then seeds resampled).")
    if len(set(axis.groups)) == 1 or blocks < 5:
        distinct = math.comb(2 * blocks - 1, blocks)
        text += (f" With {blocks} blocks from {len(set(axis.groups))} task(s) the bootstrap has "
                 f"at most {distinct} distinct resamples: these intervals understate the "
                 "uncertainty; read the test.")
    if test is None:
        return text + " Too few blocks for a test."
    pairs = significant_pairs(ranking)
    text += (f" Friedman test over the {blocks} blocks and {k} measures: χ² = {test.chi2:.1f}, "
             f"Iman–Davenport F = {test.f:.2f}, p {_pe(test.p)}")
    if not test.p < SIGNIFICANCE_LEVEL:
        return text + " : the measures are **not** shown to differ; no post-hoc test."
    best = ranking.table["measure"].iloc[0]
    beaten = [b for a, b in pairs if a == best]
    together = [m for m in ranking.table["measure"] if m != best and m not in beaten]
    return text + (
        f". Nemenyi critical difference (α = 0.05, Demsar 2006) = {ranking.cd:.2f} mean ranks: "
        f"{len(pairs)} of {k * (k - 1) // 2} pairs differ. The best-ranked, "
        f"{escape(best)}, is significantly better than "
        f"{escape(', '.join(beaten)) if beaten else 'no other measure'}; not shown to differ "
        f"from {escape(', '.join(together)) if together else 'any'}. "
        "See the critical-difference diagram (plots/critical-difference.png).")


def _overall_markdown(frame: pd.DataFrame, removal: AxisRanking | None = None,
                      tables: Sequence[tuple[dict, pd.DataFrame]] = ()) -> str:
    """The overall ranking: per measure its position over task x seed blocks with the bootstrap
    interval and mean rank (when the removal axis is ranked), then its mean rank per level."""
    levels = [c for c in frame.columns if c not in ("rank", "measure", "mean_rank", "sections")]
    all_levels = sorted({w["level"] for w, _ in tables} | set(levels),
                        key=lambda v: LEVEL_ORDER.get(v, 9))
    dead = {lv for lv in all_levels
            if all(w.get("degenerate") for w, _ in tables if w["level"] == lv) and tables}
    per_level = frame.set_index("measure")
    level_cells = [f"mean rank ({escape(lv)})" for lv in all_levels]

    def levels_of(measure: str) -> list[str]:
        return ["*degenerate*" if lv in dead else
                number(per_level[lv].get(measure) if lv in per_level else None, 2)
                for lv in all_levels]

    if removal is not None and len(removal.table):
        headers = ["position [95% interval]", "measure", "mean rank (task x seed)",
                   *level_cells, "tables"]
        rows = [[f"{int(r.position)} [{int(r.low)}, {int(r.high)}]", escape(r.measure),
                 number(r.mean_rank, 2), *levels_of(r.measure),
                 str(int(per_level["sections"].get(r.measure, 0)))]
                for r in removal.table.itertuples()]
        left_out = [m for m in frame["measure"] if m not in set(removal.table["measure"])]
        rows += [["–", escape(m), "– " + escape(removal.axis.missing.get(m, "not in every block")),
                  *levels_of(m), str(int(per_level["sections"].get(m, 0)))] for m in left_out]
        return table(headers, rows, align="rl" + "r" * (len(headers) - 2))
    headers = ["rank", "measure", "mean rank", *level_cells, "tables"]
    rows = [[str(int(r["rank"])), escape(r["measure"]), number(r["mean_rank"], 2),
             *levels_of(r["measure"]), str(int(r["sections"]))] for _, r in frame.iterrows()]
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
