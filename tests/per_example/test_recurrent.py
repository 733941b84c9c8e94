"""Per-example moments of recurrent layers (GRU, LSTM, SimpleRNN, Bidirectional) in closed form,
against the per-example loop (one backward pass per example through Keras' own layer: the
definition of a per-example gradient), relative error <= 1e-5; and the configurations the
closed form refuses, which must take the per-layer vmap (Keras' own call) and still match."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from importance.per_example import engine, paths, per_example_moment, per_example_moment_sum
from importance.per_example.layers import recurrent
from importance.testing import relative_error

TOL = 1e-5
BATCH, STEPS, FEATURES, CLASSES = 5, 4, 3, 3
L = keras.layers


def _log_likelihood(outputs: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    return tf.gather(tf.nn.log_softmax(outputs), targets, axis=1, batch_dims=1)


def _labels() -> tf.Tensor:
    return tf.constant(np.arange(BATCH) % CLASSES, tf.int32)


def _model(layer, steps=STEPS, *, seed=0):
    """``layer`` on (steps, FEATURES) sequences, a Dense head; every weight random (biases too, so
    a dropped bias term shows)."""
    inputs = keras.Input((steps, FEATURES))
    parts = layer(inputs)
    parts = list(parts) if isinstance(parts, (list, tuple)) else [parts]  # merge_mode=None: two
    h = L.Concatenate()([L.Flatten()(t) for t in parts]) if len(parts) > 1 else L.Flatten()(parts[0])
    model = keras.Model(inputs, L.Dense(CLASSES)(h))
    rng = np.random.default_rng(seed)
    for w in model.weights:
        w.assign(rng.normal(scale=0.7, size=w.shape).astype(np.float32))
    return model


def _x(steps=STEPS, seed=1):
    return tf.constant(np.random.default_rng(seed).normal(size=(BATCH, steps, FEATURES)), tf.float32)


CONFIGS = {
    "gru": lambda: L.GRU(4),
    "gru-reset-before": lambda: L.GRU(4, reset_after=False, return_sequences=True),
    "gru-no-bias": lambda: L.GRU(4, use_bias=False, go_backwards=True),
    "gru-backwards-sequences": lambda: L.GRU(4, go_backwards=True, return_sequences=True),
    "gru-activations": lambda: L.GRU(4, activation="relu", recurrent_activation="hard_sigmoid"),
    "lstm": lambda: L.LSTM(4, return_sequences=True),
    "lstm-backwards": lambda: L.LSTM(4, go_backwards=True, unit_forget_bias=False),
    "lstm-dropout-unroll": lambda: L.LSTM(4, dropout=0.5, recurrent_dropout=0.5, unroll=True),
    "simple-rnn": lambda: L.SimpleRNN(4, return_sequences=True, activation="relu"),
    "rnn-of-gru-cell": lambda: L.RNN(L.GRUCell(4), go_backwards=True),
    "bidirectional-lstm": lambda: L.Bidirectional(L.LSTM(3)),
    "bidirectional-gru-sum": lambda: L.Bidirectional(L.GRU(3, return_sequences=True), merge_mode="sum"),
    "bidirectional-ave": lambda: L.Bidirectional(L.SimpleRNN(3), merge_mode="ave"),
    "bidirectional-mul": lambda: L.Bidirectional(L.GRU(3, reset_after=False, return_sequences=True), merge_mode="mul"),
    "bidirectional-none": lambda: L.Bidirectional(L.LSTM(3), merge_mode=None),
}


@pytest.mark.parametrize(
    ("name", "moment"), [(name, ("square", "abs")[k % 2]) for k, name in enumerate(CONFIGS)]
)
def test_recurrent_closed_form_matches_the_loop(name, moment, engine_vs_loop):
    """Each configuration with one moment (the two alternate; the moment is applied the same way
    for every configuration)."""
    model = _model(CONFIGS[name]())
    assert [kind for _, kind in paths.layer_paths(model)] == ["recurrent", "dense"]
    engine_vs_loop(model, _x(), moment=moment, method="factorized")


@pytest.mark.parametrize("name", ["gru", "gru-reset-before", "lstm-backwards", "bidirectional-gru-sum"])
def test_while_loop_form_matches_the_loop(name, monkeypatch, engine_vs_loop):
    """Sequences longer than ``UNROLL_STEPS`` (or of unknown length) run a tf.while_loop."""
    monkeypatch.setattr(recurrent, "UNROLL_STEPS", 2)
    engine_vs_loop(_model(CONFIGS[name]()), _x(), moment="square", method="factorized")


def test_embedding_gru_and_stacked_layers_in_tf_function_unknown_batch_and_length():
    """The text model's shape (Embedding then a recurrent layer), stacked recurrent layers and
    a shared one, traced for any batch size and sequence length (the while loop)."""
    tokens = keras.Input((None,), dtype="int32")
    h = L.Embedding(11, 4)(tokens)
    shared = L.SimpleRNN(4, return_sequences=True)
    h = L.LSTM(3)(L.GRU(4, return_sequences=True)(shared(shared(h))))
    model = keras.Model(tokens, L.Dense(CLASSES)(h))
    assert sorted(kind for _, kind in paths.layer_paths(model)) == ["dense", "embedding"] + ["recurrent"] * 3
    x = tf.constant(np.random.default_rng(2).integers(0, 11, size=(BATCH, 6)), tf.int32)
    y = _labels()
    fn = tf.function(
        lambda x, y: engine.per_example_moment(model, x, _log_likelihood, targets=y),
        input_signature=[tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None], tf.int32)],
        autograph=False,
    )
    ref = per_example_moment(model, x, _log_likelihood, method="loop", targets=y)
    assert relative_error(fn(x, y), ref) <= TOL


def test_under_xla():
    model = _model(L.GRU(4, return_sequences=True))
    fn = tf.function(
        lambda x, y: engine.per_example_moment(model, x, _log_likelihood, targets=y),
        input_signature=[tf.TensorSpec([None, STEPS, FEATURES]), tf.TensorSpec([None], tf.int32)],
        autograph=False, jit_compile=True,
    )
    x, y = _x(), _labels()
    ref = per_example_moment(model, x, _log_likelihood, method="loop", targets=y)
    assert relative_error(fn(x, y), ref) <= TOL


def test_several_objectives_share_the_forward():
    """The exact Fisher's path: one forward pass, one backward pass per objective."""
    model = _model(L.Bidirectional(L.GRU(3)))
    x = _x()
    objectives = [lambda out, c=c: tf.nn.log_softmax(out)[:, c] for c in range(CLASSES)]
    got = per_example_moment_sum(model, x, objectives, method="factorized")
    ref = per_example_moment_sum(model, x, objectives, method="loop")
    assert relative_error(got, ref) <= TOL


class _Cell(L.GRUCell):
    """A subclass of a supported cell: it could change anything, so no closed form."""


@pytest.mark.parametrize(
    "layer",
    [
        L.GRU(3, stateful=True),
        L.LSTM(3, return_state=True),
        L.GRU(3, use_cudnn=True),
        L.RNN(_Cell(3)),
        L.RNN(L.StackedRNNCells([L.GRUCell(3), L.GRUCell(3)])),
        L.GRU(3, dtype="mixed_float16"),
    ],
    ids=["stateful", "return-state", "cudnn-forced", "custom-cell", "stacked-cells", "mixed-precision"],
)
def test_refused_configurations_have_no_closed_form(layer):
    layer.build((BATCH, STEPS, FEATURES))
    assert not recurrent.supported(layer)


def test_masked_calls_are_refused_from_the_graph():
    """``mask_zero`` upstream: a recurrent layer's call gets a mask the closed form does not read;
    the model's graph shows it, so the layer takes the per-layer vmap (Keras' own call)."""
    tokens = keras.Input((4,), dtype="int32")
    masked = L.GRU(2)
    model = keras.Model(tokens, L.Dense(CLASSES)(masked(L.Embedding(9, 2, mask_zero=True)(tokens))))
    assert not recurrent.supported(masked)
    assert [kind for _, kind in paths.layer_paths(model)] == ["embedding", "vmap", "dense"]


def test_masked_bidirectional_takes_the_layers_own_call(engine_vs_loop):
    """A masked Bidirectional wrapper is intercepted; its two layers are called with the mask
    (kept by the engine's routing), which sends them to the per-layer vmap at run time.

    Unrolled (``unroll`` plays no part in the routing), so that the vmap vectorises no while
    loop: two of them cost ~6 s of CPU to vectorise. The loop form goes through the vmap in
    ``test_initial_state_passed_in_takes_the_layers_own_call`` below and in
    ``test_layer_moments``' custom-cell RNN."""
    tokens = keras.Input((4,), dtype="int32")
    h = L.Embedding(9, 2, mask_zero=True)(tokens)
    model = keras.Model(tokens, L.Dense(CLASSES)(L.Bidirectional(L.SimpleRNN(2, unroll=True))(h)))
    x = tf.constant([[1, 2, 3, 0], [4, 5, 0, 0], [1, 1, 1, 1], [6, 0, 0, 0], [7, 8, 2, 3]], tf.int32)
    engine_vs_loop(model, x, moment="square", vmapped=2, method="factorized")


def test_initial_state_passed_in_takes_the_layers_own_call(monkeypatch):
    inputs, state = keras.Input((STEPS, FEATURES)), keras.Input((3,))
    h = L.SimpleRNN(3)(inputs, initial_state=[L.Dense(3)(state)])
    model = keras.Model([inputs, state], L.Dense(CLASSES)(h))
    assert not recurrent.supported(model.layers[3])
    x = [_x(), tf.constant(np.random.default_rng(3).normal(size=(BATCH, 3)), tf.float32)]
    y = _labels()
    got = engine.per_example_moment(model, x, _log_likelihood, targets=y)
    ref = [tf.zeros(w.shape) for w in model.trainable_weights]
    for i in range(BATCH):  # the loop, with two inputs
        with tf.GradientTape() as tape:
            value = _log_likelihood(model([x[0][i : i + 1], x[1][i : i + 1]]), y[i : i + 1])[0]
        ref = [r + g**2 for r, g in zip(ref, tape.gradient(value, model.trainable_weights), strict=True)]
    assert relative_error(got, ref) <= TOL
