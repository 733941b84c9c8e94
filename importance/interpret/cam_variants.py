"""Grad-CAM++, LayerCAM and Score-CAM, built on the CAM core (:func:`cam.cam_pass`).

References:
    Chattopadhay et al. 2018, "Grad-CAM++: Generalized Gradient-based Visual Explanations for
    Deep Convolutional Networks". Jiang et al. 2021, "LayerCAM: Exploring Hierarchical Class
    Activation Maps for Localization". Wang et al. 2020, "Score-CAM: Score-Weighted Visual
    Explanations for Convolutional Neural Networks".
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from importance.checks import check_positive_int
from importance.interpret.cam import cam_map, cam_pass, find_cam_layer, spatial_size
from importance.interpret.outputs import target_probabilities
from importance.interpret.registry import register_saliency
from importance.validation import check_explained, check_feature_map


def grad_cam_plus_plus_maps(a: tf.Tensor, g: tf.Tensor) -> tf.Tensor:
    """Grad-CAM++ of activations ``a`` and gradients ``g`` (N, h, w, K) -> (N, h, w)."""
    g2 = g * g
    denominator = 2.0 * g2 + tf.reduce_sum(a, axis=(1, 2), keepdims=True) * g2 * g
    alpha = tf.math.divide_no_nan(g2, denominator)
    weights = tf.reduce_sum(alpha * tf.nn.relu(g), axis=(1, 2), keepdims=True)
    return tf.nn.relu(tf.reduce_sum(weights * a, axis=-1))


def grad_cam_plus_plus_normalised_maps(a: tf.Tensor, g: tf.Tensor) -> tf.Tensor:
    """Grad-CAM++ as the authors' released code computes it, (N, h, w, K) -> (N, h, w).

    The alphas of :func:`grad_cam_plus_plus_maps` are divided by their sum over each channel's
    positions (a zero sum left as 1) before weighting ``relu(g)``.
    """
    g2 = g * g
    denominator = 2.0 * g2 + tf.reduce_sum(a, axis=(1, 2), keepdims=True) * g2 * g
    alpha = tf.math.divide_no_nan(g2, denominator)
    total = tf.reduce_sum(alpha, axis=(1, 2), keepdims=True)
    alpha = alpha / tf.where(total != 0.0, total, tf.ones_like(total))
    weights = tf.reduce_sum(alpha * tf.nn.relu(g), axis=(1, 2), keepdims=True)
    return tf.nn.relu(tf.reduce_sum(weights * a, axis=-1))


def layer_cam_maps(a: tf.Tensor, g: tf.Tensor) -> tf.Tensor:
    """LayerCAM of activations ``a`` and gradients ``g`` (N, h, w, K) -> (N, h, w)."""
    return tf.nn.relu(tf.reduce_sum(tf.nn.relu(g) * a, axis=-1))


@register_saliency
def grad_cam_plus_plus(
    model: keras.Model, images: Any, *, target: Any, layer: Any = None,
    from_logits: bool | None = None,
) -> np.ndarray:
    """Grad-CAM++ (Chattopadhay et al. 2018): pixel-weighted positive gradients, (N, H, W).

    With ``g = dS_c/dA`` (S_c the centred class score of
    :func:`importance.interpret.outputs.class_scores`, linear in the logits as the paper's
    derivation needs), eq. 19 of the paper for an exponential output
    ``Y = exp(S_c)`` of a piecewise-linear network gives
    ``alpha_k_ij = g^2 / (2 g^2 + sum_ab A_k_ab g^3)`` (0 where the denominator is 0) and
    ``w_k = sum_ij alpha_k_ij relu(g_ij)``; the map is ``relu(sum_k w_k A_k)`` resized to the
    input. Deviation: the positive per-image factor ``exp(S_c)`` of ``dY/dA`` is dropped (it
    scales each image's map and changes no ranking), as the reference implementations do.

    Arguments as :func:`importance.interpret.cam.cam_map`.
    """
    return cam_map(grad_cam_plus_plus_maps, model, images, target=target, layer=layer,
                   from_logits=from_logits)


@register_saliency
def grad_cam_plus_plus_normalised(
    model: keras.Model, images: Any, *, target: Any, layer: Any = None,
    from_logits: bool | None = None,
) -> np.ndarray:
    """Grad-CAM++ with the alpha normalisation of the authors' released code, (N, H, W).

    Chattopadhay et al. 2018 define ``alpha_k_ij`` by eq. 19 (:func:`grad_cam_plus_plus`). Their
    released implementation (github.com/adityac94/Grad_CAM_plus_plus, followed by
    tf-keras-vis's ``GradcamPlusPlus``) then divides each channel's alphas by their sum over the
    positions, ``alpha_k_ij / sum_ab alpha_k_ab`` (a zero sum left as is), before
    ``w_k = sum_ij alpha_k_ij relu(g_ij)``. The normalisation reweights the channels (a channel
    whose gradient is spread over many positions gains against one with few), so the two maps
    differ in shape, not only in scale. The positive per-image factor ``exp(S_c)`` is dropped as
    in :func:`grad_cam_plus_plus`; ``S_c`` the centred class score.

    Arguments as :func:`importance.interpret.cam.cam_map`.
    """
    return cam_map(grad_cam_plus_plus_normalised_maps, model, images, target=target, layer=layer,
                   from_logits=from_logits)


@register_saliency
def layer_cam(
    model: keras.Model, images: Any, *, target: Any, layer: Any = None,
    from_logits: bool | None = None,
) -> np.ndarray:
    """LayerCAM (Jiang et al. 2021, eq. 5-6): ``relu(sum_k relu(dS_c/dA_k) * A_k)``, (N, H, W).

    ``S_c`` the centred class score. Arguments as :func:`importance.interpret.cam.cam_map`.
    """
    return cam_map(layer_cam_maps, model, images, target=target, layer=layer,
                   from_logits=from_logits)


@register_saliency
def score_cam(
    model: keras.Model,
    images: Any,
    *,
    target: Any,
    layer: Any = None,
    batch_size: int = 256,
    from_logits: bool | None = None,
) -> np.ndarray:
    """Score-CAM (Wang et al. 2020): channels weighted by the score of the input they mask.

    Each channel ``A_k`` is upsampled to the input and min-max normalised per image to
    ``H_k`` in [0, 1] (a constant channel gives ``H_k = 0``). Its weight is the increase of
    confidence ``C_k = p_c(X * H_k) - p_c(X_b)`` (Definition 2 of the paper, ``p`` the class
    probabilities: the softmax of a logits model's outputs, a probability model's outputs as
    they are, decided on ``images`` by :func:`importance.validation.output_kind` unless
    ``from_logits`` is given; ``X_b`` the
    all-zero baseline image). The map is
    ``relu(sum_k C_k * upsampled A_k)``. Costs one forward pass per image and channel.

    Args:
        model: A Keras classifier (logits or probabilities out).
        images: (N, H, W, C) images.
        target: One class id, or one per image.
        layer: Layer name or object; default the last 2-D convolution.
        batch_size: Masked images per forward pass.
        from_logits: Whether the model outputs logits; decided on the images when None.
    """
    batch_size = check_positive_int("batch_size", batch_size)
    images, ids, from_logits = check_explained(model, images, target, from_logits=from_logits)
    chosen = find_cam_layer(model, layer)
    check_feature_map(chosen, model=model)
    cam = cam_pass(model, images, ids, layer=chosen)  # the activations only
    images = tf.cast(images, cam.activations.dtype)
    up = tf.image.resize(cam.activations, spatial_size(images), method="bilinear")  # (N, H, W, K)
    low = tf.reduce_min(up, axis=(1, 2), keepdims=True)
    high = tf.reduce_max(up, axis=(1, 2), keepdims=True)
    masks = tf.math.divide_no_nan(up - low, high - low)
    baseline = target_probabilities(
        model, tf.zeros_like(images), ids, batch_size=batch_size, from_logits=from_logits
    )
    weights = np.empty((len(ids), int(up.shape[-1])))
    for k in range(weights.shape[1]):
        masked = images * masks[..., k : k + 1]
        scores = target_probabilities(
            model, masked, ids, batch_size=batch_size, from_logits=from_logits
        )
        weights[:, k] = scores - baseline
    maps = tf.nn.relu(tf.einsum("nhwk,nk->nhw", up, tf.constant(weights, up.dtype)))
    return maps.numpy().astype(np.float64)
