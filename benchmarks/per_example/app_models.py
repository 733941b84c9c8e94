"""Real architectures for the ``per-example-applications`` benchmark group (issue 21).

keras.applications models built with ``weights=None`` (random weights, nothing downloaded) at a
small input size (:data:`IMAGE`, issue 21's 64x64x3; :data:`QUICK_IMAGE` in quick runs), 10
classes, logits out, plus a bidirectional-LSTM and a GRU text model, with generated data. Each
entry of :data:`MODELS`: ``(builder(image), input shape(image), dtype)``, ``image`` being the
side of the square input images (the text models ignore it).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

CLASSES = 10
VOCABULARY = 1000
SEQUENCE = 32


def _application(name: str, smallest: int = 32) -> Any:
    """(builder, shape) of a keras.applications model at ``image`` pixels, or at ``smallest``
    if the model accepts no smaller input (Xception: 71)."""

    def size(image: int) -> int:
        return max(image, smallest)

    def build(image: int) -> keras.Model:
        return getattr(keras.applications, name)(
            weights=None, input_shape=(size(image), size(image), 3), classes=CLASSES,
            classifier_activation=None,
        )

    return build, lambda image: (size(image), size(image), 3)


def bilstm() -> keras.Model:
    """32 token ids, Embedding(1000, 32), Bidirectional(LSTM(32)), Dense."""
    inputs = keras.Input((SEQUENCE,), dtype="int32")
    h = keras.layers.Embedding(VOCABULARY, 32)(inputs)
    h = keras.layers.Bidirectional(keras.layers.LSTM(32))(h)
    return keras.Model(inputs, keras.layers.Dense(CLASSES)(h))


def gru() -> keras.Model:
    """32 token ids, Embedding(1000, 32), GRU(32), Dense."""
    inputs = keras.Input((SEQUENCE,), dtype="int32")
    h = keras.layers.GRU(32)(keras.layers.Embedding(VOCABULARY, 32)(inputs))
    return keras.Model(inputs, keras.layers.Dense(CLASSES)(h))


IMAGE = 64  # issue 21's input size
QUICK_IMAGE = 32  # the smallest input most applications accept
MODELS = {
    "ResNet50": (*_application("ResNet50"), "float32"),
    "MobileNetV2": (*_application("MobileNetV2"), "float32"),
    "EfficientNetB0": (*_application("EfficientNetB0"), "float32"),
    "DenseNet121": (*_application("DenseNet121"), "float32"),
    "ConvNeXtTiny": (*_application("ConvNeXtTiny"), "float32"),
    "Xception": (*_application("Xception", smallest=72), "float32"),
    "NASNetMobile": (*_application("NASNetMobile"), "float32"),
    "bilstm": (lambda image: bilstm(), lambda image: (SEQUENCE,), "int32"),
    "gru": (lambda image: gru(), lambda image: (SEQUENCE,), "int32"),
}
RECURRENT = ("bilstm", "gru")


def build(name: str, n: int, image: int = IMAGE) -> tuple[Any, tuple[np.ndarray, np.ndarray]]:
    """The model at ``image`` pixels (seeded random weights, BatchNorm statistics moved off
    (0, 1)) and ``n`` generated examples with random labels."""
    builder, shape_of, dtype = MODELS[name]
    shape = shape_of(image)
    keras.utils.set_random_seed(0)
    model = builder(image)
    rng = np.random.default_rng(1)
    for w in model.non_trainable_weights:  # inference BatchNorm is then not an identity
        if "moving_mean" in w.path:
            w.assign(rng.normal(0, 0.1, size=w.shape).astype(np.float32))
        elif "moving_variance" in w.path:
            w.assign(rng.uniform(0.5, 1.5, size=w.shape).astype(np.float32))
    if dtype == "int32":
        x = rng.integers(0, VOCABULARY, size=(n, *shape)).astype(np.int32)
    else:
        x = rng.random((n, *shape), dtype=np.float32)
    y = rng.integers(0, CLASSES, size=n).astype(np.int32)
    return model, (x, y)
