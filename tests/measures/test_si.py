"""Synaptic Intelligence against a path integral computed by hand on a quadratic problem.

The model is one bias-free Dense unit on a fixed batch with mean squared error, trained by plain
full-batch SGD, so every step is known in closed form:
``g_t = 2/N X^T (X w_t - y)``, ``w_{t+1} = w_t - lr (g_t + penalty gradient)``.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import importance as imp

N, D, LR, STEPS, LAM = 6, 3, 0.05, 5, 0.3


def _problem():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(N, D)).astype(np.float32)
    y = rng.normal(size=(N, 1)).astype(np.float32)
    w0 = rng.normal(size=(D, 1)).astype(np.float32)
    return x, y, w0


class _PenalisedDense(keras.layers.Layer):
    """Bias-free dense unit that adds ``LAM * sum(w^2)`` through ``add_loss`` in ``call``."""

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], 1), initializer="zeros")

    def call(self, inputs):
        self.add_loss(LAM * tf.reduce_sum(tf.square(self.kernel)))
        return tf.matmul(inputs, self.kernel)


def _model(w0, penalty):
    if penalty == "add_loss":
        layer = _PenalisedDense()
    else:
        regularizer = keras.regularizers.L2(LAM) if penalty == "l2" else None
        layer = keras.layers.Dense(1, use_bias=False, kernel_regularizer=regularizer)
    model = keras.Sequential([keras.Input((D,)), layer])
    model.set_weights([w0])
    model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")
    return model


def _hand_si(x, y, w0, *, penalty, xi, task_only=True):
    """Step by step in float64: omega = sum_t -g_t delta_t / ((w_T - w_0)^2 + xi)."""
    x, y, w = x.astype(np.float64), y.astype(np.float64), w0.astype(np.float64)
    start, path = w.copy(), np.zeros_like(w)
    for _ in range(STEPS):
        g_task = 2.0 / N * x.T @ (x @ w - y)
        g_penalty = 2.0 * LAM * w if penalty else 0.0
        delta = -LR * (g_task + g_penalty)
        g_seen = g_task if task_only else g_task + g_penalty
        path += -g_seen * delta
        w = w + delta
    return path / ((w - start) ** 2 + xi), w


@pytest.mark.slow
@pytest.mark.parametrize("penalty", [None, "l2", "add_loss"])
def test_si_matches_hand_path_integral_under_model_fit(penalty):
    x, y, w0 = _problem()
    model = _model(w0, penalty)
    recorder = imp.track(model, measures=["si"])
    model.fit(x, y, batch_size=N, epochs=STEPS, shuffle=False, verbose=0)
    assert recorder.num_steps == STEPS

    expected, w_final = _hand_si(x, y, w0, penalty=penalty, xi=1e-3)
    np.testing.assert_allclose(model.get_weights()[0], w_final, rtol=1e-5)  # the problem is right
    (omega,) = imp.compute_importance("si", model, clip=False)
    np.testing.assert_allclose(omega, expected, rtol=1e-4)

    if penalty:  # the penalty's gradient must not leak into g; check the test can tell
        leaked, _ = _hand_si(x, y, w0, penalty=penalty, xi=1e-3, task_only=False)
        assert np.max(np.abs(leaked - expected) / np.abs(expected)) > 0.05


@pytest.mark.slow
def test_si_matches_hand_path_integral_from_own_loop_with_penalty():
    """The project's trainer path: the loop feeds observe() the task gradient only."""
    x, y, w0 = _problem()
    model = _model(w0, None)
    recorder = imp.track(model, measures=["si"], patch_fit=False)
    optimizer = keras.optimizers.SGD(LR)
    optimizer.build(model.trainable_variables)
    weights = model.trainable_variables

    @tf.function
    def step(xb, yb):
        before = [tf.identity(w.value) for w in weights]
        with tf.GradientTape(persistent=True) as tape:
            task = tf.reduce_mean(tf.square(model(xb, training=True) - yb))
            total = task + LAM * tf.add_n([tf.reduce_sum(tf.square(w.value)) for w in weights])
        task_grads = tape.gradient(task, weights)
        optimizer.apply_gradients(zip(tape.gradient(total, weights), weights, strict=True))
        recorder.observe(task_grads, before, [w.value for w in weights])

    for _ in range(STEPS):
        step(tf.constant(x), tf.constant(y))

    expected, w_final = _hand_si(x, y, w0, penalty=True, xi=0.1)
    np.testing.assert_allclose(model.get_weights()[0], w_final, rtol=1e-5)
    (omega,) = imp.compute_importance("si", model, xi=0.1, clip=False)
    np.testing.assert_allclose(omega, expected, rtol=1e-4)


def _tiny_recorder():
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(3, use_bias=False)])
    return model, imp.track(model, measures=["si"], patch_fit=False)


def _feed(recorder, grads, weights):
    for g, before, after in zip(grads, weights[:-1], weights[1:], strict=True):
        recorder.observe(
            [np.array([g], np.float32)],
            [np.array([before], np.float32)],
            [np.array([after], np.float32)],
        )


def test_si_on_a_synthetic_trajectory_clips_negative_totals_only_when_asked():
    model, recorder = _tiny_recorder()
    # Weight 0 moves downhill (g and delta opposite): path 0.5*1 + 0.5*1 = 1, displacement 2.
    # Weight 1 moves uphill overall: path -1*0.5 + 1*0.25 = -0.25, displacement 0.25.
    # Weight 2 never moves: path 0, displacement 0.
    grads = [[-0.5, 1.0, 3.0], [-0.5, 1.0, 3.0]]
    weights = [[0.0, 1.0, 2.0], [1.0, 1.5, 2.0], [2.0, 1.25, 2.0]]
    _feed(recorder, grads, weights)
    xi = 0.01
    signed = imp.compute_importance("si", model, xi=xi, clip=False)[0][0]
    np.testing.assert_allclose(signed, [1.0 / (4 + xi), -0.25 / (0.0625 + xi), 0.0], rtol=1e-6)
    clipped = imp.compute_importance("si", model, xi=xi)[0][0]
    np.testing.assert_allclose(clipped, [1.0 / (4 + xi), 0.0, 0.0], rtol=1e-6)
    unmoved = imp.compute_importance("si", model, xi=0.0)[0][0]
    assert np.isfinite(unmoved).all() and unmoved[2] == 0.0


def test_si_start_is_the_first_observed_step_not_the_recorder_creation():
    model, recorder = _tiny_recorder()
    model.set_weights([np.full((1, 3), 5.0, np.float32)])  # moved after track(), before training
    _feed(recorder, [[-1.0, -1.0, -1.0]], [[0.0, 0.0, 0.0], [1.0, 2.0, 0.5]])
    omega = imp.compute_importance("si", model, xi=0.0)[0][0]
    np.testing.assert_allclose(omega, [1.0 / 1.0, 2.0 / 4.0, 0.5 / 0.25], rtol=1e-6)


@pytest.mark.parametrize("xi", [-1e-3, float("nan"), "0.1", True])
def test_si_rejects_bad_xi(xi):
    model, recorder = _tiny_recorder()
    _feed(recorder, [[1.0, 1.0, 1.0]], [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    with pytest.raises(ValueError, match=r"xi must be a number >= 0\. Received: "):
        imp.compute_importance("si", model, xi=xi)


def test_si_default_xi_is_the_papers():
    from importance.measures.trajectory import DEFAULT_XI

    model, recorder = _tiny_recorder()
    _feed(recorder, [[-1.0, -1.0, -1.0]], [[0.0, 0.0, 0.0], [1.0, 2.0, 0.5]])
    assert DEFAULT_XI == 1e-3
    np.testing.assert_allclose(
        imp.compute_importance("si", model)[0][0],
        [1.0 / 1.001, 2.0 / 4.001, 0.5 / 0.251],
        rtol=1e-6,
    )
