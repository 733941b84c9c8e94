"""reports figures: one look per measure across a run's figures, off-scale curves marked,
the rank heat-map (synthetic records; figures captured instead of written)."""

from __future__ import annotations

import math

import pytest

from reports import records as rec
from reports.sections import build_context, thresholding
from reports.style import BASELINE_STYLES, measure_styles

THRESHOLDS = [0.0, 0.5, 1.0]


def _points(task: str, losses: dict[str, list[float]]) -> list[dict]:
    out = []
    for measure, curve in losses.items():
        for seed in (0, 1):
            for p, loss in zip(THRESHOLDS, curve, strict=True):
                out.append(rec.point_record(
                    measure=measure, task=task, variant="", level="weight", scope="global",
                    replace="noise", seed=seed, threshold=p, loss=loss, accuracy=0.5,
                    fraction_replaced=p, num_classes=10, base_loss=0.2, base_accuracy=0.9))
    return out


@pytest.fixture
def drawn(monkeypatch, tmp_path):
    """Run the thresholding section's plots, keeping each figure's legend instead of a PNG."""
    legends: dict[str, dict[str, tuple]] = {}
    limits: dict[str, float] = {}

    def keep(fig, path):
        handles, labels = fig.legends[0].legend_handles, [t.get_text() for t in fig.legends[0].texts]
        if path.name.startswith("loss-"):
            legends[path.name] = {label: (h.get_color(), h.get_linestyle(), h.get_linewidth())
                                  for h, label in zip(handles, labels, strict=True)}
            limits[path.name] = fig.axes[0].get_ylim()[1]

    monkeypatch.setattr(thresholding, "save_figure", keep)
    records = _points("a", {"random": [0.2, 1.5, 2.3], "uniform": [0.2, 1.4, 2.3],
                            "good": [0.2, 0.3, 2.3], "grasp": [0.2, 30.0, 2.3]})
    records += _points("b", {"random": [0.2, 1.5, 2.3], "good": [0.2, 0.4, 2.3],
                             "other": [0.2, 1.0, 2.3]})
    thresholding.plots(records, build_context(records), tmp_path)
    return legends, limits


def test_a_measure_keeps_its_look_in_every_figure(drawn):
    legends, _ = drawn
    assert set(legends) == {"loss-a.png", "loss-b.png"}
    for measure in ("random", "good"):
        assert legends["loss-a.png"][measure] == legends["loss-b.png"][measure]
    assert legends["loss-a.png"]["random"][0] == "#000000"


def test_a_curve_off_scale_is_marked_and_does_not_set_the_axis(drawn):
    legends, limits = drawn
    assert "grasp (off scale ▲)" in legends["loss-a.png"]
    assert limits["loss-a.png"] <= thresholding.Y_LIMIT * math.log(10) + 1e-9
    assert "good" in legends["loss-b.png"]  # nothing off scale in b: plain names


def test_measure_styles_are_distinct_and_baselines_fixed():
    names = [f"m{i:02d}" for i in range(40)]
    styles = measure_styles(["random", *names, "uniform"])
    pairs = {(s.colour, s.dash) for s in styles.values()}
    assert len(pairs) == len(styles) == 42
    assert (styles["random"].colour, styles["uniform"].colour) == (
        BASELINE_STYLES["random"][0], BASELINE_STYLES["uniform"][0])
    assert measure_styles(names)["m05"] == styles["m05"]


def test_rank_matrix_rows_follow_the_overall_order(tmp_path):
    records = _points("a", {"random": [0.2, 1.5, 2.3], "good": [0.2, 0.3, 2.3],
                            "mid": [0.2, 1.0, 2.3]})
    context = build_context(records)
    matrix = thresholding.rank_matrix(context.tables, context.overall)
    assert list(matrix.index) == ["good", "mid", "random"]
    assert matrix["a · weight"].tolist() == [1.0, 2.0, 3.0]


def test_rank_heatmap_of_a_small_run_draws_without_warnings(tmp_path):
    import pandas as pd

    from reports.plots import plot_rank_heatmap

    ranks = pd.DataFrame({"planted_noise.mlp · weight": [1.0, 2.0],
                          "planted_noise.mlp · unit": [2.0, float("nan")],
                          "a_very_long_task_name.variant · layer": [1.0, 2.0]},
                         index=["conftest_plugin", "random"])
    path = plot_rank_heatmap(ranks, tmp_path / "r.png", title="ranks")
    assert path.stat().st_size > 0  # pytest turns a matplotlib layout warning into an error


def test_a_run_where_nothing_could_be_ranked_draws_no_heatmap(tmp_path):
    # Every curve invalid (the untouched model at chance: loss(0) >= ln K): nothing to rank.
    records = _points("a", {"random": [2.4, 2.4, 2.4], "good": [2.5, 2.4, 2.4]})
    for record in records:
        record["base_loss"] = 2.4
    assert build_context(records).tables[0][1]["robustness"].isna().all()
    written = thresholding.plots(records, build_context(records), tmp_path)
    assert [p.name for p in written] == ["loss-a.png"]
