"""Activation-aware pruning criterion: ``wanda`` (weights and activations).

The input features' sums of squares are accumulated over the batches by the library's shared
batch loop, :func:`importance.measures.batched.sum_over` (one step compiled per model).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from importance.data import DEFAULT_BATCH_SIZE
from importance.measures.batched import sum_over
from importance.measures.registry import register_measure


@register_measure("wanda")
def wanda(
    model: Any,
    data: Any,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_examples: int | None = None,
) -> list[np.ndarray]:
    """Wanda score |W_ij| * ||X_j||_2: weight magnitude times its input feature's norm.

    ||X_j||_2 is the L2 norm of input feature j of the layer over every token of the measure
    data. For a Dense layer the tokens are the examples (and any leading axes); for a Conv2D
    layer (channels_last, one group) a kernel weight W[a, b, c, o] reads the element (a, b, c)
    of each input patch, so its feature norm is that patch element's norm over all examples and
    output positions (the convolution written as a matrix product, im2col). Reference: Sun et
    al. 2024, "A Simple and Effective Pruning Approach for Large Language Models" (ICLR; arXiv
    2023). Wanda compares weights within each output row; here the scores enter the benchmark's
    global or per-layer ranking like every other measure's.

    Coverage: a bias is the weight of a constant input 1, so its feature norm is sqrt(number of
    tokens) and it scores |b| * sqrt(tokens). Weights where the input feature is undefined
    (normalisation gamma/beta, embeddings, depthwise/grouped/channels_first/1D/3D convolutions,
    layers of nested models, any other layer) score |w|: the magnitude criterion, Wanda with a
    unit feature norm. That fallback is named in the leaderboard's notes.

    Args:
        model: A built Sequential or functional Keras model.
        data: ``(x, y)`` arrays (``y`` is ignored) or a batched ``tf.data.Dataset`` of ``(x, y)``.
        batch_size: Examples per batch when ``data`` is arrays.
        max_examples: Use only the first ``max_examples`` examples; all when None.

    Returns:
        One float64 array per trainable weight, >= 0.

    Raises:
        ValueError: A model whose layer inputs cannot be read (subclassed models).
    """
    weights = model.trainable_weights
    scores = [np.abs(np.asarray(w.numpy(), np.float64)) for w in weights]
    layers, _ = _layer_inputs(model)  # raises here, before the loop, for unreadable models
    if not layers:
        return scores
    # Sums over every token, not means: ||X_j||_2 is the square root of the sum of squares.
    sums, _ = sum_over(
        model, data, _batch_square_sums, key=("wanda",), batch_size=batch_size,
        max_examples=max_examples,
    )
    index = {id(w): i for i, w in enumerate(weights)}
    for k, layer in enumerate(layers):
        squares, tokens = sums[2 * k], sums[2 * k + 1]
        i = index.get(id(layer.kernel))
        if i is not None:
            norms = np.sqrt(squares)
            scores[i] = scores[i] * (
                norms[:, None] if isinstance(layer, keras.layers.Dense) else norms[..., None]
            )
        bias = getattr(layer, "bias", None)
        if bias is not None and id(bias) in index:
            scores[index[id(bias)]] = scores[index[id(bias)]] * np.sqrt(tokens)
    return scores


wanda.coverage = (
    "Dense and Conv2D kernels: |W| * input-feature norm; biases: |b| * sqrt(tokens); "
    "other weights (normalisation, embeddings, other convolutions): |w|"
)


def _layer_inputs(model: Any) -> tuple[list[Any], Any]:
    """The covered layers of ``model`` and a model returning their inputs (None if no layer)."""
    layers = [layer for layer in model.layers if _covered(layer)]
    if not layers:
        return layers, None
    try:
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        return layers, keras.Model(inputs, [layer.input for layer in layers])
    except Exception as error:  # noqa: BLE001 - subclassed or otherwise unreadable model
        raise ValueError(
            f"wanda needs a Sequential or functional model whose layer inputs can be read. "
            f"Received: {type(model).__name__} ({error})"
        ) from error


def _batch_square_sums(model: Any, x: tf.Tensor, y: tf.Tensor) -> list[tf.Tensor]:
    """Per covered layer, its input features' sums of squares and its token count, one batch."""
    del y
    layers, probe = _layer_inputs(model)  # built once, when the step is traced
    inputs = probe(x, training=False)
    inputs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
    sums = []
    for layer, features in zip(layers, inputs, strict=True):
        sums += _feature_square_sums(layer, tf.cast(features, tf.float64))
    return sums


def _covered(layer: Any) -> bool:
    if type(layer) is keras.layers.Dense:
        return True
    return (
        type(layer) is keras.layers.Conv2D
        and layer.groups == 1
        and layer.data_format == "channels_last"
    )


def _feature_square_sums(layer: Any, x: tf.Tensor) -> list[tf.Tensor]:
    """(sum of squares of each input feature, number of tokens) over the batch."""
    if isinstance(layer, keras.layers.Dense):
        flat = tf.reshape(x, [-1, x.shape[-1]])
        return [tf.reduce_sum(tf.square(flat), axis=0), tf.cast(tf.shape(flat)[0], tf.float64)]
    kh, kw = layer.kernel_size
    sh, sw = layer.strides
    dh, dw = layer.dilation_rate
    patches = tf.image.extract_patches(
        tf.square(x),
        sizes=[1, kh, kw, 1],
        strides=[1, sh, sw, 1],
        rates=[1, dh, dw, 1],
        padding=layer.padding.upper(),
    )
    tokens = tf.cast(tf.reduce_prod(tf.shape(patches)[:3]), tf.float64)
    return [tf.reshape(tf.reduce_sum(patches, axis=[0, 1, 2]), (kh, kw, x.shape[-1])), tokens]
