"""The Sobel control against a 3 x 3 loop, the released-code Grad-CAM++ against a NumPy loop
written from the authors' code, and the saliency contract check catching broken methods."""

from __future__ import annotations

import numpy as np
import pytest

from importance.interpret import available_saliency, cam_pass, compute_saliency
from importance.testing import SALIENCY_CHECKS, check_saliency, tiny_image_classifier

SHAPE = (9, 7, 2)


@pytest.fixture(scope="module")
def model(build_small_cnn):
    return build_small_cnn(SHAPE, hidden=8, bias_initializer="random_normal")


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).random((3, *SHAPE)).astype(np.float32)


def test_sobel_map_matches_a_loop(model, images):
    kernel = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], float)  # d/drow (correlation)
    padded = np.pad(images.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    expected = np.zeros(images.shape)
    for n in range(images.shape[0]):
        for r in range(SHAPE[0]):
            for c in range(SHAPE[1]):
                for ch in range(SHAPE[2]):
                    window = padded[n, r : r + 3, c : c + 3, ch]
                    gy, gx = (kernel * window).sum(), (kernel.T * window).sum()
                    expected[n, r, c, ch] = np.hypot(gx, gy)
    got = compute_saliency("sobel_map", model, images, target=[0, 1, 2])
    np.testing.assert_allclose(got, expected.max(-1), atol=1e-12)


def test_grad_cam_plus_plus_normalised_follows_the_released_code(model, images):
    cam = cam_pass(model, images, [0, 1, 2], score="centred")  # the class score of every CAM
    a, g = cam.activations.numpy().astype(np.float64), cam.gradients.numpy().astype(np.float64)
    expected = np.zeros(a.shape[:3])
    for n in range(a.shape[0]):
        for k in range(a.shape[-1]):
            grad = g[n, ..., k]
            denominator = 2 * grad**2 + a[n, ..., k].sum() * grad**3
            alphas = np.where(denominator != 0, grad**2 / np.where(denominator != 0,
                                                                   denominator, 1), 0)  # fmt: skip
            total = alphas.sum()
            alphas = alphas / (total if total != 0 else 1.0)
            expected[n] += (alphas * np.maximum(grad, 0)).sum() * a[n, ..., k]
    expected = np.maximum(expected, 0)  # at the layer's resolution: the conv keeps 9 x 7
    got = compute_saliency("grad_cam_plus_plus_normalised", model, images, target=[0, 1, 2])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7)
    paper = compute_saliency("grad_cam_plus_plus", model, images, target=[0, 1, 2])
    assert not np.allclose(got / got.max(), paper / paper.max(), atol=1e-3)


def test_every_built_in_passes_the_saliency_contract():
    fast = [m for m in available_saliency() if m != "smoothgrad"]  # 25 gradient passes
    for name in fast:
        check_saliency(name, options={"window": 3} if name == "occlusion" else None)
    assert len(SALIENCY_CHECKS) == 4


def test_the_contract_catches_broken_methods():
    def wrong_shape(model, images, *, target):
        return np.zeros(np.shape(images)[:2])

    def noisy(model, images, *, target):
        return np.random.default_rng().random(np.shape(images)[:3])

    def not_finite(model, images, *, target):
        return np.full(np.shape(images)[:3], np.nan)

    def changes_the_model(model, images, *, target):
        weight = model.trainable_weights[0]
        weight.assign(weight + 1.0)
        return np.zeros(np.shape(images)[:3])

    def seeded(model, images, *, target, seed=0):
        return np.random.default_rng(seed).random(np.shape(images)[:3])

    with pytest.raises(AssertionError, match=r"wrong_shape: maps of shape \(4, 6\)"):
        check_saliency(wrong_shape)
    with pytest.raises(AssertionError, match="noisy is not deterministic"):
        check_saliency(noisy)
    with pytest.raises(AssertionError, match="not_finite returned non-finite maps"):
        check_saliency(not_finite)
    model = tiny_image_classifier()
    before = [w.numpy() for w in model.weights]
    try:
        with pytest.raises(AssertionError, match="changes_the_model changed the model's weights"):
            check_saliency(changes_the_model)
    finally:
        for weight, value in zip(model.weights, before, strict=True):
            weight.assign(value)
    check_saliency(seeded)
    with pytest.raises(ValueError, match=r"models must hold only 'conv' .* Received: 'dense'"):
        check_saliency(seeded, models=("dense",))
