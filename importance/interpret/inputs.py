"""Argument checks for the input-importance methods: images and target classes.

What they read from the model (input shape, number of classes) comes from
:mod:`importance.validation`, like everywhere else in the library.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from importance.validation import model_input_shape, num_classes


def check_images(images: Any, model: Any = None) -> tf.Tensor:
    """``images`` as a float tensor (N, H, W, C), checked against the model's input shape.

    Integer images become float32.

    Raises:
        ValueError: Not rank 4, empty, or a shape the model does not accept.
    """
    if not tf.is_tensor(images):
        images = np.asarray(images)
        if not np.issubdtype(images.dtype, np.number) or images.dtype == np.bool_:
            raise ValueError(f"images must be numeric. Received dtype: {images.dtype}")
    images = tf.convert_to_tensor(images)
    if not images.dtype.is_floating:
        images = tf.cast(images, tf.float32)
    shape = tuple(images.shape)
    if len(shape) != 4:
        raise ValueError(f"images must have rank 4 (N, H, W, C). Received shape: {shape}")
    if shape[0] == 0:
        raise ValueError(f"images must hold at least one image. Received shape: {shape}")
    expected = model_input_shape(model) if model is not None else None
    if expected is not None and len(expected) == 3:
        if any(
            e is not None and s is not None and e != s
            for e, s in zip(expected, shape[1:], strict=True)
        ):
            raise ValueError(
                f"images of shape {shape} do not fit model {model.name!r}, which expects "
                f"(N, {', '.join(str(e) for e in expected)})."
            )
    return images


def check_target(
    target: Any, *, num_images: int, outputs: Any = None, num_classes: int | None = None
) -> tf.Tensor:
    """``target`` as int32 class ids (N,): one id broadcast to all images, or one per image.

    The number of classes comes from ``num_classes`` or the last axis of ``outputs``.

    Raises:
        ValueError: Not integers, wrong length, or a class id outside ``[0, classes)``.
    """
    if num_classes is None and outputs is not None:
        num_classes = outputs.shape[-1]
    if tf.is_tensor(target) and not tf.executing_eagerly():
        ids = tf.broadcast_to(tf.cast(target, tf.int32), [num_images])
        if num_classes is not None:
            tf.debugging.assert_less(ids, int(num_classes), message="target outside the classes")
            tf.debugging.assert_non_negative(ids, message="target outside the classes")
        return ids
    array = np.asarray(target)
    if not (np.issubdtype(array.dtype, np.integer)) or array.ndim > 1:
        raise ValueError(
            f"target must be a class id or one class id per image (integers). Received: {target!r}"
        )
    if array.ndim == 1 and array.shape[0] != num_images:
        raise ValueError(
            f"target must hold one class id per image ({num_images}). "
            f"Received {array.shape[0]} ids."
        )
    ids = np.broadcast_to(array, (num_images,)).astype(np.int32)
    if num_classes is not None and (ids.min() < 0 or ids.max() >= int(num_classes)):
        bad = ids[(ids < 0) | (ids >= int(num_classes))][0]
        raise ValueError(
            f"target must be a class id in [0, {int(num_classes)}). Received: {int(bad)}"
        )
    return tf.constant(ids)


def class_ids(model: Any, images: tf.Tensor, target: Any) -> np.ndarray:
    """``target`` checked against the model's number of classes, as int32 ids (N,)."""
    classes = num_classes(model, images)
    return check_target(target, num_images=int(images.shape[0]), num_classes=classes).numpy()
