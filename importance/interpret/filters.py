"""Filter visualisation: activation maximisation (per filter, per class) and kernel inspection.

Activation maximisation (Erhan et al. 2009; Simonyan et al. 2014 for classes) as the original
project did it, after Chollet's Keras example "How convolutional neural networks see the world"
(2016): start from a seeded noisy grey image and climb the gradient of the objective, each step
normalised by the gradient's root mean square, ``x += step_size * g / (rms(g) + 1e-5)``. The
objective is the mean activation of one filter of a layer, or the score (logit) of one class.
No regulariser, no clipping during the ascent (as in the original); :func:`for_display` scales
the results to [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from importance.checks import check_number, check_positive_int, check_seed, is_integer
from importance.interpret.cam import CONV_TYPES, find_cam_layer, watch_layer_output
from importance.validation import (
    check_classifier,
    check_feature_map,
    check_model,
    check_single_input,
    check_target,
    model_input_shape,
    num_classes,
)


def _check_ascent(model: Any, steps: Any, step_size: Any, seed: Any) -> tuple[int, float, int]:
    """The edge checks of an ascent, before any work: a model of one fixed-shape image input,
    positive steps, a finite step size >= 0 (0 returns the start), a seed."""
    check_single_input(model)
    shape = model_input_shape(model)
    if shape is None or len(shape) != 3 or any(d is None for d in shape):
        raise ValueError(
            f"model {model.name!r} needs a fixed (H, W, C) image input shape. Received: {shape}"
        )
    steps = check_positive_int("steps", steps)
    step_size = check_number("step_size", step_size, minimum=0)
    return steps, step_size, check_seed(seed)


def _start(model: Any, count: int, seed: int) -> tf.Tensor:
    shape = model_input_shape(model)
    if shape is None or any(d is None for d in shape):
        raise ValueError(f"model {model.name!r} needs a fixed input shape. Received: {shape}")
    rng = np.random.default_rng(check_seed(seed))
    return tf.constant(0.5 + 0.1 * rng.standard_normal((count, *shape)), tf.float32)


def _ascend(model: Any, x: tf.Tensor, objective: Any, steps: int, step_size: float) -> np.ndarray:
    for _ in range(check_positive_int("steps", steps)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = tf.reduce_sum(objective(tape, x))
        g = tape.gradient(value, x)
        rms = tf.sqrt(tf.reduce_mean(tf.square(g), axis=(1, 2, 3), keepdims=True))
        x = x + step_size * g / (rms + 1e-5)
    return x.numpy()


def maximise_filters(
    model: keras.Model,
    *,
    layer: Any = None,
    filters: Sequence[int] | None = None,
    steps: int = 30,
    step_size: float = 0.01,
    seed: int = 0,
) -> np.ndarray:
    """Images that maximise the mean activation of each chosen filter of a layer, (F, H, W, C).

    Args:
        model: A Keras model with a fixed input shape.
        layer: Layer name or object with a (N, h, w, K) output; default the last convolution.
        filters: Filter indices; default all ``K``.
        steps: Gradient-ascent steps.
        step_size: Step along the RMS-normalised gradient.
        seed: Seed of the starting noise.

    Raises:
        ValueError: Unknown layer, a layer without a spatial output, a filter index that is not
            an integer in ``[0, K)``, no filters, bad steps, step size or seed.
    """
    check_model(model, trainable=False)
    steps, step_size, seed = _check_ascent(model, steps, step_size, seed)
    chosen = find_cam_layer(model, layer)
    check_feature_map(chosen, model=model)
    width = int(chosen.output.shape[-1]) if hasattr(chosen, "output") else None
    if filters is not None and (
        isinstance(filters, (str, bytes)) or np.ndim(filters) != 1 or not len(filters)
        or not all(is_integer(f) for f in filters)
    ):
        raise ValueError(
            f"filters must be a non-empty sequence of integer filter indices. Received: {filters!r}"
        )
    indices = list(range(width)) if filters is None else [int(f) for f in filters]
    if width is not None and any(not 0 <= f < width for f in indices):
        raise ValueError(
            f"filters must be in [0, {width}) for layer {chosen.name!r}. Received: {filters!r}"
        )
    picks = tf.one_hot(indices, width)[:, None, None, :]

    def objective(tape: tf.GradientTape, x: tf.Tensor) -> tf.Tensor:
        with watch_layer_output(chosen, tape) as captured:
            model(x, training=False)
        return tf.reduce_mean(captured[0] * picks, axis=(1, 2, 3)) * width

    return _ascend(model, _start(model, len(indices), seed), objective, steps, step_size)


def maximise_classes(
    model: keras.Model,
    classes: Sequence[int],
    *,
    steps: int = 30,
    step_size: float = 0.01,
    seed: int = 0,
) -> np.ndarray:
    """Images that maximise each class's score (the model's output column), (len(classes), H, W, C).

    The score is the model's output column (the logit of a logits model, as in Simonyan et al.
    2014; for a probability model its probability, which saturates: pass a logits head).

    Raises:
        ValueError: A class outside the model's outputs, no classes, bad steps, step size or seed.
    """
    check_classifier(model, trainable=False)
    steps, step_size, seed = _check_ascent(model, steps, step_size, seed)
    if isinstance(classes, (str, bytes)) or np.ndim(classes) != 1 or not len(classes):
        raise ValueError(f"classes must be a non-empty sequence of class ids. Received: {classes!r}")
    start = _start(model, len(classes), seed)
    ids = check_target(
        np.asarray(classes), num_images=len(classes), num_classes=num_classes(model, start[:1]),
        name="classes",
    )

    def objective(tape: tf.GradientTape, x: tf.Tensor) -> tf.Tensor:
        return tf.gather(model(x, training=False), ids, axis=1, batch_dims=1)

    return _ascend(model, start, objective, steps, step_size)


def kernel_images(model: keras.Model, *, layer: Any = None) -> np.ndarray:
    """The raw kernels of a convolution, one per output filter, (K, kh, kw, C_in), each in [0, 1].

    Each filter's kernel is min-max scaled on its own (a constant kernel becomes 0.5).

    Raises:
        ValueError: An unknown layer, or one that is not a 2-D convolution with a kernel.
    """
    check_model(model, trainable=False)
    chosen = find_cam_layer(model, layer)
    if not isinstance(chosen, CONV_TYPES) or not hasattr(chosen, "kernel"):
        raise ValueError(f"layer {chosen.name!r} is not a 2-D convolution with a kernel.")
    kernel = np.moveaxis(np.asarray(chosen.kernel.numpy(), np.float64), -1, 0)
    return for_display(kernel)


def for_display(images: np.ndarray) -> np.ndarray:
    """Each image min-max scaled to [0, 1] on its own; a constant image becomes 0.5."""
    images = np.asarray(images, np.float64)
    axes = tuple(range(1, images.ndim))
    low = images.min(axis=axes, keepdims=True)
    span = images.max(axis=axes, keepdims=True) - low
    return np.where(span > 0, (images - low) / np.where(span > 0, span, 1), 0.5)
