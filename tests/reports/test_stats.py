"""reports.stats and the statistics of the sections, against hand-computed or scipy references."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import reports
from reports import stats
from reports.scoring import holm, mean_interval

# Demsar (2006), table 5(a): two-tailed Nemenyi q_0.05 for k = 2 .. 10 classifiers.
DEMSAR_Q05 = [1.960, 2.343, 2.569, 2.728, 2.850, 2.949, 3.031, 3.102, 3.164]


# --- intervals ------------------------------------------------------------------------------

def test_no_interval_below_three_seeds_and_the_values_are_printed():
    assert stats.seed_interval([0.5, 0.7]) == (pytest.approx(0.6), None, None)
    text = stats.format_seed_interval([0.512, 0.640], bounds=(0, 1))
    assert text == "0.576 (n = 2, no interval: 0.512, 0.640)"
    assert stats.format_seed_interval([0.3]) == "0.300 (n = 1)"


def test_three_seeds_get_the_student_t_interval_clipped_to_the_range():
    values = [0.97, 0.99, 1.0]
    mean, low, high = mean_interval(values)
    assert high > 1.0  # the plain t interval leaves [0, 1]
    assert stats.seed_interval(values, bounds=(0, 1)) == pytest.approx((mean, low, 1.0))
    assert stats.seed_interval(values) == pytest.approx((mean, low, high))


def _wilson_by_roots(x: int, n: int, z: float) -> tuple[float, float]:
    """The Wilson interval as the two roots in pi of (p - pi)^2 = z^2 pi (1 - pi) / n."""
    p = x / n
    a, b, c = 1 + z * z / n, -(2 * p + z * z / n), p * p
    roots = np.sort(np.roots([a, b, c]).real)
    return float(roots[0]), float(roots[1])


@pytest.mark.parametrize(("x", "n"), [(8, 10), (1, 30), (15, 15), (0, 7), (50, 100)])
def test_wilson_interval_matches_the_quadratic_it_solves(x, n):
    z = 1.959963984540054
    low, high = stats.wilson_interval(x, n)
    assert (low, high) == pytest.approx(_wilson_by_roots(x, n, z), abs=1e-9)
    assert 0.0 <= low <= x / n <= high <= 1.0


def test_wilson_interval_rejects_bad_counts():
    with pytest.raises(ValueError, match="successes must be in \\[0, 5\\]. Received: 6"):
        stats.wilson_interval(6, 5)
    with pytest.raises(ValueError, match="trials must be at least 1"):
        stats.wilson_interval(0, 0)


def _median_rank_by_sums(n: int, confidence: float) -> int | None:
    """The largest k with 1 - 2 sum_{i<k} C(n, i) / 2^n >= confidence, by exact integer sums."""
    from math import comb

    best = None
    for k in range(1, n // 2 + 1):
        tail = sum(comb(n, i) for i in range(k))
        if 1 - 2 * tail / 2**n >= confidence:
            best = k
    return best


@pytest.mark.parametrize("n", [6, 7, 20, 31, 41, 100])
def test_median_interval_takes_the_order_statistics_exact_sums_give(n):
    values = np.random.default_rng(n).lognormal(size=n)
    median, low, high = stats.median_interval(values)
    k = _median_rank_by_sums(n, 0.95)
    ordered = np.sort(values)
    assert median == pytest.approx(np.median(values))
    assert (low, high) == (ordered[k - 1], ordered[n - k])
    if n == 20:  # the pair tables of the sign-test interval print for n = 20: x_(6), x_(15)
        assert k == 6


def test_median_interval_covers_a_skewed_medians_at_its_level():
    rng = np.random.default_rng(0)
    true_median = 1.0  # lognormal(0, s): median exp(0)
    hits = [low <= true_median <= high
            for low, high in (stats.median_interval(rng.lognormal(0.0, 0.3, size=31))[1:]
                              for _ in range(2000))]
    # The n = 31 interval's exact coverage is 0.9706; 2000 draws give a binomial sd of 0.004.
    assert 0.955 <= np.mean(hits) <= 0.985


def test_median_interval_has_no_bounds_below_six_values_and_refuses_bad_input():
    assert stats.median_interval([1.0, 3.0, 2.0, 5.0, 4.0]) == (3.0, None, None)
    assert stats.median_interval([1.0, 3.0, 2.0, 5.0, 4.0], confidence=0.9) == (3.0, 1.0, 5.0)
    with pytest.raises(ValueError, match="at least one value"):
        stats.median_interval([])
    with pytest.raises(ValueError, match=r"must be finite. Received: \[nan\]"):
        stats.median_interval([1.0, float("nan")])
    with pytest.raises(ValueError, match="confidence must be in \\(0, 1\\). Received: 95"):
        stats.median_interval([1.0, 2.0], confidence=95)


# --- Friedman, Nemenyi ----------------------------------------------------------------------

@pytest.mark.parametrize("ties", [False, True])
def test_friedman_matches_scipy(ties):
    from scipy.stats import friedmanchisquare

    rng = np.random.default_rng(3)
    scores = rng.normal(size=(9, 5)) + np.arange(5) * 0.4
    if ties:
        scores = np.round(scores)  # many ties inside blocks
    ranks = stats.block_ranks(scores, higher_is_better=False)
    result = stats.friedman(ranks)
    reference = friedmanchisquare(*scores.T)
    assert result.chi2 == pytest.approx(reference.statistic, rel=1e-10)
    assert result.p_chi2 == pytest.approx(reference.pvalue, rel=1e-8)
    n, k = scores.shape  # Iman and Davenport's F from the same statistic (Demsar 2006)
    assert result.f == pytest.approx((n - 1) * result.chi2 / (n * (k - 1) - result.chi2))


def test_block_ranks_best_first_and_average_ties():
    ranks = stats.block_ranks(np.array([[0.1, 0.3, 0.3, 0.0]]), higher_is_better=True)
    assert ranks.tolist() == [[3.0, 1.5, 1.5, 4.0]]


def test_nemenyi_q_is_demsars_table():
    for k, q in zip(range(2, 11), DEMSAR_Q05, strict=True):
        assert stats.nemenyi_q(k) == pytest.approx(q, abs=1.5e-3), k


def test_critical_difference_of_demsars_example():
    # Demsar 2006, section 3.2.4: 4 classifiers, 14 data sets, CD = 2.569 sqrt(4 * 5 / (6 * 14)).
    assert stats.critical_difference(4, 14) == pytest.approx(1.25, abs=5e-3)


def test_cliques_are_the_maximal_runs_within_the_critical_difference():
    assert stats.cliques([1.0, 1.5, 3.0, 3.2, 5.0], 1.9) == [(0, 1), (1, 3), (3, 4)]
    assert stats.cliques([1.0, 3.0, 5.0], 1.0) == []


# --- bootstrap rank interval ----------------------------------------------------------------

def _planted(blocks_per_task=3, tasks=4, seed=0):
    """Five measures: a clearly first, b and c interchangeable (same distribution), d, e last."""
    rng = np.random.default_rng(seed)
    n = blocks_per_task * tasks
    centre = np.array([0.0, 5.0, 5.0, 10.0, 20.0])
    scores = centre + rng.normal(scale=1.0, size=(n, 5))
    groups = [i // blocks_per_task for i in range(n)]
    return stats.block_ranks(scores, higher_is_better=False), groups


def test_bootstrap_rank_interval_recovers_a_planted_order():
    ranks, groups = _planted()
    low, high = stats.bootstrap_rank_interval(ranks, groups, samples=500, seed=1)
    assert low.tolist()[0] == high.tolist()[0] == 1  # a is first in every resample
    assert (low[3], high[3]) == (4, 4) and (low[4], high[4]) == (5, 5)
    for j in (1, 2):  # b and c: either may be second
        assert low[j] == 2 and high[j] == 3


def test_bootstrap_rank_interval_is_seeded():
    ranks, groups = _planted(seed=5)
    first = stats.bootstrap_rank_interval(ranks, groups, samples=300, seed=7)
    again = stats.bootstrap_rank_interval(ranks, groups, samples=300, seed=7)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))


def test_bootstrap_draws_tasks_then_seeds():
    # Two tasks disagree completely; one task of 1 block. Resampling tasks must sometimes draw
    # only one of them: both measures then span positions 1-2.
    ranks = np.array([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [2.0, 1.0]])
    low, high = stats.bootstrap_rank_interval(ranks, [0, 0, 0, 1], samples=400, seed=0)
    assert low.tolist() == [1, 1] and high.tolist() == [2, 2]


# --- the sections' use of them --------------------------------------------------------------

def _curves(lifts: dict[str, list[float]], extra_tied_level: bool = False) -> pd.DataFrame:
    rows = []
    for seed in range(3):
        for measure, values in {"random": [0.5, 0.5, 0.5], **lifts}.items():
            rows.append({"measure": measure, "task": "toy", "variant": "", "level": "weight",
                         "scope": "global", "replace": "noise", "seed": seed,
                         "robustness": 0.5 - (values[seed] if measure != "random" else 0.0)
                         + (0.01 * seed if measure == "random" else 0.0), "safe": 0.5})
            if extra_tied_level:
                rows.append({**rows[-1], "level": "layer", "robustness": 0.3})
    return pd.DataFrame(rows)


def test_lift_stars_are_holm_adjusted_over_the_table():
    from reports.sections import thresholding

    # Three measures with the same paired differences: raw p ~ 0.03 each, Holm p ~ 0.09.
    same = [0.1, 0.13, 0.07]
    curves = _curves({"a": same, "b": same, "c": same})
    (_, table), = thresholding.ranked_tables(curves, [])
    rows = table.set_index("measure").drop("random")
    assert (rows["lift_p"] < 0.05).all()
    assert rows["lift_p_holm"].tolist() == pytest.approx(holm(rows["lift_p"].tolist()))
    assert rows["lift_p_holm"].tolist() == pytest.approx([3 * rows["lift_p"].iloc[0]] * 3)
    assert not rows["significant"].any()


def test_a_table_where_every_measure_ties_is_degenerate_and_ranks_nothing():
    from reports.sections import thresholding

    curves = _curves({"a": [0.2, 0.25, 0.3], "b": [0.1, 0.1, 0.12]}, extra_tied_level=True)
    degenerate = thresholding.degenerate_tables(curves)
    assert list(degenerate) == [("toy", "", "layer", "global", "noise")]
    axis = thresholding.removal_axis(curves)
    assert axis.scores.columns.tolist() == ["a", "b", "random"]
    assert axis.scores.iloc[0].tolist() == [1.0, 2.0, 3.0]  # the weight level alone


def _overall_records() -> list[dict]:
    """Removal on one task, consolidation with a signed measure, explanation on two seeds."""
    from reports import records as rec

    order = {"good": 0.1, "ok": 0.3, "random": 0.6}
    out = [rec.meta_record(run={"mode": "quick"})]
    for seed in range(3):
        for measure, inc in order.items():
            for p in (0.0, 0.5, 1.0):
                loss = 0.2 + (inc * (1 + 0.1 * seed) if 0 < p < 1 else (0 if p == 0 else 2.1))
                out.append(rec.point_record(
                    measure=measure, task="toy", variant="", level="weight", scope="global",
                    replace="noise", seed=seed, threshold=p, loss=loss, accuracy=0.9,
                    fraction_replaced=p, num_classes=10, base_loss=0.2, base_accuracy=0.9))
        for measure, acc in {"good": 0.8, "ok": 0.7, "random": 0.6, "signed": None}.items():
            fields = {"kind": "consolidation", "scenario": "evenodd", "strategy": "ewc",
                      "measure": measure, "mode": "separate", "seed": seed}
            fields.update({"acc": acc + 0.01 * seed, "bwt": 0.0, "forgetting": 0.0, "lam": 1.0,
                           "curve": [], "R": [[acc]]} if acc else
                          {"error": "signed: SignedImportanceError: gives signed scores"})
            out.append(fields)
        for measure, kept in {"good": 0.9, "ok": 0.95, "random": 0.2, "signed": 0.5}.items():
            out.append({"kind": "explanation", "measure": measure, "task": "mnist5k",
                        "variant": "cnn", "seed": seed, "method": "grad_cam", "threshold": 0.5,
                        "explanation_kept": kept - 0.01 * seed, "loss": 1.0, "accuracy": 0.5})
    return out


def test_overall_table_has_three_axes_and_says_why_a_measure_is_missing(tmp_path):
    from reports.sections import build_context, overall

    records = _overall_records()
    text = reports.leaderboard_markdown(records)
    section = text.split("## Overall: three axes")[1].split("\n## ")[0]
    rows = {line.split("|")[1].strip(): line for line in section.splitlines()
            if line.startswith("| ") and "---" not in line and "measure |" not in line}
    assert set(rows) == {"good", "ok", "random", "signed"}
    assert "signed scores: EWC needs a weight ω ≥ 0" in rows["signed"]
    assert "– (no removal, consolidation)" in rows["signed"]
    # good: first on removal and consolidation in every block; ok: first on explanation.
    assert rows["good"].split("|")[2].strip().startswith("1 [1–1]")
    assert rows["ok"].split("|")[4].strip().startswith("1 [1–1]")
    combined = overall.combined_ranking(
        [r for r in overall.axis_rankings(records, build_context(records)).values()])
    # Mean of axis mean ranks: good (1 + 1 + 2) / 3, ok (2 + 2 + 1) / 3, random 3.
    assert combined.set_index("measure")["mean_rank"].to_dict() == pytest.approx(
        {"good": 4 / 3, "ok": 5 / 3, "random": 3.0})
    [path] = overall.plots(records, build_context(records), tmp_path)
    assert path.name == "critical-difference.png" and path.read_bytes()[:4] == b"\x89PNG"


def test_cam_training_two_seeds_print_values_not_intervals():
    from reports.sections import build_context, cam_training

    rows = []
    for seed, acc in ((0, 0.5), (1, 0.65)):
        for method, weight in (("plain", 0.0), ("cam", 1.0)):
            rows.append({"kind": "cam_training", "task": "spurious_mnist", "seed": seed,
                         "mode": "quick", "method": method, "variant": "difference",
                         "weight": weight, "width": 0.25, "schedule": [2, 3],
                         "mass_outside": 0.5, **{f"{s}_{m}": acc for s in
                                                 ("test", "val", "val_balanced")
                                                 for m in ("average", "worst_group")}})
    text = cam_training.markdown(rows, build_context(rows))
    assert "0.575 (n = 2, no interval: 0.500, 0.650)" in text
    assert "[-" not in text  # no interval, so none below 0


def test_thresholding_rows_with_two_seeds_print_values_and_seeds():
    records = [r for r in _overall_records() if r["kind"] == "meta"
               or (r["kind"] == "point" and r["seed"] < 2)]
    text = reports.leaderboard_markdown(records)
    section = text.split("<summary>toy · weight")[1].split("</details>")[0]
    good = next(line for line in section.splitlines() if "| good |" in line)
    cells = [c.strip() for c in good.split("|")]
    assert cells[4].startswith("n = 2, no interval: ") and cells[5] == "2"
    assert "[" not in cells[4]
