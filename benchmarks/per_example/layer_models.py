"""Models beyond Dense/Conv for the ``per-example-layers`` benchmark group.

Small, randomly initialised (as in issue 14's measurements) models whose per-example moments
need the engine's other paths, with generated data (no download): images, token ids or
sequences, and 10 random classes. Each entry: ``builder() -> (model, x, y)``; the paths the
engine takes for each model are listed in docs/per_example_history.md (its first table of this
group, issue 14); each benchmark row records the method that ran (``extra_info["path"]``).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

CLASSES = 10
VOCABULARY = 1000


def _images(shape: tuple[int, ...], n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


def _tokens(length: int, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCABULARY, size=(n, length)).astype(np.int32)


def _randomise_statistics(model: Any, seed: int) -> Any:
    """Moving statistics away from (0, 1), so that inference BatchNorm is not an identity."""
    rng = np.random.default_rng(seed)
    for w in model.non_trainable_weights:
        if "moving_mean" in w.path:
            w.assign(rng.normal(0, 0.1, size=w.shape).astype(np.float32))
        elif "moving_variance" in w.path:
            w.assign(rng.uniform(0.5, 1.5, size=w.shape).astype(np.float32))
    return model


def resnet_bn() -> keras.Model:
    """32x32x3, conv stem and two residual blocks with BatchNormalization (inference)."""
    inputs = keras.Input((32, 32, 3))
    h = keras.layers.Activation("relu")(keras.layers.BatchNormalization()(keras.layers.Conv2D(16, 3, padding="same")(inputs)))
    for _ in range(2):
        r = keras.layers.Conv2D(16, 3, padding="same")(h)
        r = keras.layers.Activation("relu")(keras.layers.BatchNormalization()(r))
        r = keras.layers.BatchNormalization()(keras.layers.Conv2D(16, 3, padding="same")(r))
        h = keras.layers.Activation("relu")(keras.layers.Add()([h, r]))
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.MaxPooling2D()(h))
    return _randomise_statistics(keras.Model(inputs, keras.layers.Dense(CLASSES)(h)), 0)


def mobilenet() -> keras.Model:
    """32x32x3, a strided stem, a depthwise + pointwise block and a separable convolution."""
    inputs = keras.Input((32, 32, 3))
    h = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(inputs)
    h = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(h)
    h = keras.layers.Conv2D(32, 1, activation="relu")(h)
    h = keras.layers.SeparableConv2D(32, 3, padding="same", activation="relu")(h)
    return keras.Model(inputs, keras.layers.Dense(CLASSES)(keras.layers.GlobalAveragePooling2D()(h)))


def cnn_channels_first() -> keras.Model:
    """The two-conv CNN of ``tasks.models.cnn`` in ``channels_first`` layout, 1x28x28."""
    inputs = keras.Input((1, 28, 28))
    h = keras.layers.Conv2D(16, 3, activation="relu", data_format="channels_first")(inputs)
    h = keras.layers.MaxPooling2D(data_format="channels_first")(h)
    h = keras.layers.Conv2D(32, 3, activation="relu", data_format="channels_first")(h)
    h = keras.layers.MaxPooling2D(data_format="channels_first")(h)
    return keras.Model(inputs, keras.layers.Dense(CLASSES)(keras.layers.Flatten()(h)))


def text() -> keras.Model:
    """64 token ids, Embedding(1000, 32), average pooling, Dense."""
    inputs = keras.Input((64,), dtype="int32")
    h = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(VOCABULARY, 32)(inputs))
    return keras.Model(inputs, keras.layers.Dense(CLASSES)(keras.layers.Dense(32, activation="relu")(h)))


def transformer() -> keras.Model:
    """32 token ids, Embedding(1000, 64), one encoder block (MHA 4x16, LayerNorm, Dense 128)."""
    inputs = keras.Input((32,), dtype="int32")
    h = keras.layers.Embedding(VOCABULARY, 64)(inputs)
    h = keras.layers.LayerNormalization()(keras.layers.Add()([h, keras.layers.MultiHeadAttention(4, 16)(h, h)]))
    f = keras.layers.Dense(64)(keras.layers.Dense(128, activation="relu")(h))
    h = keras.layers.LayerNormalization()(keras.layers.Add()([h, f]))
    return keras.Model(inputs, keras.layers.Dense(CLASSES)(keras.layers.GlobalAveragePooling1D()(h)))


def lstm() -> keras.Model:
    """20 steps of 16 features, LSTM(32), Dense."""
    inputs = keras.Input((20, 16))
    return keras.Model(inputs, keras.layers.Dense(CLASSES)(keras.layers.LSTM(32)(inputs)))


def conv3d() -> keras.Model:
    """8x16x16x1 volumes, two Conv3D(3x3x3) layers, pooling, Dense."""
    inputs = keras.Input((8, 16, 16, 1))
    h = keras.layers.Conv3D(8, 3, activation="relu")(inputs)
    h = keras.layers.Conv3D(16, 3, activation="relu")(h)
    return keras.Model(inputs, keras.layers.Dense(CLASSES)(keras.layers.GlobalAveragePooling3D()(h)))


MODELS = {
    "resnet_bn": (resnet_bn, lambda n: _images((32, 32, 3), n, 1)),
    "mobilenet": (mobilenet, lambda n: _images((32, 32, 3), n, 2)),
    "cnn_channels_first": (cnn_channels_first, lambda n: _images((1, 28, 28), n, 3)),
    "text": (text, lambda n: _tokens(64, n, 4)),
    "transformer": (transformer, lambda n: _tokens(32, n, 5)),
    "lstm": (lstm, lambda n: _images((20, 16), n, 6)),
    "conv3d": (conv3d, lambda n: _images((8, 16, 16, 1), n, 7)),
}
RECURRENT = ("lstm",)


def build(name: str, n: int) -> tuple[Any, tuple[np.ndarray, np.ndarray]]:
    """The model (seeded initial weights, logits out) and ``n`` generated examples."""
    builder, inputs = MODELS[name]
    keras.utils.set_random_seed(0)
    model = builder()
    y = np.random.default_rng(9).integers(0, CLASSES, size=n).astype(np.int32)
    return model, (inputs(n), y)
