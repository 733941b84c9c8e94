"""Per-example gradients of normalisation layers' gamma and beta, in closed form.

BatchNormalization (inference: moving statistics), LayerNormalization and GroupNormalization
compute ``y = x_hat * gamma + beta`` where ``x_hat`` does not depend on gamma or beta. With
``g_i = d objective_i / d y_i`` (from the engine's one backward pass), example ``i``'s gradients
are ``sum_positions x_hat_i * g_i`` for gamma and ``sum_positions g_i`` for beta, the sums over
every axis but the batch and the parameters' axes (Ioffe & Szegedy 2015; Ba et al. 2016;
Wu & He 2018). They are (batch x channels) tensors: small, so a layer called several times sums
them over its calls before the moment is taken.

``x_hat`` is the layer's own output with gamma = 1 and beta = 0 (``keras.StatelessScope``), so
every option the layer has (axes, groups, epsilon, ``rms_scaling``) is honoured without
re-implementing it. The gradients are cast to float32, so any compute dtype is accepted.
One exception (:func:`batch_norm_gamma`): a float32 BatchNormalization, whose inference ``x_hat``
is ``(x - moving_mean) * rsqrt(moving_variance + epsilon)`` per channel, takes
``rsqrt(moving_variance + epsilon) * sum_positions (x - moving_mean) * g``: the same sums
without forming ``x_hat`` (two elementwise passes over the activations before the sum instead
of three: the call forms ``x * inv + (-mean * inv)``; measured on one (128, 32, 32, 16) layer,
process CPU per batch: 4.1 ms against 6.0 ms).

Keras' ``LayerScale`` (``keras.src.applications.convnext``, the per-channel scale of ConvNeXt's
blocks; Touvron et al., "Going deeper with image transformers", ICCV 2021) computes
``y = x * gamma``, gamma of shape ``(C,)`` over the last axis: the same form with
``x_hat = x`` and no beta (its call with gamma = 1), so it is this family too, recognised by its
exact class (so its own ``call``) and its one weight ``gamma`` of shape ``(projection_dim,)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from importance.per_example.layers.base import Call, plain_float32
from importance.per_example.moments import apply_moment

NORM_LAYERS = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
)

try:  # the class ConvNeXt builds its blocks with (not exported under a public name)
    from keras.src.applications.convnext import LayerScale
except ImportError:  # pragma: no cover - another Keras layout: such layers take the vmap
    LayerScale = None


def _layer_scale(layer: Any) -> bool:
    """Exactly Keras' ``LayerScale`` (so its own ``call``, ``x * gamma``), built, with one weight,
    the trainable ``gamma`` of shape ``(projection_dim,)``: it scales the output's last axis, and
    ``x_hat`` (its call with gamma = 1) is ``x`` broadcast to the output."""
    if LayerScale is None or type(layer) is not LayerScale or not layer.built:
        return False
    gamma = getattr(layer, "gamma", None)
    weights = layer.trainable_weights
    return (
        gamma is not None
        and len(weights) == 1
        and weights[0] is gamma
        and tuple(gamma.shape) == (layer.projection_dim,)
        and len(layer.weights) == 1
    )


def supported(layer: Any) -> bool:
    """A standard normalisation layer (its class's own ``call``, any compute dtype) whose
    trainable weights are gamma and/or beta only, or Keras' ``LayerScale``."""
    if _layer_scale(layer):
        return plain_float32(layer, float32=False)
    if not isinstance(layer, NORM_LAYERS) or type(layer).call not in [c.call for c in NORM_LAYERS]:
        return False
    if not plain_float32(layer, float32=False):
        return False
    params = [getattr(layer, "gamma", None), getattr(layer, "beta", None)]
    ids = {id(p) for p in params if p is not None}
    return bool(layer.trainable_weights) and all(id(w) in ids for w in layer.trainable_weights)


def _axes(layer: Any, rank: int) -> list[int]:
    if _layer_scale(layer):
        return [rank - 1]
    axis = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    return sorted(a % rank for a in axis)


def per_example_grads(layer: Any, a: tf.Tensor, g: tf.Tensor) -> list[tf.Tensor]:
    """Example-by-example gradients ``(batch, *w.shape)`` of ``layer.trainable_weights``."""
    gamma, beta = getattr(layer, "gamma", None), getattr(layer, "beta", None)
    g = tf.cast(g, tf.float32)
    rank = g.shape.rank
    keep = _axes(layer, rank)
    summed = [ax for ax in range(1, rank) if ax not in keep]
    out = {}
    if beta is not None:
        out[id(beta)] = tf.reduce_sum(g, axis=summed)
    if gamma is not None and direct_batch_norm(layer, a):
        out[id(gamma)] = batch_norm_gamma(layer, a, g, summed)
    elif gamma is not None:
        mapping = [(gamma, tf.ones_like(gamma.value))]
        if beta is not None:
            mapping.append((beta, tf.zeros_like(beta.value)))
        kwargs = {"training": False} if getattr(layer, "_call_has_training_arg", False) else {}
        with keras.StatelessScope(state_mapping=mapping):
            x_hat = type(layer).call(layer, a, **kwargs)  # the class's call: also when intercepted
        out[id(gamma)] = tf.reduce_sum(tf.cast(x_hat, tf.float32) * g, axis=summed)
    batch = tf.shape(g)[0]
    return [
        tf.reshape(out[id(w)], tf.concat([[batch], w.shape], 0)) for w in layer.trainable_weights
    ]


# Whether a float32 BatchNormalization's gamma takes :func:`batch_norm_gamma` (tests set False
# to compare it with the layer's own call).
DIRECT_BATCH_NORM = True


def direct_batch_norm(layer: Any, a: tf.Tensor) -> bool:
    """Keras' BatchNormalization (its own ``call``) computing in float32 on float32 inputs: its
    inference output is ``tf.nn.batch_normalization`` with the moving statistics, whatever its
    other options (the engine runs every layer in inference mode)."""
    return (
        DIRECT_BATCH_NORM
        and isinstance(layer, keras.layers.BatchNormalization)
        and type(layer).call is keras.layers.BatchNormalization.call
        and layer.compute_dtype == "float32"
        and a.dtype == tf.float32
        and layer.moving_mean.dtype == tf.float32
        and layer.moving_variance.dtype == tf.float32
    )


def batch_norm_gamma(layer: Any, a: tf.Tensor, g: tf.Tensor, summed: list[int]) -> tf.Tensor:
    """Example-by-example gamma gradients ``(batch, channels)`` of a BatchNormalization in
    inference mode: ``rsqrt(moving_variance + epsilon) * sum_positions (x - moving_mean) * g``
    (Ioffe & Szegedy 2015, section 3.1: inference with the population statistics). The input
    is centred before the product, as ``x_hat`` is, so a large moving mean cancels nothing;
    equal to the sums over the layer's own ``x_hat`` up to rounding
    (``tf.nn.batch_normalization`` computes ``x * inv - mean * inv``)."""
    shape = [1] * a.shape.rank
    (axis,) = _axes(layer, a.shape.rank)
    shape[axis] = -1
    centred = a - tf.reshape(tf.convert_to_tensor(layer.moving_mean), shape)
    inv = tf.math.rsqrt(tf.convert_to_tensor(layer.moving_variance) + layer.epsilon)
    return tf.reduce_sum(centred * g, axis=summed) * inv


def moments(
    layer: Any, calls: Sequence[Call], grads: Sequence[Sequence[tf.Tensor]], moment: str
) -> list[tf.Tensor]:
    """``sum_i f(per-example gradient)`` of gamma and beta, summed over the layer's calls first
    (``calls[c].a`` the inputs, ``grads[c][0]`` the output gradients)."""
    inputs, firsts = [c.a for c in calls], [g[0] for g in grads]
    per_call = [per_example_grads(layer, a, g) for a, g in zip(inputs, firsts, strict=True)]
    totals = [tf.add_n(list(parts)) for parts in zip(*per_call, strict=True)]
    return [tf.reduce_sum(apply_moment(t, moment), axis=0) for t in totals]
