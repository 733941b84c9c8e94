"""What the input-importance methods read from a model: class probabilities and input gradients.

Whether the model outputs logits or probabilities is not decided here but by
:func:`importance.validation.output_kind` (from its outputs on the images, once per model): the
probabilities of a logits model are the softmax of its outputs, those of a probability model its
outputs as they are. The gradient methods and the CAMs explain one class score for both
kinds, the centred logit of :func:`class_scores`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from importance.validation import check_probability_outputs, output_kind


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


def class_scores(outputs: Any, ids: Any, *, from_logits: bool) -> tf.Tensor:
    """The class score every gradient method and CAM explains, one per image (N,).

    ``S_c = z_c - (1/K) sum_k z_k``: the target class's logit minus the mean logit over the
    ``K`` classes, with ``z`` the model's outputs for a logits model and ``z = log p`` for a
    probability model. A softmax forgets a per-image shift of the logits (``log p = z -
    logsumexp(z)``); the centring removes that shift, so a ``Dense(K, activation="softmax")`` head
    and the same network with a logits head have the same ``S_c`` and therefore the same maps.

    ``S_c`` is the logit of class ``c`` of the *equivalent* network whose last layer is centred
    over the classes (the same probabilities): the pre-softmax class score the papers explain,
    made identifiable. It stays linear in the logits, so what the papers derive from a
    (piecewise-)linear class score still holds (Grad-CAM's weights of a GAP + Dense head,
    Grad-CAM++'s closed form, integrated gradients' completeness). It differs from the raw
    output column ``z_c`` by the mean logit, whose gradient is in general not zero.

    Args:
        outputs: The model's outputs (N, K), a tensor (differentiable).
        ids: One class id per image (N,).
        from_logits: Whether ``outputs`` are logits (else probabilities, all > 0).
    """
    logits = outputs if from_logits else tf.math.log(outputs)
    picked = tf.gather(logits, tf.cast(ids, tf.int32), axis=1, batch_dims=1)
    return picked - tf.reduce_mean(logits, axis=-1)


def input_gradients(
    model: Any,
    images: tf.Tensor,
    ids: np.ndarray,
    *,
    batch_size: int = 256,
    from_logits: bool | None = None,
) -> np.ndarray:
    """``d S_c / d x`` of each image's class score (:func:`class_scores`), (N, H, W, C).

    ``ids`` holds one class id per image. Computed in batches; float64 result. ``from_logits``
    is decided from the model's outputs on ``images`` when None
    (:func:`importance.validation.output_kind`).

    Raises:
        ValueError: A probability model whose outputs underflow to 0 (their log is undefined).
    """
    from_logits = output_kind(model, images, from_logits=from_logits) == "logits"
    ids = tf.constant(np.asarray(ids, dtype=np.int32))
    out = []
    for start in range(0, int(images.shape[0]), batch_size):
        x = images[start : start + batch_size]
        with tf.GradientTape() as tape:
            tape.watch(x)
            outputs = model(x, training=False)
            if not from_logits:
                check_probability_outputs(outputs)
            scores = class_scores(outputs, ids[start : start + batch_size], from_logits=from_logits)
        out.append(tape.gradient(scores, x).numpy())
    return np.concatenate(out).astype(np.float64)
