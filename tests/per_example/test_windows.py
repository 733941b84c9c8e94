"""The input windows of strided convolutions (``layers/windows.py``), against strided slicing."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import tensorflow as tf

from importance.per_example.layers.windows import strided_windows

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
