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



def compiled_loop(
    model: Any, objective: Objective, moment: str, *, example: Any, targets: Any = None
) -> Any:
    """Reference: a compiled function ``(x[, targets]) -> sum_i f(g_i)`` taking one gradient
    per example in a ``tf.while_loop`` (traced once, for any batch size).

    The same per-example quantity as :func:`loop`, through the *compiled* forward pass the
    engine and the measures run: on oneDNN CPU builds the graph rewrites (fused
    convolution + bias + activation) round differently from eager execution, which flips a few
    ReLU masks of deep networks and puts the eager loop 1e-3..3e-2 away from any compiled method
    (ResNet50, MobileNetV2, NASNetMobile; 2e-6 with oneDNN off). Benchmarks measure the engine
    against this and report the eager loop's distance beside it as the float32 floor. Not a
    method of :data:`importance.per_example.METHODS`.

    Args:
        model: A built Keras model.
        objective: As for :func:`loop`.
        moment: ``"square"`` or ``"abs"``.
        example: A batch of inputs like the ones the function will get (for its signature).
        targets: A batch of per-example targets like the ones it will get, or None.
    """
    weights = model.trainable_weights

    def spec(t: Any) -> tf.TensorSpec:
        t = tf.convert_to_tensor(t)
        return tf.TensorSpec([None, *t.shape[1:]], t.dtype)

    def run(x: tf.Tensor, targets: Any = None) -> list[tf.Tensor]:
        def body(i: tf.Tensor, totals: list[tf.Tensor]) -> tuple:
            rows = None if targets is None else tf.nest.map_structure(
                lambda t: t[i : i + 1], targets
            )
            with tf.GradientTape() as tape:
                value = _call(objective, model(x[i : i + 1], training=False), rows)[0]
            grads = tape.gradient(
                value, weights, unconnected_gradients=tf.UnconnectedGradients.ZERO
            )
            grads = [tf.convert_to_tensor(g) for g in grads]
            return i + 1, [t + apply_moment(g, moment) for t, g in zip(totals, grads, strict=True)]

        zeros = [tf.zeros(w.shape, tf.float32) for w in weights]
        _, totals = tf.while_loop(
            lambda i, _: i < tf.shape(x)[0], body, (tf.constant(0), zeros),
            parallel_iterations=1,
        )
        return totals

    signature = [spec(example)]
    if targets is not None:
        signature.append(tf.nest.map_structure(spec, targets))
    return tf.function(run, input_signature=signature, autograph=False)
