"""The depthwise family's cost model (``depthwise.form``) and its forward form.

Each form is checked against the per-example loop on the shapes where the cost model picks it;
the forward form also on every stride, padding and size it may meet, and on a separable layer."""

from __future__ import annotations

import keras
import pytest
import tensorflow as tf

from importance.per_example.layers import depthwise

FORMS = ("forward", "elementwise", "folded")


def _check(engine_vs_loop, layer: keras.layers.Layer, size: int, moment: str = "abs") -> None:
    """The engine against the per-example loop (the ``engine_vs_loop`` fixture: no layer on the
    per-layer vmap) on ``layer`` inside a small model over ``size`` x ``size`` x 3 inputs."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((size, size, 3)),
        layer,
        keras.layers.Activation("tanh"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3),
    ])
    engine_vs_loop(model, tf.random.normal([6, size, size, 3], seed=2), moment=moment)


@pytest.fixture
def taken(monkeypatch) -> list[str]:
    """The forms the engine runs, in order (each form wrapped by a spy)."""
    calls: list[str] = []
    for name in FORMS:
        real = getattr(depthwise, f"{name}_kernel_moment")
        monkeypatch.setattr(depthwise, f"{name}_kernel_moment",
                            lambda *args, real=real, name=name: calls.append(name) or real(*args))
    return calls


@pytest.mark.parametrize(
    ("kernel", "size", "multiplier", "expected"),
    [
        (5, 8, 1, "forward"), (7, 8, 1, "forward"), (3, 8, 1, "forward"), (3, 4, 1, "forward"),
        (5, 16, 1, "folded"), (3, 16, 1, "folded"),
        (5, 8, 2, "elementwise"), (3, 4, 2, "elementwise"), (3, 8, 2, "folded"),
    ],
    ids=lambda v: str(v),
)
def test_each_shape_takes_its_form_and_matches_the_loop(
    kernel, size, multiplier, expected, taken, engine_vs_loop
):
    """Multiplier 1 over at most 64 outputs: forward; with a multiplier, kernels of 25 taps or
    more over at most 64 outputs and any kernel over at most 16: elementwise; else folded."""
    layer = keras.layers.DepthwiseConv2D(kernel, padding="same", depth_multiplier=multiplier)
    _check(engine_vs_loop, layer, size)
    assert taken == [expected]


@pytest.mark.parametrize("moment", ["square", "abs"])
@pytest.mark.parametrize(
    ("kernel", "strides", "padding", "size"),
    [(3, 1, "same", 5), (3, 2, "same", 8), (3, 2, "valid", 9), (5, 2, "same", 7),
     (5, 3, "valid", 11), (7, 1, "same", 2), (5, 1, "same", 1), (2, 2, "same", 5)],
)
def test_forward_form_matches_the_loop(
    kernel, strides, padding, size, moment, taken, engine_vs_loop
):
    layer = keras.layers.DepthwiseConv2D(kernel, strides=strides, padding=padding)
    _check(engine_vs_loop, layer, size, moment)
    assert taken == ["forward"]


def test_separable_layer_takes_the_forward_form_for_its_depthwise_kernel(taken, engine_vs_loop):
    layer = keras.layers.SeparableConv2D(4, 5, strides=2, padding="same")
    _check(engine_vs_loop, layer, 9, "square")
    assert taken == ["forward"]


def test_forward_form_refuses_a_depth_multiplier():
    layer = keras.layers.DepthwiseConv2D(3, depth_multiplier=2)
    layer.build((None, 5, 5, 2))
    a, g = tf.zeros([1, 5, 5, 2]), tf.zeros([1, 3, 3, 4])
    with pytest.raises(ValueError, match="multiplier 2"):
        depthwise.forward_kernel_moment(layer, (3, 3, 2, 2), a, g, "abs")
