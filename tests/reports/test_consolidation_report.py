"""The consolidation leaderboard from synthetic records: ranking, lift over naive, failures, plots."""

from __future__ import annotations

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
