"""The batch loop of the data-driven measures: one compiled step per model, float64 sums.

A measure hands over a closure ``batch_sums(model, x, y)`` (or ``batch_sums(model, x, y,
seed_pair)`` when it is seeded) that returns one tensor per trainable weight for one batch.
:func:`mean_over` compiles it once per model (and per set of trainable weights), runs it over
the batches of the data, accumulates the results in float64 and divides by the number of
examples or of batches. Fisher, its minibatch shortcut and MAS all run on it.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable, Iterator
from typing import Any

import numpy as np
import tensorflow as tf

from importance.checks import check_choice
from importance.data import DEFAULT_BATCH_SIZE, iter_batches

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
    max_examples: int | None = None,
) -> Iterator[tuple[Any, ...]]:
    """``(x, y)`` batches, with the stateless seed pair ``(seed, b)`` of batch ``b`` appended
    when ``seed`` is given."""
    batches = iter_batches(data, batch_size=batch_size, max_examples=max_examples)
    for index, (x, y) in enumerate(batches):
        yield (x, y) if seed is None else (x, y, tf.constant([seed, index], tf.int64))


def mean_over(
    model: Any,
    data: Any,
    batch_sums: Callable[..., list[Any]],
    *,
    key: Hashable,
    per: str = "example",
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_examples: int | None = None,
    seed: int | None = None,
    eager: bool = False,
) -> list[np.ndarray]:
    """Sum ``batch_sums`` over the batches of ``data`` in float64, then divide.

    Args:
        model: A built Keras model.
        data: ``(x, y)`` or a batched ``tf.data.Dataset`` (see :func:`importance.data.iter_batches`).
        batch_sums: ``batch_sums(model, x, y[, seed_pair])`` -> one tensor per trainable weight.
        key: Cache key of ``batch_sums`` and its configuration (see :func:`compiled`).
        per: ``"example"`` divides by the number of examples, ``"batch"`` by that of batches.
        batch_size: Examples per batch when ``data`` is arrays.
        max_examples: Use only the first ``max_examples`` examples; all when None.
        seed: When given, batch ``b`` also receives the stateless seed pair ``(seed, b)``.
        eager: Run ``batch_sums`` eagerly (see :func:`compiled`).

    Returns:
        One float64 array per trainable weight.
    """
    check_choice("per", per, PER)
    step = compiled(model, batch_sums, key=key, eager=eager)
    totals: list[np.ndarray] | None = None
    count = 0
    for batch in seeded_batches(data, seed=seed, batch_size=batch_size, max_examples=max_examples):
        arrays = [np.asarray(s, dtype=np.float64) for s in step(*batch)]
        totals = arrays if totals is None else [t + a for t, a in zip(totals, arrays, strict=True)]
        count += int(batch[1].shape[0]) if per == "example" else 1
    return [t / count for t in totals]
