"""Consolidation: the penalty against its closed form, normalisation, online decay, bad input."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import importance as imp
from importance.continual import Consolidator, SignedImportanceError, check_lam, normalise


def _model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")])
    model.layers[0].set_weights([np.arange(6, dtype=np.float32).reshape(3, 2) / 10, np.array([0.5, -0.5], np.float32)])
    return model


def _omega(seed):
    rng = np.random.default_rng(seed)
    return [rng.uniform(0.1, 2.0, size=(3, 2)), rng.uniform(0.1, 2.0, size=2)]


def _move(model, seed):
    rng = np.random.default_rng(100 + seed)
    for w in model.trainable_weights:
        w.assign(w.numpy() + rng.normal(size=w.shape).astype(np.float32))


def _snapshot(model):
    return [w.numpy().astype(np.float64) for w in model.trainable_weights]


def test_penalty_value_and_gradient_match_the_closed_form():
    model, omega = _model(), _omega(0)
    anchor = _snapshot(model)
    strategy = Consolidator("ewc", measure="fisher", lam=3.0)
    strategy.consolidate(model, [True, True], omega=omega)
    _move(model, 0)
    theta = _snapshot(model)
    expected = 1.5 * sum(np.sum(o * (t - a) ** 2) for o, t, a in zip(omega, theta, anchor, strict=True))
    with tf.GradientTape() as tape:
        value = strategy.penalty(model)
    grads = tape.gradient(value, model.trainable_weights)
    np.testing.assert_allclose(float(value), expected, rtol=1e-5)
    for g, o, t, a in zip(grads, omega, theta, anchor, strict=True):
        np.testing.assert_allclose(g.numpy(), 3.0 * o * (t - a), rtol=1e-5, atol=1e-6)


def test_only_penalised_weights_are_anchored():
    model, omega = _model(), _omega(1)
    anchor = _snapshot(model)
    strategy = Consolidator("ewc", measure="fisher", lam=2.0)
    strategy.consolidate(model, [True, False], omega=omega)
    _move(model, 1)
    kernel = model.trainable_weights[0].numpy()
    np.testing.assert_allclose(float(strategy.penalty()), np.sum(omega[0] * (kernel - anchor[0]) ** 2), rtol=1e-5)


def test_normalise_gives_mean_one_over_penalised_weights_and_keeps_ratios():
    scores = [np.array([[1.0, 3.0], [0.0, 4.0]]), np.array([100.0, 7.0])]
    out = normalise(scores, [True, False])
    np.testing.assert_allclose(out[0], scores[0] / 2.0)  # mean of the kernel is 2
    np.testing.assert_array_equal(out[1], [0.0, 0.0])  # not penalised: no weight at all
    both = normalise(scores, [True, True])
    assert np.concatenate([o.ravel() for o in both]).mean() == pytest.approx(1.0)
    l2 = Consolidator("l2", lam=1.0).importance(_model(), [True, True])
    assert all(np.all(o == 1.0) for o in l2)


def test_normalise_rejects_what_cannot_weigh_a_penalty():
    with pytest.raises(SignedImportanceError, match=r"'bad' gives signed scores \(min -1"):
        normalise([np.array([1.0, -1.0])], [True], measure="bad")
    with pytest.raises(imp.ImportanceError, match="non-finite"):
        normalise([np.array([1.0, np.nan])], [True], measure="nan")
    with pytest.raises(imp.ImportanceError, match="zero importance"):
        normalise([np.zeros(3)], [True], measure="zeros")
    with pytest.raises(ValueError, match="one flag per weight"):
        normalise([np.ones(3)], [True, True])


def test_online_mode_decays_by_gamma_against_a_hand_sequence():
    model = _model()
    online = Consolidator("ewc", measure="fisher", lam=1.0, mode="online", gamma=0.5)
    separate = Consolidator("ewc", measure="fisher", lam=1.0)
    anchors = []
    for k in range(3):
        online.consolidate(model, [True, True], omega=_omega(k))
        separate.consolidate(model, [True, True], omega=_omega(k))
        anchors.append(_snapshot(model))
        _move(model, k)
    # By hand: omega = 0.25 o0 + 0.5 o1 + o2, one anchor at the last consolidated weights.
    accumulated = [0.25 * a + 0.5 * b + c for a, b, c in zip(_omega(0), _omega(1), _omega(2), strict=True)]
    assert len(online.terms) == 1 and len(separate.terms) == 3
    _, anchor, omega = online.terms[0]
    for got, want in zip(omega, accumulated, strict=True):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)
    theta = _snapshot(model)
    expected = 0.5 * sum(np.sum(o * (t - a) ** 2) for o, t, a in zip(accumulated, theta, anchors[-1], strict=True))
    np.testing.assert_allclose(float(online.penalty()), expected, rtol=1e-5)
    expected_separate = 0.5 * sum(np.sum(o * (t - a) ** 2) for k in range(3)
                                  for o, t, a in zip(_omega(k), theta, anchors[k], strict=True))
    np.testing.assert_allclose(float(separate.penalty()), expected_separate, rtol=1e-5)


def test_references_have_no_penalty():
    model = _model()
    for strategy in ("naive", "joint"):
        c = Consolidator(strategy, lam=5.0)
        c.consolidate(model, [True, True])
        assert not c.active and float(c.penalty()) == 0.0
    assert not Consolidator("l2", lam=0.0).active


@pytest.mark.parametrize("lam", [-1, float("nan"), float("inf"), "1", True, None])
def test_bad_lambda_is_named(lam):
    with pytest.raises(ValueError, match=r"lam must be a finite number >= 0\. Received: "):
        check_lam(lam)
    with pytest.raises(ValueError, match="lam must be"):
        Consolidator("l2", lam=lam)


@pytest.mark.parametrize("gamma", [0, -0.5, 1.5, float("nan")])
def test_gamma_outside_zero_one_is_named(gamma):
    with pytest.raises(ValueError, match=r"gamma must be in \(0, 1\]\. Received: "):
        Consolidator("ewc", measure="fisher", mode="online", gamma=gamma)


def test_unknown_strategy_mode_and_measure_are_named():
    with pytest.raises(ValueError, match=r"strategy must be one of .*Received: 'ewk'"):
        Consolidator("ewk")
    with pytest.raises(ValueError, match=r"mode must be one of .*Received: 'both'"):
        Consolidator("ewc", measure="fisher", mode="both")
    with pytest.raises(KeyError, match=r"Unknown measure 'fsher'\. Available: .*fisher"):
        Consolidator("ewc", measure="fsher")
    with pytest.raises(ValueError, match="needs a measure"):
        Consolidator("ewc")
    with pytest.raises(ValueError, match="only used by strategy 'ewc'"):
        Consolidator("l2", measure="fisher")


def test_online_measure_without_a_trajectory_is_an_error():
    model = _model()
    strategy = Consolidator("ewc", measure="si", lam=1.0)
    with pytest.raises(RuntimeError, match=r"'si' is online .*recorder=None"):
        strategy.consolidate(model, [True, True])
    empty = imp.track(model, ["si"], patch_fit=False)
    with pytest.raises(RuntimeError, match="0 steps"):
        strategy.consolidate(model, [True, True], recorder=empty)
    assert strategy.terms == []
