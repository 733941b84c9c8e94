"""The consolidation leaderboard from synthetic records: ranking, lift over naive, failures, plots."""

from __future__ import annotations

import pandas as pd
import pytest

import reports
from reports.scoring import mean_interval
from reports.sections import build_context, consolidation

ACC = {  # per method, per seed (0, 1, 2)
    "naive": [0.60, 0.62, 0.64],
    "l2": [0.78, 0.80, 0.79],
    "joint": [0.90, 0.91, 0.92],
    "fisher": [0.83, 0.84, 0.82],
    "magnitude": [0.70, 0.75, 0.71],
}


def _records():
    out = [{"kind": "meta", "run": {"mode": "quick"}}]
    for method, accs in ACC.items():
        strategy, measure = ("ewc", method) if method in ("fisher", "magnitude") else (method, method)
        for seed, acc in enumerate(accs):
            curve = [[e, "a" if e <= 2 else "b", task, acc] for e in range(5) for task in ("a", "b")]
            out.append({"kind": "consolidation", "scenario": "evenodd", "strategy": strategy, "measure": measure,
                        "mode": "separate", "seed": seed, "acc": acc, "bwt": -0.1 * seed, "forgetting": 0.1 * seed,
                        "lam": 0.1 * (seed + 1) if strategy in ("l2", "ewc") else 0.0, "curve": curve,
                        "R": [[0.9, 0.1], [acc, acc]]})
    out.append({"kind": "consolidation", "scenario": "evenodd", "strategy": "ewc", "measure": "broken",
                "mode": "separate", "seed": 0, "error": "broken: ValueError: no"})
    return out


def test_table_ranks_by_acc_with_interval_lift_and_failures():
    [(scenario, table)] = consolidation.scenario_tables(_records())
    assert scenario == "evenodd"
    assert list(table["method"]) == ["joint", "EWC(fisher)", "L2", "EWC(magnitude)", "naive", "EWC(broken)"]
    fisher = table.set_index("method").loc["EWC(fisher)"]
    mean, low, high = mean_interval(ACC["fisher"])
    assert (fisher["acc"], fisher["low"], fisher["high"]) == pytest.approx((mean, low, high))
    lift = sum(f - n for f, n in zip(ACC["fisher"], ACC["naive"], strict=True)) / 3
    assert fisher["lift"] == pytest.approx(lift)
    assert fisher["lams"] == pytest.approx([0.1, 0.2, 0.3])
    assert fisher["bwt"] == pytest.approx(-0.1) and fisher["forgetting"] == pytest.approx(0.1)
    broken = table.set_index("method").loc["EWC(broken)"]
    assert broken["seeds"] == 0 and "ValueError" in broken["error"]


def test_markdown_has_the_overall_table_and_the_consolidation_section(tmp_path):
    text = reports.leaderboard_markdown(_records())
    assert "## Overall: three axes" in text and "## Consolidation" in text
    assert "| 2 | EWC(fisher) | 0.830 |" in text
    assert "failed: broken: ValueError: no" in text
    ranks = consolidation.consolidation_ranks(consolidation.scenario_tables(_records()))
    assert ranks.to_dict() == {"fisher": 1.0, "magnitude": 2.0}
    paths = consolidation.plots(_records(), build_context(_records()), tmp_path)
    assert [p.name for p in paths] == ["consolidation-evenodd.png"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_records_name_the_method_and_whether_lambda_matters():
    """A strategy the report has never heard of (a plugin) shows under its own label, and its
    lambdas are listed only when the record says it is penalised."""
    records = _records()
    for seed, acc in enumerate([0.85, 0.86, 0.87]):
        records.append({"kind": "consolidation", "scenario": "evenodd", "strategy": "stay_close",
                        "measure": "stay_close", "mode": "separate", "seed": seed, "acc": acc,
                        "bwt": 0.0, "forgetting": 0.0, "lam": 3.0, "curve": [], "R": [[0.9]],
                        "method": "stay close", "penalised": True})
        records.append({"kind": "consolidation", "scenario": "evenodd", "strategy": "replay",
                        "measure": "replay", "mode": "separate", "seed": seed, "acc": acc - 0.5,
                        "bwt": 0.0, "forgetting": 0.0, "lam": 7.0, "curve": [], "R": [[0.9]],
                        "method": "replay", "penalised": False})
    table = consolidation.scenario_tables(records)[0][1].set_index("method")
    assert table.loc["stay close", "lams"] == [3.0]
    assert table.loc["replay", "lams"] == []
    assert table.loc["stay close", "strategy"] == "stay_close"
    assert "| stay close |" in reports.leaderboard_markdown(records)


# --- does the measure matter? lifts over EWC(uniform) and EWC(random), Holm; grid edges ----

GRID = [0.01, 0.1, 1.0, 10.0, 100.0]
MEASURE_ACC = {  # EWC measure -> ACC per seed (0..3); uniform and random are the references
    "uniform": [0.70, 0.72, 0.71, 0.73],
    "random": [0.69, 0.72, 0.70, 0.72],
    "fisher": [0.80, 0.83, 0.81, 0.84],
    "mas": [0.71, 0.74, 0.70, 0.74],
    "magnitude": [0.69, 0.73, 0.72, 0.71],
}


def _measure_records(measures=MEASURE_ACC, init="pytorch"):
    out = [{"kind": "meta", "run": {"mode": "quick"}}]
    for measure, accs in measures.items():
        for seed, acc in enumerate(accs):
            lam = GRID[0] if (measure == "mas" and seed == 1) else 1.0
            out.append({"kind": "consolidation", "scenario": "permuted", "strategy": "ewc",
                        "measure": measure, "mode": "separate", "seed": seed, "acc": acc,
                        "bwt": 0.0, "forgetting": 0.0, "lam": lam, "grid": GRID, "curve": [],
                        "R": [[0.9]], "method": f"EWC({measure})", "penalised": True,
                        "init": init, "measure_examples": [800, 760 + 10 * seed]})
    for seed in range(4):
        out.append({"kind": "consolidation", "scenario": "permuted", "strategy": "naive",
                    "measure": "naive", "mode": "separate", "seed": seed, "acc": 0.5, "bwt": 0.0,
                    "forgetting": 0.0, "lam": 0.0, "grid": [0.0], "curve": [], "R": [[0.9]],
                    "method": "naive", "penalised": False, "init": init})
    return out


def _holm_by_hand(p):
    """Holm (1979) written out: sort, multiply the k-th smallest by (m - k), keep running max."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    adjusted, running = [0.0] * len(p), 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - k) * p[i]))
        adjusted[i] = running
    return adjusted


@pytest.mark.parametrize("reference", ["uniform", "random"])
def test_ewc_rows_get_paired_holm_adjusted_lift_over_uniform_and_random(reference):
    from scipy import stats

    table = consolidation.scenario_tables(_measure_records())[0][1].set_index("measure")
    compared = [m for m in MEASURE_ACC if m != reference]
    raw = [stats.ttest_rel(MEASURE_ACC[reference], MEASURE_ACC[m]).pvalue for m in compared]
    for measure, p in zip(compared, _holm_by_hand(raw), strict=True):
        lift = sum(a - b for a, b in zip(MEASURE_ACC[measure], MEASURE_ACC[reference],
                                         strict=True)) / 4
        assert table.loc[measure, f"lift_{reference}"] == pytest.approx(lift)
        assert table.loc[measure, f"lift_{reference}_p"] == pytest.approx(p)
    assert pd.isna(table.loc[reference, f"lift_{reference}"])  # not compared with itself
    assert pd.isna(table.loc["naive", f"lift_{reference}"])   # only EWC rows


def test_l2_stands_in_for_ewc_uniform_when_it_did_not_run():
    records = [r for r in _measure_records() if r.get("measure") != "uniform"]
    for seed, acc in enumerate(MEASURE_ACC["uniform"]):
        records.append({**records[1], "strategy": "l2", "measure": "l2", "method": "L2",
                        "seed": seed, "acc": acc, "measure_examples": None})
    table = consolidation.scenario_tables(records)[0][1].set_index("measure")
    expected = sum(a - b for a, b in zip(MEASURE_ACC["fisher"], MEASURE_ACC["uniform"],
                                         strict=True)) / 4
    assert table.loc["fisher", "lift_uniform"] == pytest.approx(expected)


def test_section_names_init_grid_edges_examples_and_whether_measures_separate():
    text = reports.leaderboard_markdown(_measure_records())
    assert "### permuted (init: pytorch)" in text
    assert "λ grid: 0.01, 0.1, 1, 10, 100 (4.0 decades)." in text
    assert "PyTorch nn.Linear default" in text
    mas = next(line for line in text.splitlines() if line.startswith("| ") and "EWC(mas)" in line)
    fisher = next(line for line in text.splitlines() if "| EWC(fisher) |" in line)
    assert "0.01, 1 †" in mas and "†" not in fisher
    assert "| 760–800 |" in fisher
    assert "EWC(fisher)" in text.split("**Does the measure matter?**")[1].split("\n")[0]
    same = {m: MEASURE_ACC["uniform"][::-1] if m != "uniform" else MEASURE_ACC["uniform"]
            for m in MEASURE_ACC}
    text = reports.leaderboard_markdown(_measure_records(same, init="keras"))
    assert "0 of 4 EWC measures beat EWC(uniform) = L2" in text
    assert "the importance measure does not matter measurably" in text
    assert "### permuted (init: keras)" in text


def test_overall_consolidation_rank_counts_only_the_scenarios_with_every_measure():
    """A scenario that ran a few chosen measures must not hand them rank 1 in the overall."""
    records = _records() + [
        {**r, "scenario": "permuted"} for r in _measure_records()
        if r.get("measure") == "random"
    ]
    tables = consolidation.scenario_tables(records)
    assert [s for s, _ in tables] == ["evenodd", "permuted"]
    assert consolidation.consolidation_ranks(tables).to_dict() == {"fisher": 1.0, "magnitude": 2.0}
