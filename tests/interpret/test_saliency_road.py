"""ROAD (Rong et al. 2022): the imputation against a dense system written equation by equation
from the paper, a linear ramp imputed exactly, and the MoRF / LeRF curves against a plain loop."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from importance.interpret.road import linear_imputation, noisy_linear_imputation, road

SHAPE = (6, 5, 2)


def _impute_by_equations(image, removed):
    """Each removed pixel: sum over its in-image neighbours j of w_j (x_i - x_j) = 0, with
    w = 1/6 for the 4 direct and 1/12 for the 4 diagonal neighbours; solved densely."""
    height, width = removed.shape
    unknown = [(r, c) for r in range(height) for c in range(width) if removed[r, c]]
    position = {p: i for i, p in enumerate(unknown)}
    system = np.zeros((len(unknown), len(unknown)))
    rhs = np.zeros((len(unknown), image.shape[-1]))
    for i, (r, c) in enumerate(unknown):
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                rr, cc = r + dr, c + dc
                if (dr, dc) == (0, 0) or not (0 <= rr < height and 0 <= cc < width):
                    continue
                w = 1 / 12 if dr and dc else 1 / 6
                system[i, i] += w
                if removed[rr, cc]:
                    system[i, position[(rr, cc)]] -= w
                else:
                    rhs[i] += w * image[rr, cc]
    out = image.astype(np.float64).copy()
    for (r, c), value in zip(unknown, np.linalg.solve(system, rhs), strict=True):
        out[r, c] = value
    return out


def test_imputation_solves_the_papers_system():
    rng = np.random.default_rng(0)
    image = rng.random(SHAPE)
    for fraction in (0.2, 0.6, 0.95):
        removed = rng.random(SHAPE[:2]) < fraction
        removed[0, 0] = False
        np.testing.assert_allclose(
            linear_imputation(image, removed), _impute_by_equations(image, removed), atol=1e-12
        )


def test_a_linear_ramp_is_imputed_exactly_away_from_the_border():
    rows, cols = np.mgrid[0:9, 0:9]
    image = (0.1 * rows - 0.05 * cols + 0.3)[..., None]
    removed = np.zeros((9, 9), bool)
    removed[2:7, 3:6] = True
    np.testing.assert_allclose(linear_imputation(image, removed), image, atol=1e-12)


def test_noise_is_seeded_and_only_on_removed_pixels():
    image = np.random.default_rng(1).random(SHAPE)
    removed = np.zeros(SHAPE[:2], bool)
    removed[1:4, 1:3] = True
    a = noisy_linear_imputation(image, removed, noise=0.5, rng=np.random.default_rng(3))
    b = noisy_linear_imputation(image, removed, noise=0.5, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[~removed], image[~removed])
    assert np.abs(a - linear_imputation(image, removed))[removed].max() > 0.05
    with pytest.raises(ValueError, match="removed must leave at least one pixel"):
        linear_imputation(image, np.ones(SHAPE[:2], bool))


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(2)
    return keras.Sequential([keras.Input(SHAPE), keras.layers.Flatten(), keras.layers.Dense(3)])


def test_curves_match_a_plain_loop(model):
    rng = np.random.default_rng(4)
    x = rng.random((3, *SHAPE)).astype(np.float32)
    maps = rng.random((3, *SHAPE[:2]))
    target = np.array([0, 2, 1])
    fractions = (0.2, 0.5, 0.8)
    result = road(model, x, maps, target=target, fractions=fractions, noise=0.0)
    pixels = SHAPE[0] * SHAPE[1]
    for name, most_first in (("morf", True), ("lerf", False)):
        curve = np.zeros((len(fractions), 3))
        for f_index, f in enumerate(fractions):
            k = round(f * pixels)
            for n in range(3):
                order = np.argsort(-maps[n].ravel()) if most_first else np.argsort(maps[n].ravel())
                removed = np.zeros(pixels, bool)
                removed[order[:k]] = True
                imputed = _impute_by_equations(x[n], removed.reshape(SHAPE[:2]))
                logits = model(imputed[None].astype(np.float32))
                curve[f_index, n] = float(tf.nn.softmax(tf.cast(logits, tf.float64))[0, target[n]])
        np.testing.assert_allclose(result.curves[f"{name}_probability"], curve.mean(1), atol=1e-6)
        np.testing.assert_allclose(getattr(result, name), curve.mean(0), atol=1e-6)


def test_the_true_evidence_falls_faster_than_its_reverse():
    """A linear model's evidence w * x: removing it first must lower the MoRF curve."""
    weights = np.random.default_rng(5).normal(size=(int(np.prod(SHAPE)), 2)).astype(np.float32)
    weights[:, 1] = 0
    linear = keras.Sequential([keras.Input(SHAPE), keras.layers.Flatten(), keras.layers.Dense(2)])
    linear.layers[-1].set_weights([weights * 4, np.zeros(2, np.float32)])
    x = np.random.default_rng(6).random((8, *SHAPE)).astype(np.float32)
    truth = (weights[:, 0].reshape(SHAPE) * x).sum(-1)
    best = road(linear, x, truth, target=0)
    worst = road(linear, x, -truth, target=0)
    assert best.morf.mean() < worst.morf.mean()
    assert best.lerf.mean() > worst.lerf.mean()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"fractions": (0.0, 0.5)}, r"fractions must be .* in \(0, 1\). Received: \[0.0, 0.5\]"),
        ({"fractions": ()}, "fractions must be a non-empty sequence"),
        ({"noise": -1.0}, "noise must be a non-negative number. Received: -1.0"),
        ({"maps": np.zeros((2, 6, 5))}, r"maps must have the images' shape"),
    ],
)
def test_bad_options_are_named(model, options, message):
    x = np.zeros((3, *SHAPE), np.float32)
    maps = options.pop("maps", np.zeros((3, *SHAPE[:2])))
    with pytest.raises(ValueError, match=message):
        road(model, x, maps, target=0, **options)
