"""random, magnitude and uniform: closed forms, seeding and option checks."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import importance as imp


def test_magnitude_is_absolute_weight(dense_model):
    dense_model.trainable_weights[1].assign(np.array([-1.5, 0, 2, -3, 4, -5, 6, -7], np.float32))
    scores = imp.compute_importance("magnitude", dense_model)
    for score, weight in zip(scores, dense_model.trainable_weights, strict=True):
        assert score.dtype == np.float64
        np.testing.assert_array_equal(score, np.abs(weight.numpy().astype(np.float64)))
    np.testing.assert_array_equal(scores[1], [1.5, 0, 2, 3, 4, 5, 6, 7])


def test_uniform_is_all_ones(conv_model):
    scores = imp.compute_importance("uniform", conv_model)
    assert [s.shape for s in scores] == [tuple(w.shape) for w in conv_model.trainable_weights]
    assert all(np.all(s == 1.0) for s in scores)


def test_random_is_uniform_in_unit_interval_and_seeded():
    model = keras.Sequential([keras.Input((100,)), keras.layers.Dense(50), keras.layers.Dense(3)])
    a = imp.compute_importance("random", model, seed=5)
    flat = np.concatenate([s.ravel() for s in a])
    assert flat.min() >= 0.0 and flat.max() < 1.0
    assert abs(flat.mean() - 0.5) < 0.01
    assert abs(np.mean(flat < 0.25) - 0.25) < 0.01
    b = imp.compute_importance("random", model, seed=5)
    c = imp.compute_importance("random", model, seed=6)
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    assert not any(np.array_equal(p, q) for p, q in zip(a, c, strict=True))
    default = imp.compute_importance("random", model)
    assert all(np.array_equal(p, q) for p, q in zip(default, imp.compute_importance("random", model, seed=0), strict=True))


def test_random_is_seeded_per_weight(build_dense):
    """A weight's scores depend on the seed and its position, not on the rest of the model."""
    small = build_dense()
    bigger = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(8), keras.layers.Dense(3), keras.layers.Dense(5)]
    )
    a = imp.compute_importance("random", small, seed=1)
    b = imp.compute_importance("random", bigger, seed=1)
    for p, q in zip(a, b[:4], strict=True):
        np.testing.assert_array_equal(p, q)
    assert not np.array_equal(a[1][:3], a[3])  # each weight draws its own stream


@pytest.mark.parametrize("seed", [-1, 1.5, "0", True])
def test_random_rejects_bad_seeds(dense_model, seed):
    with pytest.raises(ValueError, match=f"seed must be a non-negative integer. Received: {seed!r}"):
        imp.compute_importance("random", dense_model, seed=seed)


@pytest.mark.parametrize("name", ["magnitude", "uniform", "random"])
def test_unknown_options_are_not_swallowed(dense_model, name):
    with pytest.raises(TypeError, match="sed"):
        imp.compute_importance(name, dense_model, sed=1)
