"""The benchmark options: declared here, parsed and checked once into :class:`RunOptions`.

:func:`add_options` is called from ``benchmarks/conftest.py`` (pytest-benchmark declares its
options in its plugin the same way); :meth:`RunOptions.from_config` parses them for the session.
Bad values raise ``pytest.UsageError`` before anything runs.

* ``--quick`` (the default) / ``--full``: the size of every axis's plan (seeds, thresholds, tasks,
  treatments, the rounds of the timing groups).
* ``--bench-seeds N``: seeds ``0 .. N-1`` (N >= 1).
* ``--bench-tasks NAMES``: comma-separated ``task`` or ``task.variant``.
* ``--bench-report-dir DIR``: where the leaderboard, results and plots go.
* ``--bench-model FILE`` with ``--bench-data FILE``: a trained model (``.keras``) and its data
  (``.npz`` with ``x_train, y_train, x_test, y_test``) become a task (:func:`tasks.from_model`,
  named after the file) that the removal and explanation axes run on, in place of their default
  tasks (beside those of ``--bench-tasks`` when given). See ``docs/your_model.md``.
"""

from __future__ import annotations

import dataclasses

import pytest


def add_options(parser: pytest.Parser) -> None:
    """Declare the benchmark options (``--quick``/``--full``, ``--bench-*``)."""
    group = parser.getgroup("importance-bench")
    group.addoption(
        "--full",
        action="store_true",
        default=False,
        help="Run the full study (more seeds, finer thresholds, bigger tasks when available).",
    )
    group.addoption(
        "--quick",
        action="store_true",
        default=False,
        help="Run the quick study: 3 seeds, thresholds in tenths, the 4 offline tasks, fewer "
        "timing rounds (the default; excludes --full).",
    )
    group.addoption(
        "--bench-seeds",
        type=int,
        default=None,
        metavar="N",
        help="Benchmarks: number of seeds (0 .. N-1); default 3 quick, 5 full.",
    )
    group.addoption(
        "--bench-tasks",
        default=None,
        metavar="NAMES",
        help="Benchmarks: comma-separated tasks (task or task.variant), e.g. planted,mnist5k.cnn; "
        "default: the mode's tasks.",
    )
    group.addoption(
        "--bench-report-dir",
        default=None,
        metavar="DIR",
        help="Benchmarks: where leaderboard.md, results.csv/.jsonl and plots go (default: results/).",
    )
    group.addoption(
        "--bench-model",
        default=None,
        metavar="FILE",
        help="Benchmarks: a trained Keras classifier (.keras) to rank the measures on, as a task "
        "named after the file (needs --bench-data; see docs/your_model.md).",
    )
    group.addoption(
        "--bench-data",
        default=None,
        metavar="FILE",
        help="Benchmarks: the data of --bench-model, an .npz with x_train, y_train, x_test, "
        "y_test.",
    )


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """The run's options as given, from which every axis makes its plan.

    Attributes:
        mode: ``"quick"`` or ``"full"``.
        seeds: ``--bench-seeds`` (None when not given: each axis has its own default).
        tasks: ``--bench-tasks`` as ``(task, variant)`` pairs (None when not given), the
            ``--bench-model`` task first.
        user_task: Name of the ``--bench-model`` task (None when not given).
    """

    mode: str
    seeds: int | None = None
    tasks: tuple[tuple[str, str | None], ...] | None = None
    user_task: str | None = None

    @property
    def full(self) -> bool:
        """Whether this is the full study."""
        return self.mode == "full"

    def seed_range(self, default: int) -> tuple[int, ...]:
        """Seeds ``0 .. N-1``: N from ``--bench-seeds`` when given, else ``default``."""
        return tuple(range(self.seeds if self.seeds is not None else default))

    @classmethod
    def from_config(cls, config: pytest.Config) -> RunOptions:
        """Parse and check the options.

        Raises:
            pytest.UsageError: ``--quick`` with ``--full``, a ``--bench-seeds`` below 1, or an
                empty or malformed ``--bench-tasks`` entry, ``--bench-model`` without
                ``--bench-data`` (or the reverse), or a model or data that
                :func:`tasks.from_model` refuses (the message names the file and the value).
        """
        full, quick = config.getoption("--full"), config.getoption("--quick")
        if full and quick:
            raise pytest.UsageError("--quick and --full exclude each other.")
        seeds = config.getoption("--bench-seeds")
        if seeds is not None and seeds < 1:
            raise pytest.UsageError(f"--bench-seeds must be at least 1. Received: {seeds}")
        tasks = _parse_tasks(config.getoption("--bench-tasks"))
        user_task = _user_task(config.getoption("--bench-model"), config.getoption("--bench-data"))
        if user_task is not None:
            tasks = ((user_task, None), *(tasks or ()))
        return cls("full" if full else "quick", seeds, tasks, user_task)


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


def _user_task(model: str | None, data: str | None) -> str | None:
    """Register ``--bench-model`` with ``--bench-data`` as a task; its name (None if not given)."""
    if model is None and data is None:
        return None
    if model is None or data is None:
        given, missing = ("--bench-model", "--bench-data")
        if model is None:
            given, missing = missing, given
        raise pytest.UsageError(
            f"{given} needs {missing}. Received: {given} {model or data!r} alone"
        )
    import tasks
    from tasks.registry import TASKS

    try:
        task = tasks.from_model(model, data=data, register=False)
        known = tasks.get_task(task.name) if task.name in TASKS.names() else None
        if getattr(known, "source", None) == task.source:
            tasks.unregister_task(task.name)  # the same file, parsed again in this process
        return tasks.register_task(task).name
    except (OSError, ValueError, TypeError) as error:
        raise pytest.UsageError(f"--bench-model {model!r} --bench-data {data!r}: {error}") from None
