"""Per-example moments of one layer's weights, vectorised over examples for that layer only.

For a layer without a closed form (custom layers and cells, masked recurrent calls, grouped or transposed convolutions, the
closed forms that do not sum a shared layer's calls themselves) the engine keeps the layer's
inputs ``a`` and watches its outputs ``z`` during its own forward pass; one backward pass of the
summed objective gives ``g = d objective / d z`` for every example at once (example ``i`` only
affects ``objective_i``). Example ``i``'s gradient
w.r.t. the layer's weights ``w`` is then the vector-Jacobian product
``d <z(a_i; w), g_i> / d w``, summed over the layer's calls *before* the moment is taken.
``tf.vectorized_map`` forms it for all examples at once: only this layer is re-run per example,
not the whole model, and no Jacobian of the whole batch is formed.

This is the per-layer form of the ``vmap`` method (Dangel, Kunstner & Hennig, "BackPACK:
Packing more into backprop", ICLR 2020, use the same split of the backward pass at a layer's
output); its memory is one batch of per-example gradients of this layer's weights.

It must not vectorise attention (:func:`attention_layers`): a layer holding some, which the
engine can neither walk nor intercept, takes the whole-batch Jacobian instead (the rule's
``unvectorisable``), and ``method="vmap"`` refuses such models.

Internal surface: tests wrap :func:`moments` with ``monkeypatch`` to count the layers that take
this path (the engine looks it up at each call).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import tensorflow as tf

from importance.per_example.layers.base import Call
from importance.per_example.moments import apply_moment

# A layer call to replay per example: the flat tensors that carry the batch axis, and a function
# that recomputes the watched outputs (a flat list) from such tensors.
Replay = tuple[list[tf.Tensor], Callable[[list[tf.Tensor]], list[tf.Tensor]]]

ATTENTION_LAYERS = tuple(
    getattr(keras.layers, name)
    for name in ("MultiHeadAttention", "GroupedQueryAttention")
    if hasattr(keras.layers, name)
)


def attention_layers(layer: Any) -> list[Any]:
    """The attention layers in ``layer`` (itself included).

    ``tf.vectorized_map`` over a Keras ``MultiHeadAttention`` kills the process inside
    TensorFlow on oneDNN CPU builds (TF 2.21; a segmentation fault, not an exception), so callers
    check for these layers before vectorising a model or a layer over examples.
    """
    flatten = getattr(layer, "_flatten_layers", None)
    layers = list(flatten(include_self=True)) if flatten is not None else [layer]
    return [item for item in layers if isinstance(item, ATTENTION_LAYERS)]


def supported(layer: Any) -> bool:
    """Any layer with trainable weights (the fallback: tried after every closed form)."""
    return bool(getattr(layer, "trainable_weights", None))


def layer_moments(
    layer: Any, calls: Sequence[Call], grads: Sequence[Sequence[tf.Tensor]], moment: str
) -> list[tf.Tensor]:
    """The fallback rule's moments: every watched output of every call, vectorised."""
    replays = [(c.inputs, c.forward) for c in calls]
    return moments(calls[0].variables(), replays, grads, moment)


def output_moments(
    calls: Sequence[Call], grads: Sequence[Sequence[tf.Tensor]], moment: str
) -> list[tf.Tensor]:
    """A shared closed-form layer (``shared_calls="vmap"``): each call's output only, the last
    watched tensor (the gradients of earlier ones already hold the path through it)."""
    replays = [(c.inputs, lambda ts, c=c: c.forward(ts)[-1:]) for c in calls]
    return moments(calls[0].variables(), replays, [g[-1:] for g in grads], moment)


def moments(
    variables: Sequence[Any],
    calls: Sequence[Replay],
    grads: Sequence[Sequence[tf.Tensor]],
    moment: str,
) -> list[tf.Tensor]:
    """``sum_i f(sum_calls d <z_c(a_ci), g_ci> / d w)`` for each of ``variables``.

    Args:
        variables: The layer's trainable variables to differentiate.
        calls: The layer's calls in this forward pass (see ``Replay``).
        grads: Per call, the gradients of the summed objective w.r.t. that call's outputs.
        moment: ``"square"`` or ``"abs"``.

    Returns:
        One tensor per variable, summed over examples.
    """
    sizes = [len(inputs) for inputs, _ in calls]
    flat = [t for inputs, _ in calls for t in inputs] + [g for gs in grads for g in gs]

    def one(elems: list[tf.Tensor]) -> list[tf.Tensor]:
        with tf.GradientTape() as tape:
            total, start, g_start = tf.constant(0.0), 0, sum(sizes)
            for (_, forward), size, gs in zip(calls, sizes, grads, strict=True):
                outs = forward([t[None] for t in elems[start : start + size]])
                start += size
                for out, g in zip(outs, elems[g_start : g_start + len(gs)], strict=True):
                    total += tf.reduce_sum(tf.cast(out, tf.float32) * g[None])
                g_start += len(gs)
        per_example = tape.gradient(
            total, list(variables), unconnected_gradients=tf.UnconnectedGradients.ZERO
        )
        return [apply_moment(p, moment) for p in per_example]

    per_example = tf.vectorized_map(one, flat)
    return [tf.reduce_sum(p, axis=0) for p in per_example]
