"""The one batch loop of the pruning criteria: sum a per-batch computation over the data.

``sum_over_batches(data, step)`` runs ``step(x, y) -> list of tensors`` on every batch of
``data`` (through :func:`importance.data.iter_batches`) and returns the element-wise sums in
float64 with the number of examples seen. The criteria of :mod:`importance.measures.taylor` and
:mod:`importance.measures.activation` write their per-batch work as such ``step`` closures, so
this loop can be replaced by the library's shared batch loop without touching them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from importance.data import DEFAULT_BATCH_SIZE, iter_batches

Step = Callable[[tf.Tensor, tf.Tensor], list[Any]]


def sum_over_batches(
    data: Any,
    step: Step,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_examples: int | None = None,
) -> tuple[list[np.ndarray], int]:
    """Sums over the batches of ``data`` of ``step(x, y)``, and the number of examples.

    ``step`` is compiled once per call (``tf.function``); it returns one tensor per quantity,
    already summed over its batch.

    Args:
        data: ``(x, y)`` arrays or a batched ``tf.data.Dataset`` of ``(x, y)``.
        step: ``(x, y) -> list of tensors`` for one batch.
        batch_size: Examples per batch when ``data`` is arrays.
        max_examples: Use only the first ``max_examples`` examples; all when None.

    Returns:
        ``(sums, count)``: one float64 array per tensor ``step`` returns, and the example count.

    Raises:
        ValueError: Data with no examples, or a bad ``batch_size``/``max_examples``.
    """
    compiled = tf.function(step, reduce_retracing=True, autograph=False)
    totals: list[np.ndarray] | None = None
    count = 0
    for x, y in iter_batches(data, batch_size=batch_size, max_examples=max_examples):
        sums = [np.asarray(s, dtype=np.float64) for s in compiled(x, y)]
        totals = sums if totals is None else [t + s for t, s in zip(totals, sums, strict=True)]
        count += int(y.shape[0])
    return totals, count
