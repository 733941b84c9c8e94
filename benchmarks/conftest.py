"""The benchmark suite's pytest plugin: its options, hooks and shared fixtures.

The machinery lives in :mod:`benchmarks.plugin`; this file wires it into pytest.

* The options (``--quick``/``--full``, ``--bench-seeds``, ``--bench-tasks``,
  ``--bench-report-dir``) are declared here (:func:`benchmarks.plugin.options.add_options`).
  pytest reads a ``pytest_addoption`` only from an initial conftest: this file is one whenever
  ``benchmarks`` or a path inside it is on the command line (``pytest benchmarks``,
  ``pytest benchmarks/thresholding/test_leaderboard.py``, ``./run bench``, ``tox -e bench``).
* Records (JSON lines) are appended and flushed per finished case into
  ``<report dir>/out/<run>/records-<worker>.jsonl``: one shard per pytest-xdist worker
  (``records-main.jsonl`` when serial). An interrupted run keeps every finished case.
* At the end of the session (also after Ctrl-C) the controller merges the shards into
  ``<report dir>/results.jsonl`` and writes ``leaderboard.md``, ``results.csv`` and
  ``plots/`` atomically, then prints where the leaderboard is.
* Under xdist (``./run bench`` uses ``-n auto`` by default) the cases are grouped
  (``--dist loadgroup`` when ``-n`` is given with the default distribution): by task on the
  thresholding and saliency axes, one per consolidation scenario, and one per remaining axis
  folder (``per_example``: its timing cases never overlap each other; ``cam_training``: its
  models are trained once), so each worker trains or loads only the models it needs. A model two
  workers need anyway is trained once: the task cache locks an entry while one process trains
  it. The groups are queued longest first (:mod:`benchmarks.plugin.schedule`).
"""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.plugin import progress, schedule
from benchmarks.plugin.options import RunOptions, add_options
from benchmarks.plugin.session import SESSION_KEY, BenchSession, bench_session_of
from benchmarks.thresholding.study import Study


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.hasplugin("xdist"):  # -p no:xdist: cases marked with a group still collect
        config.addinivalue_line("markers", "xdist_group(name): the pytest-xdist group of a case")
    session = BenchSession(config)
    session.start()
    config.stash[SESSION_KEY] = session
    progress.register(config)


@pytest.fixture(scope="session")
def bench_session(pytestconfig: pytest.Config) -> BenchSession:
    """The benchmark session: parsed options, plan, record writer, study."""
    return bench_session_of(pytestconfig)


@pytest.fixture(scope="session")
def bench_options(bench_session: BenchSession) -> RunOptions:
    """The run's options (mode, --bench-seeds, --bench-tasks), from which each axis plans."""
    return bench_session.options


@pytest.fixture(scope="session")
def study(bench_session: BenchSession) -> Study:
    """The process-wide memo of trained models, scores and curves."""
    return bench_session.study


@pytest.fixture(scope="session")
def bench_records(bench_session: BenchSession) -> Any:
    """The record writer of this process (for other benchmark groups' timing records)."""
    return bench_session.writer


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    """No reseed before each case (this overrides the root conftest's fixture of that name).

    The cases seed what they draw from themselves, explicitly (the studies' ``seed`` options and
    their ``_seed_globals`` before a model is loaded or a measure computed), so that results do
    not depend on which case, or which xdist worker, asks first. A reseed would also set
    TensorFlow's seed, which clears its kernel cache: every case would then instantiate its
    compiled functions again (about 13 ms for one evaluation function of the mnist5k MLP)."""


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> Any:
    """Under xdist, a case without an ``xdist_group`` joins its axis folder's group (before
    xdist's own hook reads the groups), and the groups are queued longest first
    (:mod:`benchmarks.plugin.schedule`); after it, a worker makes sure the group is in the id."""
    grouped = config.pluginmanager.hasplugin("xdist")
    if grouped:
        for item in items:
            if item.get_closest_marker("xdist_group") is None and item.path.parent.name != "benchmarks":
                item.add_marker(pytest.mark.xdist_group(item.path.parent.name))
        if hasattr(config, "workerinput"):  # every worker collects, in the same order
            schedule.longest_groups_first(items)
    result = yield
    if grouped and hasattr(config, "workerinput") and config.getvalue("loadgroup"):
        _put_groups_in_ids(items)
    return result


def _put_groups_in_ids(items: list[pytest.Item]) -> None:
    """xdist's ``loadgroup`` tells the controller an item's group by an ``@<group>`` suffix of its
    id, which it sets through ``item._nodeid``; pytest >= 9.2 keeps the id in ``item._id`` (a
    ``NodeId``), so the suffix is lost and every case is scheduled alone (pytest-xdist#1386).
    Where the suffix is missing, set it the way xdist does."""
    for item in items:
        names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                        for m in item.iter_markers("xdist_group")})
        nodeid = item.nodeid
        if not names or nodeid.rfind("@") > nodeid.rfind("]"):
            continue  # no group, or xdist set it
        grouped_id = f"{nodeid}@{'_'.join(names)}"
        node_id = getattr(item, "_id", None)
        if node_id is not None and hasattr(type(node_id), "parse"):
            item._id = type(node_id).parse(grouped_id)
        else:
            item._nodeid = grouped_id


def pytest_sessionstart(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput"):
        bench_session_of(session.config).writer  # noqa: B018 - the meta record exists even if no case finishes


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if hasattr(config, "workerinput") or config.option.collectonly:
        return
    bench_session_of(config).finish()


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    summary = bench_session_of(config).summary if SESSION_KEY in config.stash else None
    if summary:
        terminalreporter.write_sep("=", "importance-bench leaderboard")
        for line in summary.splitlines():
            terminalreporter.write_line(line)
