"""The factorised per-example engine against the slow per-example loop (relative error <= 1e-5)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from importance.per_example import engine, moments, per_example_moment
from importance.per_example.layers import conv, scoped_vmap
from importance.testing import relative_error

TOL = 1e-5
BATCH = 6
CLASSES = 4


def _log_likelihood(outputs: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    return tf.gather(tf.nn.log_softmax(outputs), targets, axis=1, batch_dims=1)


def _log_likelihood_of_probabilities(outputs: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    return tf.gather(tf.math.log(outputs), targets, axis=1, batch_dims=1)


def _squared_norm(outputs: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(tf.square(outputs), axis=list(range(1, len(outputs.shape))))


def _exact_class(c: int):
    def weighted(outputs: tf.Tensor) -> tf.Tensor:
        logp = tf.nn.log_softmax(outputs)[:, c]
        return tf.stop_gradient(tf.sqrt(tf.exp(logp))) * logp

    return weighted


OBJECTIVES = {
    "likelihood": (_log_likelihood, True),
    "probabilities": (_log_likelihood_of_probabilities, True),
    "norm": (_squared_norm, False),
    "exact": (_exact_class(1), False),
}


def _check(model, x, monkeypatch, *, moment="square", objective="likelihood"):
    """Factorised vs loop for one model; fails if the fallback runs for it."""

    def refuse(*args, **kwargs):
        raise AssertionError("the jacobian fallback ran for a supported model")

    monkeypatch.setattr(engine, "jacobian_moments", refuse)
    fn, labelled = OBJECTIVES[objective]
    kwargs = {"targets": tf.constant(np.arange(BATCH) % CLASSES, tf.int32)} if labelled else {}
    got = engine.per_example_moment(model, x, fn, moment=moment, **kwargs)
    monkeypatch.undo()
    ref = per_example_moment(model, x, fn, moment=moment, method="loop", **kwargs)
    assert [tuple(g.shape) for g in got] == [tuple(w.shape) for w in model.trainable_weights]
    assert all(g.dtype == tf.float32 for g in got)
    err = relative_error(got, ref)
    assert err <= TOL, err
    return got


def _mlp(activation="tanh", softmax=False):
    out = keras.layers.Dense(CLASSES, activation="softmax" if softmax else None)
    return keras.Sequential([keras.Input((7,)), keras.layers.Dense(5, activation=activation), out])


@pytest.mark.parametrize("moment", ["square", "abs"])
@pytest.mark.parametrize("objective", ["likelihood", "norm", "exact"])
def test_dense_mlp_matches_loop(moment, objective, monkeypatch):
    _check(_mlp(), tf.random.normal([BATCH, 7]), monkeypatch, moment=moment, objective=objective)


def test_softmax_outputs_match_loop(monkeypatch):
    _check(_mlp(softmax=True), tf.random.normal([BATCH, 7]), monkeypatch, objective="probabilities")


@pytest.mark.parametrize("moment", ["square", "abs"])
def test_dense_on_sequences_sums_positions_per_example(moment, monkeypatch):
    model = keras.Sequential(
        [keras.Input((3, 4)), keras.layers.Dense(5, activation="relu"), keras.layers.Flatten(),
         keras.layers.Dense(CLASSES)]
    )
    _check(model, tf.random.normal([BATCH, 3, 4]), monkeypatch, moment=moment)


CONV2D = [
    dict(kernel_size=3, padding="same"),
    dict(kernel_size=3, padding="valid", use_bias=False),
    dict(kernel_size=(2, 3), strides=2, padding="same"),
    dict(kernel_size=3, strides=(1, 2), padding="valid"),
    dict(kernel_size=(3, 2), dilation_rate=2, padding="same", use_bias=False),
]


@pytest.mark.parametrize("config", CONV2D, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
@pytest.mark.parametrize("moment", ["square", "abs"])
@pytest.mark.parametrize(
    ("channels", "grouped", "patches"),
    [(1, True, False), (2, True, False), (2, False, False), (2, False, True)],
    ids=["c1", "c2-grouped", "c2-offsets", "c2-patches"],
)
def test_conv2d_matches_loop(config, moment, channels, grouped, patches, monkeypatch):
    """One input channel (all offsets in one matmul), grouped filter gradient, per offset,
    patches (im2col)."""
    if grouped and channels > 1 and not conv.grouped_filter_grad_works():
        pytest.skip("this TensorFlow build has no grouped filter gradient (TF_ENABLE_ONEDNN_OPTS=0?)")
    model = keras.Sequential(
        [keras.Input((7, 8, channels)), keras.layers.Conv2D(3, activation="relu", **config),
         keras.layers.Flatten(), keras.layers.Dense(CLASSES)]
    )
    with pytest.MonkeyPatch.context() as patch:
        if not grouped:
            patch.setattr(conv, "GROUPED", False)
        patch.setattr(conv, "PATCHES", patches)
        # The cost model would take the per-offset loop for these narrow layers: steer it to the
        # way under test (grouped above 0 positions; patches at any width).
        patch.setattr(conv, "PATCH_POSITIONS", 0 if grouped else conv.PATCH_POSITIONS)
        patch.setattr(conv, "PATCH_MIN_CHANNELS", 0 if patches else conv.PATCH_MIN_CHANNELS)
        _check(model, tf.random.normal([BATCH, 7, 8, channels]), monkeypatch, moment=moment)


@pytest.mark.parametrize("moment", ["square", "abs"])
@pytest.mark.parametrize(
    ("size", "kernel", "stride", "padding"),
    [(1, 3, 1, "same"), (3, 3, 1, "valid"), (4, 3, 2, "same"), (2, 1, 2, "valid"), (3, 1, 1, "same")],
)
def test_conv2d_single_position_and_pointwise_match_loop(size, kernel, stride, padding, moment, monkeypatch):
    """One output position per example (the moments factorise as a Dense layer's) and 1x1
    kernels over a few positions (patches without im2col)."""
    model = keras.Sequential(
        [keras.Input((size, size, 3)),
         keras.layers.Conv2D(4, kernel, strides=stride, padding=padding, activation="tanh"),
         keras.layers.Flatten(), keras.layers.Dense(CLASSES)]
    )
    _check(model, tf.random.normal([BATCH, size, size, 3]), monkeypatch, moment=moment)


def test_grouped_path_is_taken_for_several_channels(monkeypatch):
    if not conv.grouped_filter_grad_works():
        pytest.skip("this TensorFlow build has no grouped filter gradient")
    calls = []
    original = conv.grouped_kernel_moment
    monkeypatch.setattr(
        conv, "grouped_kernel_moment", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    monkeypatch.setattr(conv, "PATCHES", False)  # the cost model would take patches here
    model = keras.Sequential([keras.Input((5, 5, 2)), keras.layers.Conv2D(3, 3), keras.layers.Flatten()])
    engine.per_example_moment(model, tf.random.normal([BATCH, 5, 5, 2]), _squared_norm)
    assert calls == [1]


def test_kernel_way_follows_the_measured_shapes():
    """The cost model on the shapes it was measured on (3x3 unless noted; positions, channels in
    and out): the fused loop's outputs and 1x1 kernels take patches, narrow layers over 5x5-8x8
    outputs one offset at a time, wide ones patches, larger outputs the grouped gradient."""
    way = conv.kernel_way
    assert way([3, 3], 16, 128, 128) == "patches"  # 4x4: the fused loop
    assert way([1, 1], 256, 64, 256) == "patches"
    assert way([3, 3], 64, 128, 128) == way([3, 3], 25, 128, 128) == "offsets"
    assert way([3, 3], 64, 128, 32) == way([3, 3], 36, 64, 192) == "offsets"
    assert way([3, 3], 49, 512, 512) == way([3, 3], 36, 256, 256) == "patches"
    assert way([3, 3], 144, 128, 128) == way([3, 3], 196, 16, 32) == "grouped"


def test_one_channel_conv_counts_only_what_it_forms_per_example(monkeypatch):
    """A one-input-channel conv forms the stacked windows (positions x kernel offsets) and its
    per-example kernels; the output gradients are only reshaped (a view). So the per-example
    group's 28x28 conv (16 filters) takes a batch of 128 in one chunk, not three of 53."""
    budgets, sizes = [], []
    real = conv.chunked_sum

    def spy(block, tensors, per_example, shape, **kwargs):
        budgets.append(per_example)
        return real(lambda chunk: sizes.append(int(chunk[0].shape[0])) or block(chunk),
                    tensors, per_example, shape, **kwargs)

    monkeypatch.setattr(conv, "chunked_sum", spy)
    layer = keras.layers.Conv2D(16, 3, padding="same")
    layer(keras.Input((28, 28, 1)))
    conv.conv_kernel_moment(layer, tf.zeros([128, 28, 28, 1]), tf.zeros([128, 28, 28, 16]), "abs")
    assert budgets == [(28 * 28 + 16) * 9]
    assert sizes == [128]


@pytest.mark.parametrize(
    "shape, filters, kernel",
    [((28, 28, 1), 4, 3), ((8, 8, 6), 5, 3), ((16, 16, 4), 6, 3), ((6, 6, 3), 8, 1),
     ((4, 6, 6, 2), 3, 2)],
    ids=["one-channel", "offsets", "grouped", "patches", "conv3d"],
)
def test_conv_kernel_moments_take_balanced_chunks(shape, filters, kernel, monkeypatch):
    """Every way of a convolution's kernel moments asks ``chunked_sum`` for balanced chunks:
    with a budget of 4 examples per chunk, 9 examples run as 3, 3, 3 rather than 4, 4, 1."""
    if not conv.grouped_filter_grad_works():
        pytest.skip("this TensorFlow build has no grouped filter gradient")
    asked, sizes = [], []
    real = conv.chunked_sum

    def spy(block, tensors, per_example, shape_, **kwargs):
        asked.append(kwargs.get("balanced"))
        monkeypatch.setattr(moments, "CHUNK_ELEMENTS", 4 * per_example)  # 4 examples per chunk
        return real(lambda chunk: sizes.append(int(chunk[0].shape[0])) or block(chunk),
                    tensors, per_example, shape_, **kwargs)

    monkeypatch.setattr(conv, "chunked_sum", spy)
    conv_class = keras.layers.Conv3D if len(shape) == 4 else keras.layers.Conv2D
    layer = conv_class(filters, kernel, padding="same")
    layer(keras.Input(shape))
    a = tf.random.normal([9, *shape])
    g = tf.random.normal([9, *shape[:-1], filters])
    (conv.conv3d_kernel_moment if len(shape) == 4 else conv.conv_kernel_moment)(layer, a, g, "abs")
    assert asked == [True]
    assert sizes == [3, 3, 3]


@pytest.mark.parametrize("moment", ["square", "abs"])
def test_narrow_layer_over_few_positions_takes_the_offsets_and_matches_loop(moment, monkeypatch):
    if not conv.grouped_filter_grad_works():
        pytest.skip("this TensorFlow build has no grouped filter gradient")
    ways = []
    for name in ("grouped_kernel_moment", "patch_kernel_moment"):
        original = getattr(conv, name)
        monkeypatch.setattr(
            conv, name, lambda *a, _o=original, _n=name, **k: ways.append(_n) or _o(*a, **k)
        )
    model = keras.Sequential(
        [keras.Input((8, 8, 6)), keras.layers.Conv2D(5, 3, padding="same", activation="relu"),
         keras.layers.Flatten(), keras.layers.Dense(CLASSES)]
    )
    _check(model, tf.random.normal([BATCH, 8, 8, 6]), monkeypatch, moment=moment)
    assert ways == []  # neither patches nor the grouped gradient: one offset at a time


CONV1D = [
    dict(kernel_size=3, padding="same"),
    dict(kernel_size=2, padding="valid", strides=2, use_bias=False),
    dict(kernel_size=3, padding="causal"),
    dict(kernel_size=3, padding="causal", strides=2),
    dict(kernel_size=2, padding="causal", dilation_rate=3),
]


@pytest.mark.parametrize("config", CONV1D, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
@pytest.mark.parametrize("moment", ["square", "abs"])
def test_conv1d_matches_loop(config, moment, monkeypatch):
    model = keras.Sequential(
        [keras.Input((9, 3)), keras.layers.Conv1D(4, activation="tanh", **config),
         keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(CLASSES)]
    )
    _check(model, tf.random.normal([BATCH, 9, 3]), monkeypatch, moment=moment)


@settings(max_examples=15, deadline=None)
@given(
    kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    stride=st.integers(1, 2),
    dilate=st.booleans(),
    padding=st.sampled_from(["same", "valid"]),
    size=st.tuples(st.integers(5, 8), st.integers(5, 8)),
)
def test_conv2d_configurations_match_loop(kernel, stride, dilate, padding, size):
    dilation = 2 if dilate and stride == 1 else 1
    model = keras.Sequential(
        [keras.Input((*size, 2)),
         keras.layers.Conv2D(2, kernel, strides=stride, dilation_rate=dilation, padding=padding),
         keras.layers.Flatten(), keras.layers.Dense(CLASSES)]
    )
    x = tf.random.normal([3, *size, 2], seed=1)
    got = engine.per_example_moment(model, x, _squared_norm, moment="square")
    ref = per_example_moment(model, x, _squared_norm, moment="square", method="loop")
    assert relative_error(got, ref) <= TOL


def test_functional_with_branches_and_nested_sequential(monkeypatch):
    inputs = keras.Input((6, 6, 1))
    h = keras.layers.Conv2D(3, 3, padding="same", activation="relu")(inputs)
    inner = keras.Sequential([keras.Input((6, 6, 3)), keras.layers.Conv2D(3, 1)])
    h = keras.layers.Add()([h, inner(h)])
    h = keras.layers.Flatten()(h)
    outputs = keras.layers.Dense(CLASSES)(keras.layers.Dropout(0.5)(h))
    model = keras.Model(inputs, outputs)
    _check(model, tf.random.normal([BATCH, 6, 6, 1]), monkeypatch)


class _Scale(keras.layers.Layer):
    """A custom layer with a trainable weight: no closed form, so it is vectorised on its own."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.scale * 1.5


@pytest.mark.parametrize("moment", ["square", "abs"])
def test_unsupported_layers_fall_back(moment, monkeypatch):
    model = keras.Sequential(
        [keras.Input((7,)), keras.layers.Dense(6), keras.layers.BatchNormalization(),
         keras.layers.Activation("relu"), _Scale(), keras.layers.Dense(CLASSES)]
    )
    model.layers[1].moving_mean.assign(tf.random.normal([6]))
    calls = []
    original = scoped_vmap.moments

    def counting(variables, calls_, grads, moment_):
        calls.append([v.path for v in variables])
        return original(variables, calls_, grads, moment_)

    def refuse(*args, **kwargs):
        raise AssertionError("the whole-batch jacobian ran")

    monkeypatch.setattr(scoped_vmap, "moments", counting)
    monkeypatch.setattr(engine, "jacobian_moments", refuse)
    y = tf.constant(np.arange(BATCH) % CLASSES, tf.int32)
    x = tf.random.normal([BATCH, 7])
    got = engine.per_example_moment(model, x, _log_likelihood, moment=moment, targets=y)
    monkeypatch.undo()
    ref = per_example_moment(model, x, _log_likelihood, moment=moment, method="loop", targets=y)
    assert relative_error(got, ref) <= TOL
    # BatchNorm has a closed form; only the custom layer's weight is vectorised, on its own.
    assert len(calls) == 1 and len(calls[0]) == 1 and "scale" in calls[0][0]


def test_shared_layer_and_subclassed_model_fall_back():
    shared = keras.layers.Dense(7, activation="tanh")
    inputs = keras.Input((7,))
    model = keras.Model(inputs, keras.layers.Dense(CLASSES)(shared(shared(inputs))))

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.a, self.b = keras.layers.Dense(5), keras.layers.Dense(CLASSES)

        def call(self, x):
            return self.b(tf.nn.relu(self.a(x)))

    sub = Sub()
    sub(tf.zeros([1, 7]))
    x = tf.random.normal([BATCH, 7])
    for m in (model, sub):
        got = engine.per_example_moment(m, x, _squared_norm, moment="abs")
        ref = per_example_moment(m, x, _squared_norm, moment="abs", method="loop")
        assert relative_error(got, ref) <= TOL


@pytest.mark.parametrize("jit", [False, True])
def test_inside_tf_function_with_unknown_batch_and_chunks(jit, monkeypatch):
    monkeypatch.setattr(moments, "CHUNK_ELEMENTS", 64)  # forces several chunks per layer
    model = keras.Sequential(
        [keras.Input((3, 5, 2)), keras.layers.Conv2D(3, 2, padding="same", activation="relu"),
         keras.layers.Dense(4), keras.layers.Flatten(), keras.layers.Dense(CLASSES)]
    )
    fn = tf.function(
        lambda x, y: engine.per_example_moment(model, x, _log_likelihood, targets=y),
        input_signature=[tf.TensorSpec([None, 3, 5, 2]), tf.TensorSpec([None], tf.int32)],
        jit_compile=jit,
        autograph=False,
    )
    x = tf.random.normal([BATCH, 3, 5, 2])
    y = tf.constant(np.arange(BATCH) % CLASSES, tf.int32)
    ref = per_example_moment(model, x, _log_likelihood, method="loop", targets=y)
    assert relative_error(fn(x, y), ref) <= TOL


@pytest.mark.parametrize("method", ["factorized", "loop", "vmap"])
def test_traced_as_written_inside_an_autograph_tf_function(method):
    """Called inside a user's ``tf.function`` (autograph on, the default), the entry points run
    unconverted, as ``compute_importance`` traces them: autograph does not transpile the engine
    and the Keras code below it (about 6 s on the first trace of a small ResNet), and the sums are
    the eager call's."""
    model = _mlp()
    x = tf.random.normal([BATCH, 7])
    y = tf.constant(np.arange(BATCH) % CLASSES, tf.int32)
    statuses = []

    def objective(outputs, targets):
        statuses.append(tf.__internal__.autograph.control_status_ctx().status)
        return _log_likelihood(outputs, targets)

    eager = per_example_moment(model, x, objective, method=method, targets=y)
    statuses.clear()
    traced = tf.function(
        lambda x, y: per_example_moment(model, x, objective, method=method, targets=y)
    )
    got = traced(x, y)
    assert statuses and all(s.name == "DISABLED" for s in statuses), statuses
    for a, b in zip(got, eager, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)


def test_auto_dispatches_to_factorized():
    """``auto`` is the factorised engine: bitwise the same sums, within tolerance of the loop."""
    model = _mlp()
    x = tf.random.normal([BATCH, 7])
    got = per_example_moment(model, x, _squared_norm, moment="abs", method="auto")
    factorized = per_example_moment(model, x, _squared_norm, moment="abs", method="factorized")
    ref = per_example_moment(model, x, _squared_norm, moment="abs", method="loop")
    for a, b in zip(got, factorized, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert relative_error(got, ref) <= TOL


def test_bad_moment_is_named():
    with pytest.raises(ValueError, match="Received: 'cube'"):
        engine.per_example_moment(_mlp(), tf.zeros([2, 7]), _squared_norm, moment="cube")


@pytest.mark.parametrize("moment", ["square", "abs"])
def test_sum_over_objectives_shares_the_forward_and_matches_the_loop(moment):
    """per_example_moment_sum (the exact Fisher's classes) against summed loops, with a
    BatchNorm whose weights take the fallback."""
    model = keras.Sequential(
        [keras.Input((6, 6, 2)), keras.layers.Conv2D(3, 3, activation="relu"),
         keras.layers.BatchNormalization(), keras.layers.Flatten(), keras.layers.Dense(CLASSES)]
    )
    x = tf.random.normal([BATCH, 6, 6, 2], seed=3)
    objectives = [_exact_class(c) for c in range(CLASSES)]
    got = engine.per_example_moment_sum(model, x, objectives, moment=moment)
    loops = [per_example_moment(model, x, o, moment=moment, method="loop") for o in objectives]
    ref = [tf.add_n(list(parts)) for parts in zip(*loops, strict=True)]
    assert relative_error(got, ref) <= TOL
