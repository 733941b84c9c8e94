"""Memory Aware Synapses (MAS): sensitivity of the output norm to each weight, per example."""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from importance.data import DEFAULT_BATCH_SIZE
from importance.measures.batched import mean_over
from importance.measures.registry import register_measure
from importance.per_example import check_method, per_example_moment


@register_measure("mas")
def mas(
    model: Any,
    data: Any,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    method: str = "auto",
    max_examples: int | None = None,
) -> list[np.ndarray]:
    """MAS importance: mean over examples of |d ||f(x)||^2 / d theta|.

    f(x) is the model's output as the model gives it (logits, or probabilities for a softmax
    model), ||.|| the L2 norm over the output; the absolute gradient is taken per example and
    averaged over the examples. Labels are not used. Reference: Aljundi et al. 2018, "Memory Aware
    Synapses: Learning what (not) to forget" (ECCV).

    Args:
        model: A built Keras model.
        data: ``(x, y)`` arrays (``y`` is ignored) or a batched ``tf.data.Dataset`` of ``(x, y)``.
        batch_size: Examples per batch when ``data`` is arrays.
        method: Per-example gradient method of :func:`importance.per_example.per_example_moment`.
        max_examples: Use only the first ``max_examples`` examples; all when None.

    Returns:
        One float64 array per trainable weight.

    Raises:
        ValueError: A bad option value (named in the message) or empty data.
    """
    check_method(method)

    def batch_sums(model: Any, x: Any, y: Any) -> list[tf.Tensor]:
        """Sums over the batch of |per-example gradient of ||f(x)||^2| (labels unused)."""
        return per_example_moment(model, x, _squared_norm, moment="abs", method=method)

    return mean_over(
        model, data, batch_sums, key=("mas", method), per="example",
        batch_size=batch_size, max_examples=max_examples, eager=method == "loop",
    )


def _squared_norm(outputs: tf.Tensor) -> tf.Tensor:
    """||f(x)||^2 per example, over all output axes."""
    axes = list(range(1, len(outputs.shape)))
    return tf.reduce_sum(tf.square(outputs), axis=axes)

