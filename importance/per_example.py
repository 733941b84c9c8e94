"""Sums over examples of per-example gradient moments: sum_i g_i**2 or sum_i |g_i|.

``g_i`` is the gradient, w.r.t. every trainable weight, of a per-example scalar
``objective(outputs)[i]`` where ``outputs`` are the model's outputs on a batch. Fisher
(Kirkpatrick et al. 2017) and MAS (Aljundi et al. 2018) are both such moments; they differ in the
objective and the moment.

Methods:
    ``loop``: one backward pass per example. Slow; the reference the others are checked against.
    ``vmap``: ``tf.vectorized_map`` over examples of the per-example gradient.
    ``factorized``: one backward pass per batch, moments from layer inputs and output gradients
        (see :mod:`importance._factorized`); other layers fall back to ``vmap``.
    ``auto``: ``factorized`` when available, else ``vmap``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

Objective = Callable[[tf.Tensor], tf.Tensor]
MOMENTS = ("square", "abs")
METHODS = ("auto", "factorized", "vmap", "loop")


def per_example_moment(
    model: Any,
    x: Any,
    objective: Objective,
    *,
    moment: str = "square",
    method: str = "auto",
) -> list[tf.Tensor]:
    """Sum over the examples of ``x`` of the per-example gradient moment.

    Args:
        model: A built Keras model.
        x: One batch of inputs.
        objective: Maps the model's outputs on the batch, shape ``(B, ...)``, to one scalar per
            example, shape ``(B,)``. Example ``i``'s value must depend only on example ``i``.
        moment: ``"square"`` for sum_i g_i**2, ``"abs"`` for sum_i |g_i|.
        method: One of ``auto``, ``factorized``, ``vmap``, ``loop``.

    Returns:
        One float32 tensor per ``model.trainable_weights`` entry (sums, not means).

    Raises:
        ValueError: Unknown moment or method.
    """
    if moment not in MOMENTS:
        raise ValueError(f"moment must be one of {MOMENTS}. Received: {moment!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}. Received: {method!r}")
    if method in ("auto", "factorized"):
        try:
            from importance import _factorized
        except ImportError:
            if method == "factorized":
                raise
            method = "vmap"
        else:
            return _factorized.per_example_moment(model, x, objective, moment=moment)
    if method == "loop":
        return _loop(model, x, objective, moment)
    return _vmap(model, x, objective, moment)


def _apply_moment(grad: tf.Tensor, moment: str) -> tf.Tensor:
    return tf.square(grad) if moment == "square" else tf.abs(grad)


def _loop(model: Any, x: Any, objective: Objective, moment: str) -> list[tf.Tensor]:
    """Reference: a Python loop with one gradient per example."""
    weights = model.trainable_weights
    totals = [tf.zeros(w.shape, tf.float32) for w in weights]
    x = tf.convert_to_tensor(x)
    for i in range(int(x.shape[0])):
        with tf.GradientTape() as tape:
            value = objective(model(x[i : i + 1], training=False))[0]
        grads = tape.gradient(value, weights, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        totals = [t + _apply_moment(g, moment) for t, g in zip(totals, grads)]
    return totals


def _vmap(model: Any, x: Any, objective: Objective, moment: str) -> list[tf.Tensor]:
    """``tf.vectorized_map`` of the per-example gradient, then the moment summed over examples."""
    weights = model.trainable_weights

    def one(example: tf.Tensor) -> list[tf.Tensor]:
        with tf.GradientTape() as tape:
            value = objective(model(example[None], training=False))[0]
        grads = tape.gradient(value, weights, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return [_apply_moment(g, moment) for g in grads]

    per_example = tf.vectorized_map(one, tf.convert_to_tensor(x))
    return [tf.reduce_sum(g, axis=0) for g in per_example]
