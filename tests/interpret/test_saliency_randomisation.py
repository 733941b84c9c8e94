"""The cascading model-parameter randomisation test against a plain loop written from Adebayo et
al. 2018, SSIM against Wang et al. 2004 (a window loop) and ``tf.image.ssim``, and the model
restored bitwise, also when the method raises mid-cascade."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from importance.interpret import compute_saliency
from importance.interpret.randomisation import (
    PASS_THRESHOLD,
    model_randomisation,
    normalise_maps,
    ssim,
)

SHAPE = (12, 12, 1)


@pytest.fixture(scope="module")
def model(build_small_cnn):
    return build_small_cnn(SHAPE, seed=4, hidden=6, bias_initializer="random_normal")


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(2).random((3, *SHAPE)).astype(np.float32)


def _weights(model):
    return [w.numpy().tobytes() for w in model.weights]


def _ssim_loop(x, y, size=11, sigma=1.5, data_range=1.0):
    """Wang et al. 2004, eq. 13-14 with a Gaussian window: a loop over the window positions."""
    offsets = np.arange(size) - (size - 1) / 2
    w = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * sigma**2))
    w /= w.sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for r in range(x.shape[0] - size + 1):
        for c in range(x.shape[1] - size + 1):
            a, b = x[r : r + size, c : c + size], y[r : r + size, c : c + size]
            mu_a, mu_b = (w * a).sum(), (w * b).sum()
            var_a, var_b = (w * (a - mu_a) ** 2).sum(), (w * (b - mu_b) ** 2).sum()
            cov = (w * (a - mu_a) * (b - mu_b)).sum()
            values.append(((2 * mu_a * mu_b + c1) * (2 * cov + c2))
                          / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)))  # fmt: skip
    return np.mean(values)


def test_ssim_matches_a_window_loop_and_tensorflow():
    rng = np.random.default_rng(0)
    x = rng.random((2, 28, 28))
    y = np.clip(x + rng.normal(0, 0.2, x.shape), 0, 1)
    got = ssim(x, y)
    np.testing.assert_allclose(got, [_ssim_loop(a, b) for a, b in zip(x, y, strict=True)],
                               rtol=1e-10)  # fmt: skip
    peer = tf.image.ssim(tf.constant(x[..., None]), tf.constant(y[..., None]), max_val=1.0)
    np.testing.assert_allclose(got, peer.numpy(), rtol=1e-5)
    np.testing.assert_allclose(ssim(x, x), 1.0)


def _reference_cascade(model, images, target, method, seed):
    """Adebayo et al. 2018, sec. 3.1, on a copy of the model: from the top, re-draw each layer's
    weights with its initialiser (seeded as the library seeds them), compute the maps, compare
    their absolute values with the original's by Spearman (scipy) and SSIM (the window loop)."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    original = np.abs(compute_saliency(method, copy, images, target=target))
    layers = [layer for layer in copy.layers if layer.trainable_weights][::-1]
    rho, structural = [], []
    for step, layer in enumerate(layers):
        for k, variable in enumerate(layer.trainable_weights):
            state = np.random.SeedSequence([seed, step, k]).generate_state(1)[0] & 0x7FFFFFFF
            name = variable.name  # kernel or bias
            initializer = getattr(layer, f"{name}_initializer")
            config = initializer.get_config()
            if "seed" in config:
                initializer = type(initializer).from_config({**config, "seed": int(state)})
            variable.assign(initializer(tuple(variable.shape), dtype=variable.dtype))
        maps = np.abs(compute_saliency(method, copy, images, target=target))
        rho.append([stats.spearmanr(a.ravel(), b.ravel())[0] for a, b in zip(original, maps,
                                                                            strict=True)])
        a, b = normalise_maps(original), normalise_maps(maps)
        structural.append([_ssim_loop(p, q) for p, q in zip(a, b, strict=True)])
    return [layer.name for layer in layers], np.array(rho), np.array(structural)


def test_cascade_matches_a_plain_loop_and_restores_the_model(model, images):
    before = _weights(model)
    result = model_randomisation(model, images, target=[0, 1, 2], method="gradient", seed=3,
                                 keep_maps=True)  # fmt: skip
    assert _weights(model) == before
    names, rho, structural = _reference_cascade(model, images, [0, 1, 2], "gradient", 3)
    assert list(result.layers) == names and len(names) == 3  # dense_1, dense, conv
    np.testing.assert_allclose(result.spearman, rho, atol=1e-6)
    np.testing.assert_allclose(result.ssim, structural, atol=1e-6)
    assert result.maps.shape == (4, 3, 12, 12)
    np.testing.assert_array_equal(
        result.maps[0], np.abs(compute_saliency("gradient", model, images, target=[0, 1, 2]))
    )
    assert _weights(model) == before


def test_the_model_is_restored_bitwise_when_the_method_raises(model, images):
    before = _weights(model)
    calls = []

    def breaks_on_third_call(current, x, *, target):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("planted failure")
        return compute_saliency("gradient", current, x, target=target)

    with pytest.raises(RuntimeError, match="planted failure"):
        model_randomisation(model, images, target=0, method=breaks_on_third_call)
    assert len(calls) == 3 and _weights(model) == before


def test_a_map_of_the_input_alone_fails_and_a_linear_models_gradient_passes(model, images):
    edges = model_randomisation(model, images, target=0, method="sobel_map")
    np.testing.assert_allclose(edges.spearman, 1.0)
    np.testing.assert_allclose(edges.ssim, 1.0)
    assert not edges.passed()
    # logits = W x: the gradient map is |W[:, c]|, so a re-drawn W leaves no rank agreement
    keras.utils.set_random_seed(0)
    linear = keras.Sequential([keras.Input(SHAPE), keras.layers.Flatten(), keras.layers.Dense(3)])
    x = np.random.default_rng(5).random((20, *SHAPE)).astype(np.float32)
    result = model_randomisation(linear, x, target=1, method="gradient")
    assert result.layers == (linear.layers[-1].name,)
    assert abs(result.all_layers) < 0.2 < PASS_THRESHOLD and result.passed()


def test_layers_option_and_errors(model, images):
    top = model.layers[-1].name
    result = model_randomisation(model, images, target=0, method="gradient", layers=[top])
    assert result.layers == (top,) and result.spearman.shape == (1, 3)
    with pytest.raises(ValueError, match=r"layers must name layers of model 'small' .* "
                                         r"Received: \['nope'\]"):  # fmt: skip
        model_randomisation(model, images, target=0, layers=["nope"])
    with pytest.raises(ValueError, match=r"class id in \[0, 3\). Received: 5"):
        model_randomisation(model, images, target=5)
    with pytest.raises(ValueError, match="first and second must be maps of one shape"):
        ssim(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)))


def test_batch_norm_and_nested_layers_are_randomised_and_restored():
    keras.utils.set_random_seed(7)
    inner = keras.Sequential([keras.Input((6, 6, 4)), keras.layers.Conv2D(4, 3, padding="same")],
                             name="inner")  # fmt: skip
    model = keras.Sequential([
        keras.Input((6, 6, 1)), keras.layers.Conv2D(4, 3, padding="same", name="first"),
        keras.layers.BatchNormalization(name="bn"), inner, keras.layers.Flatten(),
        keras.layers.Dense(2, name="head"),
    ])  # fmt: skip
    x = np.random.default_rng(8).random((4, 6, 6, 1)).astype(np.float32)
    model(x, training=True)  # moving statistics away from their initial values
    before = _weights(model)
    result = model_randomisation(model, x, target=0, method="gradient")
    assert result.layers == ("head", inner.layers[0].name, "bn", "first")
    assert _weights(model) == before
