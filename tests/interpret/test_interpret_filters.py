"""Activation maximisation climbs its objective, seeded; kernels are shown as they are."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from importance.interpret.filters import (
    for_display,
    kernel_images,
    maximise_classes,
    maximise_filters,
)

SHAPE = (8, 6, 1)


@pytest.fixture(scope="module")
def model(build_small_cnn):
    return build_small_cnn(SHAPE, name="head")


def _filter_means(model, x):
    return np.asarray(model.get_layer("conv")(x)).mean(axis=(1, 2))  # conv is the first layer


def test_filter_ascent_raises_each_filters_activation_and_is_seeded(model):
    out = maximise_filters(model, filters=[0, 2, 3], steps=20, seed=1)
    start = maximise_filters(model, filters=[0, 2, 3], steps=1, step_size=0.0, seed=1)
    assert out.shape == (3, *SHAPE)
    for row, f in enumerate([0, 2, 3]):
        assert (
            _filter_means(model, out[row : row + 1])[0, f]
            > _filter_means(model, start[row : row + 1])[0, f]
        )
    np.testing.assert_array_equal(out, maximise_filters(model, filters=[0, 2, 3], steps=20, seed=1))
    assert not np.array_equal(out, maximise_filters(model, filters=[0, 2, 3], steps=20, seed=2))


def test_class_ascent_raises_the_class_score(model):
    out = maximise_classes(model, [0, 2], steps=20)
    start = maximise_classes(model, [0, 2], steps=1, step_size=0.0)
    after, before = np.asarray(model(out)), np.asarray(model(start))
    assert after[0, 0] > before[0, 0] and after[1, 2] > before[1, 2]


def test_one_step_follows_the_rms_normalised_gradient(model):
    start = maximise_classes(model, [1], steps=1, step_size=0.0)
    x = tf.constant(start)
    with tf.GradientTape() as tape:
        tape.watch(x)
        score = model(x)[0, 1]
    g = tape.gradient(score, x).numpy()
    expected = start + 0.5 * g / (np.sqrt(np.mean(g**2)) + 1e-5)
    np.testing.assert_allclose(
        maximise_classes(model, [1], steps=1, step_size=0.5), expected, atol=1e-5
    )


def test_kernels_are_the_raw_weights_scaled_per_filter(model):
    images = kernel_images(model)
    raw = np.moveaxis(model.get_layer("conv").kernel.numpy(), -1, 0)
    assert images.shape == (4, 3, 3, 1)
    for k in range(4):
        expected = (raw[k] - raw[k].min()) / (raw[k].max() - raw[k].min())
        np.testing.assert_allclose(images[k], expected, atol=1e-6)
    np.testing.assert_array_equal(for_display(np.ones((2, 3, 3))), 0.5)


def test_bad_filter_class_and_layer_are_named(model):
    with pytest.raises(ValueError, match=r"filters must be in \[0, 4\) for layer 'conv'"):
        maximise_filters(model, filters=[4])
    with pytest.raises(ValueError, match=r"class id in \[0, 3\). Received: 5"):
        maximise_classes(model, [5])
    with pytest.raises(ValueError, match="Unknown layer 'nope'"):
        kernel_images(model, layer="nope")
    with pytest.raises(ValueError, match="'head' is not a 2-D convolution"):
        kernel_images(model, layer="head")
