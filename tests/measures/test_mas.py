"""MAS against a per-example loop written here, a closed form and planted zero inputs."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import importance as imp
from importance.testing import relative_error

RTOL = 1e-5


def reference_mas(model, x):
    """1/N sum_i |d ||f(x_i)||^2 / d theta|, one tape per example."""
    total = [np.zeros(w.shape) for w in model.trainable_weights]
    for i in range(len(x)):
        with tf.GradientTape() as tape:
            out = model(x[i : i + 1], training=False)
            value = tf.reduce_sum(out * out)
        grads = tape.gradient(value, model.trainable_weights)
        total = [t + np.abs(g.numpy().astype(np.float64)) for t, g in zip(total, grads, strict=True)]
    return [t / len(x) for t in total]


@pytest.mark.parametrize("arch", ["dense", "conv"])
@pytest.mark.parametrize("softmax", [False, True], ids=["logits", "softmax"])
def test_mas_matches_per_example_loop(arch, softmax, build_dense, build_conv, make_data):
    model = (build_dense if arch == "dense" else build_conv)(softmax=softmax, seed=1)
    x, y = make_data(model.inputs[0].shape[1:], n=16, seed=2)
    scores = imp.compute_importance("mas", model, (x, y), batch_size=6)
    assert relative_error(scores, reference_mas(model, x)) <= RTOL


@pytest.mark.parametrize("method", ["loop", "vmap"])
def test_mas_methods_match_reference(method, build_conv, make_data):
    model = build_conv(seed=3)
    x, y = make_data((6, 6, 2), n=8, seed=3)
    scores = imp.compute_importance("mas", model, (x, y), method=method)
    assert relative_error(scores, reference_mas(model, x)) <= RTOL


def test_mas_closed_form_on_a_linear_model(make_data):
    """f = x W + b: d||f||^2/dW_jk = 2 x_j f_k and d/db_k = 2 f_k, per example."""
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, bias_initializer="ones")])
    x, y = make_data((6,), n=20, seed=4)
    kernel, bias = (w.numpy().astype(np.float64) for w in model.trainable_weights)
    f = x.astype(np.float64) @ kernel + bias
    expected_kernel = np.mean(np.abs(2 * x[:, :, None] * f[:, None, :]), axis=0)
    expected_bias = np.mean(np.abs(2 * f), axis=0)
    scores = imp.compute_importance("mas", model, (x, y), batch_size=7)
    assert relative_error(scores, [expected_kernel, expected_bias]) <= RTOL
    # The mean of absolute values, not the absolute value of the mean.
    wrong = np.abs(np.mean(2 * x[:, :, None] * f[:, None, :], axis=0))
    assert relative_error([scores[0]], [wrong]) > 0.1


def test_mas_ignores_labels(dense_model, dense_data):
    x, y = dense_data
    a = imp.compute_importance("mas", dense_model, (x, y))
    b = imp.compute_importance("mas", dense_model, (x, (y + 1) % 3))
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))


@pytest.mark.parametrize("arch", ["dense", "conv"])
def test_planted_zero_inputs_get_exactly_zero_mas(arch, build_dense, build_conv, make_data):
    model = (build_dense if arch == "dense" else build_conv)(seed=8)
    x, y = make_data(model.inputs[0].shape[1:], seed=8)
    if arch == "dense":
        x[:, [1, 4]] = 0.0
        kernel = imp.compute_importance("mas", model, (x, y))[0]
        assert np.all(kernel[[1, 4], :] == 0.0)
        assert np.all(kernel[[0, 2, 3, 5], :] > 0.0)
    else:
        x[..., 1] = 0.0
        kernel = imp.compute_importance("mas", model, (x, y))[0]
        assert np.all(kernel[:, :, 1, :] == 0.0)
        assert np.all(kernel[:, :, 0, :] > 0.0)


def test_max_examples_and_bad_method(dense_model, dense_data):
    x, y = dense_data
    first = imp.compute_importance("mas", dense_model, (x, y), max_examples=5)
    assert relative_error(first, reference_mas(dense_model, x[:5])) <= RTOL
    with pytest.raises(ValueError, match="method must be one of .* Received: 'fast'"):
        imp.compute_importance("mas", dense_model, (x, y), method="fast")
