"""Tests of importance.thresholding: exact seeded ranking, the sweep, restoring the model."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from keras import layers

import importance as imp
import importance.data
import importance.thresholding as th

# ---------------------------------------------------------------------------------------------
# Pure ranking helpers (no model).

scores_strategy = st.one_of(
    st.lists(st.integers(0, 3), min_size=0, max_size=60).map(lambda v: np.array(v, float)),
    st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=0, max_size=60).map(np.array),
    st.integers(0, 60).map(lambda n: np.full(n, 0.5)),  # all equal
)


@settings(max_examples=50, deadline=None)
@given(
    scores=scores_strategy,
    fraction=st.floats(0, 1),
    seed=st.integers(0, 2**32 - 1),
    n_groups=st.integers(1, 4),
    data=st.data(),
)
def test_mask_replaces_exactly_the_lowest_round_p_n_per_group(
    scores, fraction, seed, n_groups, data
):
    groups = np.array(
        data.draw(
            st.lists(st.integers(0, n_groups - 1), min_size=scores.size, max_size=scores.size)
        ),
        dtype=np.int64,
    )
    for grouping in (None, groups):
        mask = th.replacement_mask(scores, fraction, seed=seed, groups=grouping)
        ids = np.zeros(scores.size, np.int64) if grouping is None else grouping
        assert mask.shape == scores.shape and mask.dtype == bool
        for g in np.unique(ids):
            in_g = ids == g
            assert mask[in_g].sum() == round(fraction * in_g.sum())
            replaced, kept = scores[in_g & mask], scores[in_g & ~mask]
            if replaced.size and kept.size:
                assert replaced.max() <= kept.min()
        assert np.array_equal(
            mask, th.replacement_mask(scores, fraction, seed=seed, groups=grouping)
        )


@settings(max_examples=50, deadline=None)
@given(scores=scores_strategy, seed=st.integers(0, 2**32 - 1), p=st.floats(0, 1), q=st.floats(0, 1))
def test_masks_are_nested_and_ranks_are_a_permutation(scores, seed, p, q):
    ranks = th.replacement_ranks(scores, seed=seed)
    assert np.array_equal(np.sort(ranks), np.arange(scores.size))
    low, high = sorted((p, q))
    small = th.replacement_mask(scores, low, seed=seed)
    large = th.replacement_mask(scores, high, seed=seed)
    assert not (small & ~large).any()


def test_ties_are_broken_by_the_seed():
    scores = np.full(100, 1.0)
    masks = [th.replacement_mask(scores, 0.5, seed=s) for s in range(5)]
    assert np.array_equal(masks[0], th.replacement_mask(scores, 0.5, seed=0))
    assert len({m.tobytes() for m in masks}) == 5
    # Ties only: distinct scores give the same set whatever the seed.
    distinct = np.arange(100.0)[::-1]
    assert np.array_equal(
        th.replacement_mask(distinct, 0.3, seed=1), th.replacement_mask(distinct, 0.3, seed=2)
    )
    assert np.array_equal(th.replacement_mask(distinct, 0.3, seed=1), distinct < 30)


def test_counts_follow_python_round():
    assert list(th.replacement_counts(0.5, [5, 7, 0, 1])) == [2, 4, 0, 0]
    assert list(th.replacement_counts(0.3, 10)) == [3]
    assert list(th.replacement_counts(1.0, [3, 9])) == [3, 9]


# ---------------------------------------------------------------------------------------------
# The sweep on a tiny model.


@pytest.fixture
def model():
    inputs = keras.Input((6,))
    h = layers.Dense(8, activation="relu", name="d1")(inputs)
    h = layers.BatchNormalization(name="bn")(h)
    outputs = layers.Dense(3, name="d2")(h)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    for v in model.weights:  # nonzero everywhere, so every replacement changes the value
        v.assign(rng.uniform(0.5, 1.5, size=v.shape) * rng.choice([-1, 1], size=v.shape))
    for v in (model.get_layer("bn").moving_variance,):
        v.assign(np.abs(v.numpy()))
    return model


@pytest.fixture
def data():
    rng = np.random.default_rng(1)
    return rng.normal(size=(40, 6)).astype(np.float32), rng.integers(0, 3, size=40)


def _scores(model, seed=0, ties=False):
    rng = np.random.default_rng(seed)
    if ties:
        return [rng.integers(0, 2, size=v.shape).astype(float) for v in model.trainable_weights]
    return [rng.random(v.shape) for v in model.trainable_weights]


def _snapshot(model):
    return [np.array(v.numpy(), copy=True) for v in model.weights]


def _assert_bitwise(model, snapshot):
    for v, before in zip(model.weights, snapshot, strict=True):
        assert v.numpy().tobytes() == before.tobytes(), v.path


def _recorder() -> tuple[list, object]:
    """An ``on_evaluate`` hook that snapshots the thresholded model, and what it saw."""
    seen = []

    def record(threshold, thresholded):
        seen.append(_snapshot(thresholded))

    return seen, record


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("replace", ["noise", "zero"])
def test_p0_equals_the_untouched_model_and_weights_are_restored(model, data, scope, replace):
    before = _snapshot(model)
    loss, accuracy = importance.data.evaluate(model, data)
    curve = imp.threshold_sweep(
        model, _scores(model), data, thresholds=[0.0, 0.5, 1.0], scope=scope, replace=replace
    )
    assert list(curve.columns) == ["threshold", "loss", "accuracy", "fraction_replaced"]
    assert curve.loc[0, "loss"] == loss and curve.loc[0, "accuracy"] == accuracy
    assert curve.loc[0, "fraction_replaced"] == 0.0 and curve.loc[2, "fraction_replaced"] == 1.0
    assert curve.loc[1, "loss"] != loss
    _assert_bitwise(model, before)


def test_default_thresholds_are_tenths(model, data):
    curve = imp.threshold_sweep(model, _scores(model), data, replace="zero")
    np.testing.assert_allclose(curve["threshold"], np.linspace(0, 1, 11))
    n = sum(v.numpy().size for v in model.trainable_weights)
    assert n == 99
    expected = [round(p * n) / n for p in np.linspace(0, 1, 11)]
    np.testing.assert_allclose(curve["fraction_replaced"], expected)


def test_p1_zero_replaces_every_trainable_weight_and_no_other(model, data):
    original = _snapshot(model)
    seen, record = _recorder()
    curve = imp.threshold_sweep(
        model, _scores(model), data, thresholds=[1.0], replace="zero", on_evaluate=record
    )
    trainable = {id(v) for v in model.trainable_weights}
    for v, during, before in zip(model.weights, seen[0], original, strict=True):
        if id(v) in trainable:
            assert not during.any(), v.path
        else:  # batch-norm moving statistics are left alone
            np.testing.assert_array_equal(during, before)
    # All trainable weights zero: the logits are zeros, so the loss is log(3).
    assert math.isclose(curve.loc[0, "loss"], math.log(3), rel_tol=1e-6)


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("ties", [False, True])
# In any order: a threshold after a higher one (or after p = 0.05, which replaces no weight of
# the smallest layers) must see only its own replacements.
@pytest.mark.parametrize("thresholds", [[0.0, 0.25, 0.5, 0.9], [0.9, 0.0, 0.5, 0.05, 0.25, 0.0]])
def test_sweep_replaces_exactly_the_ranked_set(model, data, scope, ties, thresholds):
    original = _snapshot(model)
    n_trainable = len(model.trainable_weights)
    seen, record = _recorder()
    scores = _scores(model, 5, ties)
    curve = imp.threshold_sweep(
        model, scores, data, thresholds=thresholds, scope=scope, seed=3, on_evaluate=record
    )
    flat = np.concatenate([s.ravel() for s in scores])
    if scope == "global":
        groups = np.zeros(flat.size, np.int64)
    else:  # one group per layer: (kernel, bias), (gamma, beta), (kernel, bias)
        groups = np.repeat([0, 0, 1, 1, 2, 2], [s.size for s in scores])
    trainable_idx = [i for i, v in enumerate(model.weights) if v.trainable]
    assert len(trainable_idx) == n_trainable
    for p, weights, fraction in zip(thresholds, seen, curve["fraction_replaced"], strict=True):
        changed = np.concatenate([(weights[i] != original[i]).ravel() for i in trainable_idx])
        expected = th.replacement_mask(flat, p, seed=3, groups=groups)
        np.testing.assert_array_equal(changed, expected)
        assert fraction == expected.sum() / flat.size
        for g in np.unique(groups):
            assert expected[groups == g].sum() == round(p * (groups == g).sum())


def test_noise_has_a_tenth_of_each_tensors_std(data):
    model = keras.Sequential([keras.Input((6,)), layers.Dense(300, name="wide"), layers.Dense(3)])
    original = _snapshot(model)
    seen, record = _recorder()
    imp.threshold_sweep(
        model, _scores(model), data, thresholds=[1.0], replace="noise", seed=7, on_evaluate=record
    )
    for before, during in zip(original, seen[0], strict=True):
        if before.size >= 900:
            ratio = during.std() / before.std()
            assert 0.09 < ratio < 0.11
            assert abs(during.mean()) < 3 * during.std() / math.sqrt(during.size)


def test_same_seed_same_curve_different_seed_different_noise(model, data):
    scores = _scores(model, ties=True)
    a = imp.threshold_sweep(model, scores, data, thresholds=[0.3, 0.6], seed=1)
    b = imp.threshold_sweep(model, scores, data, thresholds=[0.3, 0.6], seed=1)
    c = imp.threshold_sweep(model, scores, data, thresholds=[0.3, 0.6], seed=2)
    assert a.equals(b)
    assert not np.array_equal(a["loss"], c["loss"])


def test_probability_model_and_dataset_input(data):
    model = keras.Sequential([keras.Input((6,)), layers.Dense(3, activation="softmax")])
    dataset = tf.data.Dataset.from_tensor_slices(data).batch(16)
    loss, accuracy = importance.data.evaluate(model, dataset)
    curve = imp.threshold_sweep(model, _scores(model), dataset, thresholds=[0, 1], replace="zero")
    assert curve.loc[0, "loss"] == loss and curve.loc[0, "accuracy"] == accuracy
    assert math.isclose(curve.loc[1, "loss"], math.log(3), rel_tol=1e-6)


def test_sweep_does_not_retrace(model, data):
    importance.data.evaluate(model, data, batch_size=16)  # traces the full and the last batch
    fn = importance.data._EVAL_FNS[model]
    traces = fn.experimental_get_tracing_count()
    imp.threshold_sweep(model, _scores(model), data, batch_size=16)
    assert fn.experimental_get_tracing_count() == traces


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
@pytest.mark.parametrize("fail_at", [0, 2])
def test_weights_restored_when_evaluation_raises(model, data, error, fail_at):
    before = _snapshot(model)
    calls = []

    def failing(threshold, m):
        calls.append(1)
        if len(calls) > fail_at:
            assert any(  # the model really was modified when the error struck
                v.numpy().tobytes() != b.tobytes() for v, b in zip(m.weights, before, strict=True)
            )
            raise error

    with pytest.raises(type(error)):
        imp.threshold_sweep(
            model, _scores(model), data, thresholds=[0.2, 0.4, 0.6, 0.8], on_evaluate=failing
        )
    assert len(calls) == fail_at + 1
    _assert_bitwise(model, before)


# ---------------------------------------------------------------------------------------------
# Validation.


@pytest.mark.parametrize(
    ("thresholds", "message"),
    [
        ([0.5, 1.5], "threshold must be in [0, 1]. Received: 1.5"),
        ([-0.1], "threshold must be in [0, 1]. Received: -0.1"),
        ([float("nan")], "threshold must be in [0, 1]. Received: nan"),
        (["a"], "threshold must be a number in [0, 1]. Received: 'a'"),
        ([True], "threshold must be a number in [0, 1]. Received: True"),
        ([], "thresholds must not be empty. Received: []"),
        (0.5, "thresholds must be a sequence of numbers in [0, 1]. Received: 0.5"),
    ],
)
def test_bad_thresholds(model, data, thresholds, message):
    with pytest.raises(ValueError) as info:
        imp.threshold_sweep(model, _scores(model), data, thresholds=thresholds)
    assert str(info.value) == message


def test_numpy_thresholds_are_accepted(model, data):
    curve = imp.threshold_sweep(model, _scores(model), data, thresholds=np.array([0.0, 0.5]))
    assert list(curve["threshold"]) == [0.0, 0.5]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scope": "model"}, "scope must be one of ('global', 'layer'). Received: 'model'"),
        ({"replace": "gauss"}, "replace must be one of ('noise', 'zero'). Received: 'gauss'"),
        ({"seed": -1}, "seed must be a non-negative integer. Received: -1"),
        ({"seed": 1.5}, "seed must be a non-negative integer. Received: 1.5"),
        ({"batch_size": 0}, "batch_size must be a positive integer. Received: 0"),
    ],
)
def test_bad_options(model, data, kwargs, message):
    with pytest.raises(ValueError) as info:
        imp.threshold_sweep(model, _scores(model), data, **kwargs)
    assert str(info.value) == message


def test_scores_must_match_the_model(model, data):
    scores = _scores(model)
    with pytest.raises(imp.ImportanceError, match="returned 5 arrays"):
        imp.threshold_sweep(model, scores[:-1], data)
    scores[0] = scores[0][:2]
    with pytest.raises(imp.ImportanceError, match=r"shape \(2, 8\).*d1/kernel"):
        imp.threshold_sweep(model, scores, data)


def test_empty_data_is_rejected(model, data):
    with pytest.raises(ValueError, match="data is empty"):
        imp.threshold_sweep(model, _scores(model), (data[0][:0], data[1][:0]))
    empty = tf.data.Dataset.from_tensor_slices(data).batch(8).take(0)
    with pytest.raises(ValueError, match="data is empty: the dataset yields no batches"):
        imp.threshold_sweep(model, _scores(model), empty)


def test_unbuilt_model_is_rejected(data):
    model = keras.Sequential([layers.Dense(3)], name="lazy")
    with pytest.raises(ValueError, match="model must be built.*Sequential 'lazy'"):
        imp.threshold_sweep(model, [], data)


def test_model_without_trainable_weights_is_rejected(data):
    model = keras.Sequential([keras.Input((6,)), layers.Dense(3)], name="frozen")
    model.trainable = False
    with pytest.raises(ValueError, match="model 'frozen' has no trainable weights"):
        imp.threshold_sweep(model, [], data)
