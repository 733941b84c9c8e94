"""Progress lines for long benchmark runs: case group, elapsed time, an estimate of what is left.

A plugin for the process that reports (the only process of a serial run, the controller under
pytest-xdist, which sees every worker's reports). It knows no study: every test in ``benchmarks/``
belongs to a group, and when a test finishes and the last line is old enough, a line like ::

    progress 120/349 (34%) | 2m05s elapsed, ~4m03s left | test_case fisher-mnist5k: 3/9 done

is written to the terminal, also under ``-q`` (``... done (9 tests)`` when that test completes its
group). A group is a test function and the first two dash-separated fields of the parameter id
(``<measure>-<task>`` in ``test_leaderboard.py``, whatever a study puts first elsewhere), or the
test file when the id has fewer fields. The estimate is the elapsed time per finished test times
the tests left, so it is rough while the first models train.

In a serial run the training lines of :func:`tasks.trained` (logger ``tasks.run``, models not in
the cache) are shown the same way; under xdist they stay in the workers' captured logs.

Lines come at most every ``$IMPORTANCE_BENCH_PROGRESS_SECONDS`` seconds (default 30; ``0``: after
every test or epoch; ``off``: none), and always after the last test.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import time
from typing import Any

import pytest

TRAINING_LOGGER = "tasks.run"
INTERVAL_ENV = "IMPORTANCE_BENCH_PROGRESS_SECONDS"
DEFAULT_INTERVAL = 30.0


def group_of(nodeid: str) -> str:
    """The progress group of a test id (xdist's ``@group`` suffix ignored)."""
    path, _, name = nodeid.partition("::")
    name = name.split("@", 1)[0]
    function, _, params = name.partition("[")
    fields = params.rstrip("]").split("-")
    filename = path.rsplit("/", 1)[-1]
    if len(fields) < 2:
        return filename
    return f"{function} {fields[0]}-{fields[1]}"


def format_seconds(seconds: float) -> str:
    """``42s``, ``3m07s``, ``1h02m``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def interval_from_env() -> float | None:
    """Seconds between lines from ``$IMPORTANCE_BENCH_PROGRESS_SECONDS``; None turns lines off."""
    value = os.environ.get(INTERVAL_ENV, "").strip()
    if not value:
        return DEFAULT_INTERVAL
    if value.lower() == "off":
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise pytest.UsageError(
            f"{INTERVAL_ENV} must be a number of seconds >= 0 or 'off'. Received: {value!r}")
    return seconds


class Progress:
    """Counts finished tests per group and writes a progress line when one is due.

    Args:
        config: The pytest config of the reporting process.
        interval: Least seconds between two lines.
        clock: Time source (``time.monotonic``), replaceable for tests.
    """

    def __init__(self, config: pytest.Config, *, interval: float, clock: Any = time.monotonic):
        self.config = config
        self.interval = interval
        self.clock = clock
        self.left: collections.Counter[str] = collections.Counter()
        self.sizes: collections.Counter[str] = collections.Counter()
        self.total = 0
        self.done = 0
        self.started: float | None = None
        self.last_line = 0.0

    def expect(self, nodeids: list[str]) -> None:
        """The run's tests, once collected (again with the same ids: ignored)."""
        if self.total:
            return
        for nodeid in nodeids:
            self.left[group_of(nodeid)] += 1
        self.sizes = collections.Counter(self.left)
        self.total = len(nodeids)
        self.started = self.last_line = self.clock()

    def finished(self, nodeid: str) -> str | None:
        """Count a finished test; the progress line when one is due."""
        group = group_of(nodeid)
        if self.started is None or self.left[group] <= 0:
            return None
        now = self.clock()
        self.done += 1
        self.left[group] -= 1
        if self.done < self.total and now - self.last_line < self.interval:
            return None
        self.last_line = now
        elapsed = now - self.started
        remaining = elapsed / self.done * (self.total - self.done)
        size = self.sizes[group]
        state = f"done ({size} test{'s' * (size != 1)})" if not self.left[group] else f"{size - self.left[group]}/{size} done"
        return (f"progress {self.done}/{self.total} ({100 * self.done // self.total}%) | "
                f"{format_seconds(elapsed)} elapsed, ~{format_seconds(remaining)} left | {group}: {state}")

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if not hasattr(self.config, "workerinput"):
            self.expect([item.nodeid for item in session.items])

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        self.expect(list(ids))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "teardown":
            self.write(self.finished(report.nodeid))

    def training(self, message: str) -> None:
        """A training line from :func:`tasks.trained`, shown when a line is due."""
        now = self.clock()
        if self.started is not None and now - self.last_line >= self.interval:
            self.last_line = now
            self.write(message)

    def write(self, line: str | None) -> None:
        """Write ``line`` to the terminal, also from inside a test (around pytest's capture)."""
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if line is None or reporter is None:
            return
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            if self.config.get_terminal_writer().width_of_current_line:
                reporter.write("\n")  # after -q's dots
            reporter.write_line(line)


class _TrainingLines(logging.Handler):
    """Hands the ``tasks.run`` log records to :meth:`Progress.training`."""

    def __init__(self, progress: Progress):
        super().__init__(logging.INFO)
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        self.progress.training(record.getMessage())


def register(config: pytest.Config) -> None:
    """Register the progress lines in the reporting process (not in xdist workers)."""
    if hasattr(config, "workerinput") or config.option.collectonly:
        return
    interval = interval_from_env()
    if interval is None:
        return
    progress = Progress(config, interval=interval)
    config.pluginmanager.register(progress, "importance-bench-progress")
    if not getattr(config.option, "numprocesses", None):
        handler = _TrainingLines(progress)
        logger = logging.getLogger(TRAINING_LOGGER)
        level = logger.level
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)

        def remove() -> None:
            logger.removeHandler(handler)
            logger.setLevel(level)

        config.add_cleanup(remove)
