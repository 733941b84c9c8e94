"""Saliency methods: registry, occlusion against a slow loop, gradient methods' closed forms, errors."""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pytest
import tensorflow as tf

from importance import PluginWarning
from importance.interpret import (
    available_saliency,
    cam_pass,
    compute_saliency,
    register_saliency,
    unregister_saliency,
)
from importance.interpret.registry import SALIENCY

SHAPE = (9, 7, 2)
BUILT_IN = {
    "grad_cam", "hires_cam", "grad_cam_plus_plus", "score_cam", "layer_cam", "occlusion",
    "gradient", "smoothgrad", "gradient_x_input", "integrated_gradients", "random_map",
    "centre_prior",
}  # fmt: skip


@pytest.fixture(scope="module")
def model(build_small_cnn):
    return build_small_cnn(SHAPE, hidden=8, bias_initializer="random_normal")


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).random((3, *SHAPE)).astype(np.float32)


def _centred_score(model, images, c):
    """The class score every gradient method explains, from its definition: z_c - mean_j z_j."""
    z = np.asarray(model(images), np.float64)
    return z[:, c] - z.mean(axis=1)


def _probability(model, image, c):
    return float(tf.nn.softmax(tf.cast(model(image[None]), tf.float64))[0, c])


@pytest.mark.parametrize(
    "window, strides", [((3, 4), (2, 3)), (4, 3), ((2, 3), 1), ((5, 7), (5, 7))]
)
@pytest.mark.parametrize("baseline", ["zero", "mean"])
def test_occlusion_matches_a_slow_pixel_loop(model, images, window, strides, baseline):
    wh, ww = (window, window) if np.ndim(window) == 0 else window
    sh, sw = (strides, strides) if np.ndim(strides) == 0 else strides
    h, w = SHAPE[:2]
    rows = [r for r in range(h - wh + 1) if r % sh == 0 or r == h - wh]
    cols = [c for c in range(w - ww + 1) if c % sw == 0 or c == w - ww]
    targets = [0, 2, 1]
    maps = compute_saliency(
        "occlusion",
        model,
        images,
        target=targets,
        window=window,
        strides=strides,
        baseline=baseline,
    )
    for n, image in enumerate(images):
        fill = np.zeros_like(image) if baseline == "zero" else image.mean(axis=(0, 1)) + 0 * image
        full = _probability(model, image, targets[n])
        drops = {}
        for r in rows:
            for c in cols:
                occluded = image.copy()
                occluded[r : r + wh, c : c + ww] = fill[r : r + wh, c : c + ww]
                drops[r, c] = full - _probability(model, occluded, targets[n])
        for i in range(h):
            for j in range(w):
                covering = [d for (r, c), d in drops.items() if r <= i < r + wh and c <= j < c + ww]
                assert covering, "every pixel is covered"
                np.testing.assert_allclose(maps[n, i, j], np.mean(covering), atol=2e-7)


def test_integrated_gradients_complete(model, images):
    """Sundararajan et al. 2017: the attributions sum to S_c(x) - S_c(baseline)."""
    ig = compute_saliency("integrated_gradients", model, images, target=1, steps=256)
    scores = _centred_score(model, images, 1) - _centred_score(model, np.zeros_like(images), 1)
    np.testing.assert_allclose(ig.sum(axis=(1, 2)), scores, rtol=0.02, atol=1e-3)


def test_gradient_and_gradient_x_input_against_finite_differences(model, images):
    grad = compute_saliency("gradient", model, images[:1], target=2)
    gxi = compute_saliency("gradient_x_input", model, images[:1], target=2)
    eps = 1e-2
    for i, j, k in [(0, 0, 0), (4, 3, 1), (8, 6, 0)]:
        up, down = images[:1].astype(np.float64).copy(), images[:1].astype(np.float64).copy()
        up[0, i, j, k] += eps
        down[0, i, j, k] -= eps
        d = (_centred_score(model, up, 2)[0] - _centred_score(model, down, 2)[0]) / (2 * eps)
        assert grad[0, i, j] >= abs(d) - 1e-3  # max over channels of |dS/dx|
    assert gxi.shape == (1, 9, 7)


def test_layer_cam_and_grad_cam_plus_plus_follow_their_formulas(model, images):
    cam = cam_pass(model, images, 0, score="centred")
    a, g = cam.activations.numpy().astype(np.float64), cam.gradients.numpy().astype(np.float64)
    layer = np.maximum((np.maximum(g, 0) * a).sum(-1), 0)
    np.testing.assert_allclose(
        compute_saliency("layer_cam", model, images, target=0), layer, atol=1e-6
    )
    weights = np.zeros((len(images), a.shape[-1]))
    for n in range(len(images)):
        for k in range(a.shape[-1]):
            gk, ak = g[n, ..., k], a[n, ..., k]
            den = 2 * gk**2 + ak.sum() * gk**3
            alpha = np.where(den != 0, gk**2 / np.where(den != 0, den, 1), 0)
            weights[n, k] = (alpha * np.maximum(gk, 0)).sum()
    plus = np.maximum(np.einsum("nhwk,nk->nhw", a, weights), 0)
    np.testing.assert_allclose(
        compute_saliency("grad_cam_plus_plus", model, images, target=0), plus, rtol=1e-4, atol=1e-7
    )


def test_seeded_maps_repeat_and_differ_by_seed(model, images):
    for name in ("random_map", "smoothgrad"):
        extra = {"samples": 3} if name == "smoothgrad" else {}
        a = compute_saliency(name, model, images, target=0, seed=1, **extra)
        b = compute_saliency(name, model, images, target=0, seed=1, **extra)
        c = compute_saliency(name, model, images, target=0, seed=2, **extra)
        np.testing.assert_array_equal(a, b)
        assert not np.allclose(a, c)


def test_every_built_in_runs_and_is_listed(model, images):
    assert BUILT_IN <= set(available_saliency())
    for name in sorted(BUILT_IN):
        maps = compute_saliency(name, model, images, target=[0, 1, 2])
        assert maps.shape == (3, 9, 7) and maps.dtype == np.float64


def test_centre_prior_peaks_in_the_middle(model):
    maps = compute_saliency("centre_prior", model, np.zeros((1, *SHAPE), np.float32), target=0)
    assert np.unravel_index(maps[0].argmax(), maps[0].shape) == (4, 3)


def test_register_duplicate_unknown_and_unchanged_function():
    def plugin_map(model, images, *, target):
        return np.zeros(np.shape(images)[:3])

    assert register_saliency("test_plugin_map")(plugin_map) is plugin_map
    try:
        assert "test_plugin_map" in available_saliency()
        with pytest.raises(ValueError, match="'test_plugin_map' is already registered"):
            register_saliency("test_plugin_map")(plugin_map)
    finally:
        unregister_saliency("test_plugin_map")
    with pytest.raises(KeyError, match="Unknown saliency method 'nope'. Available: centre_prior"):
        compute_saliency("nope", None, np.zeros((1, *SHAPE)), target=0)


def test_broken_plugin_warns_by_name(monkeypatch):
    broken = importlib.metadata.EntryPoint(
        "broken_map", "no_such_module_i11", "importance.saliency"
    )
    real = importlib.metadata.entry_points
    monkeypatch.setattr(
        importlib.metadata,
        "entry_points",
        lambda group=None: [broken] if group == "importance.saliency" else real(group=group),
    )
    with SALIENCY.scoped(reload_plugins=True):
        with pytest.warns(PluginWarning, match="'broken_map'"):
            names = available_saliency()
        assert "grad_cam" in names and "broken_map" in SALIENCY.failed_plugins()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"window": (10, 2)}, r"window \(10, 2\) is larger than the images \(9, 7\)"),
        ({"window": 3, "strides": (2, 4)}, r"strides \(2, 4\) larger than the window \(3, 3\)"),
        ({"strides": 0}, "strides must be a positive integer or a pair of them. Received: 0"),
        ({"strides": (1, 0)}, r"strides must be .* Received: \(1, 0\)"),
        ({"baseline": "grey"}, "baseline must be one of .* Received: 'grey'"),
    ],
)
def test_occlusion_bad_options(model, images, options, message):
    with pytest.raises(ValueError, match=message):
        compute_saliency("occlusion", model, images, target=0, **options)


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_every_method_names_a_target_outside_the_classes(model, images, name):
    with pytest.raises(ValueError, match=r"class id in \[0, 3\). Received: 7"):
        compute_saliency(name, model, images, target=7)


@pytest.mark.parametrize("name", ["gradient", "occlusion", "grad_cam", "random_map"])
def test_every_method_names_a_bad_image_shape(model, name):
    with pytest.raises(ValueError, match=r"rank 4 \(N, H, W, C\). Received shape: \(9, 7\)"):
        compute_saliency(name, model, np.zeros((9, 7), np.float32), target=0)
