"""A softmax head and a logits head give the same saliency maps and faithfulness curves.

Whether a model outputs logits or probabilities is decided once, by
``importance.validation.output_kind`` (an explicit ``from_logits=`` wins). The probabilities the
saliency code reads are the softmax of a logits model's outputs and a probability model's
outputs as they are (never a softmax of a softmax); the class score the gradient methods and the
CAMs differentiate is the centred logit ``z_c - mean_j z_j``, with ``z = log p`` for a
probability model (``importance.interpret.outputs.class_scores``): a softmax forgets a
per-image shift of the logits and the centring removes it. So the same network with a
``Dense(K, activation="softmax")`` head and with a logits head must give the same maps for
every registered method, and the same deletion/insertion curves.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from importance.interpret import available_saliency, compute_saliency
from importance.interpret.faithfulness import deletion_insertion

FAST = {  # options that keep the slow methods cheap; every other method runs on its defaults
    "occlusion": {"window": 3, "strides": 2},
    "smoothgrad": {"samples": 3},
    "integrated_gradients": {"steps": 8},
}
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


@pytest.mark.parametrize("name", available_saliency())
def test_maps_do_not_depend_on_the_head(heads, images, name):
    logits, softmax = heads
    options = FAST.get(name, {})
    expected = compute_saliency(name, logits, images, target=TARGET, **options)
    got = compute_saliency(name, softmax, images, target=TARGET, **options)
    assert np.abs(expected).max() > 1e-4  # not trivially equal
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())


def _probability_gradient(model, images):
    """What the gradient map of the softmax head was before issue 20: |d p_c / d x|."""
    x = tf.constant(images)
    with tf.GradientTape() as tape:
        tape.watch(x)
        picked = tf.gather(model(x), tf.constant(TARGET), axis=1, batch_dims=1)
    return np.abs(tape.gradient(picked, x).numpy()).max(axis=-1)


def test_the_equality_would_catch_a_probability_gradient(heads, images):
    """The test above can fail: explaining the softmax output column gives other maps."""
    logits, softmax = heads
    expected = compute_saliency("gradient", logits, images, target=TARGET)
    assert not np.allclose(_probability_gradient(softmax, images), expected, rtol=1e-2)


def test_an_explicit_from_logits_wins(heads, images):
    logits, softmax = heads
    decided = compute_saliency("gradient", softmax, images, target=TARGET)
    told = compute_saliency("gradient", softmax, images, target=TARGET, from_logits=False)
    np.testing.assert_array_equal(told, decided)
    # Told that the probabilities are logits, it explains the centred probability instead.
    wrong = compute_saliency("gradient", softmax, images, target=TARGET, from_logits=True)
    assert not np.allclose(wrong, decided, rtol=1e-2)


def test_a_functional_softmax_ending_is_recognised(heads, images):
    logits, _ = heads
    probabilities = keras.Model(logits.inputs, keras.ops.softmax(logits.outputs[0]))
    for name in ("gradient", "grad_cam"):
        np.testing.assert_allclose(
            compute_saliency(name, probabilities, images, target=TARGET),
            compute_saliency(name, logits, images, target=TARGET),
            rtol=1e-4, atol=1e-7,
        )


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
    # A softmax of the softmax (what the issue found) would move the areas: the test can fail.
    doubled = deletion_insertion(softmax, images, maps, from_logits=True, **options)
    assert not np.allclose(doubled.deletion_area, expected.deletion_area, rtol=1e-3)


def test_cam_mass_outside_does_not_depend_on_the_head_nor_on_the_centring(heads, images):
    """The class-evidence (difference) map cancels the centring, so the figure of a logits model
    is the one of its raw logits (the CAM penalty's score), and a softmax head gives it too."""
    from importance.interpret.penalty import CamPenalty, cam_mass_outside

    logits, softmax = heads
    mask = np.zeros((6, 6), bool)
    mask[1:4, 2:5] = True
    labels = np.array([0, 1, 2, 1])
    expected = cam_mass_outside(logits, images, labels, centre_mask=mask)
    assert 0 < expected < 1
    np.testing.assert_allclose(cam_mass_outside(softmax, images, labels, centre_mask=mask),
                               expected, rtol=1e-4)
    penalty = CamPenalty(logits, weight=0.0, variant="difference")
    raw = penalty.maps(logits, images, labels, training=False, score="output")
    centred = penalty.maps(logits, images, labels, training=False, score="centred")
    np.testing.assert_allclose(centred, raw, rtol=1e-4, atol=1e-6 * float(np.abs(raw).max()))
