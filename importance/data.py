"""Data handling shared by measures and thresholding: batching, log-probabilities, evaluation.

The library accepts data as ``(x, y)`` with integer class labels (one-hot labels are converted),
or as a ``tf.data.Dataset`` yielding ``(x, y)`` batches. Models may output logits or
probabilities; :func:`log_probabilities` returns log p(y|x) either way. The checks of data,
labels and models, and the logits-or-probabilities decision itself, live in
:mod:`importance.validation`, which this module uses (never the reverse).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any

import tensorflow as tf

from importance.checks import check_positive_int
from importance.validation import (
    PROBE_EXAMPLES,
    check_batch,
    check_data,
    check_dataset,
    check_inputs,
    known_output_kind,
    labels_for,
    output_kind,
    split_xy,
)

DEFAULT_BATCH_SIZE = 128


def as_dataset(data: Any, *, batch_size: int = DEFAULT_BATCH_SIZE) -> tf.data.Dataset:
    """Return ``data`` as a batched ``tf.data.Dataset`` of ``(x, y)`` with int32 labels.

    Args:
        data: ``(x, y)`` arrays or tensors (labels as integers of shape ``(N,)`` or one-hot of
            shape ``(N, K)``), or a ``tf.data.Dataset`` that already yields ``(x, y)`` batches.
        batch_size: Batch size when ``data`` is given as arrays.

    Raises:
        ValueError: Empty data, mismatched lengths, or a bad batch size.
        TypeError: Data of a form this library does not understand.
    """
    check_positive_int("batch_size", batch_size)
    if isinstance(data, tf.data.Dataset):
        return data
    x, y = split_xy(data)
    # Autotuning cannot help a slice-and-batch pipeline, and an autotuned iterator can take
    # ~0.3 s to destroy (it waits for its tuning thread): measured on every measure's call.
    options = tf.data.Options()
    options.autotune.enabled = False
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(int(batch_size)).with_options(options)


def log_probabilities(
    model: Any, x: Any, *, training: bool = False, from_logits: bool | None = None
) -> tf.Tensor:
    """log p(. | x) for every class, shape ``(batch, K)``, differentiable.

    Args:
        model: A Keras classifier.
        x: A batch of inputs.
        training: Passed to the model call.
        from_logits: Whether the model outputs logits; decided from its outputs on ``x`` when
            None (see :func:`importance.validation.output_kind`).
    """
    from_logits = output_kind(model, x, from_logits=from_logits) == "logits"
    outputs = model(x, training=training)
    return log_probabilities_from_outputs(outputs, from_logits=from_logits)


def log_probabilities_from_outputs(outputs: Any, *, from_logits: bool) -> tf.Tensor:
    """log p(. | x) from a classifier's outputs (logits or probabilities), shape ``(batch, K)``.

    For objectives that receive the model's outputs rather than calling the model (see
    :func:`importance.per_example.per_example_moment`).

    Args:
        outputs: The model's outputs, shape ``(batch, K)``.
        from_logits: Whether ``outputs`` are logits (else probabilities, clipped at 1e-12).
    """
    if from_logits:
        return tf.nn.log_softmax(outputs, axis=-1)
    return tf.math.log(tf.clip_by_value(outputs, 1e-12, 1.0))


def iter_batches(
    data: Any, *, batch_size: int = DEFAULT_BATCH_SIZE, max_examples: int | None = None
) -> Iterator[tuple[tf.Tensor, tf.Tensor]]:
    """Yield ``(x, y)`` batches of ``data`` with int32 labels of shape ``(B,)``.

    Args:
        data: As for :func:`as_dataset` (a dataset's one-hot labels are converted too).
        batch_size: Batch size when ``data`` is given as arrays.
        max_examples: Stop after this many examples (the first ones); all when None.

    Raises:
        ValueError: A bad ``max_examples``, data with no examples, a non-finite input or a bad
            label (naming the example), an infinite dataset without ``max_examples``, an
            unbatched dataset (see :mod:`importance.validation`).
    """
    check_positive_int("max_examples", max_examples, allow_none=True)
    is_dataset = isinstance(data, tf.data.Dataset)
    if is_dataset:
        check_dataset(data, max_examples=max_examples)
    else:
        x, y = split_xy(data)
        data = (x[:max_examples], y[:max_examples]) if max_examples is not None else (x, y)
        check_inputs(data[0])
    count = 0
    for x, y in as_dataset(data, batch_size=batch_size):
        y = tf.convert_to_tensor(y)
        if y.shape.rank == 2 and y.shape[-1] != 1:
            y = tf.argmax(y, axis=-1)
        if is_dataset:
            y = tf.constant(check_batch(x, tf.reshape(y, [-1]).numpy(), start=count))
        y = tf.cast(tf.reshape(y, [-1]), tf.int32)
        if max_examples is not None and count + int(y.shape[0]) > max_examples:
            keep = max_examples - count
            x, y = x[:keep], y[:keep]
        count += int(y.shape[0])
        yield x, y
        if max_examples is not None and count >= max_examples:
            break
    if count == 0:
        raise ValueError("data is empty: the dataset yielded no examples.")


def resolve_from_logits(model: Any, data: Any, *, from_logits: bool | None = None) -> bool:
    """Whether ``model`` outputs logits, for a caller holding ``data`` rather than a batch.

    The decision is :func:`importance.validation.output_kind`'s: an explicit ``from_logits``
    wins, then what it decided earlier for the model; otherwise it runs on the first
    ``PROBE_EXAMPLES`` examples of ``data`` (read with :func:`iter_batches`).

    Args:
        model: A Keras classifier.
        data: ``(x, y)`` arrays or a batched ``tf.data.Dataset``.
        from_logits: Whether the model outputs logits; None to decide from its outputs.

    Raises:
        ValueError: A bad ``from_logits``, bad data, or outputs :func:`output_kind` refuses.
    """
    if from_logits is None and known_output_kind(model) is None:
        x, _ = next(iter(iter_batches(data, max_examples=PROBE_EXAMPLES)))
        return output_kind(model, x) == "logits"
    return output_kind(model, None, from_logits=from_logits) == "logits"


def evaluate(
    model: Any, data: Any, *, batch_size: int = DEFAULT_BATCH_SIZE, from_logits: bool | None = None
) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy of a classifier over ``data``.

    Args:
        model: A built single-output Keras classifier.
        data: ``(x, y)`` arrays or a batched, finite ``tf.data.Dataset``.
        batch_size: Batch size for array data.
        from_logits: Whether the model outputs logits; decided from its outputs on ``data`` when
            None (see :func:`importance.validation.output_kind`).

    Returns:
        ``(loss, accuracy)`` as Python floats, averaged over examples.

    Raises:
        ValueError: Bad data, labels or model (see :mod:`importance.validation`).
    """
    check_positive_int("batch_size", batch_size)
    data = check_data(data, model=model)
    total_loss = 0.0
    correct = 0
    count = 0
    from_logits = resolve_from_logits(model, data, from_logits=from_logits)
    batch_sums = _batch_sums_fn(model)
    with labels_for(model):
        for x, y in _eval_batches(data, batch_size):
            loss_sum, right, size = batch_sums(x, y, from_logits)
            total_loss += float(loss_sum)
            correct += int(right)
            count += int(size)
    if count == 0:
        raise ValueError("data is empty: the dataset yielded no examples.")
    return total_loss / count, correct / count


def _eval_batches(data: Any, batch_size: int) -> Iterator[tuple[Any, Any]]:
    """Batches for :func:`evaluate`. Arrays are sliced directly: creating a tf.data iterator
    costs more than evaluating a small model, and a threshold sweep evaluates many times."""
    if isinstance(data, tf.data.Dataset):
        yield from iter_batches(data, batch_size=batch_size)  # also converts one-hot labels
        return
    x, y = data  # checked by evaluate
    for start in range(0, y.shape[0], int(batch_size)):
        yield x[start : start + batch_size], y[start : start + batch_size]


_EVAL_FNS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _batch_sums_fn(model: Any) -> Any:
    """A tf.function ``(x, y, from_logits) -> (summed loss, correct count, batch size)``, cached
    per model (``from_logits`` a Python bool)."""
    fn = _EVAL_FNS.get(model)
    if fn is None:

        def batch_sums(x: Any, y: Any, from_logits: bool) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
            logp = log_probabilities(model, x, from_logits=from_logits)
            y = tf.cast(tf.reshape(y, [-1]), tf.int32)
            picked = tf.gather(logp, y, axis=1, batch_dims=1)
            predicted = tf.argmax(logp, axis=1, output_type=tf.int32)
            right = tf.reduce_sum(tf.cast(predicted == y, tf.int32))
            return -tf.reduce_sum(picked), right, tf.shape(y)[0]

        fn = tf.function(batch_sums, reduce_retracing=True)
        _EVAL_FNS[model] = fn
    return fn
