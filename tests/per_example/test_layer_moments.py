"""Per-example moments of the layers beyond Dense/Conv (norms, Embedding, EinsumDense and
attention, shared layers, recurrent and other convolutions) against the per-example loop."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from importance.per_example import engine, moments, paths, per_example_moment
from importance.per_example.layers import embedding, norm
from importance.testing import relative_error

TOL = 1e-5
BATCH = 5
CLASSES = 3


def _log_likelihood(outputs: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    return tf.gather(tf.nn.log_softmax(outputs), targets, axis=1, batch_dims=1)


def _randomise(model, seed=0):
    """Random (not initial) values for every weight, moving statistics included."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        value = rng.normal(size=w.shape).astype(np.float32)
        w.assign(np.abs(value) + 0.5 if "variance" in w.path else value)
    return model


def _head(h):
    return keras.layers.Dense(CLASSES)(keras.layers.Flatten()(h))


@pytest.mark.parametrize("moment", ["square", "abs"])
def test_norm_layers_closed_form(moment, engine_vs_loop):
    inputs = keras.Input((4, 4, 3))
    h = keras.layers.Conv2D(4, 2, padding="same")(inputs)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.BatchNormalization(axis=1, center=False)(h)
    h = keras.layers.LayerNormalization()(h)
    h = keras.layers.LayerNormalization(axis=[1, 2], scale=False)(h)
    h = keras.layers.GroupNormalization(groups=2)(keras.layers.Activation("tanh")(h))
    model = _randomise(keras.Model(inputs, _head(h)))
    engine_vs_loop(model, tf.random.normal([BATCH, 4, 4, 3], seed=1), moment=moment)


@pytest.mark.parametrize("axis", [-1, 1])
@pytest.mark.parametrize("offset", [0.0, 1000.0])
def test_batch_norm_gamma_without_forming_x_hat(axis, offset, monkeypatch):
    """A float32 BatchNormalization's per-example gamma gradients, ``rsqrt(var + eps) *
    sum_positions (x - mean) * g`` (``norm.batch_norm_gamma``), against float64 sums over
    ``x_hat`` written from the inference transform: also with inputs and moving mean far from
    zero, and channels first. The layer's own call (the other path) gives the same sums."""
    rng = np.random.default_rng(int(offset) + axis % 5)
    layer = keras.layers.BatchNormalization(axis=axis, epsilon=1e-3)
    layer.build((None, 6, 4, 3))
    channels = 6 if axis == 1 else 3
    mean = rng.normal(size=channels) + offset
    variance = rng.uniform(0.5, 2.0, size=channels)
    layer.moving_mean.assign(mean.astype(np.float32))
    layer.moving_variance.assign(variance.astype(np.float32))
    layer.gamma.assign(rng.normal(size=channels).astype(np.float32))
    x = (rng.normal(size=(BATCH, 6, 4, 3)) + offset).astype(np.float32)
    g = rng.normal(size=(BATCH, 6, 4, 3)).astype(np.float32)
    shape = [1, 6, 1, 1] if axis == 1 else [1, 1, 1, 3]
    x_hat = (x.astype(np.float64) - np.float64(layer.moving_mean.numpy()).reshape(shape)) / np.sqrt(
        np.float64(layer.moving_variance.numpy()).reshape(shape) + 1e-3)
    summed = (2, 3) if axis == 1 else (1, 2)
    truth = [np.sum(x_hat * g, axis=summed), np.sum(g.astype(np.float64), axis=summed)]
    assert norm.direct_batch_norm(layer, tf.constant(x))
    direct = norm.per_example_grads(layer, tf.constant(x), tf.constant(g))
    assert relative_error(direct, truth) <= 1e-6
    monkeypatch.setattr(norm, "DIRECT_BATCH_NORM", False)
    called = norm.per_example_grads(layer, tf.constant(x), tf.constant(g))
    assert relative_error(called, truth) <= (1e-6 if offset == 0 else 1e-3)


def test_batch_norm_in_mixed_precision_takes_the_layers_own_call():
    layer = keras.layers.BatchNormalization(dtype="mixed_float16")
    layer.build((None, 4, 3))
    assert not norm.direct_batch_norm(layer, tf.zeros([2, 4, 3], tf.float16))
    assert not norm.direct_batch_norm(keras.layers.LayerNormalization(), tf.zeros([2, 4, 3]))


# Keras >= 3.12 deprecates rms_scaling with a UserWarning (when built and when called, not always
# once per process); the option still exists, so the engine must still handle it.
@pytest.mark.filterwarnings("ignore:(?s).*rms_scaling:UserWarning")
@settings(deadline=None, max_examples=4, derandomize=True)
@given(
    length=st.integers(1, 4),
    width=st.integers(1, 4),
    kind=st.sampled_from(["batch", "layer", "rms"]),
)
def test_norm_layers_random_shapes(length, width, kind):
    norm = {
        "batch": lambda: keras.layers.BatchNormalization(),
        "layer": lambda: keras.layers.LayerNormalization(),
        "rms": lambda: keras.layers.LayerNormalization(rms_scaling=True),
    }[kind]()
    model = _randomise(keras.Sequential([keras.Input((length, width)), norm, keras.layers.Flatten(),
                                         keras.layers.Dense(CLASSES)]), seed=length)
    x = tf.random.normal([BATCH, length, width], seed=2)
    y = tf.constant(np.arange(BATCH) % CLASSES, tf.int32)
    got = engine.per_example_moment(model, x, _log_likelihood, targets=y)
    ref = per_example_moment(model, x, _log_likelihood, method="loop", targets=y)
    assert relative_error(got, ref) <= TOL


@pytest.mark.parametrize("moment", ["square", "abs"])
def test_embedding_with_repeated_and_shared_tokens(moment, engine_vs_loop):
    ids = keras.Input((6,), dtype="int32")
    table = keras.layers.Embedding(7, 4)
    h = keras.layers.Concatenate()([table(ids), table(keras.layers.Lambda(lambda t: t[:, ::-1])(ids))])
    h = keras.layers.GlobalAveragePooling1D()(h)
    model = _randomise(keras.Model(ids, keras.layers.Dense(CLASSES)(h)))
    x = tf.constant(np.random.default_rng(0).integers(0, 4, size=(BATCH, 6)), tf.int32)  # repeats
    engine_vs_loop(model, x, moment=moment)


@pytest.mark.parametrize("repeats", ["none", "some", "every position"])
@pytest.mark.parametrize("way", ["position", "pair"])
@pytest.mark.parametrize("moment", ["square", "abs"])
def test_embedding_moments_per_position_and_per_pair(moment, way, repeats, engine_vs_loop,
                                                     monkeypatch):
    """Both ways of the Embedding moments (forced with ``ALONE_SHARE``) on batches whose
    (example, token) pairs never repeat, sometimes repeat (a padding token at the end of some
    examples), or repeat at every position (one token per example)."""
    monkeypatch.setattr(embedding, "ALONE_SHARE", 0.0 if way == "position" else 1.01)
    model = _randomise(keras.Sequential([
        keras.Input((5,), dtype="int32"), keras.layers.Embedding(12, 3), keras.layers.Flatten(),
        keras.layers.Dense(CLASSES),
    ]))
    rng = np.random.default_rng(1)
    ids = np.stack([rng.permutation(np.arange(1, 12))[:5] for _ in range(BATCH)])
    if repeats == "some":
        ids[::3, 3:] = 0
    elif repeats == "every position":
        ids = np.repeat(ids[:, :1], 5, axis=1)
    engine_vs_loop(model, tf.constant(ids, tf.int32), moment=moment)


@settings(deadline=None, max_examples=4, derandomize=True)
@given(vocabulary=st.integers(2, 9), length=st.integers(1, 5), dim=st.integers(1, 3))
def test_embedding_random_shapes(vocabulary, length, dim):
    model = _randomise(keras.Sequential([keras.Input((length,), dtype="int32"), keras.layers.Embedding(vocabulary, dim),
                                         keras.layers.Flatten(), keras.layers.Dense(CLASSES)]))
    x = tf.constant(np.random.default_rng(length).integers(0, vocabulary, size=(BATCH, length)), tf.int32)
    got = engine.per_example_moment(model, x, lambda o: tf.reduce_sum(o**2, -1), moment="abs")
    ref = per_example_moment(model, x, lambda o: tf.reduce_sum(o**2, -1), moment="abs", method="loop")
    assert relative_error(got, ref) <= TOL


def test_shared_dense_sums_calls_before_the_moment(engine_vs_loop):
    shared = keras.layers.Dense(5, activation="tanh")
    inputs = keras.Input((5,))
    model = keras.Model(inputs, keras.layers.Dense(CLASSES)(shared(shared(inputs))))
    engine_vs_loop(model, tf.random.normal([BATCH, 5], seed=3))


def test_shared_separable_conv_is_vectorised_over_its_calls(engine_vs_loop):
    shared = keras.layers.SeparableConv2D(2, 2, padding="same", activation="tanh")
    inputs = keras.Input((4, 4, 2))
    model = _randomise(keras.Model(inputs, _head(shared(shared(inputs)))))
    engine_vs_loop(model, tf.random.normal([BATCH, 4, 4, 2], seed=3), vmapped=1)


@pytest.mark.parametrize("moment", ["square", "abs"])
def test_attention_and_transformer_encoder(moment, engine_vs_loop):
    tokens = keras.Input((6,), dtype="int32")
    h = keras.layers.Embedding(11, 8)(tokens)
    attended = keras.layers.MultiHeadAttention(2, 4)(h, h)
    h = keras.layers.LayerNormalization()(keras.layers.Add()([h, attended]))
    h = keras.layers.LayerNormalization()(keras.layers.Add()([h, keras.layers.Dense(8)(keras.layers.Dense(12, activation="relu")(h))]))
    model = keras.Model(tokens, keras.layers.Dense(CLASSES)(keras.layers.GlobalAveragePooling1D()(h)))
    x = tf.constant(np.random.default_rng(1).integers(0, 11, size=(BATCH, 6)), tf.int32)
    engine_vs_loop(model, x, moment=moment)


def test_vmap_refuses_attention_with_a_clear_error():
    inputs = keras.Input((4, 8))
    model = keras.Model(inputs, keras.layers.MultiHeadAttention(2, 4)(inputs, inputs))
    with pytest.raises(ValueError, match="method='vmap'.*MultiHeadAttention"):
        per_example_moment(model, tf.zeros([2, 4, 8]), lambda o: tf.reduce_sum(o, [1, 2]), method="vmap")


@pytest.mark.parametrize(
    "layers",
    [
        [keras.layers.Conv2D(3, 2, data_format="channels_first", activation="relu"),
         keras.layers.Conv2D(2, 2, padding="same", data_format="channels_first")],
        [keras.layers.Conv1D(3, 2, padding="causal", data_format="channels_first")],
    ],
    ids=["conv2d", "conv1d-causal"],
)
def test_channels_first_conv_closed_form(layers, engine_vs_loop):
    shape = (2, 5, 4) if isinstance(layers[0], keras.layers.Conv2D) else (2, 6)
    model = keras.Sequential([keras.Input(shape), *layers, keras.layers.Flatten(), keras.layers.Dense(CLASSES)])
    engine_vs_loop(model, tf.random.normal([BATCH, *shape], seed=4))


class _MinimalCell(keras.layers.Layer):
    """keras.io's minimal RNN cell: a custom cell, which has no closed form."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = self.state_size = units

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units))
        self.recurrent_kernel = self.add_weight(shape=(self.units, self.units))

    def call(self, inputs, states):
        h = keras.ops.tanh(keras.ops.matmul(inputs, self.kernel) + keras.ops.matmul(states[0], self.recurrent_kernel))
        return h, [h]


@pytest.mark.parametrize(
    ("shape", "layer"),
    [
        ((5, 5, 4), keras.layers.Conv2D(4, 2, groups=2)),
        ((4, 4, 2), keras.layers.Conv2DTranspose(2, 2, strides=2)),
        ((2, 3), keras.layers.RNN(_MinimalCell(3), return_sequences=True)),  # pfor traces slowly
    ],
    ids=["groups", "transpose", "custom-cell-rnn"],
)
def test_layers_without_closed_form_are_vectorised_on_their_own(shape, layer, engine_vs_loop):
    model = keras.Sequential([keras.Input(shape), layer, keras.layers.Flatten(), keras.layers.Dense(CLASSES)])
    # auto vectorises the whole LSTM model instead (see test_auto_vectorises_the_whole_model_...)
    engine_vs_loop(model, tf.random.normal([BATCH, *shape], seed=5), vmapped=1, method="factorized")


@settings(deadline=None, max_examples=5, derandomize=True)
@given(
    size=st.integers(3, 6),
    kernel=st.integers(1, 3),
    stride=st.integers(1, 2),
    multiplier=st.integers(1, 2),
    padding=st.sampled_from(["valid", "same"]),
    separable=st.booleans(),
)
def test_depthwise_and_separable_random_shapes(size, kernel, stride, multiplier, padding, separable):
    options = {"strides": stride, "padding": padding, "depth_multiplier": multiplier, "activation": "tanh"}
    layer = keras.layers.SeparableConv2D(3, kernel, **options) if separable else keras.layers.DepthwiseConv2D(kernel, **options)
    model = _randomise(keras.Sequential([keras.Input((size, size, 2)), layer, keras.layers.Flatten(),
                                         keras.layers.Dense(CLASSES)]), seed=size)
    x = tf.random.normal([BATCH, size, size, 2], seed=6)
    y = tf.constant(np.arange(BATCH) % CLASSES, tf.int32)
    for moment in ("square", "abs"):
        got = engine.per_example_moment(model, x, _log_likelihood, moment=moment, targets=y)
        ref = per_example_moment(model, x, _log_likelihood, moment=moment, method="loop", targets=y)
        assert relative_error(got, ref) <= TOL



@pytest.mark.parametrize("elementwise", [True, False], ids=["elementwise", "folded"])
def test_depthwise_formulations_match_loop(elementwise, monkeypatch):
    """Both depthwise formulations (elementwise products summed over space; the batch folded
    into the channels of one filter gradient) on a dilated, strided, multiplied layer."""
    from importance.per_example.layers import depthwise

    monkeypatch.setattr(depthwise, "ELEMENTWISE", elementwise)
    layers_ = [
        keras.layers.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2),
        keras.layers.DepthwiseConv2D(2, dilation_rate=2, padding="same", activation="tanh"),
    ]
    model = _randomise(keras.Sequential([keras.Input((7, 7, 2)), *layers_, keras.layers.Flatten(),
                                         keras.layers.Dense(CLASSES)]), seed=3)
    x = tf.random.normal([BATCH, 7, 7, 2], seed=6)
    y = tf.constant(np.arange(BATCH) % CLASSES, tf.int32)
    got = engine.per_example_moment(model, x, _log_likelihood, moment="square", targets=y)
    ref = per_example_moment(model, x, _log_likelihood, moment="square", method="loop", targets=y)
    assert relative_error(got, ref) <= TOL

@settings(deadline=None, max_examples=4, derandomize=True)
@given(
    size=st.integers(3, 5),
    kernel=st.integers(1, 3),
    stride=st.integers(1, 2),
    channels=st.integers(1, 2),
    padding=st.sampled_from(["valid", "same"]),
)
def test_conv3d_random_shapes(size, kernel, stride, channels, padding):
    layer = keras.layers.Conv3D(2, kernel, strides=stride, padding=padding, activation="tanh")
    model = _randomise(keras.Sequential([keras.Input((size, 4, 3, channels)), layer, keras.layers.Flatten(),
                                         keras.layers.Dense(CLASSES)]), seed=size)
    x = tf.random.normal([BATCH, size, 4, 3, channels], seed=7)
    y = tf.constant(np.arange(BATCH) % CLASSES, tf.int32)
    got = engine.per_example_moment(model, x, _log_likelihood, targets=y)
    ref = per_example_moment(model, x, _log_likelihood, method="loop", targets=y)
    assert relative_error(got, ref) <= TOL


def test_task_resnet_bn_takes_closed_forms_only(engine_vs_loop):
    """The mnist5k.resnet_bn architecture (tiny): convs and BatchNorms, no vmap, no jacobian."""
    from tasks import models

    model = _randomise(models.resnet_bn((6, 6, 1), CLASSES, filters=2, blocks=1, seed=0))
    engine_vs_loop(model, tf.random.normal([BATCH, 6, 6, 1], seed=8))


def test_chunks_stay_under_the_budget_and_the_held_fraction(monkeypatch):
    """chunked_sum's rule on a planted batch: chunk sizes and the sum."""
    monkeypatch.setattr(moments, "MIN_CHUNK_ELEMENTS", 1)
    x = tf.reshape(tf.range(40, dtype=tf.float32), [10, 4])
    # 8 temporary elements per example; half the held elements of 10 examples: 5 * held
    for budget, held, expected in [(1 << 22, None, [10]), (24, None, [3, 3, 3, 1]), (1 << 22, 8, [5, 5]),
                                   (1 << 22, 4, [2] * 5), (24, 8, [3, 3, 3, 1])]:
        monkeypatch.setattr(moments, "CHUNK_ELEMENTS", budget)
        sizes = []

        def block(chunk, sizes=sizes):
            sizes.append(int(chunk[0].shape[0]))
            return tf.reduce_sum(chunk[0], axis=0)

        total = moments.chunked_sum(block, [x], 8, [4], held=held)  # eager: one call per chunk
        assert sizes == expected
        np.testing.assert_array_equal(total.numpy(), tf.reduce_sum(x, axis=0).numpy())


@pytest.mark.parametrize("run_time_sizes", [False, True])
def test_balanced_chunks_keep_their_number_and_even_out(run_time_sizes, monkeypatch):
    """``balanced``: as many chunks as the rule gives, of the smallest size that needs no more
    (7, 3 -> 5, 5; 8, 2 -> 5, 5; 3, 3, 3, 1 stays), with the shapes known or only at run time."""
    monkeypatch.setattr(moments, "MIN_CHUNK_ELEMENTS", 1)
    x = tf.reshape(tf.range(40, dtype=tf.float32), [10, 4])
    for budget, expected in [(56, [5, 5]), (64, [5, 5]), (24, [3, 3, 3, 1]), (1 << 22, [10])]:
        monkeypatch.setattr(moments, "CHUNK_ELEMENTS", budget)
        sizes = []

        def block(chunk, sizes=sizes):
            sizes.append(int(chunk[0].shape[0]))
            return tf.reduce_sum(chunk[0], axis=0)

        per_example = tf.constant(8) if run_time_sizes else 8
        total = moments.chunked_sum(block, [x], per_example, [4], balanced=True)
        assert sizes == expected
        np.testing.assert_array_equal(total.numpy(), tf.reduce_sum(x, axis=0).numpy())


@pytest.mark.parametrize("positions", [1, 2, 3, 4, 5, 16, 17])
@pytest.mark.parametrize("moment", ["square", "abs"])
def test_outer_sum_moment_matches_per_example_products(positions, moment, monkeypatch):
    """sum_i f(A_i^T G_i) against float64 per-example products, per entry, each way: the fused
    loop (at most FUSED_POSITIONS), from pairs of positions (square, at most PAIR_POSITIONS) and
    formed per example (the rest); eagerly and in a graph whose batch size is unknown."""
    rng = np.random.default_rng(positions)
    a = rng.normal(size=(6, positions, 7)).astype(np.float32)
    g = rng.normal(size=(6, positions, 4)).astype(np.float32)
    per_example = np.einsum("ipd,ipf->idf", a.astype(np.float64), g.astype(np.float64))
    expected = (per_example**2 if moment == "square" else np.abs(per_example)).sum(axis=0)
    signature = [tf.TensorSpec([None, positions, 7]), tf.TensorSpec([None, positions, 4])]
    for fused, pairs in [(True, 4), (False, 4), (False, 0)]:
        monkeypatch.setattr(moments, "FUSED", fused)
        monkeypatch.setattr(moments, "PAIR_POSITIONS", pairs)
        graph = tf.function(lambda a, g: moments.chunked_outer_sum(a, g, moment, held=True),
                            input_signature=signature)
        for way in (lambda a, g: moments.outer_sum_moment(a, g, moment), graph):
            got = way(tf.constant(a), tf.constant(g)).numpy()
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=0)


@pytest.mark.parametrize(
    "positions, fused", [(1, True), (16, True), (17, False), (None, False), (0, False)]
)
def test_outer_sum_moment_takes_the_fused_loop_up_to_fused_positions(positions, fused, monkeypatch):
    """The fused loop runs exactly when the positions are known, 1 to FUSED_POSITIONS, and
    it forms no per-example elements (so chunked_sum takes the batch whole)."""
    calls = []
    real = moments.fused_outer_sum_moment
    monkeypatch.setattr(moments, "FUSED", True)
    monkeypatch.setattr(moments, "fused_outer_sum_moment",
                        lambda a, g, moment: calls.append(moment) or real(a, g, moment))
    spec = [tf.TensorSpec([None, positions, 3]), tf.TensorSpec([None, positions, 2])]
    tf.function(lambda a, g: moments.outer_sum_moment(a, g, "abs"), input_signature=spec
                ).get_concrete_function()
    assert calls == (["abs"] if fused else [])
    assert (moments.outer_sum_elements(positions, 3, 2, "abs") == 0) == fused


@pytest.mark.parametrize(
    "depth, filters, row_elements, transposed, block",
    [
        (3, 5, 1000, False, None),  # one loop as laid out
        (5, 3, 0, False, 1),  # F < D: as laid out, one column per loop
        (3, 5, 19, True, None),  # F > D past the threshold: transposed, 4 x 3 = 12 <= 19
        (3, 5, 8, True, 2),  # transposed, D in two blocks (4 x 3 = 12 > 8): 2 and 1
        (2, 7, 0, False, 1),  # F > D past the threshold, but a sum of 14 < 15: as laid out
        (3, 5, 20, False, None),  # 4 x 5 = 20 is not past 20
        (4, 4, 8, False, 2),  # F = D: as laid out, blocks of 2
        (6, 5, 8, False, 2),  # 4 x 5 = 20 over blocks of <= 8: three equal blocks of 2, 2, 1
    ],
)
def test_fused_loop_layout_gives_the_per_example_moments(
    depth, filters, row_elements, transposed, block, monkeypatch
):
    """The fused loop as laid out, transposed (sum_p g_p a_p^T, the sum transposed back) and in
    blocks of columns: the same moments as float64 per-example products, every layout."""
    monkeypatch.setattr(moments, "FUSED_ROW_ELEMENTS", row_elements)
    monkeypatch.setattr(moments, "FUSED_TRANSPOSED_SUM_ELEMENTS", 15)
    assert moments.fused_transposes(4, depth, filters) is transposed
    assert moments.fused_block_columns(4, depth if transposed else filters) == block
    rng = np.random.default_rng(depth * 10 + filters)
    a = rng.normal(size=(6, 4, depth)).astype(np.float32)
    g = rng.normal(size=(6, 4, filters)).astype(np.float32)
    per_example = np.einsum("ipd,ipf->idf", a.astype(np.float64), g.astype(np.float64))
    for moment, f in [("square", np.square), ("abs", np.abs)]:
        got = moments.fused_outer_sum_moment(tf.constant(a), tf.constant(g), moment).numpy()
        np.testing.assert_allclose(got, f(per_example).sum(axis=0), rtol=1e-5, atol=0)


def test_fused_loop_layout_follows_the_measured_shapes():
    """The default thresholds transpose the wide expansions measured slow as laid out
    (16 positions, 256 x 1024; 4 positions, 512 x 2048), block Xception's exit flow (9
    positions, 1536 x 2048: transposed, D in blocks of 384) and keep the shapes measured no
    faster transposed (16 positions, 64 x 256 and 80 x 480; 4 positions, 192 x 1152)."""
    assert moments.fused_transposes(16, 256, 1024) and moments.fused_transposes(4, 512, 2048)
    assert not moments.fused_transposes(16, 80, 480) and not moments.fused_transposes(4, 192, 1152)
    assert moments.fused_block_columns(16, 256) is None and moments.fused_block_columns(4, 512) is None
    assert moments.fused_transposes(9, 1536, 2048) and moments.fused_block_columns(9, 1536) == 384
    assert not moments.fused_transposes(16, 1024, 256) and moments.fused_block_columns(16, 256) is None
    assert not moments.fused_transposes(16, 64, 256)  # 4,096 elements: as laid out
    assert not moments.fused_transposes(16, None, 1024) and moments.fused_block_columns(16, None) is None


def test_fused_loop_is_off_where_a_gpu_is_visible(monkeypatch):
    """Only the CPU takes the fused loop (unmeasured on a GPU): the probe says no when
    TensorFlow sees a GPU, and yes here only if XLA ran it and it agreed."""
    monkeypatch.setattr(moments, "FUSED", None)
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind=None: ["GPU:0"])
    assert moments.fused_works() is False
    monkeypatch.undo()
    monkeypatch.setattr(moments, "FUSED", None)
    assert moments.fused_works() is (not tf.config.list_logical_devices("GPU"))  # XLA compiled in
    assert not moments.fused_applies(moments.FUSED_POSITIONS + 1)


def test_outer_sum_moment_pairs_under_cancellation():
    """Entries whose per-example terms cancel over two positions: the expanded square keeps the
    documented precision (absolute error about eps * (sum |x_p|)**2) and is never negative; the
    last pair rounds below zero unclipped (found by search on this CPU)."""
    a = np.ones((1, 2, 1), np.float32)
    for first, second in [(1.0, -0.99), (1.0, -1.0), (0.99889463, -0.99889445)]:
        g = np.array([[[first], [second]]], np.float32)
        got = float(moments.outer_sum_moment(tf.constant(a), tf.constant(g), "square")[0, 0])
        exact = (float(np.float32(first)) + float(np.float32(second))) ** 2
        assert got >= 0.0
        assert abs(got - exact) <= 2 * 6e-8 * (abs(first) + abs(second)) ** 2


def _chunked_model(name):
    if name == "embedding":  # shared table, repeated tokens
        ids = keras.Input((6,), dtype="int32")
        table = keras.layers.Embedding(5, 3)
        h = keras.layers.Concatenate()([table(ids), table(keras.layers.Lambda(lambda t: t[:, ::-1])(ids))])
        model = keras.Model(ids, _head(h))
        return model, tf.constant(np.random.default_rng(1).integers(0, 3, size=(7, 6)), tf.int32)
    if name == "embedding_any_length":  # sequence length known only at run time
        ids = keras.Input((None,), dtype="int32")
        h = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(5, 3)(ids))
        return keras.Model(ids, keras.layers.Dense(CLASSES)(h)), tf.constant(
            np.random.default_rng(2).integers(0, 3, size=(7, 6)), tf.int32)
    if name == "conv3d":
        layer = keras.layers.Conv3D(2, 2, strides=(2, 1, 1), padding="same", activation="tanh")
        return keras.Sequential([keras.Input((5, 4, 3, 2)), layer, keras.layers.Flatten(),
                                 keras.layers.Dense(CLASSES)]), tf.random.normal([7, 5, 4, 3, 2], seed=4)
    if name == "attention":
        inputs = keras.Input((4, 6))
        model = keras.Model(inputs, _head(keras.layers.MultiHeadAttention(2, 3)(inputs, inputs)))
        return model, tf.random.normal([7, 4, 6], seed=5)
    inputs = keras.Input((5, 5, 2))
    h = keras.layers.SeparableConv2D(3, 3, depth_multiplier=2, padding="same")(keras.layers.DepthwiseConv2D(2)(inputs))
    return keras.Model(inputs, _head(h)), tf.random.normal([7, 5, 5, 2], seed=6)


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
@pytest.mark.parametrize("name", ["embedding", "embedding_any_length", "conv3d", "attention", "separable"])
def test_chunked_closed_forms_inside_tf_function_with_unknown_batch(name, jit, monkeypatch):
    """Several chunks of a batch of unknown size (a while loop) give the loop's moments, also
    compiled by XLA (where Conv3D takes the per-layer vmap: no grouped filter gradients)."""
    model, x = _chunked_model(name)
    model = _randomise(model, seed=3)
    y = tf.constant(np.arange(7) % CLASSES, tf.int32)
    ref = per_example_moment(model, x, _log_likelihood, method="loop", targets=y)
    monkeypatch.setattr(moments, "CHUNK_ELEMENTS", 64)
    monkeypatch.setattr(moments, "MIN_CHUNK_ELEMENTS", 1)
    monkeypatch.setattr(engine, "jacobian_moments", lambda *a, **k: pytest.fail("the jacobian ran"))
    fn = tf.function(
        lambda x, y: engine.per_example_moment(model, x, _log_likelihood, targets=y),
        input_signature=[tf.TensorSpec([None, *model.input_shape[1:]], x.dtype), tf.TensorSpec([None], tf.int32)],
        autograph=False,
        jit_compile=jit,
    )
    assert relative_error(fn(x, y), ref) <= TOL


def _lstm_model(head_units=None, cell=False):
    inputs = keras.Input((4, 3))
    h = (keras.layers.RNN(_MinimalCell(5)) if cell else keras.layers.LSTM(5))(inputs)
    if head_units:
        h = keras.layers.Dense(head_units, activation="tanh")(h)
    return _randomise(keras.Model(inputs, keras.layers.Dense(CLASSES)(h)))


class _Unwalkable(keras.Model):
    """A subclassed model with a custom layer: the engine can neither walk nor intercept it."""

    def __init__(self):
        super().__init__()
        self.scale = self.add_weight(shape=(3,), initializer="ones")
        self.dense = keras.layers.Dense(CLASSES)

    def call(self, x):
        return self.dense(x * self.scale)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("custom_cell", "vmap"), ("lstm", "factorized"), ("lstm_big_head", "factorized"), ("subclassed", "vmap"),
     ("conv", "factorized"), ("transformer", "factorized")],
)
def test_auto_vectorises_the_whole_model_only_where_the_engine_would_repeat_its_work(name, expected):
    """auto takes vmap when the per-layer vmap carries the cost and the other weights are Dense
    layers no larger (the engine would re-run those layers' forward pass per example)."""
    from importance.per_example import resolve_method

    if name == "subclassed":
        model = _Unwalkable()
        model(tf.zeros([1, 3]))
    elif name == "conv":
        model = keras.Sequential([keras.Input((5, 5, 2)), keras.layers.Conv2D(3, 2), keras.layers.Flatten(),
                                  keras.layers.Dense(CLASSES)])
    elif name == "transformer":
        inputs = keras.Input((4, 6))
        model = keras.Model(inputs, _head(keras.layers.MultiHeadAttention(2, 3)(inputs, inputs)))
    elif name == "custom_cell":  # the per-layer vmap carries the cost, the Dense head is smaller
        model = _lstm_model(cell=True)
    else:  # LSTMs have a closed form (the recurrent family): the engine
        model = _lstm_model(64 if name == "lstm_big_head" else None)  # 64 * 5 + 64 * 3 weights > LSTM's 180
    assert resolve_method(model, "auto") == expected
    assert resolve_method(model, "loop") == "loop"
    with pytest.raises(ValueError, match="method"):
        resolve_method(model, "fast")


def test_layer_paths_agree_with_the_forward_pass():
    """The structural reading (what auto decides on) names the paths the engine's forward pass
    takes: shared, intercepted (attention), per-layer vmap and closed-form layers."""
    tokens = keras.Input((6,), dtype="int32")
    shared = keras.layers.Dense(8, activation="tanh")
    h = keras.layers.Embedding(11, 8)(tokens)
    h = keras.layers.LayerNormalization()(keras.layers.MultiHeadAttention(2, 4)(h, h))
    h = keras.layers.Conv1D(8, 1, groups=2)(shared(shared(h)))  # groups > 1: the per-layer vmap
    h = keras.layers.GRU(4)(h)
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4), keras.layers.BatchNormalization()])
    model = keras.Model(tokens, keras.layers.Dense(CLASSES)(inner(h)))
    captures = []
    with tf.GradientTape() as tape:
        engine.Walker(tape, captures).call(model, tf.zeros([2, 6], tf.int32))
    walked = {(c.layer.name, c.kind) for c in captures}
    assert {(layer.name, kind) for layer, kind in paths.layer_paths(model)} == walked
    assert {kind for _, kind in walked} == {"embedding", "einsum", "norm", "dense", "vmap", "recurrent"}


def test_frozen_einsum_dense_runs_as_a_weightless_layer(engine_vs_loop):
    """The shared guard (layers.plain_float32) asks every closed form for a trainable layer: a
    frozen EinsumDense runs as it is instead of being captured with no weights to match."""
    inputs = keras.Input((4, 6))
    frozen = keras.layers.EinsumDense("abc,cd->abd", output_shape=(4, 5), bias_axes="d")
    frozen.trainable = False
    model = _randomise(keras.Model(inputs, _head(frozen(inputs))))
    assert [kind for _, kind in paths.layer_paths(model)] == ["dense"]
    engine_vs_loop(model, tf.random.normal([BATCH, 4, 6], seed=9))


def test_lanes_order_the_layers_moments_and_leave_them_unchanged(monkeypatch):
    """moments.LANES only orders the layers' moments: the sums are bitwise those without lanes,
    and in the traced step each layer's moments (after the first of its lane) wait on the
    previous layer's through control dependencies."""
    from tasks import models

    model = _randomise(models.resnet_bn((6, 6, 1), CLASSES, filters=2, blocks=1, seed=0))
    x = tf.random.normal([BATCH, 6, 6, 1], seed=9)
    y = tf.constant(np.arange(BATCH) % CLASSES, tf.int32)
    results, waiting = {}, {}
    for lanes in (0, 1, 3):
        monkeypatch.setattr(moments, "LANES", lanes)
        step = tf.function(lambda x, y: engine.per_example_moment(model, x, _log_likelihood, targets=y))
        graph = step.get_concrete_function(x, y).graph
        results[lanes] = [r.numpy() for r in step(x, y)]
        # the ops others wait on: with lanes, a layer's moments wait on the previous layer's sums
        waiting[lanes] = {c.name for op in graph.get_operations() for c in op.control_inputs}
    for lanes in (1, 3):
        for a, b in zip(results[0], results[lanes], strict=True):
            np.testing.assert_array_equal(a, b)
    layers = sum(1 for layer in model.layers if layer.trainable_weights)
    one_lane, three_lanes = (len(waiting[k] - waiting[0]) for k in (1, 3))
    assert one_lane >= layers - 1  # every layer but the first waits on the one before it
    assert one_lane > three_lanes >= layers - 3  # three chains: three layers wait on none
