"""Argument checks of the input-importance methods: images and target classes.

Their one home is :mod:`importance.validation` (:func:`~importance.validation.check_images`,
:func:`~importance.validation.check_target`, :func:`~importance.validation.check_explained`);
the two check names stay importable from here, for plugins written against this module.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from importance.validation import check_images, check_target, num_classes

__all__ = ["check_images", "check_target", "class_ids"]


def class_ids(model: Any, images: tf.Tensor, target: Any, *, name: str = "target") -> np.ndarray:
    """``target`` checked against the model's number of classes, as int32 ids (N,)."""
    classes = num_classes(model, images)
    return check_target(
        target, num_images=int(images.shape[0]), num_classes=classes, name=name
    ).numpy()
