"""The input windows of strided convolutions (``layers/windows.py``), against strided slicing,
and the depthwise cost model that sends large kernels over few positions to the elementwise form."""

from __future__ import annotations

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from importance.per_example import engine, per_example_moment
from importance.per_example.layers import depthwise
from importance.per_example.layers.windows import strided_windows
from importance.testing import relative_error

# (height, width), strides, kernel, rates: windows that stop short of the input's end, reach
# it exactly, and (stride 3) leave rows past the last window unread.
SHAPES = [
    ((9, 9), (2, 2), (3, 3), (1, 1)),
    ((8, 7), (2, 3), (3, 2), (1, 1)),
    ((7, 7), (3, 3), (5, 5), (1, 1)),
    ((10, 6), (3, 1), (2, 3), (2, 1)),
    ((5, 5), (1, 1), (3, 3), (2, 2)),
    ((4, 4), (2, 2), (1, 1), (1, 1)),
]


def _expected(a: np.ndarray, top: int, left: int, out: tuple, strides: tuple) -> np.ndarray:
    return a[:, top : top + (out[0] - 1) * strides[0] + 1 : strides[0],
             left : left + (out[1] - 1) * strides[1] + 1 : strides[1]]


@pytest.mark.parametrize(("size", "strides", "kernel", "rates"), SHAPES)
def test_every_window_equals_the_strided_slice(size, strides, kernel, rates):
    a = np.random.default_rng(0).normal(size=(3, *size, 2)).astype(np.float32)
    dims = zip(size, kernel, rates, strides, strict=True)
    out = tuple((n - (k - 1) * r - 1) // s + 1 for n, k, r, s in dims)
    last = tuple((k - 1) * r for k, r in zip(kernel, rates, strict=True))
    window = strided_windows(tf.constant(a), out, strides, last)
    for p, q in itertools.product(range(kernel[0]), range(kernel[1])):
        top, left = p * rates[0], q * rates[1]
        want = _expected(a, top, left, out, strides)
        np.testing.assert_array_equal(window(top, left).numpy(), want)


def test_windows_in_a_graph_with_unknown_batch():
    a = np.random.default_rng(1).normal(size=(5, 9, 9, 4)).astype(np.float32)

    @tf.function(input_signature=[tf.TensorSpec([None, 9, 9, 4])])
    def corner_windows(x):
        window = strided_windows(x, (4, 4), (2, 2), (2, 2))
        return window(0, 0), window(2, 1)

    first, last = corner_windows(a)
    np.testing.assert_array_equal(first.numpy(), _expected(a, 0, 0, (4, 4), (2, 2)))
    np.testing.assert_array_equal(last.numpy(), _expected(a, 2, 1, (4, 4), (2, 2)))


def _log_likelihood(out, y):
    return tf.gather(tf.nn.log_softmax(out), y, axis=1, batch_dims=1)


@pytest.mark.parametrize(
    ("kernel", "size", "elementwise"),
    [(5, 8, True), (7, 8, True), (5, 16, False), (3, 8, False), (3, 4, True)],
    ids=["5x5-8x8", "7x7-8x8", "5x5-16x16", "3x3-8x8", "3x3-4x4"],
)
def test_large_kernels_over_few_positions_take_the_elementwise_form(kernel, size, elementwise, monkeypatch):
    """The cost model: kernels of 25 taps or more over at most 64 outputs, and any kernel over at
    most 16, take elementwise products; the others the folded filter gradient. Both paths are
    checked against the per-example loop."""
    taken = []
    real = depthwise.elementwise_kernel_moment

    def spy(*args, **kwargs):
        taken.append(True)
        return real(*args, **kwargs)

    monkeypatch.setattr(depthwise, "elementwise_kernel_moment", spy)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((size, size, 3)),
        keras.layers.DepthwiseConv2D(kernel, padding="same", activation="tanh"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3),
    ])
    x = tf.random.normal([6, size, size, 3], seed=2)
    y = tf.constant(np.arange(6) % 3, tf.int32)
    got = engine.per_example_moment(model, x, _log_likelihood, moment="abs", targets=y)
    assert bool(taken) is elementwise
    ref = per_example_moment(model, x, _log_likelihood, moment="abs", method="loop", targets=y)
    assert relative_error(got, ref) <= 1e-5
