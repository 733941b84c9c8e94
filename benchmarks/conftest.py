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
import platform
import shutil
import sys
from typing import Any

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))

import _progress  # noqa: E402
import _study  # noqa: E402

_RUN_DIR_KEY = "importance_bench_run_dir"
_KEEP_RUNS = 5


def _report_dir(config: pytest.Config) -> pathlib.Path:
    option = config.getoption("--bench-report-dir", default=None)
    return pathlib.Path(option).resolve() if option else config.rootpath / "reports"


def _worker_id(config: pytest.Config) -> str:
    return config.workerinput["workerid"] if hasattr(config, "workerinput") else "main"


def pytest_configure(config: pytest.Config) -> None:
    plan = _study.make_plan(
        full=config.getoption("--full", default=False),
        seeds=config.getoption("--bench-seeds", default=None),
        tasks=config.getoption("--bench-tasks", default=None),
    )
    if hasattr(config, "workerinput"):
        run_dir = pathlib.Path(config.workerinput[_RUN_DIR_KEY])
    else:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
        run_dir = _report_dir(config) / "out" / f"{stamp}-{os.getpid()}"
        if getattr(config.option, "numprocesses", None) and getattr(config.option, "dist", "") == "load":
            config.option.dist = "loadgroup"
    config._bench_plan = plan  # type: ignore[attr-defined]
    _progress.register(config)
    config._bench_run_dir = run_dir  # type: ignore[attr-defined]
    if config.pluginmanager.hasplugin("xdist") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(_XdistRunDir(run_dir), "importance-bench-xdist")


class _XdistRunDir:
    """Tells every xdist worker where the run's shards go."""

    def __init__(self, run_dir: pathlib.Path):
        self.run_dir = run_dir

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput[_RUN_DIR_KEY] = str(self.run_dir)


def _writer(config: pytest.Config) -> Any:
    from reports import RecordWriter
    from reports.records import meta_record

    if not hasattr(config, "_bench_writer"):
        worker = _worker_id(config)
        config._bench_writer = RecordWriter(  # type: ignore[attr-defined]
            config._bench_run_dir / f"records-{worker}.jsonl", worker=worker
        )
        if worker == "main":
            config._bench_writer.write([meta_record(run=_meta(config))])
    return config._bench_writer


def _meta(config: pytest.Config) -> dict[str, Any]:
    import keras
    import tensorflow as tf

    plan = config._bench_plan
    args = " ".join(config.invocation_params.args)
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": plan.mode, "tensorflow": tf.__version__, "keras": keras.__version__,
        "python": platform.python_version(), "platform": f"{platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs", "command": f"python -m pytest {args}".strip(),
        "seeds": list(plan.seeds), "thresholds": list(plan.thresholds),
    }


@pytest.fixture(scope="session")
def study(pytestconfig: pytest.Config) -> _study.Study:
    """The process-wide memo of trained models, scores and curves."""
    if not hasattr(pytestconfig, "_bench_study"):
        pytestconfig._bench_study = _study.Study(pytestconfig._bench_plan, _writer(pytestconfig))
    return pytestconfig._bench_study


@pytest.fixture(scope="session")
def bench_records(pytestconfig: pytest.Config) -> Any:
    """The record writer of this process (for other benchmark groups' timing records)."""
    return _writer(pytestconfig)


@pytest.fixture(scope="session")
def bench_plan(pytestconfig: pytest.Config) -> _study.Plan:
    """The plan of this run (quick or full, narrowed by --bench-seeds/--bench-tasks)."""
    return pytestconfig._bench_plan


def pytest_sessionstart(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput"):
        _writer(session.config)  # the meta record exists even if no case finishes


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if hasattr(config, "workerinput") or config.option.collectonly:
        return
    import reports

    run_dir: pathlib.Path = config._bench_run_dir
    shards = sorted(run_dir.glob("records-*.jsonl"))
    records = reports.read_records(shards) if shards else []
    if not any(r["kind"] in reports.RESULT_KINDS for r in records):
        config._bench_summary = f"no benchmark case finished; shards (if any) in {run_dir}"
        return
    out = _report_dir(config)
    reports.write_records(out / "results.jsonl", records)
    paths = reports.write_reports(records, out)
    _prune_runs(run_dir.parent)
    rel = _relative(paths["leaderboard"])
    config._bench_summary = (
        f"leaderboard: {rel}\n"
        f"results:     {_relative(paths['results'])} (tidy), {_relative(out / 'results.jsonl')} (records)\n"
        f"plots:       {', '.join(_relative(p) for p in paths['plots']) or '-'}\n"
        f"rebuild:     python -m reports {_relative(out / 'results.jsonl')}"
    )


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    summary = getattr(config, "_bench_summary", None)
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
