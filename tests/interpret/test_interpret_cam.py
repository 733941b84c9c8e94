"""The CAM core: layer search, Grad-CAM / HiResCAM against closed forms, differentiability."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from importance.interpret import cam_pass, find_cam_layer, grad_cam, grad_cam_maps, hires_cam

SHAPE = (7, 5, 2)  # non-square on purpose


def _images(n=4, seed=0):
    return np.random.default_rng(seed).normal(size=(n, *SHAPE)).astype(np.float32)


def _layers(seed=0):
    keras.utils.set_random_seed(seed)
    return [
        keras.layers.Conv2D(3, 3, padding="same", activation="tanh", name="conv_a"),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv_b"),
        keras.layers.GlobalAveragePooling2D(name="gap"),
        keras.layers.Dense(3, name="head"),
    ]


def _sequential():
    return keras.Sequential([keras.Input(SHAPE), *_layers()], name="seq")


def _functional():
    inputs = keras.Input(SHAPE)
    h = inputs
    for layer in _layers():
        h = layer(h)
    return keras.Model(inputs, h, name="func")


def _nested():
    conv_a, conv_b, gap, head = _layers()
    body = keras.Sequential([keras.Input(SHAPE), conv_a, conv_b], name="body")
    inputs = keras.Input(SHAPE)
    return keras.Model(inputs, head(gap(body(inputs))), name="nested")


def _gap_reference(model, images, target):
    """Grad-CAM of GAP + Dense in closed form, A from the conv layers. The class score is the
    centred logit z_c - mean_j z_j (the one a softmax head also determines), so
    alpha_k = (w_kc - mean_j w_kj) / (h w)."""
    conv_a, conv_b, head = (find_cam_layer(model, name) for name in ("conv_a", "conv_b", "head"))
    a = np.asarray(conv_b(conv_a(images)))
    kernel = np.asarray(head.kernel)
    alpha = (kernel[:, target] - kernel.mean(axis=1)) / (a.shape[1] * a.shape[2])
    return np.maximum(np.einsum("nhwk,k->nhw", a, alpha), 0.0)


@pytest.mark.parametrize("build", [_sequential, _functional, _nested])
def test_grad_cam_matches_closed_form_for_every_model_structure(build):
    model = build()
    images = _images()
    assert find_cam_layer(model).name == "conv_b"
    maps = grad_cam(model, images, target=2)
    assert maps.shape == (4, 7, 5)
    np.testing.assert_allclose(maps, _gap_reference(model, images, 2), rtol=1e-5, atol=1e-7)
    assert maps.max() > 0
    assert "call" not in vars(find_cam_layer(model))  # the capture is undone


def test_per_image_targets_pick_each_images_class():
    model = _functional()
    images = _images()
    maps = grad_cam(model, images, target=[0, 1, 2, 0])
    for i, c in enumerate([0, 1, 2, 0]):
        np.testing.assert_allclose(
            maps[i], grad_cam(model, images[i : i + 1], target=c)[0], atol=1e-7
        )


def test_hires_cam_equals_grad_cam_for_gap_and_one_dense():
    """Draelos & Carin 2020: with GAP + one Dense, dy_c/dA_k is w_kc/(hw) everywhere, so the
    element-wise product summed over k equals alpha-weighted sum; Grad-CAM adds only the ReLU."""
    model = _functional()
    images = _images(seed=3)
    hires = hires_cam(model, images, target=1)
    np.testing.assert_allclose(np.maximum(hires, 0), grad_cam(model, images, target=1), atol=1e-7)
    assert (hires < 0).any() or (hires > 0).all()  # raw HiResCAM keeps its sign


def test_hires_cam_differs_from_grad_cam_when_gradients_vary_in_space(build_small_cnn):
    model = build_small_cnn(SHAPE, seed=1)
    images = _images()
    assert not np.allclose(
        np.maximum(hires_cam(model, images, target=0), 0), grad_cam(model, images, target=0)
    )


def test_constant_zero_activations_give_a_zero_map_and_constant_ones_a_flat_map():
    """The original started from a map of ones; a correct Grad-CAM of all-zero A is zero."""
    for bias, expect_zero in [(-1.0, True), (2.0, False)]:
        model = _functional()
        conv = model.get_layer("conv_b")
        conv.kernel.assign(np.zeros(conv.kernel.shape, np.float32))
        conv.bias.assign(np.full(conv.bias.shape, bias, np.float32))
        maps = grad_cam(model, _images(), target=0, layer="conv_b")
        if expect_zero:
            assert np.all(maps == 0.0)
        else:  # constant activations: no location is preferred
            assert np.ptp(maps, axis=(1, 2)).max() < 1e-6


def test_outer_tape_differentiates_the_maps_like_finite_differences():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input(SHAPE, dtype="float64"),
            keras.layers.Conv2D(
                3, 3, padding="same", activation="tanh", name="conv", dtype="float64"
            ),
            keras.layers.Flatten(dtype="float64"),
            keras.layers.Dense(5, activation="tanh", dtype="float64"),
            keras.layers.Dense(3, dtype="float64"),
        ]
    )
    images = tf.constant(_images(2), tf.float64)

    def objective():
        cam = cam_pass(model, images, [0, 2], training=True)
        return tf.reduce_sum(grad_cam_maps(cam.activations, cam.gradients) ** 2)

    with tf.GradientTape() as tape:
        value = objective()
    kernel = model.get_layer("conv").kernel
    analytic = tape.gradient(value, kernel).numpy()
    eps = 1e-6
    original = kernel.numpy()
    for index in [(0, 0, 0, 0), (1, 2, 1, 2), (2, 1, 0, 1)]:
        shifted = original.copy()
        shifted[index] += eps
        kernel.assign(shifted)
        up = float(objective())
        shifted[index] -= 2 * eps
        kernel.assign(shifted)
        down = float(objective())
        kernel.assign(original)
        np.testing.assert_allclose(analytic[index], (up - down) / (2 * eps), rtol=1e-4, atol=1e-9)


def test_cam_pass_runs_inside_tf_function_like_eager():
    model = _functional()
    images = tf.constant(_images())
    targets = tf.constant([0, 1, 2, 1])
    compiled = tf.function(lambda x, t: grad_cam_maps(*cam_pass(model, x, t)[:2]))
    eager = grad_cam_maps(*cam_pass(model, images, targets)[:2])
    np.testing.assert_allclose(compiled(images, targets), eager, atol=1e-6)


def test_model_without_convolution_gets_an_error_naming_it():
    model = keras.Sequential(
        [keras.Input(SHAPE), keras.layers.Flatten(), keras.layers.Dense(3)], name="flat_mlp"
    )
    with pytest.raises(ValueError, match="flat_mlp.*no 2-D convolution"):
        grad_cam(model, _images(), target=0)


def test_unknown_layer_lists_the_layers():
    with pytest.raises(ValueError, match="Unknown layer 'nope'.*conv_a, conv_b, gap, head"):
        grad_cam(_sequential(), _images(), target=0, layer="nope")


@pytest.mark.parametrize(
    "images, target, message",
    [
        (np.zeros((7, 5, 2), np.float32), 0, r"rank 4 \(N, H, W, C\). Received shape: \(7, 5, 2\)"),
        (np.zeros((1, 5, 7, 2), np.float32), 0, r"\(1, 5, 7, 2\) do not fit model 'seq'"),
        (np.zeros((1, 7, 5, 2), np.float32), 3, r"class id in \[0, 3\). Received: 3"),
        (np.zeros((1, 7, 5, 2), np.float32), -1, r"class id in \[0, 3\). Received: -1"),
        (np.zeros((2, 7, 5, 2), np.float32), [0, 1, 2], r"one class id per image \(2\)"),
        (np.zeros((1, 7, 5, 2), np.float32), 0.5, "integers"),
    ],
)
def test_bad_input_is_named(images, target, message):
    with pytest.raises(ValueError, match=message):
        grad_cam(_sequential(), images, target=target)
