"""The seed trackers against hand-simulated trajectories.

The raw statistics (sign_flip_count, momentum_reversals, weight_path_length) are checked against
hand counts and an independent loop; the registered importances sign_flip, momentum and
weight_change are 1 / (1 + statistic), the original project's orientation.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import importance as imp

TRACKERS = ["sign_flip", "momentum", "weight_change"]
RAW = {"sign_flip": "sign_flip_count", "momentum": "momentum_reversals", "weight_change": "weight_path_length"}
MEASURES = TRACKERS + list(RAW.values())

# Five weights (the kernel of Dense(5) on one input), five values each = four steps.
SEQUENCES = np.array(
    [
        [0.5, -0.1, 0.2, 0.3, -0.4],  # flips at steps 1, 2, 4; updates -,+,+,-
        [0.5, 0.0, -0.1, -0.1, 0.0],  # 0 in between: one flip (step 2); updates -,-,0,+
        [0.0, 0.0, 0.3, -0.2, 0.0],  # starts at 0: one flip (step 3); updates 0,+,-,+
        [1.0, 1.0, 1.0, 1.0, 1.0],  # never moves
        [-1.0, -2.0, -3.0, -2.0, -1.0],  # stays negative; updates -,-,+,+
    ],
    dtype=np.float32,
).T  # (steps + 1, 5)
EXPECTED = {
    "sign_flip": [3, 1, 1, 0, 0],
    "momentum": [2, 1, 2, 0, 1],
    "weight_change": [1.7, 0.7, 1.0, 0.0, 4.0],
}


def _reference(sequence: np.ndarray) -> dict[str, np.ndarray]:
    """Independent per-element Python loop over a (steps + 1, n) weight sequence."""
    seq = sequence.astype(np.float64)
    out = {name: np.zeros(seq.shape[1]) for name in TRACKERS}
    for j in range(seq.shape[1]):
        last_sign, last_dir = 0.0, 0.0
        for t in range(1, seq.shape[0]):
            before, after = seq[t - 1, j], seq[t, j]
            if last_sign == 0:
                last_sign = np.sign(before)
            if np.sign(after) != 0:
                if last_sign != 0 and np.sign(after) != last_sign:
                    out["sign_flip"][j] += 1
                last_sign = np.sign(after)
            direction = np.sign(after - before)
            if direction != 0:
                if last_dir != 0 and direction != last_dir:
                    out["momentum"][j] += 1
                last_dir = direction
            out["weight_change"][j] += abs(after - before)
    return out


def _model():
    return keras.Sequential([keras.Input((1,)), keras.layers.Dense(5)])


def _feed(recorder, kernel_seq, bias_seq, *, compiled):
    def observe(kb, ka, bb, ba):
        zeros = [tf.zeros_like(kb), tf.zeros_like(bb)]
        recorder.observe(zeros, [kb, bb], [ka, ba])

    step = tf.function(observe) if compiled else observe
    for t in range(1, len(kernel_seq)):
        step(kernel_seq[t - 1][None, :], kernel_seq[t][None, :], bias_seq[t - 1], bias_seq[t])


@pytest.mark.parametrize("compiled", [True, False], ids=["tf.function", "eager"])
def test_trackers_count_a_hand_made_trajectory(compiled):
    rng = np.random.default_rng(3)
    # Bias: a random walk on a 0.5 grid, so it hits exactly 0 and repeats values.
    bias_seq = np.cumsum(rng.integers(-2, 3, size=(30, 5)) * 0.5, axis=0).astype(np.float32)
    kernel_seq = np.concatenate([SEQUENCES] + [SEQUENCES[-1:]] * 25)  # then 25 still steps
    model = _model()
    recorder = imp.track(model, measures=MEASURES, patch_fit=False)
    _feed(recorder, kernel_seq, bias_seq, compiled=compiled)
    assert recorder.num_steps == 29

    expected_bias = _reference(bias_seq)
    assert expected_bias["sign_flip"].sum() > 0 and expected_bias["momentum"].sum() > 0
    for name in TRACKERS:
        kernel, bias = imp.compute_importance(RAW[name], model)
        np.testing.assert_allclose(kernel[0], EXPECTED[name], rtol=1e-6, atol=1e-7, err_msg=name)
        np.testing.assert_allclose(bias, expected_bias[name], rtol=1e-12, err_msg=name)
        kernel, bias = imp.compute_importance(name, model)  # the original's 1 / (1 + x)
        inverse = 1.0 / (1.0 + np.asarray(EXPECTED[name]))
        np.testing.assert_allclose(kernel[0], inverse, rtol=1e-6, err_msg=name)
        np.testing.assert_allclose(bias, 1.0 / (1.0 + expected_bias[name]), rtol=1e-12)


def test_a_weight_that_moves_more_is_less_important():
    model = _model()
    recorder = imp.track(model, measures=MEASURES, patch_fit=False)
    _feed(recorder, SEQUENCES, SEQUENCES, compiled=False)
    for name, raw in RAW.items():
        importance = imp.compute_importance(name, model)[1]
        statistic = imp.compute_importance(raw, model)[1]
        assert importance[3] == 1.0  # weight 3 never moves: the most important
        order = np.argsort(statistic, kind="stable")
        assert np.all(np.diff(importance[order]) <= 0), name  # opposite ranking to the raw count


def test_reference_agrees_with_the_hand_counts():
    ref = _reference(SEQUENCES)
    for name in TRACKERS:
        np.testing.assert_allclose(ref[name], EXPECTED[name], rtol=1e-6, atol=1e-7)


def test_weight_change_is_a_path_length_not_a_net_displacement():
    model = _model()
    recorder = imp.track(model, measures=["weight_change", "weight_path_length"], patch_fit=False)
    there_and_back = np.array([[0.0] * 5, [1.0] * 5, [0.0] * 5], np.float32)
    _feed(recorder, there_and_back, there_and_back, compiled=False)
    kernel, bias = imp.compute_importance("weight_path_length", model)
    np.testing.assert_array_equal(kernel, np.full((1, 5), 2.0))
    np.testing.assert_array_equal(bias, np.full(5, 2.0))
    kernel, bias = imp.compute_importance("weight_change", model)
    np.testing.assert_array_equal(kernel, np.full((1, 5), 1 / 3))


class _WeightLog(keras.callbacks.Callback):
    """Trainable weights before training and after every batch."""

    def on_train_begin(self, logs=None):
        self.seq = [[w.numpy().copy() for w in self.model.trainable_weights]]

    def on_train_batch_end(self, batch, logs=None):
        self.seq.append([w.numpy().copy() for w in self.model.trainable_weights])


@pytest.mark.slow
def test_trackers_match_weights_logged_after_every_batch_of_model_fit():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=64)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(6, activation="tanh"), keras.layers.Dense(3)]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.5, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    recorder = imp.track(model, measures=list(RAW.values()))
    log = _WeightLog()
    model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[log])
    assert recorder.num_steps == len(log.seq) - 1 == 12

    totals = {name: 0.0 for name in TRACKERS}
    for i in range(len(model.trainable_weights)):
        seq = np.stack([step[i].reshape(-1) for step in log.seq])
        expected = _reference(seq)
        for name in TRACKERS:
            got = imp.compute_importance(RAW[name], model)[i].reshape(-1)
            np.testing.assert_allclose(got, expected[name], rtol=1e-12, err_msg=f"{name}[{i}]")
            totals[name] += expected[name].sum()
    assert totals["sign_flip"] > 0 and totals["momentum"] > 0  # the run exercises the counts
    net = sum(np.abs(log.seq[-1][i] - log.seq[0][i]).sum() for i in range(4))
    assert totals["weight_change"] > 1.05 * net  # path length, not displacement
