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

import numpy as np
import pandas as pd

from reports.markdown import escape, join, number, table
from reports.plots import pyplot, save_figure
from reports.records import record_kind
from reports.scoring import SIGNIFICANCE_LEVEL, holm, mean_interval, paired_p_value
from reports.sections.contract import Context, Record

# One strategy (and measure) on one continual-learning scenario and seed, at the lambda chosen
# on validation data: ``scenario, sequence, heads, strategy, measure, mode, seed, lam, grid,
# val_acc, acc, bwt, forgetting, R, curve, tasks, seconds`` (``curve``: rows ``[epoch, trained
# task, evaluated task, test accuracy]``); a failed measure has ``error`` instead. ``method`` (the
# strategy's display label, e.g. ``EWC(fisher)``) and ``penalised`` (whether lambda matters) come
# from the strategy; records written before they existed are labelled by the legacy rule below.
CONSOLIDATION_OUTCOME = ("acc", "bwt", "forgetting", "lam", "grid", "val_acc", "R", "curve",
                         "seconds", "tasks", "measure_examples")
consolidation_record = record_kind(
    "consolidation",
    required=("scenario", "sequence", "heads", "strategy", "measure", "mode", "seed"),
    optional=(*CONSOLIDATION_OUTCOME, "error", "method", "penalised", "init"),
    identity=("scenario", "strategy", "measure", "mode", "seed"),
)
KINDS = ("consolidation",)

COLUMNS = ["rank", "method", "strategy", "measure", "acc", "low", "high", "bwt", "forgetting",
           "lams", "lift", "lift_p", "lift_uniform", "lift_uniform_p", "lift_random",
           "lift_random_p", "edges", "examples", "seeds", "error"]
# What "does the measure matter?" is asked against (issue 22): EWC(uniform), which is L2 (the
# ``l2`` rows stand in when no EWC(uniform) ran), and EWC(random); lifts paired by seed, p-values
# Holm-adjusted over the EWC measures compared with each reference.
MEASURE_REFERENCES = {"uniform": (("ewc", "uniform"), ("l2", "l2")), "random": (("ewc", "random"),)}
INITS = {"keras": "Keras default: Glorot-uniform kernels, zero biases",
         "pytorch": "PyTorch nn.Linear default: kernels and biases U(±1/√fan_in)"}
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
    extra = ["curve", "tasks", "method", "penalised", "grid", "measure_examples", "init"]
    frame = pd.DataFrame(rows).reindex(columns=columns + extra)
    frame[["method", "penalised"]] = frame[["method", "penalised"]].astype(object)
    legacy = frame["method"].isna()
    frame.loc[legacy, "method"] = [
        LEGACY_LABELS.get(s, f"EWC{'-online' if m == 'online' else ''}({measure})")
        for s, measure, m in zip(frame.loc[legacy, "strategy"], frame.loc[legacy, "measure"],
                                 frame.loc[legacy, "mode"], strict=True)
    ]
    frame.loc[legacy, "penalised"] = frame.loc[legacy, "strategy"].isin(LEGACY_PENALISED)
    return frame


def edge(lam: float, grid: object) -> str | None:
    """``"low"``/``"high"`` when ``lam`` is the smallest/largest of a grid of 2+ lambdas (the
    optimum may lie outside it), else None."""
    if not isinstance(grid, (list, tuple)) or len(grid) < 2 or pd.isna(lam):
        return None
    return "low" if lam == min(grid) else "high" if lam == max(grid) else None


def examples_seen(values: pd.Series) -> str | None:
    """The examples each importance saw, over seeds and tasks: ``"800"`` or ``"760–830"``."""
    counts = [int(c) for v in values if isinstance(v, (list, tuple)) for c in v]
    if not counts:
        return None
    low, high = min(counts), max(counts)
    return f"{low}" if low == high else f"{low}–{high}"


def _paired_lift(rows: pd.DataFrame, reference: pd.Series) -> tuple[float | None, float | None]:
    """Mean of the per-seed ACC differences to ``reference`` (by seed) and the paired p-value."""
    paired = rows.set_index("seed")["acc"].reindex(reference.index).dropna()
    if not len(paired):
        return None, None
    before = reference[paired.index]
    return float((paired - before).mean()), paired_p_value(before.to_numpy(), paired.to_numpy())


def _reference(rows: pd.DataFrame, choices: tuple[tuple[str, str], ...]) -> tuple[str, pd.Series]:
    """The first reference of ``choices`` with results: (its measure, ACC by seed)."""
    for strategy, measure in choices:
        ok = rows[(rows["strategy"] == strategy) & (rows["measure"] == measure)
                  & (rows["mode"].fillna("separate") == "separate") & rows["error"].isna()]
        if len(ok):
            return measure, ok.set_index("seed")["acc"]
    return "", pd.Series(dtype=float)


def scenario_tables(records: Sequence[Record]) -> list[tuple[str, pd.DataFrame]]:
    """Per scenario: one ranked row per method (failed measures last, with their error).

    Every row has its paired lift over naive; every EWC row also its paired lift over
    EWC(uniform) (= L2) and over EWC(random), with p-values Holm-adjusted over the EWC rows
    compared with the same reference; ``edges`` counts the seeds whose chosen lambda sits at an
    edge of the grid; ``examples`` the examples each importance saw.
    """
    frame = records_frame(records)
    out = []
    for scenario, rows in frame.groupby("scenario", sort=True):
        naive = rows[(rows["strategy"] == "naive") & rows["error"].isna()].set_index("seed")["acc"]
        references = {name: _reference(rows, choices) for name, choices in MEASURE_REFERENCES.items()}
        ranked = []
        groups = rows.groupby(["strategy", "measure", "mode"], sort=True, dropna=False)
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
                row["edges"] = sorted({e for lam, grid in zip(ok["lam"], ok["grid"], strict=True)
                                       if (e := edge(lam, grid))}) if penalised else []
                row["examples"] = examples_seen(ok["measure_examples"])
                if strategy != "naive":
                    row["lift"], row["lift_p"] = _paired_lift(ok, naive)
                if strategy == "ewc":
                    for name, (ref_measure, reference) in references.items():
                        if measure != ref_measure or _mode == "online":
                            row[f"lift_{name}"], row[f"lift_{name}_p"] = _paired_lift(ok, reference)
            ranked.append(row)
        ranked = pd.DataFrame(ranked).reindex(columns=COLUMNS)
        for name in MEASURE_REFERENCES:
            column = f"lift_{name}_p"
            values = [None if pd.isna(p) else float(p) for p in ranked[column]]
            ranked[column] = pd.Series(holm(values), dtype=object)
        ranked = ranked.sort_values(["acc", "method"], ascending=[False, True], na_position="last",
                                    kind="stable")
        ranked["rank"] = ranked["acc"].rank(method="min", ascending=False)
        out.append((scenario, ranked.reset_index(drop=True)))
    return out


def scenario_setup(records: Sequence[Record]) -> dict[str, dict[str, object]]:
    """Per scenario: the initialisation(s) used and the lambda grid(s), from the records."""
    frame = records_frame(records)
    out = {}
    for scenario, rows in frame.groupby("scenario", sort=True):
        grids = {tuple(g) for g in rows["grid"] if isinstance(g, (list, tuple)) and len(g) > 1}
        inits = sorted({str(i) for i in rows["init"].dropna()})
        out[scenario] = {"inits": inits, "grids": sorted(grids)}
    return out


def separation(frame: pd.DataFrame) -> str:
    """One plain sentence: how many EWC measures beat EWC(uniform) and EWC(random) beyond seed
    noise (a positive lift with Holm-adjusted p < the significance level)."""
    ewc = frame[(frame["strategy"] == "ewc") & frame["acc"].notna()]
    parts = []
    for name, label in (("uniform", "EWC(uniform) = L2"), ("random", "EWC(random)")):
        compared = ewc[ewc[f"lift_{name}"].notna()]
        if not len(compared):
            continue
        wins = [m for m, lift, p in zip(compared["method"], compared[f"lift_{name}"],
                                        compared[f"lift_{name}_p"], strict=True)
                if p is not None and not pd.isna(p) and p < SIGNIFICANCE_LEVEL and lift > 0]
        named = f" ({', '.join(escape(w) for w in wins)})" if wins else ""
        parts.append(f"{len(wins)} of {len(compared)} EWC measures beat {label}{named}")
    if not parts:
        return ""
    verdict = "; ".join(parts) + f" beyond seed noise (paired by seed, Holm-adjusted p < {SIGNIFICANCE_LEVEL})."
    if all(p.startswith("0 of") for p in parts):
        verdict += (" In this scenario the importance measure does not matter measurably: the "
                    "informed measures do not separate from uniform and random weighting.")
    return "**Does the measure matter?** " + verdict


def consolidation_ranks(tables: list[tuple[str, pd.DataFrame]]) -> pd.Series:
    """Mean rank by ACC of each EWC measure across scenarios, ranked among the measures only.

    Only the scenarios that ran the most EWC measures count: a scenario run with a few chosen
    measures (the quick permuted-MNIST power check) would otherwise give those few small ranks.
    """
    ranks = []
    ewcs = [ranked[(ranked["strategy"] == "ewc") & ranked["acc"].notna()
                   & (ranked["method"] == "EWC(" + ranked["measure"].astype(str) + ")")]
            for _, ranked in tables]
    widest = max((len(ewc) for ewc in ewcs), default=0)
    for ewc in ewcs:
        if len(ewc) < widest:
            continue
        ranks.append(ewc.set_index("measure")["acc"].rank(method="min", ascending=False))
    return pd.concat(ranks).groupby(level=0).mean() if ranks else pd.Series(dtype=float)


# --- tables -> markdown --------------------------------------------------------------------


def _lift_cell(lift: object, p: object) -> str:
    star = "\\*" if p is not None and not pd.isna(p) and p < SIGNIFICANCE_LEVEL else ""
    return number(lift) + star


def _scenarios_markdown(records: Sequence[Record]) -> str:
    """The consolidation tables, one per scenario (empty string without consolidation records)."""
    tables = scenario_tables(records)
    if not tables:
        return ""
    setup = scenario_setup(records)
    inits = sorted({i for s in setup.values() for i in s["inits"]})
    init_text = ("; ".join(f"`{i}` ({INITS.get(i, 'as recorded')})" for i in inits)
                 if inits else "not recorded")
    parts = ["## Consolidation (sequential learning, EWC with each measure)", "",
             f"Initialisation: {init_text}. "
             "ACC: mean test accuracy over all tasks after the last one (95 % interval over "
             "seeds); BWT: backward transfer (Lopez-Paz & Ranzato 2017); forgetting (Chaudhry et "
             "al. 2018); λ: the lambdas chosen on validation data per seed († at an edge of the "
             "grid: the optimum may lie outside it). Lifts are paired ACC differences by seed: "
             "over naive fine-tuning (which any penalty beats), and, for EWC rows, over "
             "EWC(uniform) = L2 and over EWC(random), which answer \"does the importance measure "
             f"matter?\" (\\* p < {SIGNIFICANCE_LEVEL}; over uniform and random Holm-adjusted over "
             "the EWC measures compared). examples: training examples each task's importance "
             "was computed on (– : no measure, or an online measure reading the training "
             "trajectory). Importance normalised to mean 1 over the shared weights."]
    for scenario, frame in tables:
        rows = []
        for _, r in frame.iterrows():
            rank = "–" if pd.isna(r["rank"]) else str(int(r["rank"]))
            if r["error"] is not None and not isinstance(r["error"], float):
                rows.append([rank, escape(r["method"]), "failed: " + escape(r["error"])[:120],
                             *["–"] * 9])
                continue
            edges = r["edges"] if isinstance(r["edges"], list) else []
            lams = "–"
            if isinstance(r["lams"], list) and r["lams"]:
                lams = ", ".join(f"{v:g}" for v in r["lams"]) + (" †" if edges else "")
            examples = r["examples"] if isinstance(r["examples"], str) else "–"
            rows.append([rank, escape(r["method"]), number(r["acc"]),
                         f"[{number(r['low'])}, {number(r['high'])}]",
                         number(r["bwt"]), number(r["forgetting"]), lams,
                         _lift_cell(r["lift"], r["lift_p"]),
                         _lift_cell(r["lift_uniform"], r["lift_uniform_p"]),
                         _lift_cell(r["lift_random"], r["lift_random_p"]),
                         examples, str(int(r["seeds"]))])
        headers = ["rank", "method", "ACC", "95% CI", "BWT", "forgetting", "λ", "lift over naive",
                   "lift over uniform (L2)", "lift over random", "examples", "seeds"]
        info = setup.get(scenario, {})
        grid_text = " | ".join(", ".join(f"{v:g}" for v in g) for g in info.get("grids", []))
        decades = [np.log10(max(g) / min(g)) for g in info.get("grids", []) if min(g) > 0]
        init = ", ".join(info.get("inits", [])) or "not recorded"
        head = f"### {escape(scenario)} (init: {escape(init)})"
        note = (f"λ grid: {grid_text} ({min(decades):.1f} decades)." if decades
                else "λ grid: not recorded.")
        sentence = separation(frame)
        parts += ["", head, "", note, "", table(headers, rows, align="rlrrrrrrrrrr")]
        if sentence:
            parts += ["", sentence]
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
