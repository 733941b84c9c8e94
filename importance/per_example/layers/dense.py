"""Per-example gradient moments of ``Dense`` layers, factorised (the BackPACK idea).

For ``z = a W + b`` example ``i``'s kernel gradient is the outer product ``a_i g_i^T`` with
``g_i = d objective_i / d z_i``; one backward pass of ``sum_i objective_i`` gives every ``g_i``,
and the moments factorise: ``sum_i (a_i g_i^T)**2 = (a**2)^T (g**2)``,
``sum_i |a_i g_i^T| = |a|^T |g|``; the bias's are ``sum_i f(g_i)``. These are linear in
``f(g)``, so several objectives (the exact Fisher's classes) sum ``f(g)`` first and multiply
once. When the layer sees extra axes (sequences), the per-example gradient is a sum over
positions of outer products ``A_i^T G_i`` and does not factorise: it is formed per example, in
chunks of the batch (over at most ``moments.PAIR_POSITIONS`` positions the square moment is
taken from pairs of positions instead: ``moments.chunked_outer_sum``). A layer called several times concatenates its calls as positions of one
sequence, so the per-example gradient is summed over the calls before the moment.

Reference: Dangel, Kunstner & Hennig, "BackPACK: Packing more into backprop", ICLR 2020.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from importance.per_example.layers.base import Call, plain_float32
from importance.per_example.moments import apply_moment, chunked_outer_sum


def supported(layer: Any) -> bool:
    """A plain float32 ``keras.layers.Dense`` running its own ``call``."""
    return (
        plain_float32(layer)
        and isinstance(layer, keras.layers.Dense)
        and type(layer).call is keras.layers.Dense.call
    )


def pre_activation(layer: Any, a: tf.Tensor) -> tf.Tensor:
    """The layer's output before its activation."""
    z = keras.ops.matmul(a, layer.kernel)
    return z + layer.bias if layer.bias is not None else z


def forward(layer: Any, a: tf.Tensor, watch: Any = None) -> list[tf.Tensor]:
    """``[z]``, the pre-activation (nothing to watch before it)."""
    return [pre_activation(layer, a)]


def linear_in_fg(call: Call) -> bool:
    """Whether the call's moments are linear in f(g) (2-D inputs): sums over objectives can then
    be taken on f(g) first."""
    return call.a.shape.rank == 2


def moments_of_fg(call: Call, fg: tf.Tensor, moment: str) -> list[tf.Tensor]:
    """Moments of a 2-D call from ``fg = f(g)`` (summed over objectives)."""
    return _of_fg(call.layer, call.a, fg, moment)


def _of_fg(layer: Any, a: tf.Tensor, fg: tf.Tensor, moment: str) -> list[tf.Tensor]:
    out = [tf.matmul(apply_moment(a, moment), fg, transpose_a=True)]
    if getattr(layer, "bias", None) is not None:
        out.append(tf.reduce_sum(fg, axis=0))
    return out


def _call_moments(layer: Any, a: tf.Tensor, g: tf.Tensor, moment: str) -> list[tf.Tensor]:
    """Moments of one call (or of calls concatenated as positions)."""
    if a.shape.rank == 2:
        return _of_fg(layer, a, apply_moment(g, moment), moment)
    positions = int(np.prod(a.shape[1:-1]))
    a = tf.reshape(a, [tf.shape(a)[0], positions, a.shape[-1]])
    g = tf.reshape(g, [tf.shape(g)[0], positions, g.shape[-1]])
    kernel = chunked_outer_sum(a, g, moment)
    bias_g = tf.reduce_sum(g, axis=1)
    out = [kernel]
    if getattr(layer, "bias", None) is not None:
        out.append(tf.reduce_sum(apply_moment(bias_g, moment), axis=0))
    return out


def moments(
    layer: Any, calls: Sequence[Call], grads: Sequence[Sequence[tf.Tensor]], moment: str
) -> list[tf.Tensor]:
    """``sum_i f(per-example gradient)`` of the kernel (and bias); a shared layer's calls become
    positions of one sequence."""
    if len(calls) == 1:
        return _call_moments(layer, calls[0].a, grads[0][0], moment)

    def positions(t: tf.Tensor) -> tf.Tensor:
        return tf.reshape(t, [tf.shape(t)[0], -1, t.shape[-1]])

    a = tf.concat([positions(c.a) for c in calls], axis=1)
    return _call_moments(layer, a, tf.concat([positions(g[0]) for g in grads], axis=1), moment)
