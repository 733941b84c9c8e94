"""ConvNeXt's layer families in closed form (issue 21): a Conv2D grouped by its input channels
(ConvNeXt's 7x7 "depthwise" convolution) takes the depthwise family, Keras' ``LayerScale`` the
norm family; both against the per-example loop, with no layer on the per-layer vmap."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from importance.per_example import paths
from importance.per_example.layers import depthwise

LayerScale = pytest.importorskip("keras.src.applications.convnext").LayerScale

BATCH = 5
CLASSES = 3


def _log_likelihood(outputs: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    return tf.gather(tf.nn.log_softmax(outputs), targets, axis=1, batch_dims=1)


def _randomise(model: keras.Model, seed: int = 0) -> keras.Model:
    """Random values for every weight (LayerScale's gamma starts at 1e-6: too small to test)."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        w.assign(rng.normal(size=w.shape).astype(np.float32))
    return model


def _kinds(model):
    return {layer.name: kind for layer, kind in paths.layer_paths(model)}


def _grouped_model(conv: keras.layers.Conv2D, *, channels: int = 4, size: int = 8) -> keras.Model:
    inputs = keras.Input((size, size, channels))
    h = conv(inputs)
    h = LayerScale(1e-6, conv.filters, name="scale")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return _randomise(keras.Model(inputs, keras.layers.Dense(CLASSES, name="head")(h)), seed=conv.filters)


@pytest.mark.parametrize(
    ("options", "moment", "elementwise"),
    [
        ({"kernel_size": 7, "padding": "same"}, "square", False),  # ConvNeXt's block
        ({"kernel_size": 7, "padding": "same"}, "abs", True),
        ({"kernel_size": 3, "padding": "same", "use_bias": False}, "square", True),
        ({"kernel_size": 3, "padding": "same", "use_bias": False}, "abs", False),
        ({"kernel_size": 3, "strides": 2, "padding": "valid", "activation": "tanh"}, "abs", True),
        ({"kernel_size": 2, "strides": 2, "padding": "same", "filters": 8}, "square", False),
        # dilation always takes the elementwise products
        ({"kernel_size": 3, "dilation_rate": 2, "padding": "same", "use_bias": False}, "abs", True),
        # ConvNeXt's late stages at small inputs: most offsets read only the zero padding
        ({"kernel_size": 7, "padding": "same", "size": 2}, "square", True),
        ({"kernel_size": 7, "padding": "same", "size": 1, "filters": 8}, "abs", True),
        ({"kernel_size": 5, "strides": 2, "padding": "same", "size": 3}, "square", True),
    ],
    ids=[
        "7x7-same-folded", "7x7-same-elementwise", "no-bias-elementwise", "no-bias-folded",
        "strided-valid", "multiplier-2", "dilated", "7x7-on-2x2", "7x7-on-1x1", "5x5-strided-on-3x3",
    ],
)
def test_conv2d_grouped_by_channel_and_layer_scale(options, moment, elementwise, monkeypatch, engine_vs_loop):
    """Both depthwise formulations (forced by the cost model's threshold) on grouped Conv2D
    layers with ``groups`` = input channels, bias and none, then Keras' LayerScale."""
    monkeypatch.setattr(depthwise, "ELEMENTWISE", elementwise)
    monkeypatch.setattr(depthwise, "ELEMENTWISE_POSITIONS", 64 if elementwise else 0)
    monkeypatch.setattr(depthwise, "FORWARD", False)  # its own test: test_depthwise_forms.py
    options = {"filters": 4, **options}
    size = options.pop("size", 8)
    model = _grouped_model(keras.layers.Conv2D(groups=4, name="grouped", **options), size=size)
    assert _kinds(model) == {"grouped": "depthwise", "scale": "norm", "head": "dense"}
    x = tf.random.normal([BATCH, size, size, 4], seed=6)
    engine_vs_loop(model, x, moment=moment)


@pytest.mark.parametrize("moment", ["square", "abs"])
def test_convnext_block_takes_closed_forms_only(moment, engine_vs_loop):
    """A ConvNeXt block as Keras builds it (grouped 7x7 conv, LayerNorm, Dense 4C with GELU,
    Dense C, LayerScale, residual), after a strided stem and before a pooled head."""
    inputs = keras.Input((16, 16, 3))
    stem = keras.layers.Conv2D(4, 4, strides=4, name="stem")(inputs)
    h = keras.layers.Conv2D(4, 7, padding="same", groups=4, name="dw")(stem)
    h = keras.layers.LayerNormalization(epsilon=1e-6, name="ln")(h)
    h = keras.layers.Dense(16, name="pw1")(h)
    h = keras.layers.Activation("gelu")(h)
    h = keras.layers.Dense(4, name="pw2")(h)
    h = LayerScale(1e-6, 4, name="scale")(h)
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.Add()([stem, h]))
    model = _randomise(keras.Model(inputs, keras.layers.Dense(CLASSES, name="head")(h)), seed=2)
    assert _kinds(model) == {
        "stem": "conv", "dw": "depthwise", "ln": "norm", "pw1": "dense", "pw2": "dense",
        "scale": "norm", "head": "dense",
    }
    engine_vs_loop(model, tf.random.normal([BATCH, 16, 16, 3], seed=7), moment=moment)


class _ScaleLike(keras.layers.Layer):
    """LayerScale's arithmetic in another class: not recognised, so the per-layer vmap."""

    def build(self, input_shape):
        self.gamma = self.add_weight(shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.gamma


def test_other_group_counts_and_other_scale_classes_take_the_vmap(engine_vs_loop):
    """Groups with several input channels each, and a look-alike of LayerScale, keep the
    per-layer vmap (still correct)."""
    inputs = keras.Input((6, 6, 4))
    h = keras.layers.Conv2D(4, 3, groups=2, padding="same", name="pairs")(inputs)
    h = _ScaleLike(name="look_alike")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = _randomise(keras.Model(inputs, keras.layers.Dense(CLASSES, name="head")(h)), seed=4)
    assert _kinds(model) == {"pairs": "vmap", "look_alike": "vmap", "head": "dense"}
    x = tf.random.normal([BATCH, 6, 6, 4], seed=8)
    # (``auto`` would vectorise this whole model: only vmap and Dense layers)
    engine_vs_loop(model, x, moment="square", vmapped=2, method="factorized")
