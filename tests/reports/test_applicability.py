"""The "Not applicable" section: what a task given trained is left out of, and why."""

from __future__ import annotations

import pytest

from reports import write_reports
from reports.records import meta_record, point_record
from reports.sections import applicability
from reports.sections.applicability import not_applicable_record


def _left_out():
    why = "needs the training run"
    return [
        not_applicable_record(
            task="mine", variant="pretrained", axis="removal", measure="si", reason=why
        ),
        not_applicable_record(
            task="mine", variant="pretrained", axis="removal", measure="momentum", reason=why
        ),
        not_applicable_record(
            task="mine", variant="pretrained", axis="removal", measure="si", reason=why
        ),
        not_applicable_record(
            task="mine", variant="pretrained", axis="consolidation", reason="needs a sequence"
        ),
    ]


def test_measures_are_grouped_per_task_axis_and_reason_once_each():
    rows = applicability.not_applicable(_left_out())
    assert rows == {
        ("mine.pretrained", "consolidation", "needs a sequence"): [],
        ("mine.pretrained", "removal", "needs the training run"): ["momentum", "si"],
    }
    text = applicability.markdown(_left_out(), context=None)
    assert "| mine.pretrained | removal | momentum, si | needs the training run |" in text
    assert "| mine.pretrained | consolidation | the whole axis | needs a sequence |" in text
    assert applicability.markdown([], context=None) == ""


def test_a_record_needs_its_reason():
    with pytest.raises(ValueError, match=r"Missing: \['reason'\]"):
        not_applicable_record(task="mine", variant="pretrained", axis="removal")


def test_the_leaderboard_shows_the_section(tmp_path):
    points = [
        point_record(
            measure="random",
            task="mine",
            variant="pretrained",
            level="weight",
            scope="global",
            replace="noise",
            seed=0,
            threshold=p,
            loss=0.1 + p,
            accuracy=1 - p / 2,
            fraction_replaced=p,
            num_classes=3,
            base_loss=0.1,
            base_accuracy=1.0,
        )
        for p in (0.0, 0.5, 1.0)
    ]
    records = [meta_record(run={"mode": "quick"}), *points, *_left_out()]
    write_reports(records, tmp_path, plots=False)
    text = (tmp_path / "leaderboard.md").read_text()
    assert "## Not applicable" in text and text.index("## Not applicable") > text.index(
        "mine.pretrained · weight"
    )
