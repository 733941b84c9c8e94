"""The saliency part of the leaderboard: records, ranking, lifts, and PNGs that are not blank."""

from __future__ import annotations

import numpy as np
import pytest

import reports
from reports.sections import build_context, saliency
from reports.sections.saliency import faithfulness_table, plot_overlay_grid


def _record(method, seed, deletion, insertion, mass=None):
    fraction = [0.0, 0.5, 1.0]
    record = {
        "kind": "saliency", "method": method, "task": "toy", "variant": "cnn", "seed": seed,
        "images": len(deletion), "seconds_per_image": 0.01, "deletion_area": deletion,
        "insertion_area": insertion, "fraction": fraction,
        "deletion_probability": [1.0, 1 - seed * 0.1 - 0.3, 0.1],
        "insertion_probability": [0.1, 0.8, 1.0], "deletion_accuracy": [1.0, 0.5, 0.0],
        "insertion_accuracy": [0.0, 1.0, 1.0],
    }  # fmt: skip
    if mass is not None:
        record["mass_inside"] = mass
    return record


RECORDS = [
    _record("good", 0, [0.1, 0.2], [0.9, 0.8], mass=0.8),
    _record("good", 1, [0.2, 0.3], [0.8, 0.7], mass=0.6),
    _record("random_map", 0, [0.6, 0.8], [0.5, 0.5], mass=0.25),
    _record("random_map", 1, [0.7, 0.7], [0.4, 0.6], mass=0.25),
    {"kind": "explanation", "measure": "magnitude", "task": "toy", "variant": "cnn", "seed": 0,
     "threshold": 0.3, "explanation_kept": 0.9, "loss": 0.1, "accuracy": 0.9, "method": "grad_cam"},
    {"kind": "explanation", "measure": "random", "task": "toy", "variant": "cnn", "seed": 0,
     "threshold": 0.3, "explanation_kept": 0.2, "loss": 0.1, "accuracy": 0.9, "method": "grad_cam"},
]  # fmt: skip


def test_ranking_intervals_and_lifts_by_hand():
    table = faithfulness_table(RECORDS).set_index("method")
    assert list(table.index) == ["good", "random_map"]  # lower deletion area first
    assert table.loc["good", "deletion"] == pytest.approx(0.2)
    assert table.loc["good", "deletion_lift"] == pytest.approx(np.mean([0.7 - 0.15, 0.7 - 0.25]))
    assert table.loc["good", "insertion_lift"] == pytest.approx(np.mean([0.85 - 0.5, 0.75 - 0.5]))
    assert table.loc["good", "mass_inside"] == pytest.approx(0.7)
    low, high = table.loc["good", ["deletion_low", "deletion_high"]]
    assert low < 0.2 < high


def test_leaderboard_has_the_sections_and_links(tmp_path):
    path = tmp_path / "results.jsonl"
    reports.write_records(path, RECORDS)
    again = reports.read_records([path, path])
    assert len([r for r in again if r["kind"] == "saliency"]) == 4  # deduplicated by identity
    text = saliency.markdown(again, build_context(again))
    assert "## Saliency faithfulness · toy.cnn" in text
    assert text.index("| 1 | good |") < text.index("| 2 | random_map |")
    assert (
        "plots/saliency-overlay-toy.cnn.png" in text and "plots/saliency-curves-toy.cnn.png" in text
    )
    assert "| 1 | magnitude | 0.900 |" in text
    markdown = reports.leaderboard_markdown(again)
    assert "## Explanation kept under thresholding · toy.cnn" in markdown


def _not_blank(path):
    import matplotlib.image

    pixels = matplotlib.image.imread(path)[..., :3]
    assert pixels.std() > 0.05  # not one flat colour
    assert len(np.unique(pixels.reshape(-1, 3).round(2), axis=0)) > 50  # drawn content
    return pixels


def test_pngs_exist_and_are_not_blank(tmp_path):
    curves = saliency.plots(RECORDS, build_context(RECORDS), tmp_path)
    assert [p.name for p in curves] == ["saliency-curves-toy.cnn.png"]
    _not_blank(curves[0])
    rng = np.random.default_rng(0)
    images = rng.random((3, 10, 8, 1))
    maps = {"a": rng.random((3, 10, 8)), "b": np.zeros((3, 10, 8))}
    grid = plot_overlay_grid(images, maps, tmp_path / "overlay.png", title="t")
    _not_blank(grid)
    written = reports.write_reports(RECORDS, tmp_path / "report")
    assert any(p.name == "saliency-curves-toy.cnn.png" for p in written["plots"])


def _evaluated(method, seed, spearman, morf, pointing=None, early=None):
    record = _record(method, seed, [0.3, 0.4], [0.9, 0.9])
    record.update(road_morf=morf, road_lerf=[0.9, 0.8], road_fractions=[0.1, 0.5, 0.9])
    if pointing is not None:
        record.update(pointing_game=pointing, relevance_rank_accuracy=[0.5, 0.7])
    if early is not None:
        record.update(insertion_early=early, early_fraction=0.05)
    cascade = {"kind": "randomisation", "method": method, "task": "toy", "variant": "cnn",
               "seed": seed, "images": 2, "layers": ["logits", "conv"],
               "spearman": spearman, "ssim": [0.5, 0.2], "threshold": 0.5}  # fmt: skip
    return [record, cascade]


EVALUATED = [
    *_evaluated("good", 0, [0.4, 0.2], [0.2, 0.4], pointing=[1.0, 0.0], early=0.8),
    *_evaluated("good", 1, [0.2, 0.4], [0.4, 0.4], pointing=[1.0, 1.0], early=0.6),
    *_evaluated("random_map", 0, [1.0, 1.0], [0.8, 0.8], pointing=[0.0, 0.0], early=0.5),
    *_evaluated("random_map", 1, [1.0, 1.0], [0.9, 0.7], pointing=[0.0, 1.0], early=0.5),
]


def test_sanity_road_localisation_and_early_insertion_by_hand():
    table = faithfulness_table(EVALUATED).set_index("method")
    assert table.loc["good", "randomisation_top"] == pytest.approx(0.3)
    assert table.loc["good", "randomisation_all"] == pytest.approx(0.3)
    assert table.loc["good", "road_morf"] == pytest.approx(0.35)
    assert table.loc["good", "pointing_game"] == pytest.approx(0.75)
    assert table.loc["good", "insertion_early"] == pytest.approx(0.7)
    text = saliency.markdown(EVALUATED, build_context(EVALUATED))
    assert "## Saliency sanity, ROAD and localisation · toy.cnn" in text
    assert "| good | pass | 0.300 | 0.300 | 0.200 | 0.350 | 0.850 | 0.750 | 0.600 |" in text
    assert "| random_map | **fail** | 1.000 | 1.000 |" in text
    assert "below 0.5" in text and "plots/saliency-randomisation-toy.cnn.png" in text
    assert "insertion area, first 5% of pixels" in text
    assert "| 1 | good | 0.350 [0.258, 0.442] | 0.700 | +0.000 | +0.200 |" in text
    plain = saliency.markdown(RECORDS, build_context(RECORDS))  # no evaluation fields
    assert "Saliency sanity" not in plain and "first 5%" not in plain


def test_randomisation_cascade_png_is_not_blank(tmp_path):
    from reports.sections.saliency import plot_randomisation_cascade

    rng = np.random.default_rng(1)
    images = rng.random((2, 12, 10, 1))
    cascades = {"a": rng.random((3, 2, 12, 10)), "b": np.zeros((3, 2, 12, 10))}
    path = plot_randomisation_cascade(images, cascades, ["logits", "conv"], tmp_path / "c.png")
    _not_blank(path)
