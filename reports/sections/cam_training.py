"""The CAM-guided training section: plain vs CAM-guided on a spurious-background task.

Reads ``cam_training`` records, the kind declared here (:func:`cam_training_record`, one per
trained model of ``benchmarks/cam_training/test_cam_training.py``): ``task, seed, method`` (``plain`` or
``cam``), ``variant, weight, width, schedule`` and the accuracies ``<split>_average`` /
``<split>_worst_group`` for ``test``, ``val`` (training correlation) and ``val_balanced``
(group-balanced: an oracle), plus ``mass_outside`` (share of the class-evidence map outside the
object, on training images). Nothing here recomputes an experiment.

The penalty weight is chosen once for all seeds: the weight with the best mean ``val_average``
(the validation split with the training correlation, what a practitioner has), and, in a
separate clearly labelled row, the best mean ``val_balanced_worst_group`` (the oracle of the
group-robustness literature). Ties go to the smaller weight. Test accuracy never chooses.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from reports.markdown import escape, number, table
from reports.records import record_kind
from reports.sections.contract import Context, Record
from reports.stats import format_seed_interval

# One model of the CAM-guided training benchmark; its accuracies on each split
# (``<split>_average``, ``<split>_worst_group``) and CAM mass outside.
CAM_SPLITS = ("test", "val", "val_balanced")
cam_training_record = record_kind(
    "cam_training",
    required=("task", "seed", "mode", "method", "variant", "weight", "width", "schedule",
              "mass_outside",
              *(f"{s}_{m}" for s in CAM_SPLITS for m in ("average", "worst_group"))),
    identity=("task", "seed", "method", "variant", "weight", "width", "schedule"),
)
KINDS = ("cam_training",)
SELECTIONS = (("val", "val_average", "validation, training correlation"),
              ("oracle", "val_balanced_worst_group", "group-balanced validation (oracle)"))


def markdown(records: Sequence[Record], context: Context) -> str:
    """Per task: how to read, the chosen weights against plain, the whole weight grid."""
    runs = frame(records)
    if runs.empty:
        return ""
    parts = []
    for task, group in runs.groupby("task", sort=True):
        plain = group[group["method"] == "plain"].sort_values("seed")
        variants = sorted(set(group.loc[group["method"] == "cam", "variant"]))
        title = f"CAM-guided training on {task}"
        title += f" ({', '.join(variants)} penalty)" if variants else ""
        parts += [f"## {escape(title)}", "", _how_to_read(group), "", _summary(group, plain), "",
                  "Every weight of the grid (means over seeds; weight 0 = plain):", "",
                  _grid(group), ""]
    return "\n".join(parts)


def plots(
    records: Sequence[Record], context: Context, out_dir: str | os.PathLike[str]
) -> list[pathlib.Path]:
    """No figure from records: the CAM overlays need the models (the benchmark draws them)."""
    return []


def frame(records: Sequence[Record]) -> pd.DataFrame:
    """One row per trained model (plain or CAM-guided) and seed."""
    rows = [r for r in records if r.get("kind") == "cam_training"]
    return pd.DataFrame(rows)


def choose_weight(runs: pd.DataFrame, column: str) -> float | None:
    """The CAM weight with the best mean of ``column`` over seeds (ties: the smaller weight)."""
    cam = runs[runs["method"] == "cam"]
    if cam.empty:
        return None
    means = cam.groupby("weight")[column].mean().sort_index()
    return float(means.index[int(np.argmax(means.to_numpy()))])


def _interval(values: Any, bounds: tuple[float, float] = (0.0, 1.0)) -> str:
    """Mean with a 95% Student-t interval clipped to ``bounds`` from 3 seeds on; below, the
    values (:func:`reports.stats.format_seed_interval`)."""
    return format_seed_interval(list(values), bounds=bounds)


def _paired(cam: pd.DataFrame, plain: pd.DataFrame, column: str) -> str:
    joined = cam.merge(plain, on="seed", suffixes=("", "_plain"))
    return _interval(joined[column] - joined[f"{column}_plain"], bounds=(-1.0, 1.0))


def _how_to_read(group: pd.DataFrame) -> str:
    seeds = sorted(int(s) for s in group["seed"].unique())
    cam = group[group["method"] == "cam"]
    schedule = cam["schedule"].iloc[0] if len(cam) else None
    width = cam["width"].iloc[0] if len(cam) else None
    return (
        f"Seeds {', '.join(map(str, seeds))}. Accuracy on the group-balanced test split: "
        "**average** over examples and **worst group** (class x background), mean over seeds "
        "with a 95% Student-t interval clipped to [0, 1] (Δ: to [−1, 1]) from 3 seeds on; with "
        "fewer seeds the values are printed and no interval is drawn. **Δ** = CAM-guided − "
        "plain, paired by seed. The penalty "
        "weight is chosen on the validation split with the *training* correlation; the oracle row "
        "chooses on a group-balanced validation split, which needs the group labels. **Mass "
        "outside**: share of the class-evidence map outside the object, on training images. "
        "Penalty on in "
        f"epochs {escape(schedule)} (0-based), Gaussian width {number(width, 2)}."
    )


def _summary(group: pd.DataFrame, plain: pd.DataFrame) -> str:
    headers = ["model", "weight chosen on", "weight", "average acc", "worst-group acc",
               "Δ average", "Δ worst-group", "mass outside", "seeds"]
    rows = [["plain", "–", "0", _interval(plain["test_average"]),
             _interval(plain["test_worst_group"]), "–", "–", _interval(plain["mass_outside"]),
             str(plain["seed"].nunique())]]
    for _, column, label in SELECTIONS:
        weight = choose_weight(group, column)
        if weight is None:
            continue
        cam = group[(group["method"] == "cam") & (group["weight"] == weight)].sort_values("seed")
        rows.append(["CAM-guided", escape(label), f"{weight:g}", _interval(cam["test_average"]),
                     _interval(cam["test_worst_group"]), _paired(cam, plain, "test_average"),
                     _paired(cam, plain, "test_worst_group"), _interval(cam["mass_outside"]),
                     str(cam["seed"].nunique())])
    return table(headers, rows, align="lllrrrrrr")


def _grid(group: pd.DataFrame) -> str:
    columns = ["val_average", "val_worst_group", "val_balanced_worst_group", "test_average",
               "test_worst_group", "mass_outside"]
    means = group.groupby("weight", sort=True)[columns].mean()
    counts = group.groupby("weight", sort=True)["seed"].nunique()
    headers = ["weight", "val avg", "val worst", "balanced val worst (oracle)", "test avg",
               "test worst", "mass outside", "seeds"]
    rows = [[f"{w:g}", *[number(means.loc[w, c]) for c in columns], str(int(counts.loc[w]))]
            for w in means.index]
    return table(headers, rows, align="r" * len(headers))
