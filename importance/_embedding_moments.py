"""Per-example gradient moments of an Embedding table, without a batch x vocabulary tensor.

Example ``i``'s gradient of row ``v`` is the sum of the output gradients ``g_it`` over the
positions ``t`` where example ``i`` holds token ``v`` (it is zero for tokens the example does not
hold). Each (example, token) pair that occurs gets one segment: the output gradients are summed
per segment (``unsorted_segment_sum``), the moment is taken per segment, and the segments are
summed into their token's row. Memory is (tokens in the batch x dim), never batch x vocabulary
x dim. A layer called several times (shared) puts all its calls' positions in the same segments,
so the gradient is summed over calls before the moment is taken.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from importance._moments import apply_moment


def supported(layer: Any) -> bool:
    """A plain float32 ``keras.layers.Embedding`` (no LoRA, no quantisation)."""
    return (
        isinstance(layer, keras.layers.Embedding)
        and type(layer).call is keras.layers.Embedding.call
        and not getattr(layer, "lora_enabled", False)
        and not getattr(layer, "quantization_mode", None)
        and [id(w) for w in layer.trainable_weights] == [id(layer.embeddings)]
    )


def moments(layer: Any, inputs: Sequence[tf.Tensor], grads: Sequence[tf.Tensor], moment: str) -> list[tf.Tensor]:
    """``sum_i f(d objective_i / d embeddings)`` from the ids ``inputs`` and output gradients."""
    vocabulary, dim = int(layer.input_dim), int(layer.output_dim)
    keys, rows = [], []
    for ids, g in zip(inputs, grads, strict=True):
        ids = tf.reshape(tf.cast(ids, tf.int64), [tf.shape(ids)[0], -1])
        example = tf.range(tf.shape(ids, out_type=tf.int64)[0])[:, None] + tf.zeros_like(ids)
        keys.append(tf.reshape(example * vocabulary + ids, [-1]))
        rows.append(tf.reshape(tf.cast(g, tf.float32), [-1, dim]))
    unique, segment = tf.unique(tf.concat(keys, 0))
    per_pair = tf.math.unsorted_segment_sum(tf.concat(rows, 0), segment, tf.size(unique))
    per_pair = apply_moment(per_pair, moment)
    return [tf.math.unsorted_segment_sum(per_pair, unique % vocabulary, vocabulary)]
