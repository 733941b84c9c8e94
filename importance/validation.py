"""Checks at the library's edges: data, labels, models and what a model outputs.

Every public entry point (:func:`importance.compute_importance`, :func:`importance.aggregate`,
:func:`importance.threshold_sweep`, the :mod:`importance.data` helpers, the tasks' trainer) runs
these checks once, before any measure or evaluation runs, so that bad input is reported as bad
input and never turns into a plausible-looking number. Each message names the argument, the bad
value and what was expected.

What is checked:

* **model**: built, with trainable weights, one output. Wherever data is given, the model must be
  a classifier with at least two classes (one output unit, i.e. a regression model, is refused
  with a message saying so; data-free measures such as ``magnitude`` accept any built model). A
  multi-output model is refused: name its head with ``keras.Model(model.inputs,
  model.outputs[i])``.
* **inputs**: finite (the first non-finite example is named by its index), the width the model
  expects, a *batched* ``tf.data.Dataset``, and a dataset that ends (``.repeat()`` without
  ``max_examples`` is refused rather than read forever).
* **labels**: integer class ids (integer-valued floats are accepted) in ``[0, K)`` with ``K`` the
  model's number of classes (:func:`num_classes`), or one-hot rows of width ``K``.

What a model is, is read here too: its number of classes (:func:`num_classes`) and its input
shape (:func:`model_input_shape`). This module imports nothing of the library but
:mod:`importance.checks`; :mod:`importance.data` builds batching and evaluation on it.

**Logits or probabilities** is decided here and only here (:func:`output_kind`): an explicit
``from_logits=`` wins; otherwise the model is run once on (at most) the first batch of the data
it is given, and its outputs are *probabilities* when every value is in [0, 1] and every row sums
to 1 within ``PROBABILITY_TOLERANCE``, else *logits*. The decision is kept for the model's
lifetime (a model's output layer does not change), so later calls cost nothing
(:func:`known_output_kind`; :func:`importance.data.resolve_from_logits` decides for a caller
holding data rather than a batch). The layer type is not consulted, so a ``Lambda`` softmax or
a functional ``keras.ops.softmax`` ending is recognised.
A model with per-class sigmoid outputs (rows not summing to 1) is read as logits: pass
``from_logits=`` to say otherwise.
"""

from __future__ import annotations

import contextlib
import contextvars
import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow as tf

from importance.checks import check_positive_int

PROBABILITY_TOLERANCE = 1e-3
PROBE_EXAMPLES = 256

_KINDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> (kind, classes)
_CLASSES: contextvars.ContextVar[int | None] = contextvars.ContextVar("classes", default=None)


def check_model(model: Any, *, name: str = "model", trainable: bool = True) -> None:
    """Check that ``model`` is a built Keras model with trainable weights.

    Args:
        model: What was received.
        name: Argument name for messages.
        trainable: Require trainable weights (False for callers that only run the model, such
            as the saliency methods: a frozen model can be explained).

    Raises:
        TypeError: Not a Keras model.
        ValueError: An unbuilt model, or one without trainable weights.
    """
    label = f"{type(model).__name__} {getattr(model, 'name', '')!r}"
    if not (hasattr(type(model), "trainable_weights") or hasattr(model, "trainable_weights")):
        raise TypeError(f"{name} must be a Keras model. Received: {type(model).__name__}")
    if not getattr(model, "built", False):
        raise ValueError(
            f"{name} must be built (call it on a batch or give it an Input). "
            f"Received an unbuilt {label}."
        )
    if trainable and not model.trainable_weights:
        raise ValueError(
            f"{name} {getattr(model, 'name', '')!r} has no trainable weights to score or "
            "threshold; expected a model with at least one trainable weight."
        )


def num_classes(model: Any, x: Any = None) -> int | None:
    """Number of classes: the width of the model's (single) output.

    Read from the symbolic outputs; for a model without them (a subclassed model), the width
    :func:`output_kind` saw, else, when ``x`` is given, the width of the outputs on ``x[:1]``.

    Args:
        model: A Keras classifier.
        x: A batch of inputs, used only when the width is not known otherwise.

    Returns:
        The width, or None when it is not known and ``x`` is not given.
    """
    outputs = _symbolic_outputs(model)
    if outputs and outputs[0].shape[-1] is not None:
        return int(outputs[0].shape[-1])
    probed = _KINDS.get(model)
    if probed:
        return probed[1]
    if x is None:
        return None
    return int(model(x[:1], training=False).shape[-1])


def check_classifier(model: Any, *, name: str = "model", trainable: bool = True) -> int | None:
    """Check that ``model`` is a single-output classifier; return its number of classes.

    Returns:
        The number of classes, or None for a model without symbolic outputs (a subclassed
        model), whose output is checked on the data by :func:`output_kind`.

    Raises:
        ValueError: As :func:`check_model`, a multi-output model, or one with fewer than two
            output units.
    """
    check_model(model, name=name, trainable=trainable)
    outputs = _symbolic_outputs(model)
    if outputs is not None and len(outputs) != 1:
        raise ValueError(
            f"{name} has {len(outputs)} outputs; only single-output models are supported. "
            "Name the head to study: keras.Model(model.inputs, model.outputs[i])."
        )
    classes = num_classes(model)
    if classes is not None:
        _check_width(classes, name)
    return classes


def check_inputs(x: Any, *, start: int = 0, name: str = "data") -> None:
    """Check that every input is finite; the message names the first offending example.

    Args:
        x: A batch of inputs, first axis the examples.
        start: Index of ``x[0]`` in the whole data (for the message).
        name: Argument name for the message.

    Raises:
        ValueError: A NaN or infinite input.
    """
    x = np.asarray(x)
    if x.dtype.kind not in "fc" or x.size == 0:
        return
    finite = np.isfinite(x)
    if finite.all():
        return
    row = int(np.argmin(finite.reshape(x.shape[0], -1).all(axis=1)))
    bad = x[row][~finite[row]].ravel()[0]
    raise ValueError(
        f"{name} has a non-finite input ({bad}) in example {start + row}; "
        "expected finite numbers."
    )


def check_labels(
    y: Any, *, classes: int | None = None, start: int = 0, name: str = "labels"
) -> np.ndarray:
    """Check class labels and return them as int32 of shape ``(N,)``.

    Args:
        y: Integer class ids of shape ``(N,)`` (integer-valued floats accepted).
        classes: The model's number of classes; labels must be below it when given.
        start: Index of ``y[0]`` in the whole data (for the message).
        name: Argument name for the message.

    Raises:
        TypeError: Labels that are not numbers.
        ValueError: Non-integer, negative or too large labels, naming the first one.
    """
    y = np.asarray(y)
    if y.dtype.kind == "b" or y.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be integer class ids. Received dtype {y.dtype}")
    problems = []  # (mask, what was expected), the first offending example is reported
    if y.dtype.kind == "f":
        problems.append((~np.isfinite(y) | (y != np.round(y)), "integer class ids"))
    problems.append((y < 0, "class ids >= 0"))
    if classes is not None:
        problems.append((y >= classes, f"class ids in [0, {classes}) for this model"))
    firsts = [(int(np.argmax(mask)), expected) for mask, expected in problems if mask.any()]
    if firsts:
        index, expected = min(firsts)
        raise ValueError(
            f"{name} must be {expected}. Received {y[index].item()!r} for example {start + index}."
        )
    return y.astype(np.int32)


def check_one_hot_width(shape: Any, classes: int | None, *, name: str = "labels") -> None:
    """One-hot labels (of ``shape``, batch first) must have one column per class of the model."""
    shape = tuple(shape)
    width = shape[-1] if len(shape) == 2 else None
    if classes is not None and width not in (None, 1) and width != classes:
        raise ValueError(
            f"{name} are one-hot with {width} columns but the model has {classes} classes."
        )


def check_dataset(
    dataset: tf.data.Dataset, *, model: Any = None, max_examples: int | None = None,
    name: str = "data",
) -> None:
    """Check a ``tf.data.Dataset`` before reading it: it ends, yields ``(x, y)`` batches of the
    model's input width.

    Raises:
        ValueError: An infinite dataset without ``max_examples``, an empty or unbatched
            dataset, or inputs of the wrong width.
        TypeError: Elements that are not ``(x, y)`` pairs.
    """
    cardinality = int(dataset.cardinality())
    if cardinality == tf.data.INFINITE_CARDINALITY and max_examples is None:
        raise ValueError(
            f"{name} is an infinite tf.data.Dataset (e.g. from .repeat()); pass max_examples=N "
            "or data.take(N) so that reading it ends."
        )
    if cardinality == 0:
        raise ValueError(f"{name} is empty: the dataset yields no batches.")
    spec = dataset.element_spec
    if not isinstance(spec, (tuple, list)) or len(spec) != 2:
        raise TypeError(
            f"{name} must yield (x, y) pairs. Received elements of spec {spec!r}"
        )
    x_shape, y_shape = spec[0].shape, spec[1].shape
    expected = model_input_shape(model)
    unbatched = y_shape.rank == 0 or (expected is not None and x_shape.rank == len(expected))
    if unbatched:
        raise ValueError(
            f"{name} is an unbatched tf.data.Dataset (elements of shape {x_shape}); "
            "call .batch(batch_size) on it first."
        )
    check_input_width(x_shape, model, name=name)
    if model is not None and y_shape.rank == 2:
        check_one_hot_width(y_shape, num_classes(model))


def check_input_width(shape: Any, model: Any, *, name: str = "data") -> None:
    """Inputs of ``shape`` (batch first) must match the model's declared input shape."""
    expected = model_input_shape(model)
    if expected is None:
        return
    got = tuple(shape)
    fits = len(got) == len(expected) + 1 and all(
        e is None or g is None or int(g) == int(e) for g, e in zip(got[1:], expected, strict=True)
    )
    if not fits:
        raise ValueError(
            f"{name} has inputs of shape {got} but the model expects {(None, *expected)}."
        )


def split_xy(data: Any, *, classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Check ``(x, y)`` data and return it as NumPy arrays, labels as int32 of shape ``(N,)``.

    One-hot labels (N, K) become class ids; float64 inputs become float32. Labels must be
    integer class ids >= 0 (below ``classes`` when given), see :func:`check_labels`.

    Raises:
        ValueError: Empty data, mismatched lengths or labels of an unexpected shape.
        TypeError: Anything that is not an ``(x, y)`` pair.
    """
    if data is None:
        raise ValueError("data is required: pass (x, y) arrays or a batched tf.data.Dataset.")
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(
            "data must be an (x, y) pair of arrays or a tf.data.Dataset of (x, y) batches. "
            f"Received: {type(data).__name__}"
        )
    x = np.asarray(data[0])
    y = np.asarray(data[1])
    if x.shape[0] == 0:
        raise ValueError("data is empty: x has 0 examples.")
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x and y differ in length: {x.shape[0]} examples but {y.shape[0]} labels."
        )
    if y.ndim == 2 and y.shape[1] > 1:
        y = np.argmax(y, axis=1)
    elif y.ndim == 2:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"labels must have shape (N,) or (N, K). Received shape {y.shape}")
    if x.dtype == np.float64:
        x = x.astype(np.float32)
    return x, check_labels(y, classes=classes)


def check_data(
    data: Any, *, model: Any = None, max_examples: int | None = None, name: str = "data"
) -> Any:
    """Check ``data`` (and ``model``, when given) at an entry point; return the data.

    Arrays are checked whole, vectorised, and returned as a checked ``(x, y)`` pair (the first
    ``max_examples``, a :class:`CheckedArrays` that readers do not check again): finite inputs,
    integer labels in the model's class range, input width. A dataset is checked from its spec
    here and batch by batch as it is read (:func:`check_batch` inside
    :func:`importance.data.iter_batches`, or :func:`batch_problems` inside a measure's compiled
    step, see :func:`importance.measures.batched.sum_over`).

    Args:
        data: ``(x, y)`` arrays or a batched ``tf.data.Dataset``.
        model: The classifier the data is for (checked with :func:`check_classifier`; its
            outputs kind is decided on the data's first examples, see :func:`output_kind`).
        max_examples: The caller's cap on examples (an infinite dataset needs one).
        name: Argument name for messages.
    """
    check_positive_int("max_examples", max_examples, allow_none=True)
    classes = check_classifier(model) if model is not None else None
    if isinstance(data, tf.data.Dataset):
        check_dataset(data, model=model, max_examples=max_examples, name=name)
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        check_one_hot_width(np.shape(data[1]), classes)
    x, y = split_xy(data, classes=classes)
    if max_examples is not None:
        x, y = x[:max_examples], y[:max_examples]
    check_input_width(x.shape, model, name=name)
    check_inputs(x, name=name)
    if model is not None:
        output_kind(model, x)  # decided on the data it is given; also learns K when not symbolic
        if classes is None:
            check_labels(y, classes=num_classes(model))
    return CheckedArrays((x, y))


@contextlib.contextmanager
def labels_for(model: Any) -> Iterator[None]:
    """Within the block, :func:`check_batch` also checks labels against ``model``'s classes.

    Entry points wrap a measure's call in it, so that a dataset's labels are checked batch by
    batch as the measure reads them, without the measure passing the model along.
    """
    token = _CLASSES.set(num_classes(model))
    try:
        yield
    finally:
        _CLASSES.reset(token)


def check_batch(x: Any, y: Any, *, start: int, name: str = "data") -> np.ndarray:
    """Check one batch read from a dataset: finite inputs, labels (see :func:`labels_for`).

    Args:
        x: The batch's inputs.
        y: The batch's labels as int class ids (already converted from one-hot).
        start: Index of the batch's first example in the dataset (for the message).

    Returns:
        The labels as int32.
    """
    check_inputs(x, start=start, name=name)
    return check_labels(y, classes=_CLASSES.get(), start=start)


def output_kind(model: Any, x: Any, *, from_logits: bool | None = None) -> str:
    """``"logits"`` or ``"probabilities"``: what the classifier ``model`` outputs.

    The one place that decides (see the module docstring for the rule). An explicit
    ``from_logits`` wins; otherwise the first call per model runs it once on ``x[:256]``.

    Raises:
        ValueError: A bad ``from_logits``; outputs that are not one ``(batch, K)`` tensor with
            ``K >= 2``, or not finite.
    """
    if from_logits is not None:
        if not isinstance(from_logits, bool):
            raise ValueError(f"from_logits must be True, False or None. Received: {from_logits!r}")
        return "logits" if from_logits else "probabilities"
    probed = _KINDS.get(model)
    if probed is None and x is None:
        raise ValueError(
            "x is required to decide whether the model outputs logits or probabilities "
            "(pass a batch of inputs, or from_logits=True/False)."
        )
    if probed is None:
        outputs = model(x[:PROBE_EXAMPLES], training=False)
        if isinstance(outputs, (list, tuple, dict)):
            raise ValueError(
                f"model returns {len(outputs)} outputs; only single-output models are supported."
            )
        values = np.asarray(outputs, dtype=np.float64)
        if values.ndim != 2:
            raise ValueError(
                f"model outputs have shape {values.shape}; expected (batch, classes)."
            )
        _check_width(values.shape[1], "model")
        if not np.isfinite(values).all():
            raise ValueError("model outputs non-finite values on finite inputs; check its weights.")
        kind = "probabilities" if _are_probabilities(values) else "logits"
        probed = _KINDS[model] = (kind, values.shape[1])
    return probed[0]


def known_output_kind(model: Any) -> str | None:
    """What :func:`output_kind` decided for ``model`` without ``from_logits=``, or None when it
    has not seen the model yet (then deciding needs a batch of inputs)."""
    probed = _KINDS.get(model)
    return probed[0] if probed else None


def _are_probabilities(values: np.ndarray) -> bool:
    tol = PROBABILITY_TOLERANCE
    return bool(
        values.min() >= -tol
        and values.max() <= 1 + tol
        and np.allclose(values.sum(axis=1), 1.0, rtol=0, atol=tol)
    )


def _check_width(classes: int, name: str) -> None:
    if classes < 2:
        raise ValueError(
            f"{name} has {classes} output unit; only classifiers with at least 2 classes are "
            "supported with data (regression models are not; data-free measures such as "
            "'magnitude' accept them)."
        )


def _symbolic_outputs(model: Any) -> list[Any] | None:
    try:
        outputs = getattr(model, "outputs", None)
    except (AttributeError, ValueError):
        return None
    return list(outputs) if outputs else None


def model_input_shape(model: Any) -> tuple | None:
    """The model's input shape without the batch axis, or None for a model without one symbolic
    input (not built on an ``Input``, or several inputs)."""
    try:
        inputs = getattr(model, "inputs", None)
    except (AttributeError, ValueError):
        return None
    if not inputs or len(inputs) != 1:
        return None
    return tuple(inputs[0].shape[1:])


# ---- input importance (importance.interpret): images, targets, explained models ----------------


def check_single_input(model: Any, *, name: str = "model") -> None:
    """Refuse a model with several inputs (the saliency methods explain one image input).

    Raises:
        ValueError: ``model`` declares more than one input, naming how many.
    """
    try:
        inputs = getattr(model, "inputs", None)
    except (AttributeError, ValueError):
        return
    if inputs and len(inputs) != 1:
        raise ValueError(
            f"{name} {getattr(model, 'name', '')!r} has {len(inputs)} inputs; the saliency methods "
            "explain a model of one image input. Wrap it: keras.Model(image_input, outputs) with "
            "the other inputs fixed."
        )


def check_images(images: Any, model: Any = None, *, name: str = "images") -> tf.Tensor:
    """``images`` as a float tensor (N, H, W, C), checked: numeric, rank 4, at least one image,
    the model's input shape (height, width and channels), finite values.

    Integer images become float32. Inside a ``tf.function`` (symbolic images) only the shape is
    checked.

    Raises:
        ValueError: Not numeric, not rank 4, empty, a shape the model does not accept, or a NaN /
            infinite pixel (the message names the image, the pixel and the value).
    """
    values = None
    if isinstance(images, np.ndarray) or not tf.is_tensor(images):
        values = np.asarray(images)
        if not np.issubdtype(values.dtype, np.number) or values.dtype == np.bool_:
            raise ValueError(f"{name} must be numeric. Received dtype: {values.dtype}")
        if values.dtype.kind not in "fc":
            values = values.astype(np.float32)
        shape = values.shape
    else:
        if not images.dtype.is_floating:
            images = tf.cast(images, tf.float32)
        shape = tuple(images.shape)
        if hasattr(images, "numpy"):  # eager: the values are there to check
            values = images.numpy()
    if len(shape) != 4:
        raise ValueError(f"{name} must have rank 4 (N, H, W, C). Received shape: {shape}")
    if shape[0] == 0:
        raise ValueError(f"{name} must hold at least one image. Received shape: {shape}")
    expected = model_input_shape(model) if model is not None else None
    if expected is not None and len(expected) == 3:
        if any(
            e is not None and s is not None and e != s
            for e, s in zip(expected, shape[1:], strict=True)
        ):
            raise ValueError(
                f"{name} of shape {shape} do not fit model {model.name!r}, which expects "
                f"(N, {', '.join(str(e) for e in expected)}) (height, width, channels)."
            )
    if values is not None and not np.isfinite(values).all():
        n, row, col, channel = (int(i) for i in np.argwhere(~np.isfinite(values))[0])
        raise ValueError(
            f"{name} must be finite. Received {values[n, row, col, channel]} in image {n} at "
            f"pixel (row {row}, column {col}, channel {channel})."
        )
    return images if tf.is_tensor(images) else tf.convert_to_tensor(values)


def check_target(
    target: Any,
    *,
    num_images: Any,
    outputs: Any = None,
    num_classes: int | None = None,
    name: str = "target",
) -> tf.Tensor:
    """``target`` as int32 class ids (N,): one id broadcast to all images, or one per image.

    Integer-valued floats (e.g. ``np.float32(2.0)``) are accepted. The number of classes comes
    from ``num_classes`` or the last axis of ``outputs``. Inside a ``tf.function`` (symbolic
    target) the range is asserted in the graph.

    Raises:
        ValueError: Not integers, one-hot rows, the wrong length, or a class id outside
            ``[0, classes)`` (naming the first one and its image).
    """
    if num_classes is None and outputs is not None:
        num_classes = outputs.shape[-1]
    if tf.is_tensor(target) and not tf.executing_eagerly():
        ids = tf.broadcast_to(tf.cast(target, tf.int32), [num_images])
        if num_classes is not None:
            tf.debugging.assert_less(ids, int(num_classes), message="target outside the classes")
            tf.debugging.assert_non_negative(ids, message="target outside the classes")
        return ids
    return tf.constant(_target_ids(target, num_images, num_classes, name))


def _target_ids(target: Any, num_images: int, num_classes: int | None, name: str) -> np.ndarray:
    """The eager part of :func:`check_target`: int32 ids (N,) as NumPy."""
    try:
        array = np.asarray(target)
    except ValueError as error:  # ragged lists
        raise ValueError(
            f"{name} must be a class id or one class id per image (integers). "
            f"Received: {target!r}"
        ) from error
    integral = array.dtype.kind in "iu" or (
        array.dtype.kind == "f" and bool(np.all(np.isfinite(array) & (array == np.round(array))))
    )
    if array.ndim == 2 and integral and array.shape[0] == num_images and array.shape[1] > 1:
        raise ValueError(
            f"{name} must hold class ids, not one-hot rows: pass np.argmax({name}, axis=1). "
            f"Received an array of shape {array.shape}."
        )
    if not integral or array.ndim > 1:
        shown = target if array.size <= 8 else f"an array of shape {array.shape}"
        raise ValueError(
            f"{name} must be a class id or one class id per image (integers). Received: {shown!r}"
        )
    if array.ndim == 1 and array.shape[0] != num_images:
        raise ValueError(
            f"{name} must hold one class id per image ({num_images}). "
            f"Received {array.shape[0]} ids."
        )
    if num_classes is not None:
        bad = (array < 0) | (array >= int(num_classes))
        if bad.any():
            index = int(np.argmax(bad)) if array.ndim == 1 else 0
            where = f" for image {index}" if array.ndim == 1 else ""
            raise ValueError(
                f"{name} must be a class id in [0, {int(num_classes)}). "
                f"Received: {int(array.reshape(-1)[index])}{where}."
            )
    if array.ndim == 0:
        return np.full((num_images,), int(array), np.int32)
    return array.astype(np.int32)


_CHECKED: contextvars.ContextVar[tuple | None] = contextvars.ContextVar("checked", default=None)


@contextlib.contextmanager
def checked_call(model: Any, images: Any, target: Any, result: tuple) -> Iterator[None]:
    """Within the block, :func:`check_explained` of these very objects (``model``, ``images``,
    ``target``, by identity) returns ``result`` without checking again.

    :func:`importance.interpret.compute_saliency` checks once, then calls the method (which
    checks what it is given, as any direct call does) inside this block.
    """
    token = _CHECKED.set((model, images, target, result))
    try:
        yield
    finally:
        _CHECKED.reset(token)


def check_explained(
    model: Any, images: Any, target: Any, *, from_logits: bool | None = None,
    target_name: str = "target",
) -> tuple[tf.Tensor, np.ndarray, bool]:
    """The edge checks of every saliency method, before any work: the model (a built classifier
    of one image input and one output of at least two classes; frozen weights are fine), the
    images (:func:`check_images`), the target (:func:`check_target`) and what the model outputs
    (:func:`output_kind` on the images; an explicit ``from_logits`` wins).

    Returns:
        ``(images as a float tensor, target ids as int32 (N,), from_logits)``.

    Raises:
        TypeError: Not a Keras model.
        ValueError: Anything else above, naming the argument and the value.
    """
    done = _CHECKED.get()
    if (done is not None and done[0] is model and done[1] is images and done[2] is target
            and from_logits in (None, done[3][2])):
        return done[3]
    check_classifier(model, trainable=False)
    check_single_input(model)
    images = check_images(images, model)
    count = int(images.shape[0])
    classes = num_classes(model)  # symbolic: the target is checked before the model runs
    if classes is not None:
        ids = _target_ids(target, count, classes, target_name)
    kind = output_kind(model, images, from_logits=from_logits)
    if classes is None:
        ids = _target_ids(target, count, num_classes(model, images), target_name)
    return images, ids, kind == "logits"


def check_feature_map(layer: Any, *, model: Any = None, name: str = "layer") -> None:
    """A layer a CAM or a filter visualisation reads must output a spatial (N, h, w, K) map.

    Layers without a symbolic output (in a subclassed model) pass; their output is checked when
    the model runs.

    Raises:
        ValueError: The layer's output is not rank 4, naming the layer and its shape.
    """
    try:
        shape = tuple(layer.output.shape)
    except (AttributeError, ValueError):
        return
    if len(shape) != 4:
        owner = f" of model {model.name!r}" if model is not None else ""
        raise ValueError(
            f"{name} {layer.name!r}{owner} outputs shape {shape}; expected a spatial "
            "(N, h, w, K) feature map (a convolution or pooling layer)."
        )


def check_probability_outputs(outputs: Any, *, name: str = "model") -> None:
    """Probabilities whose logarithm the class score needs must be positive (no underflow to 0).

    Raises:
        ValueError: A probability <= 0 (or non-finite), naming the image and the class.
    """
    values = np.asarray(outputs)
    bad = ~(values > np.finfo(np.float32).tiny) | ~np.isfinite(values)
    if bad.any():
        n, c = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name} outputs probability {values[n, c]} for class {c} of image {n}; the class "
            "score log p_c - mean_k log p_k needs every probability > 0 (it underflowed). "
            "Explain the same network with a logits head (no final softmax), or pass "
            "from_logits=True if these are logits."
        )


# --- Checked once per call: arrays checked whole, dataset batches inside the compiled step ---


class CheckedArrays(tuple):
    """``(x, y)`` arrays that :func:`check_data` checked whole (finite inputs, int32 labels).

    A plain ``(x, y)`` tuple to everything that reads it; :func:`importance.data.iter_batches`
    recognises it and slices it without checking it again, so that a measure called through
    :func:`importance.compute_importance` pays for the checks once per call, not per read.
    """

    __slots__ = ()


def checked_classes() -> int | None:
    """The number of classes labels are checked against in the current :func:`labels_for`
    block (None outside one, or for a model whose classes are not known)."""
    return _CLASSES.get()


def graph_checkable(dataset: tf.data.Dataset) -> bool:
    """Whether :func:`batch_problems` can check ``dataset``'s batches inside a compiled step:
    one real-valued or integer input tensor and real-valued or integer labels of rank 1 or 2.
    Other datasets (strings, booleans, nested inputs) are checked batch by batch in Python."""
    spec = dataset.element_spec
    if not isinstance(spec, (tuple, list)) or len(spec) != 2:
        return False
    x_spec, y_spec = spec
    if not all(isinstance(s, tf.TensorSpec) for s in (x_spec, y_spec)):
        return False
    numeric = all((s.dtype.is_floating or s.dtype.is_integer) and s.dtype != tf.bool
                  for s in (x_spec, y_spec))
    return numeric and y_spec.shape.rank in (1, 2)


def batch_problems(x: Any, y: Any, *, classes: int | None) -> tuple[tf.Tensor, tf.Tensor]:
    """The checks of :func:`check_batch` as graph ops, for a compiled step over a dataset.

    Labels of shape ``(B, K)`` with ``K > 1`` are one-hot (their argmax is taken), ``(B, 1)``
    and ``(B,)`` class ids; they must be integers (integer-valued floats accepted), ``>= 0`` and
    below ``classes`` when given. Inputs are screened by their row sums (one pass, cheaper than
    an elementwise finiteness test by ~100 us per MLP batch): a NaN or inf makes its row's sum
    non-finite; a row of huge finite values whose sum overflows is a false alarm, which
    :func:`check_flagged_batch` clears with the exact check.

    Args:
        x: One batch of inputs (a tensor, batch first).
        y: The batch's labels as the dataset yields them.
        classes: The model's number of classes (see :func:`checked_classes`).

    Returns:
        ``(labels, first_bad)``: the labels as int32 class ids of shape ``(B,)``, with any bad
        label replaced by 0 so that the step can run, and the index in the batch of the first
        bad example, -1 when there is none. The caller must not use the step's results when
        ``first_bad >= 0`` before :func:`check_flagged_batch` has cleared the batch.
    """
    y = tf.convert_to_tensor(y)
    if y.shape.rank == 2 and y.shape[-1] != 1:
        y = tf.argmax(y, axis=-1)
    y = tf.reshape(y, [-1])
    bad = y < 0
    if y.dtype.is_floating:
        bad = bad | ~tf.math.is_finite(y) | tf.not_equal(y, tf.round(y))
    if classes is not None:
        bad = bad | (y >= tf.cast(classes, y.dtype))
    labels = tf.where(bad, tf.zeros_like(y, tf.int32), tf.cast(y, tf.int32))
    x = tf.convert_to_tensor(x)
    if x.dtype.is_floating:
        flat = tf.reshape(x, [tf.shape(x)[0], -1])
        if x.dtype.size < 4:  # float16/bfloat16 sums overflow early: screen in float32
            flat = tf.cast(flat, tf.float32)
        bad = bad | ~tf.math.is_finite(tf.reduce_sum(flat, axis=1))
    first = tf.where(
        tf.reduce_any(bad), tf.argmax(tf.cast(bad, tf.int32), output_type=tf.int32), -1
    )
    return labels, first


def label_ids(y: Any) -> np.ndarray:
    """A batch's labels as class ids of shape ``(B,)`` (one-hot rows become their argmax),
    unchecked; :func:`check_batch` checks them."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[-1] != 1:
        y = np.argmax(y, axis=-1)
    return y.reshape(-1)


def check_flagged_batch(x: Any, y: Any, *, start: int, name: str = "data") -> None:
    """The exact checks of :func:`check_batch` on a batch :func:`batch_problems` flagged.

    Args:
        x: The batch's inputs.
        y: The batch's labels as the dataset yields them.
        start: Index of the batch's first example in the dataset.

    Raises:
        ValueError: :func:`check_batch`'s message, naming the example and its value. When the
            exact checks find nothing (a row of finite inputs whose sum overflowed), the batch
            is fine and this returns.
    """
    check_batch(x, label_ids(y), start=start, name=name)


def check_maps(maps: Any, images: Any, *, name: str = "maps") -> np.ndarray:
    """A batch of saliency maps for ``images``, as float64: shape ``(N, H, W)`` of the images,
    every value finite (the first map holding NaN or inf is named).

    Raises:
        ValueError: Another shape, or a non-finite value; the message names the image.
    """
    maps = np.asarray(maps, dtype=np.float64)
    expected = tuple(int(d) for d in images.shape[:3])
    if maps.shape != expected:
        raise ValueError(
            f"{name} must have the images' shape (N, H, W) = {expected}. Received: {maps.shape}"
        )
    finite = np.isfinite(maps).reshape(len(maps), -1).all(axis=1)
    if not finite.all():
        first = int(np.argmin(finite))
        raise ValueError(
            f"{name} must be finite. Received NaN or inf values in the map of image {first}."
        )
    return maps
