"""The benchmark session: every ``--bench-*`` option parsed once, and what the run holds.

The pytest-benchmark pattern (its ``BenchmarkSession``): one object, built in
``pytest_configure`` from the options, stored in ``config.stash`` and read by the fixtures and the
hooks. Bad option values raise ``pytest.UsageError`` before anything runs.

Options (declared in the root ``conftest.py``):

* ``--quick`` (the default) / ``--full``: which plan (:func:`_study.make_plan`): seeds,
  thresholds, tasks, treatments, and the rounds of the timing groups.
* ``--bench-seeds N``: seeds ``0 .. N-1`` (N >= 1).
* ``--bench-tasks NAMES``: comma-separated ``task`` or ``task.variant``.
* ``--bench-report-dir DIR``: where the leaderboard, results and plots go.
"""

from __future__ import annotations

import datetime
import os
import pathlib
import platform
from typing import Any

import _study
import pytest


class BenchSession:
    """The options of one benchmark run, its plan, its record writer and its study.

    ``plan`` is the suite's plan; ``requested_seeds`` and ``requested_tasks`` are ``--bench-seeds``
    and ``--bench-tasks`` as parsed (None when not given), for the studies that choose their own
    seeds or tasks by default and honour these options when they are given.

    Args:
        config: The pytest config.

    Raises:
        pytest.UsageError: ``--quick`` with ``--full``, a ``--bench-seeds`` below 1, or an empty
            or malformed ``--bench-tasks`` entry.
    """

    def __init__(self, config: pytest.Config):
        self.config = config
        full, quick = config.getoption("--full"), config.getoption("--quick")
        if full and quick:
            raise pytest.UsageError("--quick and --full exclude each other.")
        seeds = config.getoption("--bench-seeds")
        if seeds is not None and seeds < 1:
            raise pytest.UsageError(f"--bench-seeds must be at least 1. Received: {seeds}")
        tasks = _parse_tasks(config.getoption("--bench-tasks"))
        # As given (None: not given), for studies with their own defaults (saliency, CAM training).
        self.requested_seeds: int | None = seeds
        self.requested_tasks: tuple[tuple[str, str | None], ...] | None = tasks
        self.plan = _study.make_plan(full=full, seeds=seeds, tasks=tasks)
        option = config.getoption("--bench-report-dir")
        from reports import DEFAULT_OUTPUT_DIR

        self.report_dir = pathlib.Path(option).resolve() if option else config.rootpath / DEFAULT_OUTPUT_DIR
        self.worker = config.workerinput["workerid"] if hasattr(config, "workerinput") else "main"
        self.run_dir: pathlib.Path | None = None  # set by the controller or the xdist worker input
        self.summary: str | None = None
        self._writer: Any = None
        self._study: _study.Study | None = None

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
    def study(self) -> _study.Study:
        """The process-wide memo of trained models, scores and curves."""
        if self._study is None:
            self._study = _study.Study(self.plan, self.writer)
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
        }


SESSION_KEY = pytest.StashKey[BenchSession]()


def bench_session_of(config: pytest.Config) -> BenchSession:
    """The :class:`BenchSession` of a pytest run (for hooks such as ``pytest_generate_tests``)."""
    return config.stash[SESSION_KEY]


def _parse_tasks(text: str | None) -> tuple[tuple[str, str | None], ...] | None:
    """``"planted,mnist5k.cnn"`` -> ``(("planted", None), ("mnist5k", "cnn"))``; None if not given."""
    if not text:
        return None
    chosen = []
    for item in text.split(","):
        name, _, variant = item.strip().partition(".")
        if not name:
            raise pytest.UsageError(f"--bench-tasks entries must be task or task.variant. Received: {text!r}")
        chosen.append((name, variant or None))
    return tuple(chosen)
