"""The consolidation section: from ``consolidation`` records to ranked tables, text and plots.

Per scenario, strategies and EWC measures are ranked by ACC (mean over seeds, 95 % Student-t
interval), with BWT, forgetting, the chosen lambdas and the paired lift over naive fine-tuning
(same seed). Naive, L2 and joint stay in the table as reference rows. The overall ranking of
the three axes is :mod:`reports.sections.overall`'s. Pure pandas on the records; nothing is
recomputed.

Declares the ``consolidation`` record kind (:func:`consolidation_record`), written by
``benchmarks/continual/test_consolidation.py``.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

import pandas as pd

from reports.markdown import escape, join, number, table
from reports.plots import pyplot, save_figure
from reports.records import record_kind
from reports.scoring import SIGNIFICANCE_LEVEL, mean_interval, paired_p_value
from reports.sections.contract import Context, Record

# One strategy (and measure) on one continual-learning scenario and seed, at the lambda chosen
# on validation data: ``scenario, sequence, heads, strategy, measure, mode, seed, lam, grid,
# val_acc, acc, bwt, forgetting, R, curve, tasks, seconds`` (``curve``: rows ``[epoch, trained
# task, evaluated task, test accuracy]``); a failed measure has ``error`` instead. ``method`` (the
# strategy's display label, e.g. ``EWC(fisher)``) and ``penalised`` (whether lambda matters) come
# from the strategy; records written before they existed are labelled by the legacy rule below.
CONSOLIDATION_OUTCOME = ("acc", "bwt", "forgetting", "lam", "grid", "val_acc", "R", "curve",
                         "seconds", "tasks")
consolidation_record = record_kind(
    "consolidation",
    required=("scenario", "sequence", "heads", "strategy", "measure", "mode", "seed"),
    optional=(*CONSOLIDATION_OUTCOME, "error", "method", "penalised"),
    identity=("scenario", "strategy", "measure", "mode", "seed"),
)
KINDS = ("consolidation",)

COLUMNS = ["rank", "method", "strategy", "measure", "acc", "low", "high", "bwt", "forgetting",
           "lams", "lift", "lift_p", "seeds", "error"]
# Only for records without ``method``/``penalised`` (written before the strategies named them).
LEGACY_LABELS = {"naive": "naive", "l2": "L2", "joint": "joint"}
LEGACY_PENALISED = ("l2", "ewc")


# --- the section ---------------------------------------------------------------------------


def markdown(records: Sequence[Record], context: Context) -> str:
    """One ranked table per scenario (``""`` without records); the overall table of the three
    axes is the overall section's (:mod:`reports.sections.overall`)."""
    return join([_scenarios_markdown(records)])


def plots(
    records: Sequence[Record], context: Context, out_dir: str | os.PathLike[str]
) -> list[pathlib.Path]:
    """Per scenario, ``consolidation-<scenario>.png``: task accuracy over epochs for naive, L2 and
    the best EWC measure (mean over seeds)."""
    frame = records_frame(records)
    written = []
    for scenario, ranked in scenario_tables(records):
        ewc = ranked[(ranked["strategy"] == "ewc") & ranked["acc"].notna()]
        chosen = [("naive", "naive"), ("l2", "l2")]
        chosen += [("ewc", ewc.iloc[0]["measure"])] if len(ewc) else []
        histories = {}
        for strategy, measure in chosen:
            rows = frame[(frame["scenario"] == scenario) & (frame["strategy"] == strategy)
                         & (frame["measure"] == measure) & frame["error"].isna()]
            curves = [pd.DataFrame(r.curve, columns=["epoch", "trained", "evaluated", "accuracy"])
                      .assign(seed=r.seed) for r in rows.itertuples()]
            if curves:
                histories[rows["method"].iloc[0]] = pd.concat(curves).assign(split="test")
        if histories:
            path = pathlib.Path(out_dir) / f"consolidation-{scenario}.png"
            written.append(plot_task_accuracy(histories, path))
    return written


# --- records -> tables ---------------------------------------------------------------------


def records_frame(records: Sequence[Record]) -> pd.DataFrame:
    """One row per consolidation record (``error`` set for failures)."""
    rows = [r for r in records if r["kind"] == "consolidation"]
    columns = ["scenario", "strategy", "measure", "mode", "seed", "acc", "bwt", "forgetting", "lam",
               "error"]
    frame = pd.DataFrame(rows).reindex(columns=columns + ["curve", "tasks", "method", "penalised"])
    frame[["method", "penalised"]] = frame[["method", "penalised"]].astype(object)
    legacy = frame["method"].isna()
    frame.loc[legacy, "method"] = [
        LEGACY_LABELS.get(s, f"EWC{'-online' if m == 'online' else ''}({measure})")
        for s, measure, m in zip(frame.loc[legacy, "strategy"], frame.loc[legacy, "measure"],
                                 frame.loc[legacy, "mode"], strict=True)
    ]
    frame.loc[legacy, "penalised"] = frame.loc[legacy, "strategy"].isin(LEGACY_PENALISED)
    return frame


def scenario_tables(records: Sequence[Record]) -> list[tuple[str, pd.DataFrame]]:
    """Per scenario: one ranked row per method (failed measures last, with their error)."""
    frame = records_frame(records)
    out = []
    for scenario, rows in frame.groupby("scenario", sort=True):
        naive = rows[(rows["strategy"] == "naive") & rows["error"].isna()].set_index("seed")["acc"]
        ranked = []
        groups = rows.groupby(["strategy", "measure", "mode"], sort=True)
        for (strategy, measure, _mode), group in groups:
            ok = group[group["error"].isna()]
            error = None if len(ok) else str(group["error"].dropna().iloc[0])
            row = {"method": str(group["method"].iloc[0]), "strategy": strategy,
                   "measure": measure, "seeds": len(ok), "error": error}
            if len(ok):
                row["acc"], row["low"], row["high"] = mean_interval(ok["acc"].to_numpy())
                row["bwt"], row["forgetting"] = ok["bwt"].mean(), ok["forgetting"].mean()
                penalised = bool(ok["penalised"].iloc[0])
                row["lams"] = sorted(set(ok["lam"].astype(float))) if penalised else []
                paired = ok.set_index("seed")["acc"].reindex(naive.index).dropna()
                if strategy != "naive" and len(paired):
                    before = naive[paired.index]
                    row["lift"] = float((paired - before).mean())
                    row["lift_p"] = paired_p_value(before.to_numpy(), paired.to_numpy())
            ranked.append(row)
        ranked = pd.DataFrame(ranked).reindex(columns=COLUMNS)
        ranked = ranked.sort_values(["acc", "method"], ascending=[False, True], na_position="last",
                                    kind="stable")
        ranked["rank"] = ranked["acc"].rank(method="min", ascending=False)
        out.append((scenario, ranked.reset_index(drop=True)))
    return out


def consolidation_ranks(tables: list[tuple[str, pd.DataFrame]]) -> pd.Series:
    """Mean rank by ACC of each EWC measure across scenarios, ranked among the measures only."""
    ranks = []
    for _, ranked in tables:
        ewc = ranked[(ranked["strategy"] == "ewc") & ranked["acc"].notna()]
        ranks.append(ewc.set_index("measure")["acc"].rank(method="min", ascending=False))
    return pd.concat(ranks).groupby(level=0).mean() if ranks else pd.Series(dtype=float)


# --- tables -> markdown --------------------------------------------------------------------


def _scenarios_markdown(records: Sequence[Record]) -> str:
    """The consolidation tables, one per scenario (empty string without consolidation records)."""
    tables = scenario_tables(records)
    if not tables:
        return ""
    parts = ["## Consolidation (sequential learning, EWC with each measure)", "",
             "ACC: mean test accuracy over all tasks after the last one (95 % interval over "
             "seeds); BWT: backward transfer (Lopez-Paz & Ranzato 2017); forgetting (Chaudhry et "
             "al. 2018); λ: the lambdas chosen on validation data per seed; lift: paired ACC "
             f"difference to naive fine-tuning (\\* p < {SIGNIFICANCE_LEVEL}). Importance "
             "normalised to mean 1 over the shared weights."]
    for scenario, frame in tables:
        rows = []
        for _, r in frame.iterrows():
            rank = "–" if pd.isna(r["rank"]) else str(int(r["rank"]))
            if r["error"] is not None and not isinstance(r["error"], float):
                rows.append([rank, escape(r["method"]), "failed: " + escape(r["error"])[:120],
                             *["–"] * 6])
                continue
            significant = (r["lift_p"] is not None and not pd.isna(r["lift_p"])
                           and r["lift_p"] < SIGNIFICANCE_LEVEL)
            star = "\\*" if significant else ""
            lams = (", ".join(f"{v:g}" for v in r["lams"])
                    if isinstance(r["lams"], list) and r["lams"] else "–")
            rows.append([rank, escape(r["method"]), number(r["acc"]),
                         f"[{number(r['low'])}, {number(r['high'])}]",
                         number(r["bwt"]), number(r["forgetting"]), lams, number(r["lift"]) + star,
                         str(int(r["seeds"]))])
        headers = ["rank", "method", "ACC", "95% CI", "BWT", "forgetting", "λ", "lift over naive",
                   "seeds"]
        parts += ["", f"### {escape(scenario)}", "", table(headers, rows, align="rlrrrrrrr")]
    return "\n".join(parts)


# --- figures -------------------------------------------------------------------------------


def plot_task_accuracy(
    histories: dict[str, pd.DataFrame], path: str | os.PathLike[str]
) -> pathlib.Path:
    """The original project's continual-learning plot: each task's test accuracy over epochs.

    One panel per entry of ``histories`` (label -> tidy history of
    :class:`tasks.continual.SequentialLearner`, optionally with a ``seed`` column: the line is
    the mean over seeds); dashed vertical lines mark the task boundaries. Written atomically.
    """
    plt = pyplot()
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(histories), figsize=(4.2 * len(histories), 3.2), squeeze=False,
                             sharey=True)
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
