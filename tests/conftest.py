"""Shared tiny models and data for the unit tests (cheap: tens of weights, 16-64 examples).

Fixtures:
    ``build_dense``: factory ``(*, softmax=False, seed=0) -> model``, a 6-8-3 Dense MLP.
    ``build_conv``: factory ``(*, softmax=False, seed=0) -> model``, Conv2D(3, 3x3) on 6x6x2
        inputs, then Flatten and Dense(3).
    ``dense_model`` / ``conv_model``: those models with logits output.
    ``dense_data`` / ``conv_data``: 32 generated ``(x, y)`` examples for them, int32 labels.
    ``make_data``: factory ``(input_shape, n=32, seed=0) -> (x, y)``.

Keras is imported inside the builders, not here: this file is loaded by xdist's controller too,
which runs no test and need not start TensorFlow.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import numpy as np
import pytest

from benchmarks.plugin.seeding import seed_weights

if TYPE_CHECKING:
    import keras


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with the most ``slow`` tests first, then files with more tests (a file's own order
    kept). ``./run test`` deals whole files to its workers in this order
    (``--no-loadscope-reorder``), so the long end-to-end files start early instead of leaving
    one worker busy after the other has finished."""
    slow = Counter(item.path for item in items if item.get_closest_marker("slow"))
    count = Counter(item.path for item in items)
    items.sort(key=lambda item: (-slow[item.path], -count[item.path], str(item.path)))


NUM_CLASSES = 3
DENSE_INPUT = (6,)
CONV_INPUT = (6, 6, 2)


def _head(softmax: bool) -> keras.layers.Layer:
    import keras

    return keras.layers.Dense(NUM_CLASSES, activation="softmax" if softmax else None, name="head")


def _dense(*, softmax: bool = False, seed: int = 0) -> keras.Model:
    import keras

    seed_weights(seed)  # not keras.utils.set_random_seed: it empties TF's kernel cache
    return keras.Sequential(
        [
            keras.Input(DENSE_INPUT),
            keras.layers.Dense(8, activation="tanh", name="hidden"),
            _head(softmax),
        ]
    )


def _conv(*, softmax: bool = False, seed: int = 0) -> keras.Model:
    import keras

    seed_weights(seed)  # not keras.utils.set_random_seed: it empties TF's kernel cache
    return keras.Sequential(
        [
            keras.Input(CONV_INPUT),
            keras.layers.Conv2D(3, 3, activation="tanh", name="conv"),
            keras.layers.Flatten(),
            _head(softmax),
        ]
    )


def _data(input_shape: tuple[int, ...], n: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *input_shape)).astype(np.float32)
    y = rng.integers(0, NUM_CLASSES, size=n).astype(np.int32)
    return x, y


@pytest.fixture
def build_dense():
    return _dense


@pytest.fixture
def build_conv():
    return _conv


@pytest.fixture
def make_data():
    return _data


@pytest.fixture
def dense_model() -> keras.Model:
    return _dense()


@pytest.fixture
def conv_model() -> keras.Model:
    return _conv()


@pytest.fixture
def dense_data() -> tuple[np.ndarray, np.ndarray]:
    return _data(DENSE_INPUT)


@pytest.fixture
def conv_data() -> tuple[np.ndarray, np.ndarray]:
    return _data(CONV_INPUT)
