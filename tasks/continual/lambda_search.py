"""Choosing the penalty strength lambda on validation data, never on the test split.

For each lambda of a log grid the learner goes back to the same starting point, learns the
remaining tasks with the strategy, and the lambda with the best *validation* ACC (the mean
validation accuracy over all tasks after the last one; validation carved from the training data
by :func:`tasks.continual.learner.prepare_sequence`) wins; ties go to the smaller lambda. The test
accuracy matrix of the winner is what gets reported. The learner is restored to its starting
point afterwards, whatever happens.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from importance.checks import check_choice
from importance.continual import (
    Consolidator,
    available_strategies,
    average_accuracy,
    check_lam,
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
    """

    lam: float
    grid: tuple[float, ...]
    val_acc: list[float]
    R: np.ndarray
    history: Any


def log_grid(low: float, high: float, *, per_decade: int = 2) -> tuple[float, ...]:
    """A log-spaced lambda grid from ``low`` to ``high`` inclusive (rounded to 3 significant digits)."""
    count = int(round(math.log10(high / low) * per_decade)) + 1
    return tuple(float(f"{v:.3g}") for v in np.logspace(math.log10(low), math.log10(high), count))


def search_lambda(
    learner: Any, strategy: str, *, grid: Sequence[float], measure: str | None = None, mode: str = "separate",
    gamma: float = 1.0, omega: dict[int, list[np.ndarray]] | None = None, recorder: Any = None,
) -> LambdaSearch:
    """Learn the learner's remaining tasks once per lambda; keep the best validation ACC.

    Args:
        learner: A :class:`tasks.continual.learner.SequentialLearner` (possibly with finished tasks).
        strategy: A registered strategy name (:func:`importance.continual.available_strategies`);
            one that is not penalised (``naive``, ``joint``) ignores lambda and runs once (its
            grid is ``(0.0,)``).
        grid: Lambdas to try (each finite and ``>= 0``).
        measure, mode, gamma: For :func:`importance.continual.Consolidator`.
        omega: Precomputed importance of finished tasks, reused for every lambda.
        recorder: Trajectory of the last finished task (online measures).

    Raises:
        ValueError: An unknown strategy, an empty grid or a bad lambda (before anything is
            trained).
    """
    check_choice("strategy", strategy, available_strategies())
    grid = tuple(check_lam(v) for v in grid) if get_strategy(strategy).penalised else (0.0,)
    if not grid:
        raise ValueError("grid must hold at least one lambda. Received: an empty grid")
    start = learner.state()
    best, val_acc = None, []
    try:
        for lam in grid:
            learner.set_state(start)
            consolidator = Consolidator(strategy, lam=lam, measure=measure, mode=mode, gamma=gamma)
            learner.learn(consolidator, omega=omega, recorder=recorder)
            val = average_accuracy(learner.accuracy_matrix("validation"))
            val_acc.append(val)
            if best is None or val > best[1]:
                best = (lam, val, learner.accuracy_matrix("test"), learner.history)
    finally:
        learner.set_state(start)
    return LambdaSearch(best[0], grid, val_acc, best[2], best[3])
