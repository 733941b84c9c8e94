"""reports.history: runs stored under a key, and --compare finding a deliberate change."""

from __future__ import annotations

import copy

import pytest

from reports import history
from reports import records as rec
from reports.__main__ import main as reports_main
from reports.io import RecordWriter

SHAPES = {"good": [0.0, 0.1, 1.0], "mid": [0.0, 0.4, 1.0], "random": [0.0, 0.6, 1.0]}


def _run(*, seeds=(0, 1, 2, 3, 4), worse: dict[str, float] | None = None, commit="abc") -> list:
    """Points of one run; ``worse`` raises a measure's loss at p = 0.5 (seed-dependent noise
    keeps the paired differences from being constant)."""
    worse = worse or {}
    out = [rec.meta_record(run={"mode": "quick", "tensorflow": "2.21.0", "commit": commit})]
    for seed in seeds:
        for measure, shape in SHAPES.items():
            for p, inc in zip((0.0, 0.5, 1.0), shape, strict=True):
                if 0 < p < 1:
                    inc = inc + 0.01 * ((seed * 7 + len(measure)) % 5)
                    inc += worse.get(measure, 0.0) * (1 + 0.2 * seed)
                out.append(rec.point_record(
                    measure=measure, task="toy", variant="", level="weight", scope="global",
                    replace="noise", seed=seed, threshold=p, loss=0.2 + min(inc, 1.0) * 2.1,
                    accuracy=0.9 - 0.8 * min(inc, 1.0), fraction_replaced=p, num_classes=10,
                    base_loss=0.2, base_accuracy=0.9))
    return out


def _save(folder, records):
    folder.mkdir(parents=True, exist_ok=True)
    RecordWriter(folder / "results.jsonl").write(records)
    return folder


def test_identical_runs_compare_clean():
    result = history.compare(_run(), copy.deepcopy(_run()))
    assert result.changes and not result.moved() and not result.regressions


def test_a_deliberately_worse_measure_is_a_significant_regression():
    result = history.compare(_run(), _run(worse={"good": 0.15}))
    moved = {c.name: c for c in result.moved()}
    assert set(moved) == {"good"}  # the others: same scores, same ranks
    good = moved["good"]
    assert good.new > good.old and good.seeds == 5
    assert good.regression and good.p < 0.05
    assert good.new_rank == good.old_rank == 1


def test_a_rank_swap_is_listed_for_both_measures():
    result = history.compare(_run(), _run(worse={"good": 0.4}))
    ranks = {c.name: (c.old_rank, c.new_rank) for c in result.moved()}
    assert ranks["good"][0] == 1 and ranks["good"][1] > 1 and ranks["mid"] == (2, 1)


def test_different_definitions_are_refused_unless_allowed():
    with pytest.raises(history.IncomparableRunsError, match="seeds"):
        history.compare(_run(), _run(seeds=(0, 1, 2)))
    result = history.compare(_run(), _run(seeds=(0, 1, 2)), allow_different=True)
    assert result.notes and "different benchmark definitions" in result.notes[0]
    assert all(c.seeds == 3 for c in result.changes)


def test_store_run_keys_commit_definition_and_tensorflow(tmp_path):
    folder = history.store_run(_run(commit="0123456789abcdef"), tmp_path)
    assert folder.parent == tmp_path / "history"
    commit, definition, tf = folder.name.split("-")
    assert commit == "0123456789ab" and len(definition) == 12 and tf == "tf2.21.0"
    assert history.run_key(_run(seeds=(0, 1))) != history.run_key(_run())
    assert (folder / "results.jsonl").is_file()


def test_cli_compare_exit_codes(tmp_path, capsys):
    old = _save(tmp_path / "old", _run())
    new = _save(tmp_path / "new", _run(worse={"good": 0.4}))
    assert reports_main(["--compare", str(old), str(new)]) == 0
    assert "REGRESSION" in capsys.readouterr().out
    assert reports_main(["--compare", str(old), str(new), "--fail-on-regression"]) == 1
    assert reports_main(["--compare", str(old), str(old), "--fail-on-regression"]) == 0
    other = _save(tmp_path / "other", _run(seeds=(0, 1)))
    assert reports_main(["--compare", str(old), str(other)]) == 2
    assert "differ in: seeds" in capsys.readouterr().err
    assert reports_main(["--compare", str(old), "nokey", "--history", str(tmp_path)]) == 2
    assert "'nokey' not found" in capsys.readouterr().err


def test_store_run_keeps_the_most_recent_runs(tmp_path):
    import os

    folders = []
    for i in range(4):
        folder = history.store_run(_run(commit=f"{i:012d}"), tmp_path, keep=2)
        os.utime(folder / "results.jsonl", ns=(i * 10**9, i * 10**9))
        folders.append(folder)
    left = sorted(p.name for p in (tmp_path / "history").iterdir())
    assert left == sorted(f.name for f in folders[-2:])
