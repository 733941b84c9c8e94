"""The benchmark session: the run's options parsed once, and what the run holds.

The pytest-benchmark pattern (its ``BenchmarkSession``): one object, built in ``pytest_configure``
from the options (:mod:`benchmarks.plugin.options`), stored in ``config.stash`` and read by the
fixtures and the hooks. Every axis makes its plan from the parsed :class:`RunOptions`
(``make_plan(options)`` in its ``study.py``); the thresholding plan is also the suite's
(:attr:`BenchSession.plan`, the meta record's seeds and thresholds).

At the end of the session (also after Ctrl-C) the controller merges the record shards into
``<report dir>/results.jsonl`` and writes ``leaderboard.md``, ``results.csv`` and ``plots/``
(:meth:`BenchSession.finish`).
"""

from __future__ import annotations

import datetime
import os
import pathlib
import platform
import shutil
from typing import Any

import pytest

from benchmarks.plugin.options import RunOptions
from benchmarks.thresholding import study as thresholding

RUN_DIR_KEY = "importance_bench_run_dir"
LOADGROUP_KEY = "importance_bench_loadgroup"
KEEP_RUNS = 5


class BenchSession:
    """The options of one benchmark run, its plan, its record writer and its study.

    ``options`` are the parsed options (each axis's plan is made from them); ``plan`` is the
    suite's plan (the thresholding axis's, whose seeds and thresholds the meta record names).

    Args:
        config: The pytest config.

    Raises:
        pytest.UsageError: A bad option value (see :meth:`RunOptions.from_config`).
    """

    def __init__(self, config: pytest.Config):
        self.config = config
        self.options = RunOptions.from_config(config)
        self.plan = thresholding.make_plan(self.options)
        option = config.getoption("--bench-report-dir")
        from reports import DEFAULT_OUTPUT_DIR

        self.report_dir = pathlib.Path(option).resolve() if option else config.rootpath / DEFAULT_OUTPUT_DIR
        self.worker = config.workerinput["workerid"] if hasattr(config, "workerinput") else "main"
        self.run_dir: pathlib.Path | None = None  # set by start()
        self.summary: str | None = None
        self._writer: Any = None
        self._study: thresholding.Study | None = None

    def start(self) -> None:
        """Choose the run directory of the record shards (workers take the controller's) and
        group the cases by task under xdist (``--dist loadgroup`` for the default ``load``)."""
        config = self.config
        if hasattr(config, "workerinput"):
            self.run_dir = pathlib.Path(config.workerinput[RUN_DIR_KEY])
            # A worker decides from its own arguments whether to put the group into the test ids
            # (xdist's setup_config), and they lack the loadgroup the controller chose below.
            if config.workerinput.get(LOADGROUP_KEY):
                config.option.loadgroup = True
            _share_the_cores(int(config.workerinput.get("workercount", 1)))
            return
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
        self.run_dir = self.report_dir / "out" / f"{stamp}-{os.getpid()}"
        self.report_dir.mkdir(parents=True, exist_ok=True)  # also for --benchmark-json=results/...
        if getattr(config.option, "numprocesses", None) and getattr(config.option, "dist", "") == "load":
            config.option.dist = "loadgroup"
        if config.pluginmanager.hasplugin("xdist"):
            loadgroup = getattr(config.option, "dist", "") == "loadgroup"
            if loadgroup and "loadscope-reorder" not in " ".join(config.invocation_params.args):
                # Queue the groups in collection order, which benchmarks.plugin.schedule sorts
                # by expected cost; xdist would sort them by their number of cases.
                config.option.loadscopereorder = False
            config.pluginmanager.register(_XdistRunDir(self.run_dir, loadgroup), "importance-bench-xdist")

    @property
    def writer(self) -> Any:
        """This process's :class:`reports.RecordWriter` (the controller writes the meta record)."""
        if self._writer is None:
            from reports import RecordWriter
            from reports.records import meta_record

            self._writer = RecordWriter(self.run_dir / f"records-{self.worker}.jsonl", worker=self.worker)
            if self.worker == "main":
                self._writer.write([meta_record(run=self.meta())])
        return self._writer

    @property
    def study(self) -> thresholding.Study:
        """The process-wide memo of trained models, scores and curves."""
        if self._study is None:
            self._study = thresholding.Study(self.plan, self.writer)
        return self._study

    def meta(self) -> dict[str, Any]:
        """The run facts of the meta record."""
        import keras
        import tensorflow as tf

        args = " ".join(self.config.invocation_params.args)
        return {
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "mode": self.plan.mode,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "python": platform.python_version(),
            "platform": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
            "command": f"python -m pytest {args}".strip(),
            "seeds": list(self.plan.seeds),
            "thresholds": list(self.plan.thresholds),
            "commit": _git_commit(self.config.rootpath),
            "definition": self.definition(),
        }

    def definition(self) -> dict[str, Any]:
        """What makes two runs comparable (:mod:`reports.history`): the options every axis
        plans from, the suite's plan, and each registered measure's declared ``version``
        (a measure whose definition changes on purpose bumps it; 1 when it declares none)."""
        import dataclasses

        from importance.measures.registry import MEASURES

        return {
            "options": dataclasses.asdict(self.options),
            "plan": dataclasses.asdict(self.plan),
            "measures": {name: getattr(entry.fn, "version", 1) for name, entry in MEASURES.items()},
            "selection": self.selection(),
        }

    def selection(self) -> dict[str, Any]:
        """Which cases the command selected (paths, ``-k``, ``-m``): a run of some cases is a
        different benchmark from a run of all of them, so it never replaces the whole run's
        records in the history (:func:`reports.history.store_run`)."""
        config = self.config
        invoked = pathlib.Path(config.invocation_params.dir)
        paths = []
        for arg in config.args:
            path, _, rest = str(arg).partition("::")
            try:
                path = (invoked / path).resolve().relative_to(config.rootpath).as_posix()
            except ValueError:
                pass
            paths.append(path + (f"::{rest}" if rest else ""))
        return {"paths": sorted(paths), "keyword": config.option.keyword or None,
                "markers": config.option.markexpr or None}

    def finish(self) -> None:
        """Merge the shards into ``results.jsonl``, write the reports and set :attr:`summary`
        (the controller, at the end of the session)."""
        import reports
        from reports.history import store_run

        run_dir = self.run_dir
        shards = sorted(run_dir.glob("records-*.jsonl"))
        records = reports.read_records(shards) if shards else []
        if not any(r["kind"] in reports.RESULT_KINDS for r in records):
            self.summary = f"no benchmark case finished; shards (if any) in {run_dir}"
            return
        out = self.report_dir
        reports.write_records(out / "results.jsonl", records)
        paths = reports.write_reports(records, out)
        kept = store_run(records, out)
        _prune_runs(run_dir.parent)
        rel = _relative(paths["leaderboard"])
        self.summary = (
            f"leaderboard: {rel}\n"
            f"results:     {_relative(paths['results'])} (tidy), {_relative(out / 'results.jsonl')} (records)\n"
            f"plots:       {', '.join(_relative(p) for p in paths['plots']) or '-'}\n"
            f"rebuild:     python -m reports {_relative(out / 'results.jsonl')}\n"
            f"kept as:     {_relative(kept)} (compare: python -m reports --compare OLD NEW)"
        )


class _XdistRunDir:
    """Tells every xdist worker where the run's shards go, and whether cases are grouped."""

    def __init__(self, run_dir: pathlib.Path, loadgroup: bool = False):
        self.run_dir = run_dir
        self.loadgroup = loadgroup

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput[RUN_DIR_KEY] = str(self.run_dir)
        node.workerinput[LOADGROUP_KEY] = self.loadgroup


SESSION_KEY = pytest.StashKey[BenchSession]()


def bench_session_of(config: pytest.Config) -> BenchSession:
    """The :class:`BenchSession` of a pytest run (for hooks such as ``pytest_generate_tests``)."""
    return config.stash[SESSION_KEY]


def _relative(path: os.PathLike[str] | str) -> str:
    path = pathlib.Path(path)
    try:
        return str(path.resolve().relative_to(pathlib.Path.cwd()))
    except ValueError:
        return str(path)


def _share_the_cores(workers: int) -> None:
    """Give an xdist worker its share of the cores: TensorFlow's thread pools sized to
    ``cpu_count // workers`` (at least 1) instead of every core each. Without it the workers'
    pools oversubscribe the machine, and a worker's timing and memory probes (the per-example
    bars) swing with what the other worker runs. A no-op once TensorFlow has started its
    runtime (the pools are fixed then)."""
    threads = max(1, (os.cpu_count() or 1) // max(1, workers))
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(2, threads))
    except RuntimeError:  # the runtime is up already: its pools stay as they are
        pass


def _git_commit(root: pathlib.Path) -> str | None:
    """The checked-out commit of ``root`` (None outside a git work tree or without git)."""
    import subprocess

    try:
        result = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def _prune_runs(out_dir: pathlib.Path) -> None:
    runs = sorted((p for p in out_dir.iterdir() if p.is_dir()), key=lambda p: p.name)
    for old in runs[:-KEEP_RUNS]:
        shutil.rmtree(old, ignore_errors=True)
