"""Sums over examples of per-example gradient moments: sum_i g_i**2 or sum_i |g_i|.

``g_i`` is the gradient, w.r.t. every trainable weight, of a per-example scalar
``objective(outputs)[i]`` where ``outputs`` are the model's outputs on a batch. Fisher
(Kirkpatrick et al. 2017) and MAS (Aljundi et al. 2018) are both such moments; they differ in the
objective and the moment.

Methods:
    ``loop``: one backward pass per example. Slow; the reference the others are checked against.
    ``vmap``: ``tf.vectorized_map`` over examples of the per-example gradient.
    ``factorized``: one backward pass per batch, moments from layer inputs and output gradients
        (see :mod:`importance._factorized`); layers without a closed form are vectorised over
        examples on their own (their weights only).
    ``auto``: ``factorized``, except for models whose layers without a closed form carry the
        cost (only they and small Dense layers hold weights, e.g. an LSTM with a Dense head):
        there the per-layer vectorisation would re-run their forward pass, and ``vmap`` is
        cheaper (:func:`resolve_method` tells which one runs).

``vmap`` refuses models with attention layers: vectorising Keras ``MultiHeadAttention`` over
examples kills the process inside TensorFlow on oneDNN CPU builds (TF 2.21), so it raises a
``ValueError`` up front; ``auto`` and ``factorized`` handle attention without vectorising it.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from importance import _factorized, _layer_paths, _scoped_vmap
from importance._moments import MOMENTS, Objective, apply_moment, check_moment
from importance.checks import check_choice

__all__ = [
    "METHODS",
    "MOMENTS",
    "Objective",
    "check_method",
    "per_example_moment",
    "per_example_moment_sum",
    "resolve_method",
]

METHODS = ("auto", "factorized", "vmap", "loop")


def check_method(method: Any) -> str:
    """``method`` if it is one of :data:`METHODS`.

    Raises:
        ValueError: Naming the bad value and the choices.
    """
    return check_choice("method", method, METHODS)


def resolve_method(model: Any, method: str = "auto") -> str:
    """The method that runs for ``method`` on ``model``: ``auto`` becomes ``factorized`` or
    ``vmap`` (see :func:`importance._layer_paths.whole_model_vmap_is_cheaper`); others are kept.

    Raises:
        ValueError: Unknown method.
    """
    check_method(method)
    if method != "auto":
        return method
    return "vmap" if _layer_paths.whole_model_vmap_is_cheaper(model) else "factorized"


def per_example_moment(
    model: Any,
    x: Any,
    objective: Objective,
    *,
    moment: str = "square",
    method: str = "auto",
    targets: Any = None,
) -> list[tf.Tensor]:
    """Sum over the examples of ``x`` of the per-example gradient moment.

    Args:
        model: A built Keras model.
        x: One batch of inputs.
        objective: Maps the model's outputs on the batch, shape ``(B, ...)``, to one scalar per
            example, shape ``(B,)``. Example ``i``'s value must depend only on example ``i``.
        moment: ``"square"`` for sum_i g_i**2, ``"abs"`` for sum_i |g_i|.
        method: One of ``auto``, ``factorized``, ``vmap``, ``loop``.
        targets: Optional per-example values aligned with ``x`` along axis 0 (e.g. labels). When
            given, the objective is called as ``objective(outputs, targets)`` with the rows of
            ``targets`` that belong to ``outputs`` (the whole batch, or one example).

    Returns:
        One float32 tensor per ``model.trainable_weights`` entry (sums, not means).

    Raises:
        ValueError: Unknown moment or method, or ``method="vmap"`` on a model with attention.
    """
    check_moment(moment)
    method = resolve_method(model, method)
    if method == "factorized":
        return _factorized.per_example_moment(model, x, objective, moment=moment, targets=targets)
    if method == "loop":
        return _loop(model, x, objective, moment, targets)
    attention = _scoped_vmap.attention_layers(model)
    if attention:
        raise ValueError(
            f"method='vmap' cannot vectorise attention layers (tf.vectorized_map over "
            f"{type(attention[0]).__name__} {attention[0].name!r} crashes TensorFlow's oneDNN CPU "
            "kernels). Received: method='vmap'. Use method='auto' (or 'factorized', or 'loop')."
        )
    return _vmap(model, x, objective, moment, targets)


def per_example_moment_sum(
    model: Any, x: Any, objectives: list[Objective], *, moment: str = "square", method: str = "auto"
) -> list[tf.Tensor]:
    """Sum over several objectives of :func:`per_example_moment` on one batch.

    The objectives run one after another (each waits for the previous one's sums), so the peak
    memory is that of one objective; the factorised engine also shares one forward pass between
    them. Used by the exact Fisher (one objective per class).

    Args:
        model: A built Keras model.
        x: One batch of inputs.
        objectives: Functions of the model's outputs, each as ``objective`` of
            :func:`per_example_moment` (without targets).
        moment: ``"square"`` or ``"abs"``.
        method: One of ``auto``, ``factorized``, ``vmap``, ``loop``.

    Returns:
        One float32 tensor per ``model.trainable_weights`` entry.

    Raises:
        ValueError: Unknown moment or method.
    """
    check_moment(moment)
    method = resolve_method(model, method)
    if method == "factorized":
        return _factorized.per_example_moment_sum(model, x, objectives, moment=moment)
    total: list[tf.Tensor] | None = None
    for objective in objectives:
        with tf.control_dependencies(total or []):
            chained = tf.nest.map_structure(tf.identity, x)
            sums = per_example_moment(model, chained, objective, moment=moment, method=method)
        total = sums if total is None else [t + s for t, s in zip(total, sums, strict=True)]
    return total


def _call(objective: Any, outputs: tf.Tensor, targets: Any) -> tf.Tensor:
    return objective(outputs) if targets is None else objective(outputs, targets)


def _loop(model: Any, x: Any, objective: Objective, moment: str, targets: Any = None) -> list[tf.Tensor]:
    """Reference: a Python loop with one gradient per example."""
    weights = model.trainable_weights
    totals = [tf.zeros(w.shape, tf.float32) for w in weights]
    x = tf.convert_to_tensor(x)
    if targets is not None:
        targets = tf.nest.map_structure(tf.convert_to_tensor, targets)
    for i in range(int(x.shape[0])):
        rows = None if targets is None else tf.nest.map_structure(lambda t, i=i: t[i : i + 1], targets)
        with tf.GradientTape() as tape:
            value = _call(objective, model(x[i : i + 1], training=False), rows)[0]
        grads = tape.gradient(value, weights, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        totals = [t + apply_moment(g, moment) for t, g in zip(totals, grads, strict=True)]
    return totals


def _vmap(model: Any, x: Any, objective: Objective, moment: str, targets: Any = None) -> list[tf.Tensor]:
    """``tf.vectorized_map`` of the per-example gradient, then the moment summed over examples."""
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
