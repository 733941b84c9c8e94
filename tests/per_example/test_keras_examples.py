"""Regression tests of issue 21's three defects, on models built the way the Keras examples
build them: the keras.io transformer's position embedding (a table looked up at
``arange(maxlen)``, no batch axis), a subclassed block calling BatchNormalization with
``training=True``, and stacked recurrent layers under ``method="auto"``.

The engine is compared with the per-example loop (one backward pass per example, the definition
of a per-example gradient), relative error <= 1e-5.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers, ops

from importance import per_example
from importance.per_example import engine, reference
from importance.testing import relative_error

TOL = 1e-5
BATCH, MAXLEN, VOCABULARY, CLASSES = 5, 7, 20, 3


def _log_likelihood(outputs: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    return tf.gather(tf.nn.log_softmax(outputs), targets, axis=1, batch_dims=1)


def _squared_norm(outputs: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(tf.square(outputs), axis=-1)


class TokenAndPositionEmbedding(layers.Layer):
    """As in keras.io's "Text classification with Transformer"."""

    def __init__(self, maxlen: int, vocab_size: int, embed_dim: int) -> None:
        super().__init__()
        self.token_emb = layers.Embedding(input_dim=vocab_size, output_dim=embed_dim)
        self.pos_emb = layers.Embedding(input_dim=maxlen, output_dim=embed_dim)

    def call(self, x):
        maxlen = ops.shape(x)[-1]
        positions = ops.arange(start=0, stop=maxlen, step=1)
        positions = self.pos_emb(positions)
        x = self.token_emb(x)
        return x + positions


class TransformerBlock(layers.Layer):
    """As in keras.io's "Text classification with Transformer"."""

    def __init__(self, embed_dim: int, num_heads: int, ff_dim: int, rate: float = 0.1) -> None:
        super().__init__()
        self.att = layers.MultiHeadAttention(num_heads=num_heads, key_dim=embed_dim)
        self.ffn = keras.Sequential([layers.Dense(ff_dim, activation="relu"), layers.Dense(embed_dim)])
        self.layernorm1 = layers.LayerNormalization(epsilon=1e-6)
        self.layernorm2 = layers.LayerNormalization(epsilon=1e-6)
        self.dropout1 = layers.Dropout(rate)
        self.dropout2 = layers.Dropout(rate)

    def call(self, inputs, training=None):
        attn_output = self.att(inputs, inputs)
        attn_output = self.dropout1(attn_output, training=training)
        out1 = self.layernorm1(inputs + attn_output)
        ffn_output = self.ffn(out1)
        ffn_output = self.dropout2(ffn_output, training=training)
        return self.layernorm2(out1 + ffn_output)


def _keras_io_transformer() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = layers.Input(shape=(MAXLEN,), dtype="int32")
    x = TokenAndPositionEmbedding(MAXLEN, VOCABULARY, 8)(inputs)
    x = TransformerBlock(8, 2, 8)(x)
    x = layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs=inputs, outputs=layers.Dense(CLASSES)(x))


def _tokens(n: int = BATCH) -> np.ndarray:
    return np.random.default_rng(1).integers(0, VOCABULARY, size=(n, MAXLEN)).astype(np.int32)


def _labels(n: int = BATCH) -> tf.Tensor:
    return tf.constant(np.arange(n) % CLASSES, tf.int32)


def _embedding_classifier() -> keras.Model:
    """keras.io's embedding layer alone, pooled, with a Dense head (fast to trace)."""
    keras.utils.set_random_seed(0)
    inputs = layers.Input(shape=(MAXLEN,), dtype="int32")
    x = layers.GlobalAveragePooling1D()(TokenAndPositionEmbedding(MAXLEN, VOCABULARY, 8)(inputs))
    return keras.Model(inputs=inputs, outputs=layers.Dense(CLASSES, activation="tanh")(x))


@pytest.mark.parametrize("moment", ["square"])
def test_position_embedding_without_batch_axis_matches_the_loop(moment):
    """The position table is read by every example through one batch-free lookup: each
    example's gradient of it is its own, not the batch's sum (the minibatch shortcut gave a
    relative error of 0.9-1.7 on that table)."""
    model = _keras_io_transformer()
    x, y = _tokens(), _labels()
    got = engine.per_example_moment(model, x, _log_likelihood, moment=moment, targets=y)
    ref = per_example.per_example_moment(
        model, x, _log_likelihood, moment=moment, method="loop", targets=y
    )
    assert relative_error(got, ref) <= TOL
    table = model.layers[1].pos_emb.embeddings
    k = [id(w) for w in model.trainable_weights].index(id(table))
    assert relative_error([got[k]], [ref[k]]) <= TOL
    # the planted check: the shortcut (square of the summed gradient) is far from it
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(_log_likelihood(model(x, training=False), y))
    shortcut = tf.square(tape.gradient(total, table)) if moment == "square" else None
    if shortcut is not None:
        assert relative_error([shortcut], [ref[k]]) > 0.1


def test_position_embedding_inside_tf_function_with_unknown_batch():
    """Traced for any batch size, the batch-free lookup is told apart by its static length."""
    model = _embedding_classifier()
    x, y = _tokens(), _labels()
    step = tf.function(
        lambda x, y: engine.per_example_moment(model, x, _log_likelihood, targets=y),
        input_signature=[tf.TensorSpec([None, MAXLEN], tf.int32), tf.TensorSpec([None], tf.int32)],
    )
    ref = per_example.per_example_moment(model, x, _log_likelihood, method="loop", targets=y)
    assert relative_error(step(x, y), ref) <= TOL


class BatchNormBlock(layers.Layer):
    """A custom block that hard-codes BatchNormalization's training mode (a common pattern)."""

    def __init__(self) -> None:
        super().__init__()
        self.dense = layers.Dense(6)
        self.bn = layers.BatchNormalization()

    def call(self, x, training=None):
        return ops.relu(self.bn(self.dense(x), training=True))


class FollowingBlock(BatchNormBlock):
    """The same block passing its own ``training`` on."""

    def call(self, x, training=None):
        return ops.relu(self.bn(self.dense(x), training=training))


def test_training_true_inside_a_subclassed_block_is_refused_with_the_reason():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, layers.Dense(CLASSES)(BatchNormBlock()(inputs)))
    x = np.random.default_rng(2).normal(size=(BATCH, 4)).astype(np.float32)
    with pytest.raises(ValueError, match=r"'batch_normalization\w*' \(BatchNormalization\) with training=True"):
        per_example.per_example_moment(model, x, _log_likelihood, targets=_labels())


def test_block_passing_training_on_runs_in_inference_mode_and_matches_the_loop():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, layers.Dense(CLASSES)(FollowingBlock()(inputs)))
    for w in model.non_trainable_weights:  # statistics away from (0, 1)
        w.assign(np.linspace(0.5, 1.5, int(np.prod(w.shape))).reshape(w.shape).astype(np.float32))
    x, y = np.random.default_rng(2).normal(size=(BATCH, 4)).astype(np.float32), _labels()
    got = per_example.per_example_moment(model, x, _log_likelihood, targets=y)
    ref = per_example.per_example_moment(model, x, _log_likelihood, method="loop", targets=y)
    assert relative_error(got, ref) <= TOL


def test_auto_never_vectorises_stacked_recurrent_layers():
    """Two LSTMs over float features (the first returning its sequence): tf.vectorized_map
    raises a TypeError on them, so auto runs the engine; one LSTM could still be vectorised
    (LSTMs now have the engine's closed form, so auto runs the engine on both)."""
    from importance.per_example.paths import whole_model_vmap_can_run

    inputs = keras.Input((6, 3))
    h = layers.LSTM(8)(layers.LSTM(8, return_sequences=True)(inputs))
    stacked = keras.Model(inputs, layers.Dense(CLASSES)(h))
    assert per_example.resolve_method(stacked) == "factorized"
    assert not whole_model_vmap_can_run(stacked)
    inputs = keras.Input((6, 3))
    single = keras.Model(inputs, layers.Dense(CLASSES)(layers.LSTM(8)(inputs)))
    assert whole_model_vmap_can_run(single)
    assert per_example.resolve_method(single) == "factorized"


class Scale(layers.Layer):
    """A custom layer without a closed form (vectorised on its own by the engine)."""

    def build(self, shape):
        self.w = self.add_weight(shape=(shape[-1], shape[-1]), initializer="glorot_uniform")

    def call(self, x):
        return ops.tanh(ops.matmul(x, self.w))


def test_auto_falls_back_to_the_engine_when_vmap_raises(monkeypatch):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, layers.Dense(2)(Scale()(inputs)))
    x = np.random.default_rng(3).normal(size=(BATCH, 4)).astype(np.float32)
    ref = per_example.per_example_moment(model, x, _squared_norm, method="loop")
    assert per_example.resolve_method(model) == "vmap"

    def broken(*args, **kwargs):
        raise TypeError("`dtype` <dtype: 'variant'> is not compatible")  # as TensorFlow's

    monkeypatch.setattr(reference, "vmap", broken)
    got = per_example.per_example_moment(model, x, _squared_norm)
    assert relative_error(got, ref) <= TOL
    assert per_example.resolve_method(model) == "factorized"  # remembered
    with pytest.raises(TypeError):  # an explicit vmap is not replaced
        per_example.per_example_moment(model, x, _squared_norm, method="vmap")


def test_compiled_loop_reference_matches_the_eager_loop_and_traces_once():
    """The compiled per-example reference the application benchmark measures against: the
    same quantity as the eager loop (small model, no ReLU mask to flip), one trace for any
    batch size."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 2))
    h = layers.Conv2D(3, 3, activation="tanh")(inputs)
    model = keras.Model(inputs, layers.Dense(CLASSES)(layers.Flatten()(h)))
    x = np.random.default_rng(4).normal(size=(BATCH, 6, 6, 2)).astype(np.float32)
    y = _labels()
    run = reference.compiled_loop(model, _log_likelihood, "square", example=x, targets=y)
    expected = reference.loop(model, x, _log_likelihood, "square", y)
    assert relative_error(run(x, y), expected) <= TOL
    assert relative_error(run(x[:2], y[:2]), reference.loop(model, x[:2], _log_likelihood, "square", y[:2])) <= TOL
    assert run.experimental_get_tracing_count() == 1
