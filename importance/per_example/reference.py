"""The reference methods of :mod:`importance.per_example`: ``loop`` (one backward pass per
example, what the others are checked against) and ``vmap`` (``tf.vectorized_map`` of the
per-example gradient over the whole model)."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from importance.per_example.layers.scoped_vmap import attention_layers
from importance.per_example.moments import Objective, apply_moment


def _call(objective: Any, outputs: tf.Tensor, targets: Any) -> tf.Tensor:
    return objective(outputs) if targets is None else objective(outputs, targets)


def loop(
    model: Any, x: Any, objective: Objective, moment: str, targets: Any = None
) -> list[tf.Tensor]:
    """Reference: a Python loop with one gradient per example."""
    weights = model.trainable_weights
    totals = [tf.zeros(w.shape, tf.float32) for w in weights]
    x = tf.convert_to_tensor(x)
    if targets is not None:
        targets = tf.nest.map_structure(tf.convert_to_tensor, targets)
    for i in range(int(x.shape[0])):
        rows = (
            None if targets is None else tf.nest.map_structure(lambda t, i=i: t[i : i + 1], targets)
        )
        with tf.GradientTape() as tape:
            value = _call(objective, model(x[i : i + 1], training=False), rows)[0]
        grads = tape.gradient(value, weights, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        totals = [t + apply_moment(g, moment) for t, g in zip(totals, grads, strict=True)]
    return totals


def vmap(
    model: Any, x: Any, objective: Objective, moment: str, targets: Any = None
) -> list[tf.Tensor]:
    """``tf.vectorized_map`` of the per-example gradient, then the moment summed over examples.

    Raises:
        ValueError: The model holds attention layers (vectorising them crashes TensorFlow's
            oneDNN CPU kernels).
    """
    attention = attention_layers(model)
    if attention:
        raise ValueError(
            f"method='vmap' cannot vectorise attention layers (tf.vectorized_map over "
            f"{type(attention[0]).__name__} {attention[0].name!r} crashes TensorFlow's oneDNN CPU "
            "kernels). Received: method='vmap'. Use method='auto' (or 'factorized', or 'loop')."
        )
    weights = model.trainable_weights

    def one(elems: Any) -> list[tf.Tensor]:
        example, target = elems
        rows = None if targets is None else tf.nest.map_structure(lambda t: t[None], target)
        with tf.GradientTape() as tape:
            value = _call(objective, model(example[None], training=False), rows)[0]
        grads = tape.gradient(value, weights, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return [apply_moment(g, moment) for g in grads]

    x = tf.convert_to_tensor(x)
    if targets is None:
        elems = (x, tf.zeros([tf.shape(x)[0]], tf.int32))
    else:
        elems = (x, tf.nest.map_structure(tf.convert_to_tensor, targets))
    per_example = tf.vectorized_map(one, elems)
    return [tf.reduce_sum(g, axis=0) for g in per_example]
