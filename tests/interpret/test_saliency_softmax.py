"""A softmax head and a logits head give the same probability-based saliency and curves.

Whether a model outputs logits or probabilities is decided once, by
``importance.validation.output_kind``; the probabilities the saliency code reads are the softmax
of a logits model's outputs and a probability model's outputs as they are (never a softmax of a
softmax). So the same network with a ``Dense(K, activation="softmax")`` head and with a logits
head must give the same occlusion and Score-CAM maps and the same deletion/insertion curves.

The gradient methods (vanilla gradient, SmoothGrad, gradient x input, integrated gradients and
the gradient CAMs) explain the class score, the model's output column: the probability for a
softmax head, the logit for a logits head. The logits cannot be recovered from the
probabilities (softmax forgets a per-image shift whose input gradient is not zero), so for
them the test checks that contract instead of an equality.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from importance.interpret import available_saliency, compute_saliency, get_saliency
from importance.interpret.faithfulness import deletion_insertion

READ_PROBABILITIES = {"occlusion": {"window": 3, "strides": 2}, "score_cam": {}}
READ_NO_OUTPUTS = {"random_map": {}, "centre_prior": {}, "sobel_map": {}}
EXPLAIN_THE_OUTPUT_COLUMN = {
    "gradient", "smoothgrad", "gradient_x_input", "integrated_gradients", "grad_cam",
    "hires_cam", "grad_cam_plus_plus", "layer_cam", "grad_cam_plus_plus_normalised",
}  # fmt: skip
TARGET = np.array([0, 1, 2, 1])


@pytest.fixture
def heads(build_conv):
    """The same Conv2D network twice: ``(logits head, softmax head)``, identical weights."""
    logits = build_conv(softmax=False, seed=3)
    softmax = build_conv(softmax=True, seed=4)
    softmax.set_weights(logits.get_weights())
    return logits, softmax


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(5).normal(size=(4, 6, 6, 2)).astype(np.float32)


def test_every_built_in_method_is_classified():
    built_in = {
        name
        for name in available_saliency()
        if get_saliency(name).fn.__module__.startswith("importance.")
    }
    assert built_in == {*READ_PROBABILITIES, *READ_NO_OUTPUTS, *EXPLAIN_THE_OUTPUT_COLUMN}


@pytest.mark.parametrize("name", sorted({**READ_PROBABILITIES, **READ_NO_OUTPUTS}))
def test_maps_do_not_depend_on_the_head(heads, images, name):
    options = {**READ_PROBABILITIES, **READ_NO_OUTPUTS}[name]
    logits, softmax = heads
    expected = compute_saliency(name, logits, images, target=TARGET, **options)
    got = compute_saliency(name, softmax, images, target=TARGET, **options)
    assert np.abs(expected).max() > 1e-4  # not trivially equal
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_gradient_of_a_softmax_head_is_the_probability_gradient(heads, images):
    logits, softmax = heads
    x = tf.constant(images)
    with tf.GradientTape() as tape:
        tape.watch(x)
        p = tf.nn.softmax(tf.cast(logits(x), tf.float64), axis=-1)
        picked = tf.gather(p, tf.constant(TARGET), axis=1, batch_dims=1)
    expected = np.abs(tape.gradient(picked, x).numpy()).max(axis=-1)
    got = compute_saliency("gradient", softmax, images, target=TARGET)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7)


def test_deletion_insertion_do_not_depend_on_the_head(heads, images):
    logits, softmax = heads
    maps = np.random.default_rng(6).random(images.shape[:3])
    options = {"target": TARGET, "steps": 6, "labels": np.array([0, 0, 1, 2])}
    expected = deletion_insertion(logits, images, maps, **options)
    got = deletion_insertion(softmax, images, maps, **options)
    for column in expected.curves.columns:
        np.testing.assert_allclose(
            got.curves[column], expected.curves[column], rtol=1e-5, atol=1e-7, err_msg=column
        )
    np.testing.assert_allclose(got.deletion_area, expected.deletion_area, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got.insertion_area, expected.insertion_area, rtol=1e-5, atol=1e-7)
