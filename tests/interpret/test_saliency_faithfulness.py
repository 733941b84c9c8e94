"""Deletion / insertion curves against a slow reference and a model whose evidence is known."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from importance.interpret.faithfulness import deletion_insertion, pixel_ranks

SHAPE = (5, 4, 1)


@pytest.fixture(scope="module")
def linear_model():
    """logits = (sum_ij w_ij x_ij, 0): the evidence of pixel ij for class 0 is w_ij x_ij."""
    weights = np.random.default_rng(0).normal(size=(20, 2)).astype(np.float32)
    weights[:, 1] = 0
    model = keras.Sequential([keras.Input(SHAPE), keras.layers.Flatten(), keras.layers.Dense(2)])
    model.layers[-1].set_weights([weights, np.zeros(2, np.float32)])
    return model, weights[:, 0].reshape(SHAPE[:2])


def _images():
    return np.random.default_rng(1).random((6, *SHAPE)).astype(np.float32)


def test_curves_match_a_slow_loop(linear_model):
    model, _ = linear_model
    x = _images()
    maps = np.random.default_rng(2).random(x.shape[:3])
    result = deletion_insertion(model, x, maps, target=0, steps=4, insertion_baseline="zero")
    for row in result.curves.itertuples():
        k = round(row.fraction * 20)
        deleted, inserted = [], []
        for image, m in zip(x, maps, strict=True):
            top = np.argsort(-m.reshape(-1))[:k]
            d = image.reshape(-1).copy()
            d[top] = 0
            i = np.zeros(20, np.float32)
            i[top] = image.reshape(-1)[top]
            deleted.append(d)
            inserted.append(i)
        p = lambda z: float(tf.nn.softmax(model(np.reshape(z, (-1, *SHAPE))))[:, 0].numpy().mean())  # noqa: E731
        np.testing.assert_allclose(row.deletion_probability, p(deleted), atol=1e-6)
        np.testing.assert_allclose(row.insertion_probability, p(inserted), atol=1e-6)


def test_the_true_evidence_beats_its_reverse_and_random(linear_model):
    model, w = linear_model
    x = _images()
    truth = w[None] * x[..., 0]
    best = deletion_insertion(model, x, truth, target=0, steps=20)
    worst = deletion_insertion(model, x, -truth, target=0, steps=20)
    noise = deletion_insertion(
        model, x, np.random.default_rng(3).random(truth.shape), target=0, steps=20
    )
    assert best.deletion_area.mean() < noise.deletion_area.mean() < worst.deletion_area.mean()
    assert best.insertion_area.mean() > noise.insertion_area.mean() > worst.insertion_area.mean()
    assert best.curves.deletion_accuracy.iloc[0] == pytest.approx(
        np.mean(np.asarray(model(x)).argmax(1) == 0)
    )


def test_ties_are_broken_by_a_seeded_order():
    flat = np.zeros((2, 3, 3))
    a, b, c = (pixel_ranks(flat, seed=s) for s in (0, 0, 1))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert sorted(a[0].reshape(-1)) == list(range(9))
    graded = np.arange(9.0).reshape(1, 3, 3)
    assert pixel_ranks(graded)[0, 2, 2] == 0 and pixel_ranks(graded)[0, 0, 0] == 8


@pytest.mark.parametrize(
    "maps, options, message",
    [
        (np.zeros((6, 4, 5)), {}, r"maps must have the images' shape \(N, H, W\) = \(6, 5, 4\)"),
        (np.full((6, 5, 4), np.nan), {}, "maps must be finite"),
        (np.zeros((6, 5, 4)), {"steps": 0}, "steps must be a positive integer. Received: 0"),
        (np.zeros((6, 5, 4)), {"deletion_baseline": "x"}, "baseline must be one of"),
    ],
)
def test_bad_input_is_named(linear_model, maps, options, message):
    with pytest.raises(ValueError, match=message):
        deletion_insertion(linear_model[0], _images(), maps, target=0, **options)
