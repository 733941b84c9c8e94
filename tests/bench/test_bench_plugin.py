"""End to end: `pytest benchmarks` with plugin measures, serial and under xdist.

A throw-away distribution on ``PYTHONPATH`` declares an ``importance.measures`` entry point
(measures ``plugin|pipe``, a name that needs escaping, and ``plugin_broken``, which raises); a
``-p`` plugin module registers ``conftest_plugin`` in its ``pytest_configure``. The suite runs twice
on a small slice (planted task, 2 seeds): serially and with ``-n 2``. Checked:

* the plugin measures appear in the leaderboard, ranked, with the name escaped; the raising one is
  reported as failed and the session still writes its leaderboard;
* the xdist run gives the same results and the same leaderboard (timings and date aside);
* ``python -m reports`` on the xdist run's shard files rebuilds the same leaderboard;
* the same slice split into shards with pytest-split (``--splits 2 --group i``, one process per
  shard, as on two machines), merged with ``python -m reports``, equals the serial run;
* progress lines (group, elapsed, estimate) show under ``-q``, serially and under xdist, and the
  serial run, which trains the models, shows the training lines of ``tasks.trained``;
* TensorFlow's start-up lines (``tests/test_startup_noise.py``) reach the output of neither run,
  from the serial process nor from xdist's controller and workers;
* a run interrupted by Ctrl-C keeps a leaderboard of its finished cases. That run names one file
  inside ``benchmarks`` rather than the folder, so it also shows that the benchmark options
  (declared in ``benchmarks/conftest.py``) are honoured then.

Each run is a fresh process that imports TensorFlow (~5 s of CPU), so the runs are as few as the
checks allow.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SELECT = "(plugin or random-) and not beats and not global-zero and not layer-noise and not consolidation"

PLUGIN = '''
import numpy as np
import importance as imp


@imp.register_measure("plugin|pipe")
def squared(model, data=None, **options):
    """Squared weights (ranks like magnitude)."""
    return [np.square(np.asarray(w.numpy(), dtype=np.float64)) for w in model.trainable_weights]


@imp.register_measure("plugin_broken")
def broken(model, data=None, **options):
    """Always raises."""
    raise RuntimeError("plugin measure exploded | on purpose")
'''

# Registers in pytest_configure, not at its import: a `-p` plugin is imported before the root
# conftest installs its filter of TensorFlow's start-up lines (docs/benchmark.md, "Output").
CONFTEST_PLUGIN = '''
import numpy as np


def zz_interrupt(model, data=None):
    """Stands for Ctrl-C in the middle of a run."""
    raise KeyboardInterrupt


def conftest_plugin(model, data=None):
    """Anti-magnitude: the largest weights first."""
    return [1.0 / (1.0 + np.abs(np.asarray(w.numpy(), dtype=np.float64))) for w in model.trainable_weights]


def pytest_configure(config):
    import importance as imp

    imp.register_measure(zz_interrupt)
    imp.register_measure(conftest_plugin)
'''


def _site(tmp: pathlib.Path) -> pathlib.Path:
    site = tmp / "site"
    dist = site / "bench_test_plugin-0.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: bench-test-plugin\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text("[importance.measures]\nbench_test_plugin = bench_test_plugin\n")
    (site / "bench_test_plugin.py").write_text(textwrap.dedent(PLUGIN))
    (site / "bench_conftest_plugin.py").write_text(textwrap.dedent(CONFTEST_PLUGIN))
    return site


def _run(tmp: pathlib.Path, site: pathlib.Path, name: str, *extra: str,
         path: str = "benchmarks") -> tuple[subprocess.CompletedProcess, pathlib.Path]:
    out = tmp / name
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
           "IMPORTANCE_BENCH_CACHE": str(tmp / "cache"), "TF_CPP_MIN_LOG_LEVEL": "2",
           "IMPORTANCE_BENCH_PROGRESS_SECONDS": "0"}
    # The benchmarks use no Hypothesis: not loading its plugin saves each process about 1 s.
    command = [sys.executable, "-m", "pytest", path, "-p", "bench_conftest_plugin",
               "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "--bench-tasks", "planted", "--bench-seeds", "2",
               "--bench-report-dir", str(out), "-k", SELECT, "-q", *extra]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    return result, out


@pytest.fixture(scope="module")
def bench_env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    return tmp, _site(tmp)


@pytest.fixture(scope="module")
def runs(bench_env):
    tmp, site = bench_env
    serial = _run(tmp, site, "serial")  # also fills the task cache the later runs share
    parallel = _run(tmp, site, "xdist", "-n", "2")
    return serial, parallel


@pytest.fixture(scope="module")
def shards(bench_env, runs):
    tmp, site = bench_env  # after `runs`: the task cache is filled
    return [_run(tmp, site, f"shard-{group}", "--splits", "2", "--group", str(group), "-p", "no:xdist")
            for group in (1, 2)]


def _section(text: str, title: str) -> str:
    """A per-task table (collapsible: ``<summary>title``) or a ``## title`` section."""
    if f"<summary>{title}" in text:
        return text.split(f"<summary>{title}", 1)[1].split("</details>", 1)[0]
    return text.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


@pytest.mark.slow
def test_plugin_measures_appear_in_the_leaderboard(runs):
    (result, out), _ = runs
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]  # plugin_broken fails
    assert "leaderboard:" in result.stdout
    text = (out / "leaderboard.md").read_text()
    section = _section(text, "planted.mlp · weight")
    names = [re.split(r"(?<!\\)\|", row)[2].strip() for row in section.splitlines() if row.startswith("| ")][2:]
    assert set(names) == {"plugin\\|pipe", "conftest_plugin", "random", "plugin_broken"}
    assert names[-1] == "plugin_broken"
    assert "failed: RuntimeError: plugin measure exploded \\| on purpose" in section
    ranked = [r for r in section.splitlines() if r.startswith("| ") and "plugin\\|pipe" in r][0]
    assert re.match(r"\| \d \| plugin\\\|pipe \| \d\.\d{3} \|", ranked)
    csv = (out / "results.csv").read_text()
    assert "plugin|pipe,planted" in csv and "conftest_plugin,planted" in csv


@pytest.mark.slow
def test_xdist_run_gives_the_serial_leaderboard(runs):
    (serial, serial_out), (parallel, parallel_out) = runs
    assert parallel.returncode == 1, parallel.stdout[-3000:] + parallel.stderr[-3000:]
    assert (parallel_out / "results.csv").read_text() == (serial_out / "results.csv").read_text()
    assert _stable(parallel_out / "leaderboard.md") == _stable(serial_out / "leaderboard.md")


@pytest.mark.slow
def test_the_selection_is_part_of_the_definition_and_the_history_key(runs):
    """A run of some cases (here ``-k``) never replaces the whole run's records in the history;
    the serial and the xdist run (which differ in ``-n`` only) share one key."""
    keys = []
    for _, out in runs:
        metas = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()
                 if '"kind": "meta"' in line or '"kind":"meta"' in line]
        assert metas, out
        selection = metas[0]["run"]["definition"]["selection"]
        assert selection == {"paths": ["benchmarks"], "keyword": SELECT, "markers": None}
        keys.append({p.name for p in (out / "history").iterdir()})
    assert keys[0] == keys[1] and len(keys[0]) == 1


@pytest.mark.slow
def test_report_from_shards_equals_the_runs_report(runs, tmp_path):
    _, (_, out) = runs
    shards = sorted((out / "out").glob("*/records-*.jsonl"))
    assert len(shards) >= 2, shards  # the controller's meta shard and at least one worker's
    rebuilt = tmp_path / "rebuilt"
    done = subprocess.run([sys.executable, "-m", "reports", *map(str, shards), "--out", str(rebuilt), "--no-plots"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (rebuilt / "leaderboard.md").read_text() == (out / "leaderboard.md").read_text()
    assert (rebuilt / "results.csv").read_text() == (out / "results.csv").read_text()


# TensorFlow's start-up lines, filtered by the root conftest's import hook (the oneDNN notice, absl's
# warning, the CPU-instructions notice); each process would print them at its import otherwise.
STARTUP_NOISE = ("oneDNN custom operations", "absl::InitializeLog", "cpu_feature_guard",
                 "rebuild TensorFlow with the appropriate compiler flags")


@pytest.mark.slow
def test_tensorflow_starts_quietly_in_every_process(runs):
    for result, _ in runs:
        for marker in STARTUP_NOISE:
            assert marker not in result.stderr and marker not in result.stdout, result.stderr[-3000:]


def _stable(path: pathlib.Path) -> str:
    """The leaderboard without what legitimately differs between runs: date, command, timings."""
    text = path.read_text()
    text = re.sub(r"^- \*\*(date|command)\*\*.*$", "", text, flags=re.M)
    return re.sub(r"\d+(\.\d+)? s \|", "T |", text)


@pytest.mark.slow
def test_interrupted_run_of_a_named_file_keeps_a_leaderboard_of_finished_cases(runs, bench_env):
    tmp, site = bench_env
    # Cases run in measure order: random's case finishes, then zz_interrupt "presses Ctrl-C".
    target = "benchmarks/thresholding/test_leaderboard.py"
    result, out = _run(tmp, site, "interrupted", "--bench-seeds", "1", "-k",
                       "random-planted-weight or zz_interrupt-planted-weight", "-p", "no:xdist",
                       path=target)
    # An option pytest did not know would be a usage error (exit code 4) before any case ran.
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]  # interrupted
    assert "leaderboard:" in result.stdout
    text = (out / "leaderboard.md").read_text()  # --bench-report-dir reached the plugin
    section = _section(text, "planted.mlp · weight")
    assert "| 1 | random |" in section
    assert "zz_interrupt" not in section  # it never finished a case
    # One seed (--bench-seeds 1) of the planted task (--bench-tasks): 11 removal levels.
    csv = (out / "results.csv").read_text()
    assert csv.count("random,planted") == 11 and csv.count(",planted") == csv.count("\n") - 1
    meta = next(json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()
                if '"kind": "meta"' in line or '"kind":"meta"' in line)
    assert meta["run"]["definition"]["selection"]["paths"] == [target]


@pytest.mark.slow
def test_shards_merged_equal_the_serial_run(runs, shards, tmp_path):
    (serial, serial_out), _ = runs
    for result, _ in shards:
        assert result.returncode in (0, 1), result.stdout[-3000:] + result.stderr[-3000:]
    counts = [int(re.search(r"(\d+) passed", result.stdout).group(1)) for result, _ in shards]
    assert all(counts), counts  # both shards ran cases
    assert sum(counts) == int(re.search(r"(\d+) passed", serial.stdout).group(1))
    merged = tmp_path / "merged"
    done = subprocess.run([sys.executable, "-m", "reports", *(str(out / "results.jsonl") for _, out in shards),
                           "--out", str(merged), "--no-plots"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (merged / "results.csv").read_text() == (serial_out / "results.csv").read_text()
    assert _stable(merged / "leaderboard.md") == _stable(serial_out / "leaderboard.md")


@pytest.mark.slow
def test_progress_lines_show_under_quiet_serial_and_xdist(runs):
    (serial, _), (parallel, _) = runs
    for result in (serial, parallel):
        total = sum(int(n) for n in re.findall(r"(\d+) (?:passed|failed|skipped)", result.stdout.splitlines()[-1]))
        lines = re.findall(r"^progress (\d+)/(\d+) \(\d+%\) \| (\S+) elapsed, ~(\S+) left \| (.+)$",
                           result.stdout, flags=re.M)
        assert lines, result.stdout[-3000:]
        assert [int(done) for done, *_ in lines] == list(range(1, total + 1))  # interval 0: every test
        assert {int(of) for _, of, *_ in lines} == {total}
        assert lines[-1][3] == "0s"
        assert any(group.startswith("test_case random-planted: done") for *_, group in lines)
    assert re.search(r"^training planted/mlp seed 1: epoch \d+/\d+, \d+s elapsed, ~\d+s left$",
                     serial.stdout, flags=re.M), serial.stdout[-3000:]
