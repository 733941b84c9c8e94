"""Explanations under thresholding: the sweep's rules, the model restored, Spearman checked."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from importance.interpret import compute_saliency
from importance.interpret.under_thresholding import explanation_kept, rank_correlation

SHAPE = (6, 6, 1)


@pytest.fixture
def model_and_data(build_small_cnn):
    model = build_small_cnn(SHAPE, seed=4)  # some, not all, of its Grad-CAMs are all zero
    rng = np.random.default_rng(0)
    return model, rng.random((8, *SHAPE)).astype(np.float32), rng.integers(0, 3, 8).astype(np.int32)


def test_rank_correlation_is_spearman_and_zero_for_constant_maps():
    rng = np.random.default_rng(1)
    a, b = rng.random((4, 5, 5)), rng.random((4, 5, 5))
    b[1] = a[1] ** 3  # same ranking
    b[2] = np.round(b[2], 1)  # ties
    expected = [stats.spearmanr(x.ravel(), y.ravel())[0] for x, y in zip(a, b, strict=True)]
    got = rank_correlation(a, b)
    np.testing.assert_allclose(got, expected, atol=1e-12)
    assert got[1] == pytest.approx(1.0)
    assert rank_correlation(a[:1], np.zeros((1, 5, 5)))[0] == 0.0
    assert rank_correlation(np.zeros((1, 5, 5)), np.ones((1, 5, 5)))[0] == 1.0


def test_kept_is_one_at_zero_threshold_and_the_model_is_restored(model_and_data):
    model, x, y = model_and_data
    before = [w.numpy().copy() for w in model.trainable_weights]
    scores = [np.abs(w.numpy()) for w in model.trainable_weights]
    frame = explanation_kept(model, scores, x, y, thresholds=(0.0, 0.5, 1.0), replace="zero")
    assert list(frame["threshold"]) == [0.0, 0.5, 1.0]
    assert frame["explanation_kept"].iloc[0] == pytest.approx(1.0)
    # All weights zero: every Grad-CAM is all zero; kept only where the original was too.
    flat = (compute_saliency("grad_cam", model, x, target=y) == 0).all(axis=(1, 2))
    assert 0 < flat.mean() < 1
    assert frame["explanation_kept"].iloc[2] == pytest.approx(flat.mean())
    for weight, original in zip(model.trainable_weights, before, strict=True):
        np.testing.assert_array_equal(weight.numpy(), original)


def test_kept_matches_maps_of_a_by_hand_thresholded_model(model_and_data):
    model, x, y = model_and_data
    scores = [np.abs(w.numpy()) for w in model.trainable_weights]
    reference = compute_saliency("grad_cam", model, x, target=y)
    frame = explanation_kept(model, scores, x, y, thresholds=(0.3,), replace="zero")
    flat = np.concatenate([s.ravel() for s in scores])
    k = round(0.3 * flat.size)
    cut = np.sort(flat)[k - 1]  # magnitudes are distinct here, so no tie at the cut
    originals = [w.numpy().copy() for w in model.trainable_weights]
    try:
        for weight, score in zip(model.trainable_weights, scores, strict=True):
            weight.assign(np.where(score <= cut, 0.0, weight.numpy()))
        by_hand = compute_saliency("grad_cam", model, x, target=y)
    finally:
        for weight, original in zip(model.trainable_weights, originals, strict=True):
            weight.assign(original)
    expected = rank_correlation(reference, by_hand).mean()
    assert frame["explanation_kept"].iloc[0] == pytest.approx(expected, abs=1e-9)
