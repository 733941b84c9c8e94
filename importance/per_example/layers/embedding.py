"""Per-example gradient moments of an Embedding table, without a batch x vocabulary tensor.

Example ``i``'s gradient of row ``v`` is the sum of the output gradients ``g_it`` over the
positions ``t`` where example ``i`` holds token ``v`` (it is zero for tokens the example does not
hold). Each (example, token) pair that occurs gets one segment (``tf.unique_with_counts``),
and a chunk of the batch is taken at a time, one of two ways:

* **per position**, when at least :data:`ALONE_SHARE` of the chunk's positions hold their pair
  alone: such a position's output gradient is its pair's whole gradient, so its moment is taken
  per position and added into the token's row directly; only the repeated pairs are summed
  first (``unsorted_segment_sum``) and then take their moment;
* **per pair** otherwise (padded sequences repeat one token): every pair's output gradients
  are summed first, then the moment is taken per pair and added into the token's row.

Memory is (tokens in a chunk x dim), under half of the output gradients' (see
``moments.chunked_sum``), never batch x vocabulary x dim. A layer called several times (shared)
puts all its calls' positions in the same segments, so the gradient is summed over calls before
the moment is taken.

Per pair was the only way before 2026-12-07. Where pairs rarely repeat it costs one more pass
over the chunk's gradients: on the ``per-example-layers`` text model (64 random tokens of
1,000, batch 128; the group's paired rounds) the engine read 1.15-1.26x the plain pass that way
and 0.97-1.05x per position.

Not under XLA (the rule's ``under_xla``): XLA pads the sizes of a batch's chunks, which the pair
segments must not see (it gave wrong sums there in TF 2.21), so the layer takes the per-layer
vmap. The gradients are cast to float32, so any compute dtype is accepted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from importance.per_example.layers.base import Call, plain_float32
from importance.per_example.moments import apply_moment, chunked_sum

# The held rule's floor for this family: 64K elements, not the engine's 1M
# (``moments.MIN_CHUNK_ELEMENTS``). A table's temporaries grow with the positions, like the
# tensors held for it, and in a text model those are most of a plain pass's memory: with the 1M
# floor the per-example-layers text model (64 tokens, dim 32, batch 128) took its whole batch
# at once and peaked at 2.84x the plain pass (64K: 1.00x), over the 2x bar, at 1.12-1.23x the
# plain pass's time against 1.29-1.48x.
CHUNK_FLOOR = 1 << 16
# The share of a chunk's positions holding their (example, token) pair alone from which the
# moments are taken per position (below it, per pair). Measured on the text model's shapes (the
# layer alone, batch 128, 64 tokens of 1,000, dimension 32; process CPU per call, medians of 60,
# three repeats, 2026-12-07): per position 1.4-1.7 ms against per pair 1.8-2.3 ms with no
# padding; about even with 30 % of the positions padding (one token repeated); per pair faster
# with 50 % (1.4-1.7 ms against 1.7-2.3 ms).
ALONE_SHARE = 0.7


def supported(layer: Any) -> bool:
    """A plain ``keras.layers.Embedding`` (its own ``call``, no LoRA, no quantisation, any compute
    dtype) whose one trainable weight is the table."""
    return (
        isinstance(layer, keras.layers.Embedding)
        and type(layer).call is keras.layers.Embedding.call
        and plain_float32(layer, float32=False)
        and [id(w) for w in layer.trainable_weights] == [id(layer.embeddings)]
    )


def moments(
    layer: Any, calls: Sequence[Call], grads: Sequence[Sequence[tf.Tensor]], moment: str
) -> list[tf.Tensor]:
    """``sum_i f(d objective_i / d embeddings)`` from the ids (``calls[c].a``) and output
    gradients (``grads[c][0]``)."""
    inputs, grads = [c.a for c in calls], [g[0] for g in grads]
    vocabulary, dim = int(layer.input_dim), int(layer.output_dim)
    calls = len(inputs)
    # The pair keys of the whole batch, once: a chunk slices them (fewer ops per chunk).
    keys = [_pair_keys(tf.reshape(tf.cast(t, tf.int64), [tf.shape(t)[0], -1]), vocabulary)
            for t in inputs]
    grads = [tf.reshape(tf.cast(g, tf.float32), [tf.shape(g)[0], -1, dim]) for g in grads]

    def block(chunk: list[tf.Tensor]) -> tf.Tensor:
        flat_keys = tf.concat([tf.reshape(k, [-1]) for k in chunk[:calls]], 0)
        rows = tf.concat([tf.reshape(g, [-1, dim]) for g in chunk[calls:]], 0)
        unique, segment, counts = tf.unique_with_counts(flat_keys)
        alone = tf.gather(counts, segment) == 1  # the position is its (example, token) pair

        def by_position() -> tf.Tensor:
            total = tf.math.unsorted_segment_sum(
                tf.where(alone[:, None], apply_moment(rows, moment), 0.0),
                flat_keys % vocabulary, vocabulary,
            )
            shared = tf.where(~alone)[:, 0]  # positions whose pair occurs more than once
            pairs, pair = tf.unique(tf.gather(segment, shared))
            sums = tf.math.unsorted_segment_sum(tf.gather(rows, shared), pair, tf.size(pairs))
            return total + tf.math.unsorted_segment_sum(
                apply_moment(sums, moment), tf.gather(unique, pairs) % vocabulary, vocabulary
            )

        def by_pair() -> tf.Tensor:
            per_pair = tf.math.unsorted_segment_sum(rows, segment, tf.size(unique))
            return tf.math.unsorted_segment_sum(
                apply_moment(per_pair, moment), unique % vocabulary, vocabulary
            )

        share = tf.reduce_mean(tf.cast(alone, tf.float32))
        return tf.cond(share >= ALONE_SHARE, by_position, by_pair)

    lengths = [t.shape[1:].num_elements() for t in inputs]
    positions = sum(lengths) if None not in lengths else tf.add_n([tf.shape(k)[1] for k in keys])
    held = positions * (dim + 2)  # output gradients and int64 keys
    # The positions' moments and their masked copy (the pair sums and their moments, where
    # pairs repeat, are at most as large); the rows copied when the layer is shared (one call: a
    # view); the unique keys and segment ids (the counts and the mask are smaller).
    per_example = positions * ((3 if calls > 1 else 2) * dim + 8)
    return [
        chunked_sum(
            block, [*keys, *grads], per_example, [vocabulary, dim], held=held, floor=CHUNK_FLOOR
        )
    ]


def _pair_keys(ids: tf.Tensor, vocabulary: int) -> tf.Tensor:
    """``example * vocabulary + token`` for every position of a batch's (examples, positions)
    ids; the example is its index in the batch, so a chunk's keys stay apart from another's."""
    example = tf.range(tf.shape(ids, out_type=tf.int64)[0])[:, None]
    return example * vocabulary + ids
