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
    """
    check_choice("per", per, PER)
    step = compiled(model, batch_sums, key=key, eager=eager)
    totals: list[np.ndarray] | None = None
    count = 0
    for batch in seeded_batches(data, seed=seed, batch_size=batch_size, max_examples=max_examples):
        arrays = [np.asarray(s, dtype=np.float64) for s in step(*batch, *extra)]
        totals = arrays if totals is None else [t + a for t, a in zip(totals, arrays, strict=True)]
        count += int(batch[1].shape[0]) if per == "example" else 1
    return totals, count


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
    return [t / count for t in totals]
