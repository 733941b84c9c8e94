"""What the input-importance methods read from a model: class probabilities and input gradients.

Whether the model outputs logits or probabilities is not decided here but by
:func:`importance.validation.output_kind` (from its outputs on the images, once per model): the
probabilities of a logits model are the softmax of its outputs, those of a probability model its
outputs as they are.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from importance.validation import output_kind


def probabilities(
    model: Any, images: Any, *, batch_size: int = 256, from_logits: bool | None = None
) -> np.ndarray:
    """Class probabilities of the model on ``images``, float64 (N, classes), in batches.

    Args:
        model: A Keras classifier.
        images: (N, H, W, C) images.
        batch_size: Images per forward pass.
        from_logits: Whether the model outputs logits; decided from its outputs on ``images``
            when None (see :func:`importance.validation.output_kind`).
    """
    from_logits = output_kind(model, images, from_logits=from_logits) == "logits"
    out = []
    for start in range(0, int(images.shape[0]), batch_size):
        outputs = tf.cast(model(images[start : start + batch_size], training=False), tf.float64)
        out.append((tf.nn.softmax(outputs, axis=-1) if from_logits else outputs).numpy())
    return np.concatenate(out)


def target_probabilities(
    model: Any,
    images: Any,
    ids: np.ndarray,
    *,
    batch_size: int = 256,
    from_logits: bool | None = None,
) -> np.ndarray:
    """Probability of class ``ids[i]`` for each image, float64 (N,), in batches.

    Arguments as :func:`probabilities`; ``ids`` holds one class id per image.
    """
    probs = probabilities(model, images, batch_size=batch_size, from_logits=from_logits)
    return probs[np.arange(len(ids)), np.asarray(ids)]


def input_gradients(
    model: Any, images: tf.Tensor, ids: np.ndarray, *, batch_size: int = 256
) -> np.ndarray:
    """``d S_c / d x`` of each image's class score ``S_c`` (its output column), (N, H, W, C).

    ``ids`` holds one class id per image. Computed in batches; float64 result. The class score is
    the output column whatever the model outputs: the logit for a logits model, the probability
    for a probability model (the logits cannot be recovered from probabilities: softmax forgets
    a per-image shift, whose gradient is not zero).
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
