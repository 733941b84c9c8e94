"""The batch loop of the data-driven measures: one compiled step per model, float64 sums.

A measure hands over a closure ``batch_sums(model, x, y[, seed_pair], *extra)`` that returns a
list of tensors (usually one per trainable weight) summed over one batch: ``seed_pair`` when the
measure is seeded, ``extra`` the per-call constant tensors it needs (e.g. a gradient or probe
vectors), passed as step arguments so that one compiled graph serves every call with new values.
:func:`sum_over` compiles it once per model (and per set of trainable weights), runs it over the
batches of the data and accumulates the results in float64; :func:`mean_over` divides by the
number of examples or of batches. Fisher, its minibatch shortcut, MAS and the pruning criteria
(snip, grasp, hessian_diag, wanda) all run on it.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable, Iterator
from typing import Any

import numpy as np
import tensorflow as tf

from importance.checks import check_choice
from importance.data import DEFAULT_BATCH_SIZE, iter_batches
from importance.validation import (
    batch_problems,
    check_flagged_batch,
    checked_classes,
    graph_checkable,
)

PER = ("example", "batch")

_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def compiled(
    model: Any, batch_fn: Callable[..., Any], *, key: Hashable, eager: bool = False
) -> Callable[..., Any]:
    """``(*tensors) -> batch_fn(model, *tensors)``, compiled once and cached per model.

    Args:
        model: A built Keras model; the cache holds it weakly.
        batch_fn: ``batch_fn(model, *tensors)``; it must not capture the model itself.
        key: What identifies ``batch_fn`` and its configuration (e.g. ``("mas", method)``): the
            first function given under a key is the one cached.
        eager: Run eagerly (for slow references that loop in Python).
    """
    cache = _COMPILED.setdefault(model, {})
    # A traced graph returns one result per weight it saw: retrace if the trainable set changes.
    full_key = (key, eager, tuple(id(w) for w in model.trainable_weights))
    if full_key not in cache:
        model_ref = weakref.ref(model)  # the cache must not keep the model alive

        def step(*tensors: Any) -> Any:
            return batch_fn(model_ref(), *tensors)

        cache[full_key] = step if eager else tf.function(step, reduce_retracing=True, autograph=False)
    return cache[full_key]


def seeded_batches(
    data: Any, *, seed: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
    max_examples: int | None = None, check: bool = True,
) -> Iterator[tuple[Any, ...]]:
    """``(x, y)`` batches, with the stateless seed pair ``(seed, b)`` of batch ``b`` appended
    when ``seed`` is given (``check`` as for :func:`importance.data.iter_batches`)."""
    batches = iter_batches(data, batch_size=batch_size, max_examples=max_examples, check=check)
    for index, (x, y) in enumerate(batches):
        yield (x, y) if seed is None else (x, y, tf.constant([seed, index], tf.int64))


def sum_over(
    model: Any,
    data: Any,
    batch_sums: Callable[..., list[Any]],
    *,
    key: Hashable,
    per: str = "example",
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_examples: int | None = None,
    seed: int | None = None,
    extra: tuple[Any, ...] = (),
    eager: bool = False,
) -> tuple[list[np.ndarray], int]:
    """Sum ``batch_sums`` over the batches of ``data`` in float64; also count the examples.

    The data is checked once per call, never per batch in Python: arrays whole (or not again,
    when :func:`importance.compute_importance` already did), a dataset's batches inside the
    compiled step (:func:`importance.validation.batch_problems`: finiteness and labels, in the
    same graph as the sums). A bad batch raises, naming the example, before any result is
    returned. The step's float32 sums are added into float64 totals in place, on the host.

    Args:
        model: A built Keras model.
        data: ``(x, y)`` or a batched ``tf.data.Dataset`` (see :func:`importance.data.iter_batches`).
        batch_sums: ``batch_sums(model, x, y[, seed_pair], *extra)`` -> a list of tensors.
        key: Cache key of ``batch_sums`` and its configuration (see :func:`compiled`); it must
            not depend on the values of ``extra``, which are arguments of the compiled step.
        per: What is counted: ``"example"`` the examples, ``"batch"`` the batches.
        batch_size: Examples per batch when ``data`` is arrays.
        max_examples: Use only the first ``max_examples`` examples; all when None.
        seed: When given, batch ``b`` also receives the stateless seed pair ``(seed, b)``.
        extra: Per-call constant tensors (or nested lists of them), appended to every batch's
            arguments.
        eager: Run ``batch_sums`` eagerly (see :func:`compiled`).

    Returns:
        ``(sums, count)``: one float64 array per tensor ``batch_sums`` returns, and the number
        of examples or of batches.

    Raises:
        ValueError: A non-finite input or a bad label in a dataset's batch (naming the example).
    """
    check_choice("per", per, PER)
    in_step = isinstance(data, tf.data.Dataset) and graph_checkable(data)
    classes = checked_classes()
    step = compiled(
        model, _checking(batch_sums, classes) if in_step else batch_sums,
        key=(key, "checked", classes) if in_step else key, eager=eager,
    )
    totals: list[np.ndarray] | None = None
    count = examples = 0
    batches = seeded_batches(
        data, seed=seed, batch_size=batch_size, max_examples=max_examples, check=not in_step
    )
    for batch in batches:
        outputs = call(step, (*batch, *extra))
        if in_step:
            outputs, first = outputs
            if int(first) >= 0:
                check_flagged_batch(batch[0], batch[1], start=examples)
        # Float32 sums of the step, added into float64 totals in place: NumPy widens each
        # value as it adds (buffered), so neither TensorFlow nor NumPy holds a float64 copy of
        # a batch's sums (for ResNet50 that copy was 180 MiB, 1.35x a plain pass's peak).
        arrays = [np.asarray(s) for s in outputs]
        if totals is None:
            totals = [a.astype(np.float64) for a in arrays]  # a writable copy
        else:
            for total, array in zip(totals, arrays, strict=True):
                np.add(total, array, out=total)
        size = int(batch[1].shape[0])
        examples += size
        count += size if per == "example" else 1
    return totals, count


def call(step: Callable[..., Any], arguments: tuple[Any, ...]) -> Any:
    """``step(*arguments)`` through the concrete function traced for the arguments' shapes.

    A ``tf.function`` call matches its arguments against every traced signature (about 0.15 ms
    per call, as much as a small model's batch); the concrete function of a shape is looked up
    once and kept on the step. Eager steps (see :func:`compiled`) are called directly.
    """
    flat = tf.nest.flatten(arguments)
    compiled_step = isinstance(step, tf.types.experimental.PolymorphicFunction)
    if not compiled_step or not all(isinstance(t, tf.Tensor) for t in flat):
        return step(*arguments)  # eager, or Python values among the arguments: a plain call
    signature = tuple((tuple(t.shape), t.dtype) for t in flat)
    concrete = _CONCRETE.setdefault(step, {})
    if signature not in concrete:  # traces (or reuses a trace) as a plain call would
        concrete[signature] = step.get_concrete_function(*arguments)
    return concrete[signature](*arguments)


_CONCRETE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _checking(batch_sums: Callable[..., list[Any]], classes: int | None) -> Callable[..., Any]:
    """``batch_sums`` preceded by the batch checks (:func:`importance.validation.batch_problems`)
    in the same step: returns ``(sums, index of the first bad example or -1)``."""

    def step(model: Any, x: Any, y: Any, *rest: Any) -> tuple[list[Any], tf.Tensor]:
        labels, first = batch_problems(x, y, classes=classes)
        return batch_sums(model, x, labels, *rest), first

    return step


def mean_over(
    model: Any, data: Any, batch_sums: Callable[..., list[Any]], *, key: Hashable, **options: Any
) -> list[np.ndarray]:
    """:func:`sum_over`'s sums divided by its count: the mean per example or per batch.

    Args:
        model: A built Keras model.
        data: ``(x, y)`` or a batched ``tf.data.Dataset`` (see :func:`importance.data.iter_batches`).
        batch_sums: ``batch_sums(model, x, y[, seed_pair], *extra)`` -> one tensor per
            trainable weight.
        key: Cache key of ``batch_sums`` and its configuration (see :func:`compiled`).
        **options: ``per`` (``"example"`` divides by the number of examples, ``"batch"`` by that
            of batches), ``batch_size``, ``max_examples``, ``seed``, ``extra``, ``eager``: as
            for :func:`sum_over`.

    Returns:
        One float64 array per trainable weight.
    """
    totals, count = sum_over(model, data, batch_sums, key=key, **options)
    # In place: the totals are this call's own (a new array each would cost ResNet50 34 ms).
    return [np.divide(t, count, out=t) for t in totals]
