"""Continual-learning metrics from the accuracy matrix R.

``R[i, j]`` is the test accuracy on task ``j`` after training task ``i`` (``T`` tasks, rows and
columns in training order, 0-based here). With ``T`` the last row:

* ``ACC = mean_j R[T, j]``: the average accuracy over all tasks at the end.
* ``BWT = mean_{j < T} (R[T, j] - R[j, j])``: backward transfer, how much learning later tasks
  changed the accuracy on earlier ones (negative = forgetting). Lopez-Paz & Ranzato (2017),
  "Gradient Episodic Memory for Continual Learning", NeurIPS, eq. (2)-(3).
* ``forgetting = mean_{j < T} (max_{l < T} R[l, j] - R[T, j])``: for each old task, the drop
  from its best accuracy before the end. Chaudhry et al. (2018), "Riemannian Walk for
  Incremental Learning: Understanding Forgetting and Intransigence", ECCV, eq. (4)-(5) (their
  ``f_j^k`` at ``k = T``, averaged over ``j < T``).

With a single task, BWT and forgetting are undefined: both return NaN.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def check_matrix(matrix: Any, *, name: str = "R") -> np.ndarray:
    """``matrix`` as a float64 square array of accuracies.

    Accepts nested lists and arrays of any real dtype (``np.float32`` accuracies included).

    Raises:
        ValueError: Unless it is a non-empty square 2-D array of finite accuracies in ``[0, 1]``;
            the message names the first bad entry by its position and value.
        TypeError: Entries that are not numbers.
    """
    try:
        R = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"{name} must be a square matrix of accuracies (tasks x tasks). "
            f"Received: {matrix!r} ({error})"
        ) from None
    if R.ndim != 2 or R.shape[0] != R.shape[1] or R.shape[0] == 0:
        raise ValueError(
            f"{name} must be a non-empty square matrix (tasks x tasks). Received shape: {R.shape}"
        )
    for bad, expected in ((~np.isfinite(R), "finite accuracies"),
                          ((R < 0) | (R > 1), "accuracies in [0, 1]")):
        if bad.any():
            i, j = (int(k) for k in np.argwhere(bad)[0])
            raise ValueError(
                f"{name} must hold {expected}. Received {name}[{i}, {j}] = {float(R[i, j])!r}"
            )
    return R


def average_accuracy(matrix: Any) -> float:
    """ACC: mean accuracy over all tasks after training the last one."""
    return float(check_matrix(matrix)[-1].mean())


def backward_transfer(matrix: Any) -> float:
    """BWT (Lopez-Paz & Ranzato 2017): mean of ``R[T, j] - R[j, j]`` over the old tasks ``j``."""
    R = check_matrix(matrix)
    if len(R) < 2:
        return float("nan")
    old = np.arange(len(R) - 1)
    return float(np.mean(R[-1, old] - R[old, old]))


def forgetting(matrix: Any) -> float:
    """Forgetting (Chaudhry et al. 2018): mean of ``max_{l<T} R[l, j] - R[T, j]`` over ``j < T``."""
    R = check_matrix(matrix)
    if len(R) < 2:
        return float("nan")
    best_before = R[:-1, :-1].max(axis=0)
    return float(np.mean(best_before - R[-1, :-1]))


def summary(matrix: Any) -> dict[str, float]:
    """ACC, BWT and forgetting of one accuracy matrix, by name."""
    return {
        "acc": average_accuracy(matrix),
        "bwt": backward_transfer(matrix),
        "forgetting": forgetting(matrix),
    }
