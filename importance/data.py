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
    CheckedArrays,
    batch_problems,
    check_batch,
    check_data,
    check_dataset,
    check_flagged_batch,
    check_inputs,
    checked_classes,
    graph_checkable,
    known_output_kind,
    label_ids,
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
    data: Any, *, batch_size: int = DEFAULT_BATCH_SIZE, max_examples: int | None = None,
    check: bool = True,
) -> Iterator[tuple[tf.Tensor, tf.Tensor]]:
    """Yield ``(x, y)`` batches of ``data`` with int32 labels of shape ``(B,)``.

    Arrays are checked whole, once (not again when :func:`importance.validation.check_data`
    already did, see :class:`~importance.validation.CheckedArrays`), and sliced into batches:
    slicing costs less than building a ``tf.data`` pipeline per call. A dataset is read as it
    is and each batch checked as it arrives.

    Args:
        data: As for :func:`as_dataset` (a dataset's one-hot labels are converted too).
        batch_size: Batch size when ``data`` is given as arrays.
        max_examples: Stop after this many examples (the first ones); all when None.
        check: Check and convert each batch of a dataset here. False yields a dataset's batches
            as it gives them (labels unconverted, nothing checked), for a caller that checks
            them inside its own compiled step with
            :func:`importance.validation.batch_problems` (as
            :func:`importance.measures.batched.sum_over` does); arrays are checked either way.

    Raises:
        ValueError: A bad ``max_examples``, data with no examples, a non-finite input or a bad
            label (naming the example), an infinite dataset without ``max_examples``, an
            unbatched dataset (see :mod:`importance.validation`).
    """
    check_positive_int("max_examples", max_examples, allow_none=True)
    check_positive_int("batch_size", batch_size)
    if not isinstance(data, tf.data.Dataset):
        yield from _array_batches(data, int(batch_size), max_examples)
        return
    check_dataset(data, max_examples=max_examples)
    count = 0
    for x, y in data:
        if check:
            y = tf.constant(check_batch(x, label_ids(y), start=count))
        if max_examples is not None and count + int(y.shape[0]) > max_examples:
            keep = max_examples - count
            x, y = x[:keep], y[:keep]
        count += int(y.shape[0])
        yield x, y
        if max_examples is not None and count >= max_examples:
            break
    if count == 0:
        raise ValueError("data is empty: the dataset yielded no examples.")


def _array_batches(
    data: Any, batch_size: int, max_examples: int | None
) -> Iterator[tuple[tf.Tensor, tf.Tensor]]:
    """Batches of ``(x, y)`` arrays, checked whole once unless already checked."""
    if isinstance(data, CheckedArrays):
        x, y = data
    else:
        x, y = split_xy(data)
        if max_examples is not None:
            x, y = x[:max_examples], y[:max_examples]
        check_inputs(x)
    stop = len(y) if max_examples is None else min(len(y), max_examples)
    for start in range(0, stop, batch_size):
        end = min(start + batch_size, stop)
        yield tf.convert_to_tensor(x[start:end]), tf.convert_to_tensor(y[start:end])


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
    # A dataset's batches are checked in the compiled step (see importance.measures.batched).
    in_step = isinstance(data, tf.data.Dataset) and graph_checkable(data)
    with labels_for(model):
        classes = checked_classes()
        for x, y in _eval_batches(data, batch_size, check=not in_step):
            if in_step:
                loss_sum, right, size, first = batch_sums(x, y, from_logits, True, classes)
                if int(first) >= 0:
                    check_flagged_batch(x, y, start=count)
            else:
                loss_sum, right, size = batch_sums(x, y, from_logits)
            total_loss += float(loss_sum)
            correct += int(right)
            count += int(size)
    if count == 0:
        raise ValueError("data is empty: the dataset yielded no examples.")
    return total_loss / count, correct / count


def _eval_batches(data: Any, batch_size: int, *, check: bool) -> Iterator[tuple[Any, Any]]:
    """Batches for :func:`evaluate`. Arrays are sliced directly: creating a tf.data iterator
    costs more than evaluating a small model, and a threshold sweep evaluates many times."""
    if isinstance(data, tf.data.Dataset):
        yield from iter_batches(data, batch_size=batch_size, check=check)
        return
    x, y = data  # checked by evaluate
    for start in range(0, y.shape[0], int(batch_size)):
        yield x[start : start + batch_size], y[start : start + batch_size]


_EVAL_FNS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _batch_sums_fn(model: Any) -> Any:
    """A tf.function ``(x, y, from_logits[, check, classes]) -> (summed loss, correct count, batch
    size[, first bad example])``, cached per model (``from_logits``, ``check`` Python bools).
    With ``check`` the labels are raw and the batch is checked in the same step
    (:func:`importance.validation.batch_problems`)."""
    fn = _EVAL_FNS.get(model)
    if fn is None:

        def batch_sums(
            x: Any, y: Any, from_logits: bool, check: bool = False, classes: int | None = None
        ) -> tuple[tf.Tensor, ...]:
            if check:
                y, first = batch_problems(x, y, classes=classes)
            logp = log_probabilities(model, x, from_logits=from_logits)
            y = tf.cast(tf.reshape(y, [-1]), tf.int32)
            picked = tf.gather(logp, y, axis=1, batch_dims=1)
            predicted = tf.argmax(logp, axis=1, output_type=tf.int32)
            right = tf.reduce_sum(tf.cast(predicted == y, tf.int32))
            sums = (-tf.reduce_sum(picked), right, tf.shape(y)[0])
            return (*sums, first) if check else sums

        fn = tf.function(batch_sums, reduce_retracing=True)
        _EVAL_FNS[model] = fn
    return fn
