"""From result records to tables: tidy points, one row per curve, leaderboard sections.

Pure pandas; nothing here recomputes an experiment.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from reports.records import BASELINE, CURVE_KEYS, LEVELS
from reports.scoring import (
    SIGNIFICANCE_LEVEL,
    lift,
    mean_interval,
    paired_p_value,
    robustness_score,
    safe_fraction,
)

RESULT_COLUMNS = [*CURVE_KEYS, "threshold", "loss", "accuracy", "fraction_replaced"]
SECTION_KEYS = ["task", "variant", "level", "scope", "replace"]
LEVEL_ORDER = {level: i for i, level in enumerate(LEVELS)}


def points_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
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


def compute_times(records: list[dict[str, Any]]) -> dict[tuple[str, str, str], float]:
    """Mean seconds of a measure's computation per (measure, task, variant)."""
    times: dict[tuple[str, str, str], list[float]] = {}
    for r in records:
        if r["kind"] == "timing" and r.get("group") == "compute":
            key = (r["measure"], r["task"], r.get("variant") or "")
            times.setdefault(key, []).append(float(r["seconds"]))
    return {k: float(np.mean(v)) for k, v in times.items()}


def section_tables(curves: pd.DataFrame, records: list[dict[str, Any]]) -> list[tuple[dict, pd.DataFrame]]:
    """Leaderboard sections: per (task, variant, level, scope, replace), measures ranked by robustness score.

    Each table has columns rank, measure, robustness (the mean robustness score), low, high, seeds, safe, lift, lift_p,
    significant, seconds, error (error is set for measures that failed on that task).
    """
    times = compute_times(records)
    failures = _failures(records)
    sections = []
    keys = curves[SECTION_KEYS].drop_duplicates()
    keys = keys.assign(_lvl=keys["level"].map(lambda v: LEVEL_ORDER.get(v, 9)))
    for _, key in keys.sort_values(["task", "variant", "_lvl", "scope", "replace"]).iterrows():
        section = {k: key[k] for k in SECTION_KEYS}
        mask = np.logical_and.reduce([curves[k] == section[k] for k in SECTION_KEYS])
        table = _rank_section(curves[mask], section, times)
        failed = failures.get((section["task"], section["variant"]), {})
        failed = {m: e for (m, lvl), e in failed.items() if lvl in (None, section["level"])}
        for measure, error in sorted(failed.items()):
            present = table["measure"] == measure
            if present.any():
                table.loc[present, "error"] = error
            else:
                table.loc[len(table)] = {"measure": measure, "error": error, "seeds": 0}
        sections.append((section, table))
    return sections


def _rank_section(curves: pd.DataFrame, section: dict, times: dict) -> pd.DataFrame:
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
        row["seconds"] = times.get((measure, section["task"], section["variant"]), math.nan)
        rows.append(row)
    columns = ["rank", "measure", "robustness", "low", "high", "seeds", "safe", "lift", "lift_p",
               "significant", "seconds", "error"]
    table = pd.DataFrame(rows, columns=columns)
    table = table.sort_values(["robustness", "measure"], na_position="last", kind="stable")
    table["rank"] = table["robustness"].rank(method="min")
    return table.reset_index(drop=True)


def _failures(records: list[dict[str, Any]]) -> dict[tuple[str, str], dict[tuple, str]]:
    """(task, variant) -> {(measure, level or None): error}; level None: failed to compute."""
    out: dict[tuple[str, str], dict[tuple, str]] = {}
    for r in records:
        if r["kind"] == "failure":
            where = out.setdefault((r["task"], r.get("variant") or ""), {})
            where[(r["measure"], r.get("level"))] = str(r["error"])
    return out


def overall_ranking(sections: list[tuple[dict, pd.DataFrame]]) -> pd.DataFrame:
    """Mean rank of each measure across tasks: overall and per aggregation level."""
    rows = []
    for section, table in sections:
        for _, row in table.dropna(subset=["rank"]).iterrows():
            rows.append({"measure": row["measure"], "level": section["level"], "rank": row["rank"]})
    if not rows:
        return pd.DataFrame(columns=["rank", "measure", "mean_rank", "sections"])
    ranks = pd.DataFrame(rows)
    table = ranks.groupby("measure")["rank"].agg(mean_rank="mean", sections="size").reset_index()
    levels = sorted(ranks["level"].unique(), key=lambda v: LEVEL_ORDER.get(v, 9))
    for level in levels:
        per = ranks[ranks["level"] == level].groupby("measure")["rank"].mean()
        table[level] = table["measure"].map(per)
    table = table.sort_values(["mean_rank", "measure"], kind="stable").reset_index(drop=True)
    table.insert(0, "rank", table["mean_rank"].rank(method="min"))
    return table


def coverage_notes(records: list[dict[str, Any]]) -> dict[str, str]:
    """measure -> what it does where its criterion is undefined, for the measures that declare it
    (the ``coverage`` field of their compute timing records: the measure function's ``coverage``
    attribute, see ``benchmarks/_study.py``)."""
    return {r["measure"]: str(r["coverage"]) for r in records
            if r["kind"] == "timing" and r.get("group") == "compute" and r.get("coverage")}


def device_timings(records: list[dict[str, Any]]) -> pd.DataFrame:
    """The Fisher-per-device table: task, measure, device, device name, examples, seconds."""
    rows = [r for r in records if r["kind"] == "timing" and r.get("group") == "fisher_device"]
    columns = ["task", "variant", "measure", "device", "device_name", "examples", "seconds"]
    if not rows:
        return pd.DataFrame(columns=[*columns, "runs"])
    frame = pd.DataFrame(rows).reindex(columns=columns)
    frame["variant"] = frame["variant"].fillna("")
    keys = columns[:-1]
    frame = frame.fillna({"device_name": "", "examples": 0})
    table = frame.groupby(keys, sort=True)["seconds"].agg(seconds="mean", runs="size")
    return table.reset_index()
