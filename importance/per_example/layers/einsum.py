"""Per-example gradient moments of ``EinsumDense`` (and so of MultiHeadAttention's projections).

``z = einsum(equation, a, kernel) (+ bias)``. When the equation keeps the batch axis (the first
letter of the input and of the output, absent from the kernel), example ``i``'s kernel gradient
is ``einsum(a_i, g_i)`` with the kernel's letters as output: a sum over that example's positions
(and heads) of outer products. Since the sum comes before the square it is formed per example,
in chunks of the batch so that at most ``moments.CHUNK_ELEMENTS`` float32 elements of per-example
tensors are alive at once; a layer called several times sums its calls' per-example gradients
before the moment. Bias gradients are ``g_i`` summed over the axes the bias is broadcast along.

Reference: Dangel, Kunstner & Hennig, "BackPACK: Packing more into backprop", ICLR 2020
(individual gradients of linear layers with weight sharing over positions).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from importance.per_example.layers.base import Call, plain_float32
from importance.per_example.moments import apply_moment, chunked_sum


def _specs(layer: Any) -> tuple[str, str, str] | None:
    equation = layer.equation.replace(" ", "")
    if "..." in equation or "->" not in equation:
        return None
    inputs, output = equation.split("->")
    a_spec, k_spec = inputs.split(",")
    if a_spec[0] != output[0] or a_spec[0] in k_spec:
        return None
    return a_spec, k_spec, output


def supported(layer: Any) -> bool:
    """A plain float32 ``EinsumDense`` (its own ``call``) whose equation keeps the batch axis
    first."""
    return (
        isinstance(layer, keras.layers.EinsumDense)
        and type(layer).call is keras.layers.EinsumDense.call
        and plain_float32(layer)
        and _specs(layer) is not None
    )


def pre_activation(layer: Any, a: tf.Tensor) -> tf.Tensor:
    """The layer's output before its activation."""
    z = keras.ops.einsum(layer.equation, a, layer.kernel)
    return z + layer.bias if layer.bias is not None else z


def forward(layer: Any, a: tf.Tensor, watch: Any = None) -> list[tf.Tensor]:
    """``[z]``, the pre-activation (nothing to watch before it)."""
    return [pre_activation(layer, a)]


def _bias_grads(bias_shape: list[int], g: tf.Tensor) -> tf.Tensor:
    """Per-example bias gradients: ``g`` summed over the axes the bias is broadcast along."""
    rank, k = g.shape.rank, len(bias_shape)
    axes = list(range(1, rank - k)) + [rank - k + j for j, s in enumerate(bias_shape) if s == 1]
    return tf.reshape(tf.reduce_sum(g, axis=axes), [-1, *bias_shape])


def moments(
    layer: Any, calls: Sequence[Call], grads: Sequence[Sequence[tf.Tensor]], moment: str
) -> list[tf.Tensor]:
    """``sum_i f(per-example gradient)`` of the kernel (and bias), calls summed first
    (``calls[c].a`` the inputs, ``grads[c][0]`` the output gradients)."""
    inputs, grads = [c.a for c in calls], [g[0] for g in grads]
    a_spec, k_spec, out_spec = _specs(layer)
    per_example_kernel = f"{a_spec},{out_spec}->{a_spec[0]}{k_spec}"
    calls = len(inputs)

    def kernel_block(chunk: list[tf.Tensor]) -> tf.Tensor:
        pairs = zip(chunk[:calls], chunk[calls:], strict=True)
        parts = [tf.einsum(per_example_kernel, a, g) for a, g in pairs]
        return tf.reduce_sum(apply_moment(tf.add_n(parts), moment), axis=0)

    kernel_size = int(np.prod(layer.kernel.shape))
    per_example = 2 * kernel_size + sum(int(np.prod(t.shape[1:])) for t in [*inputs, *grads])
    out = [chunked_sum(kernel_block, [*inputs, *grads], per_example, layer.kernel.shape)]
    if layer.bias is not None:
        bias_shape = list(layer.bias.shape)
        bias_g = tf.add_n([_bias_grads(bias_shape, g) for g in grads])
        out.append(tf.reduce_sum(apply_moment(bias_g, moment), axis=0))
    return out
