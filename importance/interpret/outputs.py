"""What the input-importance methods read from a model: class probabilities and input gradients."""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf


def probabilities(model: Any, images: Any, *, batch_size: int = 256) -> np.ndarray:
    """Softmax of the model's outputs (logits for the project's models), float64 (N, classes)."""
    out = []
    for start in range(0, int(images.shape[0]), batch_size):
        logits = model(images[start : start + batch_size], training=False)
        out.append(tf.nn.softmax(tf.cast(logits, tf.float64), axis=-1).numpy())
    return np.concatenate(out)


def target_probabilities(
    model: Any, images: Any, ids: np.ndarray, *, batch_size: int = 256
) -> np.ndarray:
    """Softmax probability of class ``ids[i]`` for each image, float64 (N,), in batches."""
    return probabilities(model, images, batch_size=batch_size)[np.arange(len(ids)), np.asarray(ids)]


def input_gradients(
    model: Any, images: tf.Tensor, ids: np.ndarray, *, batch_size: int = 256
) -> np.ndarray:
    """``d S_c / d x`` of each image's class score ``S_c`` (the model's output column), (N, H, W, C).

    ``ids`` holds one class id per image. Computed in batches; float64 result.
    """
    ids = tf.constant(np.asarray(ids, dtype=np.int32))
    out = []
    for start in range(0, int(images.shape[0]), batch_size):
        x = images[start : start + batch_size]
        with tf.GradientTape() as tape:
            tape.watch(x)
            scores = tf.gather(
                model(x, training=False), ids[start : start + batch_size], axis=1, batch_dims=1
            )
        out.append(tape.gradient(scores, x).numpy())
    return np.concatenate(out).astype(np.float64)
