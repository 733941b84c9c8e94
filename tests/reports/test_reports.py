"""reports/: scores on hand-computed curves, shard merging, escaping, the CLI (synthetic records)."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

import reports
from reports import io as record_io
from reports import records as rec
from reports.__main__ import main as reports_main
from reports.markdown import escape
from reports.scoring import mean_interval, paired_p_value, robustness_score, safe_fraction

LN10 = math.log(10)
THRESHOLDS = [0.0, 0.25, 0.5, 0.75, 1.0]
# Normalised loss increase per measure; "bad|pipe" is a plugin name that needs escaping.
SHAPES = {"good": [0, 0.0, 0.1, 0.4, 1], "random": [0, 0.3, 0.6, 0.85, 1], "bad|pipe": [0, 0.6, 0.9, 1, 1]}


def _synthetic(seeds=(0, 1, 2), levels=("weight", "unit")) -> list[dict]:
    out = [rec.meta_record(run={"date": "2025-01-01T00:00:00Z", "mode": "quick",
                                "tensorflow": "2.21.0", "keras": "3.15.1"})]
    base_loss, base_acc = 0.2, 0.95
    for seed in seeds:
        for level in levels:
            for measure, shape in SHAPES.items():
                jitter = 0.02 * (seed - 1) * (1.0 if measure == "random" else 0.5)
                for p, inc in zip(THRESHOLDS, shape, strict=True):
                    inc = min(1.0, inc + (jitter if 0 < p < 1 else 0.0))
                    out.append(rec.point_record(
                        measure=measure, task="toy", variant="", level=level, scope="global",
                        replace="noise", seed=seed, threshold=p,
                        loss=base_loss + inc * (LN10 - base_loss), accuracy=base_acc - inc * 0.85,
                        fraction_replaced=p, num_classes=10, base_loss=base_loss,
                        base_accuracy=base_acc,
                    ))
        out.append(rec.timing_record(group="compute", measure="good", task="toy", variant="",
                                     seed=seed, seconds=0.5 + seed))
    out.append(rec.failure_record(measure="broken", task="toy", variant="", seed=0, level=None,
                                  error="RuntimeError: boom | bang"))
    out.append(rec.timing_record(group="fisher_device", measure="fisher", task="toy", variant="",
                                 seed=0, seconds=1.25, device="CPU", device_name="Test CPU",
                                 examples=256))
    return out


def _write(path, records):
    writer = record_io.RecordWriter(path)
    writer.write(records)
    return path


# --- scores on hand-computed curves ---------------------------------------------------------

def test_robustness_score_hand_computed():
    base = 0.3
    losses = [base + f * (LN10 - base) for f in (0.0, 0.5, 1.0)]
    # trapezoid of (0, 0.5, 1) over (0, 0.5, 1): 0.5 * 0.25 + 0.5 * 0.75 = 0.5
    assert robustness_score([0, 0.5, 1], losses, num_classes=10) == pytest.approx(0.5)
    step = [base, base, LN10]  # nothing lost until half, then linear to chance: area 0.25
    assert robustness_score([0, 0.5, 1], step, num_classes=10) == pytest.approx(0.25)
    # order of the points does not matter; an explicit base loss overrides loss(0)
    assert robustness_score([1, 0, 0.5], [LN10, base, base], num_classes=10) == pytest.approx(0.25)
    assert robustness_score([0, 1], [0.5, LN10], num_classes=10, base_loss=base) == pytest.approx(
        (0.2 / (LN10 - base) + 1) / 2)


@pytest.mark.parametrize(
    ("thresholds", "kwargs", "message"),
    [([0, 0.5], {}, "include 0 and 1"), ([0, 1.5], {}, "Received"), ([0, 1], {"num_classes": 1}, "at least 2")],
)
def test_robustness_score_rejects_bad_curves(thresholds, kwargs, message):
    with pytest.raises(ValueError, match=message):
        robustness_score(thresholds, [0.1, 2.0], **{"num_classes": 10, **kwargs})


def test_robustness_score_rejects_model_at_chance():
    with pytest.raises(ValueError, match="below chance"):
        robustness_score([0, 1], [2.5, 2.5], num_classes=10)


def test_safe_fraction_is_a_prefix_and_uses_one_point():
    # 0.895 is within 1 point of 0.9; 0.88 is not, so 0.75 (back at 0.95) no longer counts.
    assert safe_fraction([0, 0.25, 0.5, 0.75], [0.9, 0.895, 0.88, 0.95]) == 0.25
    assert safe_fraction([0, 0.5, 1], [0.9, 0.9, 0.9]) == 1.0
    assert safe_fraction([0, 0.5], [0.9, 0.5], base_accuracy=0.99) == 0.0


def test_mean_interval_matches_student_t_by_hand():
    mean, low, high = mean_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, df=2) * sd(=1) / sqrt(3)
    assert (mean, low, high) == pytest.approx((2.0, 2.0 - half, 2.0 + half))
    assert mean_interval([4.0]) == (4.0, 4.0, 4.0)


def test_paired_p_value_matches_closed_form():
    # differences 1, 2, 3: t = 2 / (1 / sqrt 3); for df = 2, p = 1 - t / sqrt(2 + t^2)
    t = 2 * math.sqrt(3)
    assert paired_p_value([2, 4, 6], [1, 2, 3]) == pytest.approx(1 - t / math.sqrt(2 + t * t))
    assert paired_p_value([1, 2], [0, 1]) is None  # constant difference: undefined
    assert paired_p_value([1], [0]) is None


# --- records ----------------------------------------------------------------------------------

def test_torn_last_line_is_skipped_and_other_bad_lines_are_named(tmp_path):
    path = _write(tmp_path / "a.jsonl", _synthetic(seeds=(0,))[:3])
    with open(path, "a") as handle:
        handle.write('{"kind": "point", "meas')
    assert len(list(record_io.iter_records(path))) == 3
    bad = tmp_path / "b.jsonl"
    bad.write_text('not json\n{"kind": "meta", "run": {}}\n')
    with pytest.raises(ValueError, match=r"b\.jsonl:1"):
        list(record_io.iter_records(bad))


def test_writer_rejects_unknown_kind_and_nan(tmp_path):
    writer = record_io.RecordWriter(tmp_path / "x.jsonl")
    with pytest.raises(ValueError, match="kind"):
        writer.write([{"kind": "nope"}])
    with pytest.raises(ValueError, match="'loss'"):
        writer.write([{"kind": "point", "loss": float("nan")}])


def test_builders_refuse_missing_and_unknown_fields():
    with pytest.raises(ValueError, match=r"Missing: \['seconds'\]; unknown: \[\]"):
        rec.timing_record(group="compute", measure="m", task="t", variant="", seed=0)
    with pytest.raises(ValueError, match=r"unknown: \['colour'\]"):
        rec.failure_record(measure="m", task="t", variant="", seed=0, level=None, error="e",
                           colour="red")
    with pytest.raises(ValueError, match="already declared"):
        rec.record_kind("point", required=())


def test_a_new_kind_is_written_read_and_merged_by_its_identity(tmp_path):
    kind = "test_probe"
    probe = rec.record_kind(kind, required=("name", "value"), identity=("name",))
    try:
        path = _write(tmp_path / "p.jsonl", [probe(name="a", value=1), probe(name="a", value=2),
                                              probe(name="b", value=3)])
        got = [(r["name"], r["value"]) for r in record_io.read_records([path]) if r["kind"] == kind]
        assert got == [("a", 2), ("b", 3)]
    finally:
        del rec.KINDS[kind]


def test_vocabulary_matches_the_library():
    from importance.aggregation import LEVELS
    from importance.measures import available_measures
    from importance.thresholding import REPLACEMENTS, SCOPES

    assert rec.LEVELS == LEVELS
    assert rec.DEFAULT_SCOPE in SCOPES and rec.DEFAULT_REPLACE in REPLACEMENTS
    assert rec.BASELINE in available_measures()


# --- leaderboard ------------------------------------------------------------------------------

def test_leaderboard_prints_declared_coverage_notes():
    records = _synthetic()
    assert "## Measure coverage" not in reports.leaderboard_markdown(records)
    records.append({"kind": "timing", "group": "compute", "measure": "bad|pipe", "task": "toy",
                    "variant": "", "seed": 0, "seconds": 0.1, "coverage": "biases: |w| fallback"})
    notes = reports.leaderboard_markdown(records).split("## Measure coverage")[1].split("##")[0]
    assert "| bad\\|pipe | biases: \\|w\\| fallback |" in notes


def test_leaderboard_ranks_escapes_and_marks_significance():
    text = reports.leaderboard_markdown(_synthetic())
    section = text.split("<summary>toy · weight")[1].split("</details>")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line][1:]
    names = [re.split(r"(?<!\\)\|", row)[2].strip() for row in rows]
    assert names[:3] == ["good", "random", "bad\\|pipe"]
    assert names[3] == "broken"
    for row in rows:  # every row has exactly the header's 7 columns (8 unescaped bars)
        assert len(re.findall(r"(?<!\\)\|", row)) == 8
    assert "failed: RuntimeError: boom \\| bang" in section
    good = rows[0]
    assert good.split("|")[6].strip().endswith("\\*")  # lift over random is significant
    assert "1.50 s" in good  # mean compute time over seeds 0.5, 1.5, 2.5
    assert "Test CPU" in text and "2.21.0 / 3.15.1" in text
    assert "seeds**: 0, 1, 2" in text


def test_lift_is_random_minus_measure_paired_by_seed():
    from reports.sections import thresholding

    recs = _synthetic()
    curves = thresholding.curves_frame(thresholding.points_frame(recs))
    weight = curves[curves["level"] == "weight"].set_index(["measure", "seed"])["robustness"]
    (_, table), *_ = thresholding.ranked_tables(curves, recs)
    good = table.set_index("measure").loc["good"]
    expected = np.mean([weight["random", s] - weight["good", s] for s in (0, 1, 2)])
    assert good["lift"] == pytest.approx(expected)
    assert good["rank"] == 1
    assert math.isnan(table.set_index("measure").loc["random", "lift"])


def test_escape_neutralises_markdown():
    assert escape("a|b") == "a\\|b"
    assert escape("fisher_sampled") == "fisher_sampled"
    assert escape("_x_ *y* `z` <b>") == "\\_x\\_ \\*y\\* \\`z\\` \\<b\\>"
    assert escape("two\nlines") == "two lines"


def test_report_from_two_shards_equals_report_from_one_file(tmp_path):
    records = _synthetic()
    one = _write(tmp_path / "one.jsonl", records)
    shard_a = _write(tmp_path / "shard-a.jsonl", [records[0], *records[1::2]])
    shard_b = _write(tmp_path / "shard-b.jsonl", records[2::2])
    combined = record_io.read_records([one])
    sharded = record_io.read_records([shard_a, shard_b])
    assert reports.leaderboard_markdown(sharded) == reports.leaderboard_markdown(combined)
    assert reports.results_csv(sharded) == reports.results_csv(combined)
    # giving a merged file together with its own shards changes nothing
    again = record_io.read_records([one, shard_b, shard_a])
    assert reports.leaderboard_markdown(again) == reports.leaderboard_markdown(combined)


def test_cli_writes_leaderboard_csv_and_plots(tmp_path, capsys):
    records = _synthetic()
    a = _write(tmp_path / "a.jsonl", records[: len(records) // 2])
    b = _write(tmp_path / "b.jsonl", records[len(records) // 2 :])
    out = tmp_path / "out"
    assert reports_main([str(a), str(b), "--out", str(out), "--merged", str(tmp_path / "m.jsonl")]) == 0
    assert "leaderboard:" in capsys.readouterr().out
    csv = (out / "results.csv").read_text().splitlines()
    assert csv[0] == "measure,task,variant,level,scope,replace,seed,threshold,loss,accuracy,fraction_replaced"
    assert len(csv) == 1 + 3 * 2 * 3 * len(THRESHOLDS)
    png = out / "plots" / "loss-toy.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    merged = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert len(merged) == len(records)


def test_cli_refuses_files_without_cases(tmp_path, capsys):
    empty = _write(tmp_path / "e.jsonl", [{"kind": "meta", "run": {}}])
    assert reports_main([str(empty), "--out", str(tmp_path)]) == 1
    with pytest.raises(SystemExit):
        reports_main([str(tmp_path / "missing.jsonl")])
    assert "not found" in capsys.readouterr().err


# --- the package's shape ----------------------------------------------------------------------

def test_every_section_follows_the_contract_and_declares_its_kinds():
    from reports.sections import RESULT_KINDS, SECTIONS, Section

    for section in SECTIONS:
        assert isinstance(section, Section), section.__name__
        assert set(section.KINDS) <= set(rec.KINDS), section.__name__
    assert RESULT_KINDS == tuple(k for section in SECTIONS for k in section.KINDS)
    assert len(set(RESULT_KINDS)) == len(RESULT_KINDS)  # a kind belongs to one section
    assert reports.RESULT_KINDS == RESULT_KINDS


def test_reports_imports_no_tensorflow_and_none_of_the_other_packages():
    import subprocess
    import sys

    code = ("import sys, reports, reports.__main__\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'keras', 'jax', 'torch', 'importance', 'tasks', 'benchmarks'))\n"
            "print(bad)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_holm_matches_hand_computed_step_down():
    from reports.scoring import holm

    # m = 4 defined p-values, sorted 0.01, 0.02, 0.03, 0.5 -> 0.04, 0.06, 0.06 (running max), 0.5.
    assert holm([0.03, 0.01, None, 0.5, 0.02]) == pytest.approx([0.06, 0.04, None, 0.5, 0.06])
    assert holm([0.4, 0.6]) == [0.8, 0.8]  # capped and monotone: min(1, 2*0.4)=0.8, max(0.8, 0.6)
    with pytest.raises(ValueError, match=r"p_values\[1\].*1\.5"):
        holm([0.1, 1.5])
