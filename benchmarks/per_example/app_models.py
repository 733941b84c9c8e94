"""Real architectures for the ``per-example-applications`` benchmark group (issue 21).

keras.applications models built with ``weights=None`` (random weights, nothing downloaded) at a
small input size, 10 classes, logits out, plus a bidirectional-LSTM and a GRU text model, with
generated data. Each entry of :data:`MODELS`: ``(builder, input shape, dtype)``.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

CLASSES = 10
VOCABULARY = 1000
SEQUENCE = 32


def _application(name: str, size: int) -> Any:
    def build() -> keras.Model:
        return getattr(keras.applications, name)(
            weights=None, input_shape=(size, size, 3), classes=CLASSES, classifier_activation=None
        )

    return build


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


IMAGE = 32  # the smallest input most applications accept; Xception needs 71
MODELS = {
    "ResNet50": (_application("ResNet50", IMAGE), (IMAGE, IMAGE, 3), "float32"),
    "MobileNetV2": (_application("MobileNetV2", IMAGE), (IMAGE, IMAGE, 3), "float32"),
    "EfficientNetB0": (_application("EfficientNetB0", IMAGE), (IMAGE, IMAGE, 3), "float32"),
    "DenseNet121": (_application("DenseNet121", IMAGE), (IMAGE, IMAGE, 3), "float32"),
    "ConvNeXtTiny": (_application("ConvNeXtTiny", IMAGE), (IMAGE, IMAGE, 3), "float32"),
    "Xception": (_application("Xception", 72), (72, 72, 3), "float32"),
    "NASNetMobile": (_application("NASNetMobile", IMAGE), (IMAGE, IMAGE, 3), "float32"),
    "bilstm": (bilstm, (SEQUENCE,), "int32"),
    "gru": (gru, (SEQUENCE,), "int32"),
}
RECURRENT = ("bilstm", "gru")


def build(name: str, n: int) -> tuple[Any, tuple[np.ndarray, np.ndarray]]:
    """The model (seeded random weights, BatchNorm statistics moved off (0, 1)) and ``n``
    generated examples with random labels."""
    builder, shape, dtype = MODELS[name]
    keras.utils.set_random_seed(0)
    model = builder()
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
