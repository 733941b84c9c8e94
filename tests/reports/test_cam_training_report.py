"""The CAM-training section on synthetic records: weight choice, paired differences, round trip."""

from __future__ import annotations

import pytest

import reports
from reports.scoring import mean_interval
from reports.sections import build_context, cam_training
from reports.sections.cam_training import cam_training_record


def _record(seed: int, weight: float, *, val: float, oracle: float, test_avg: float, test_worst: float) -> dict:
    return cam_training_record(task="spurious_mnist", seed=seed, mode="quick", **{
            "method": "cam" if weight else "plain", "variant": "difference" if weight else None,
            "weight": weight, "width": 0.25 if weight else None, "schedule": [2, 3] if weight else None,
            "val_average": val, "val_worst_group": 0.0, "val_balanced_average": 0.5,
            "val_balanced_worst_group": oracle, "test_average": test_avg,
            "test_worst_group": test_worst, "mass_outside": 0.5 - weight / 100})


def _records() -> list[dict]:
    out = []
    for seed, shift in ((0, 0.0), (1, 0.02), (2, 0.05)):
        out.append(_record(seed, 0.0, val=0.95, oracle=0.1, test_avg=0.60 + shift, test_worst=0.10 + shift))
        # weight 1: best on validation with the training correlation, poor on test
        out.append(_record(seed, 1.0, val=0.97, oracle=0.2, test_avg=0.55 + shift, test_worst=0.05))
        # weight 10: best on the balanced (oracle) split and on test; never chosen by test
        out.append(_record(seed, 10.0, val=0.90, oracle=0.6, test_avg=0.80 + 2 * shift, test_worst=0.50))
        # weight 3: ties weight 1 on validation; the smaller weight wins
        out.append(_record(seed, 3.0, val=0.97, oracle=0.3, test_avg=0.99, test_worst=0.99))
    return out


def test_weight_is_chosen_on_validation_never_on_test():
    runs = cam_training.frame(_records())
    assert cam_training.choose_weight(runs, "val_average") == 1.0
    assert cam_training.choose_weight(runs, "val_balanced_worst_group") == 10.0
    assert cam_training.choose_weight(runs[runs["method"] == "plain"], "val_average") is None


def test_section_reports_paired_differences_with_intervals():
    text = cam_training.markdown(_records(), build_context(_records()))
    plain = [0.60, 0.62, 0.65]
    oracle = [0.80, 0.84, 0.90]
    mean, low, high = mean_interval([o - p for o, p in zip(oracle, plain, strict=True)])
    assert f"{mean:.3f} [{low:.3f}, {high:.3f}]" in text
    rows = [line for line in text.splitlines() if line.startswith("| CAM-guided")]
    assert len(rows) == 2
    assert "| 1 |" in rows[0] and "training correlation" in rows[0]
    assert "| 10 |" in rows[1] and "oracle" in rows[1]
    meta = [{"kind": "meta", "run": {}}]
    assert cam_training.markdown(meta, build_context(meta)) == ""


def test_records_round_trip_and_reach_the_leaderboard(tmp_path):
    writer = reports.RecordWriter(tmp_path / "a.jsonl")
    writer.write(_records())
    writer.write(_records()[:2])  # repeats of the same identity are kept once
    records = reports.read_records([tmp_path / "a.jsonl"])
    assert len([r for r in records if r["kind"] == "cam_training"]) == 12
    board = reports.leaderboard_markdown(records)
    assert "## CAM-guided training on spurious_mnist (difference penalty)" in board
    with pytest.raises(ValueError, match="must be finite"):
        writer.write([{**_records()[0], "test_average": float("nan")}])
