"""Tests of importance.aggregation against an independent per-unit NumPy loop."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from keras import layers

import importance as imp
from importance.aggregation import AggregationWarning, owning_layers

NP_REDUCERS = {"mean": np.mean, "max": np.max, "min": np.min, "sum": np.sum}
TF_SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _scores(model, seed, ties):
    rng = np.random.default_rng(seed)
    if ties:  # few distinct integer values: reducers must not depend on tie order
        return [
            rng.integers(0, 3, size=v.shape).astype(np.float64) for v in model.trainable_weights
        ]
    return [rng.normal(size=v.shape) for v in model.trainable_weights]


def _reference_units(kind, kernel_shape, use_bias):
    """Lists of (weight index, index tuple) per unit, built by a plain loop over units."""
    units = []
    if kind == "norm":
        for c in range(kernel_shape[0]):
            units.append([(w, (c,)) for w in range(2 if use_bias else 1)])
        return units
    if kind == "transpose":
        n_out = kernel_shape[-2]
    elif kind == "depthwise":
        n_out = kernel_shape[-2] * kernel_shape[-1]
    else:
        n_out = kernel_shape[-1]
    for j in range(n_out):
        members = []
        for index in np.ndindex(*kernel_shape):
            if kind == "transpose":
                out = index[-2]
            elif kind == "depthwise":
                out = index[-2] * kernel_shape[-1] + index[-1]
            else:
                out = index[-1]
            if out == j:
                members.append((0, index))
        if use_bias:
            members.append((1, (j,)))
        units.append(members)
    return units


def _build(kind, dims, size, channels, units, use_bias):
    spatial = (size,) * dims
    if kind == "dense":
        layer, shape = layers.Dense(units, use_bias=use_bias), (channels,)
    elif kind == "conv":
        conv = {1: layers.Conv1D, 2: layers.Conv2D, 3: layers.Conv3D}[dims]
        layer, shape = conv(units, 2, use_bias=use_bias), spatial + (channels,)
    elif kind == "transpose":
        conv = {1: layers.Conv1DTranspose, 2: layers.Conv2DTranspose, 3: layers.Conv3DTranspose}
        layer, shape = conv[dims](units, 2, use_bias=use_bias), spatial + (channels,)
    elif kind == "depthwise":
        conv = {1: layers.DepthwiseConv1D, 2: layers.DepthwiseConv2D}[min(dims, 2)]
        layer = conv(2, depth_multiplier=units, use_bias=use_bias)
        shape = (size,) * min(dims, 2) + (channels,)
    else:
        norm = layers.BatchNormalization if dims != 2 else layers.LayerNormalization
        layer, shape = norm(center=use_bias), (size, channels)
    model = keras.Sequential([keras.Input(shape), layer])
    return model, layer


@TF_SETTINGS
@given(
    kind=st.sampled_from(["dense", "conv", "transpose", "depthwise", "norm"]),
    dims=st.integers(1, 3),
    channels=st.integers(1, 3),
    units=st.integers(1, 4),
    use_bias=st.booleans(),
    reduce=st.sampled_from(sorted(NP_REDUCERS)),
    seed=st.integers(0, 2**16),
    ties=st.booleans(),
)
def test_unit_level_matches_numpy_loop(kind, dims, channels, units, use_bias, reduce, seed, ties):
    model, layer = _build(kind, dims, 3, channels, units, use_bias)
    scores = _scores(model, seed, ties)
    result = imp.aggregate(scores, model, level="unit", reduce=reduce)
    kernel_shape = tuple(model.trainable_weights[0].shape)
    reference = _reference_units(kind, kernel_shape, use_bias)
    covered = [np.zeros(s.shape, bool) for s in scores]
    for members in reference:
        expected = NP_REDUCERS[reduce]([scores[w][i] for w, i in members])
        got = [result[w][i] for w, i in members]
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
        assert len(set(got)) == 1, "unit aggregation must be constant within a unit"
        for w, i in members:
            covered[w][i] = True
    assert all(c.all() for c in covered)
    assert all(
        r.dtype == np.float64 and r.shape == s.shape for r, s in zip(result, scores, strict=True)
    )


def _nested_model():
    inner = keras.Sequential([keras.Input((5,)), layers.Dense(3, name="d_in")], name="inner")
    inputs = keras.Input((4,))
    h = layers.Dense(5, name="d1")(inputs)
    h = inner(h)
    h = layers.BatchNormalization(name="bn")(h)
    outputs = layers.Dense(2, name="d2")(h)
    return keras.Model(inputs, outputs)


def test_owning_layers_walks_nested_models_by_identity():
    model = _nested_model()
    owners = owning_layers(model)
    inner_dense = model.get_layer("inner").get_layer("d_in")
    assert [o.name for o in owners] == ["d1", "d1", "d_in", "d_in", "bn", "bn", "d2", "d2"]
    assert owners[2] is inner_dense and owners[2].kernel is model.trainable_weights[2]


@settings(max_examples=20, deadline=None)
@given(reduce=st.sampled_from(sorted(NP_REDUCERS)), seed=st.integers(0, 2**16), ties=st.booleans())
def test_layer_level_is_constant_within_each_layer(reduce, seed, ties):
    model = _nested_model()
    scores = _scores(model, seed, ties)
    result = imp.aggregate(scores, model, level="layer", reduce=reduce)
    for first in range(0, len(scores), 2):  # every layer here holds (kernel, bias) or (gamma, beta)
        pair = np.concatenate([scores[first].ravel(), scores[first + 1].ravel()])
        for k in (first, first + 1):
            np.testing.assert_allclose(result[k], NP_REDUCERS[reduce](pair), rtol=1e-12)


def test_unit_level_on_nested_model_matches_each_layer():
    model = _nested_model()
    scores = _scores(model, 3, False)
    result = imp.aggregate(scores, model, level="unit", reduce="sum")
    for k in (0, 2, 6):  # dense kernels: column j with bias j
        expected = scores[k].sum(axis=0) + scores[k + 1]
        np.testing.assert_allclose(result[k], np.broadcast_to(expected, scores[k].shape))
        np.testing.assert_allclose(result[k + 1], expected)
    np.testing.assert_allclose(result[4], scores[4] + scores[5])  # batch norm gamma + beta


def test_weight_level_is_identity_as_float64_copies():
    model = _nested_model()
    scores = [s.astype(np.float32) for s in _scores(model, 0, False)]
    result = imp.aggregate(scores, model, level="weight", reduce="max")
    for r, s in zip(result, scores, strict=True):
        assert r.dtype == np.float64
        np.testing.assert_array_equal(r, s.astype(np.float64))
        assert r is not s


def test_unknown_layer_warns_and_treats_each_tensor_as_one_unit():
    inputs = keras.Input((4,), dtype="int32")
    h = layers.Embedding(7, 3, name="emb")(inputs)
    h = layers.EinsumDense("abc,cd->abd", output_shape=(4, 2), bias_axes="d", name="ein")(h)
    model = keras.Model(inputs, h)
    scores = _scores(model, 1, False)
    with pytest.warns(AggregationWarning) as record:
        result = imp.aggregate(scores, model, level="unit", reduce="max")
    messages = [str(w.message) for w in record]
    assert len(messages) == 2
    assert "'emb' (Embedding)" in messages[0] and "treated as one unit" in messages[0]
    assert "'ein' (EinsumDense)" in messages[1]
    for r, s in zip(result, scores, strict=True):
        np.testing.assert_array_equal(r, np.full(s.shape, s.max()))


def test_known_layer_with_unexpected_weights_falls_back_with_warning():
    class ScaledDense(layers.Dense):
        def build(self, input_shape):
            super().build(input_shape)
            self.scale = self.add_weight(shape=(), initializer="ones", name="scale")

    model = keras.Sequential([keras.Input((3,)), ScaledDense(2, name="scaled")])
    scores = _scores(model, 2, False)
    with pytest.warns(AggregationWarning, match="'scaled' \\(ScaledDense\\)"):
        result = imp.aggregate(scores, model, level="unit", reduce="min")
    for r, s in zip(result, scores, strict=True):
        np.testing.assert_array_equal(r, np.full(s.shape, s.min()))


def test_known_layers_do_not_warn():
    model = _nested_model()
    imp.aggregate(_scores(model, 0, False), model, level="unit")  # filterwarnings=error


def test_unknown_level_names_the_value():
    model = _nested_model()
    with pytest.raises(ValueError) as info:
        imp.aggregate(_scores(model, 0, False), model, level="neuron")
    assert str(info.value) == (
        "level must be one of ('weight', 'unit', 'layer'). Received: 'neuron'"
    )


def test_unknown_reducer_names_the_value():
    model = _nested_model()
    with pytest.raises(ValueError, match=r"reduce must be one of .*Received: 'median'"):
        imp.aggregate(_scores(model, 0, False), model, level="unit", reduce="median")


def test_scores_not_matching_the_model_are_rejected():
    model = _nested_model()
    scores = _scores(model, 0, False)
    with pytest.raises(imp.ImportanceError, match="returned 7 arrays"):
        imp.aggregate(scores[:-1], model, level="unit")
    scores[0] = scores[0].T
    with pytest.raises(imp.ImportanceError, match=r"shape \(5, 4\).*d1/kernel"):
        imp.aggregate(scores, model, level="layer")
