"""Benchmark session: the plan, shared fixtures, result records and the leaderboard at the end.

* Records (JSON lines) are appended and flushed per finished case into
  ``<report dir>/out/<run>/records-<worker>.jsonl``: one shard per pytest-xdist worker
  (``records-main.jsonl`` when serial). An interrupted run keeps every finished case.
* At the end of the session (also after Ctrl-C) the controller merges the shards into
  ``<report dir>/results.jsonl`` and writes ``leaderboard.md``, ``results.csv`` and
  ``plots/`` atomically, then prints where the leaderboard is.
* Under xdist the cases are grouped by task (``--dist loadgroup`` when ``-n`` is given with the
  default distribution), so each worker trains or loads only the models it needs.
"""

from __future__ import annotations

import datetime
import os
import pathlib
import shutil
import sys
from typing import Any

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))

import _progress  # noqa: E402
import _study  # noqa: E402
from _session import SESSION_KEY, BenchSession, bench_session_of  # noqa: E402

_RUN_DIR_KEY = "importance_bench_run_dir"
_KEEP_RUNS = 5


def pytest_configure(config: pytest.Config) -> None:
    session = BenchSession(config)
    if hasattr(config, "workerinput"):
        session.run_dir = pathlib.Path(config.workerinput[_RUN_DIR_KEY])
    else:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
        session.run_dir = session.report_dir / "out" / f"{stamp}-{os.getpid()}"
        session.report_dir.mkdir(parents=True, exist_ok=True)  # also for --benchmark-json=results/...
        if getattr(config.option, "numprocesses", None) and getattr(config.option, "dist", "") == "load":
            config.option.dist = "loadgroup"
    config.stash[SESSION_KEY] = session
    _progress.register(config)
    if config.pluginmanager.hasplugin("xdist") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(_XdistRunDir(session.run_dir), "importance-bench-xdist")


class _XdistRunDir:
    """Tells every xdist worker where the run's shards go."""

    def __init__(self, run_dir: pathlib.Path):
        self.run_dir = run_dir

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput[_RUN_DIR_KEY] = str(self.run_dir)


@pytest.fixture(scope="session")
def bench_session(pytestconfig: pytest.Config) -> BenchSession:
    """The benchmark session: parsed options, plan, record writer, study."""
    return bench_session_of(pytestconfig)


@pytest.fixture(scope="session")
def study(bench_session: BenchSession) -> _study.Study:
    """The process-wide memo of trained models, scores and curves."""
    return bench_session.study


@pytest.fixture(scope="session")
def bench_records(bench_session: BenchSession) -> Any:
    """The record writer of this process (for other benchmark groups' timing records)."""
    return bench_session.writer


@pytest.fixture(scope="session")
def bench_plan(bench_session: BenchSession) -> _study.Plan:
    """The plan of this run (quick or full, narrowed by --bench-seeds/--bench-tasks)."""
    return bench_session.plan


def pytest_sessionstart(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput"):
        bench_session_of(session.config).writer  # noqa: B018 - the meta record exists even if no case finishes


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if hasattr(config, "workerinput") or config.option.collectonly:
        return
    import reports

    bench = bench_session_of(config)
    run_dir = bench.run_dir
    shards = sorted(run_dir.glob("records-*.jsonl"))
    records = reports.read_records(shards) if shards else []
    if not any(r["kind"] in reports.RESULT_KINDS for r in records):
        bench.summary = f"no benchmark case finished; shards (if any) in {run_dir}"
        return
    out = bench.report_dir
    reports.write_records(out / "results.jsonl", records)
    paths = reports.write_reports(records, out)
    _prune_runs(run_dir.parent)
    rel = _relative(paths["leaderboard"])
    bench.summary = (
        f"leaderboard: {rel}\n"
        f"results:     {_relative(paths['results'])} (tidy), {_relative(out / 'results.jsonl')} (records)\n"
        f"plots:       {', '.join(_relative(p) for p in paths['plots']) or '-'}\n"
        f"rebuild:     python -m reports {_relative(out / 'results.jsonl')}"
    )


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    summary = bench_session_of(config).summary if SESSION_KEY in config.stash else None
    if summary:
        terminalreporter.write_sep("=", "importance-bench leaderboard")
        for line in summary.splitlines():
            terminalreporter.write_line(line)


def _relative(path: os.PathLike[str] | str) -> str:
    path = pathlib.Path(path)
    try:
        return str(path.resolve().relative_to(pathlib.Path.cwd()))
    except ValueError:
        return str(path)


def _prune_runs(out_dir: pathlib.Path) -> None:
    runs = sorted((p for p in out_dir.iterdir() if p.is_dir()), key=lambda p: p.name)
    for old in runs[:-_KEEP_RUNS]:
        shutil.rmtree(old, ignore_errors=True)
