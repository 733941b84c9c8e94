"""Choosing the penalty strength lambda on validation data, never on the test split.

For each lambda of a log grid the learner goes back to the same starting point, learns the
remaining tasks with the strategy, and the lambda with the best *validation* ACC (the mean
validation accuracy over all tasks after the last one; validation carved from the training data
by :func:`tasks.continual.learner.prepare_sequence`) wins; ties go to the smaller lambda. The test
accuracy matrix of the winner is what gets reported. The learner is restored to its starting
point afterwards, whatever happens (bitwise: weights, history, progress).

Everything is checked before anything trains: the learner, the strategy and its options (one
:func:`importance.continual.Consolidator` is built up front), the grid (a non-empty sequence of
finite lambdas ``>= 0``; a bare number is refused), ``measure_examples``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from importance.checks import check_choice, check_number, check_positive_int
from importance.continual import (
    Consolidator,
    available_strategies,
    average_accuracy,
    get_strategy,
)


@dataclasses.dataclass
class LambdaSearch:
    """The outcome of a lambda search.

    Attributes:
        lam: The chosen lambda.
        grid: The lambdas tried, in order.
        val_acc: Validation ACC per lambda of ``grid``.
        R: Test accuracy matrix at the chosen lambda.
        history: The learner's tidy history at the chosen lambda.
        measure_seen: Task index -> examples each post-hoc importance was computed on, at the
            chosen lambda (empty for strategies without a measure and online measures).
    """

    lam: float
    grid: tuple[float, ...]
    val_acc: list[float]
    R: np.ndarray
    history: Any
    measure_seen: dict[int, int] = dataclasses.field(default_factory=dict)

    @property
    def at_edge(self) -> str | None:
        """``"low"`` or ``"high"`` when the chosen lambda is the grid's smallest or largest (the
        optimum may lie outside the grid), else None (and None for a one-point grid)."""
        if len(self.grid) < 2:
            return None
        if self.lam == min(self.grid):
            return "low"
        if self.lam == max(self.grid):
            return "high"
        return None


def log_grid(low: float, high: float, *, per_decade: int = 2) -> tuple[float, ...]:
    """A log-spaced lambda grid from ``low`` to ``high`` inclusive (rounded to 3 significant digits).

    Raises:
        ValueError: ``low`` not a finite number > 0, ``high`` not above it, ``per_decade`` not a
            positive integer.
    """
    low = check_number("low", low, minimum=0, strict=True)
    high = check_number("high", high, minimum=low, strict=True)
    check_positive_int("per_decade", per_decade)
    count = int(round(math.log10(high / low) * per_decade)) + 1
    return tuple(float(f"{v:.3g}") for v in np.logspace(math.log10(low), math.log10(high), count))


def check_grid(grid: Any) -> tuple[float, ...]:
    """``grid`` as a tuple of floats.

    Raises:
        ValueError: Not a non-empty sequence of finite numbers ``>= 0`` (a bare number, a string,
            an empty grid), naming the bad entry.
    """
    if isinstance(grid, (str, bytes)) or not isinstance(grid, Iterable):
        raise ValueError("grid must be a non-empty sequence of lambdas (finite numbers >= 0), e.g. "
                         f"log_grid(0.01, 100). Received: {grid!r}")
    values = list(grid)
    if not values:
        raise ValueError("grid must hold at least one lambda. Received: an empty grid")
    out = []
    for i, value in enumerate(values):
        try:
            out.append(check_number("lam", value, minimum=0))
        except ValueError as error:
            raise ValueError(f"{error} (grid[{i}])") from None
    return tuple(out)


def search_lambda(
    learner: Any, strategy: str, *, grid: Sequence[float], measure: str | None = None, mode: str = "separate",
    gamma: float = 1.0, omega: dict[int, list[np.ndarray]] | None = None, recorder: Any = None,
    measure_options: dict[str, Any] | None = None, measure_examples: int | None = None,
) -> LambdaSearch:
    """Learn the learner's remaining tasks once per lambda; keep the best validation ACC.

    Args:
        learner: A :class:`tasks.continual.learner.SequentialLearner` (possibly with finished tasks).
        strategy: A registered strategy name (:func:`importance.continual.available_strategies`);
            one that is not penalised (``naive``, ``joint``) ignores lambda and runs once (its
            grid is ``(0.0,)``).
        grid: Lambdas to try (a non-empty sequence, each finite and ``>= 0``).
        measure, mode, gamma: For :func:`importance.continual.Consolidator`.
        omega: Precomputed importance of finished tasks, reused for every lambda.
        recorder: Trajectory of the last finished task (online measures).
        measure_options: The measure's keyword options (e.g. ``{"labels": "sampled"}``), passed
            to every :func:`importance.compute_importance` call.
        measure_examples: Examples of each task given to a post-hoc measure during the search
            (None: the learner's own setting, by default the whole task); the learner's setting
            is restored afterwards.

    Raises:
        ValueError: An unknown strategy, an empty or malformed grid, a bad lambda, gamma, mode,
            measure or ``measure_examples`` (before anything is trained).
        TypeError: A learner without ``state``/``set_state``/``learn``.
    """
    for method in ("state", "set_state", "learn", "accuracy_matrix"):
        if not callable(getattr(learner, method, None)):
            raise TypeError("learner must be a SequentialLearner (with state, set_state, learn and "
                            f"accuracy_matrix). Received: {type(learner).__name__}")
    check_choice("strategy", strategy, available_strategies())
    grid = check_grid(grid)
    grid = grid if get_strategy(strategy).penalised else (0.0,)
    options = dict(measure=measure, mode=mode, gamma=gamma, measure_options=measure_options)
    Consolidator(strategy, lam=grid[0], **options)  # every option checked before any training
    if measure_examples is not None:
        check_positive_int("measure_examples", measure_examples)
        smallest = min(len(task.train[1]) for task in learner.tasks)
        if measure_examples > smallest:
            raise ValueError(f"measure_examples must be at most the training examples of every "
                             f"task ({smallest}). Received: {measure_examples!r}")
    start, kept = learner.state(), getattr(learner, "measure_examples", None)
    best, val_acc = None, []
    try:
        if measure_examples is not None:
            learner.measure_examples = int(measure_examples)
        for lam in grid:
            learner.set_state(start)
            consolidator = Consolidator(strategy, lam=lam, **options)
            learner.learn(consolidator, omega=omega, recorder=recorder)
            val = average_accuracy(learner.accuracy_matrix("validation"))
            val_acc.append(val)
            if best is None or val > best[1]:
                best = (lam, val, learner.accuracy_matrix("test"), learner.history,
                        dict(getattr(learner, "measure_seen", {})))
    finally:
        if measure_examples is not None:
            learner.measure_examples = kept
        learner.set_state(start)
    return LambdaSearch(best[0], grid, val_acc, best[2], best[3], best[4])
