"""importance.data: evaluation agrees across the data forms the library accepts; the number of
classes comes from importance.validation."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from importance.data import evaluate
from importance.validation import num_classes


def test_evaluate_agrees_for_arrays_and_datasets_with_int_or_one_hot_labels(dense_model, dense_data):
    x, y = dense_data
    classes = int(dense_model.outputs[0].shape[-1])
    one_hot = np.eye(classes, dtype=np.float32)[y]
    expected = evaluate(dense_model, (x, y), batch_size=8)
    for labels in (y, one_hot):
        assert evaluate(dense_model, (x, labels), batch_size=8) == pytest.approx(expected, rel=1e-6)
        dataset = tf.data.Dataset.from_tensor_slices((x, labels)).batch(8)
        assert evaluate(dense_model, dataset) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True])
def test_evaluate_names_a_bad_batch_size(dense_model, dense_data, batch_size):
    with pytest.raises(ValueError, match=r"batch_size must be a positive integer\. Received: "):
        evaluate(dense_model, dense_data, batch_size=batch_size)


def test_num_classes_of_a_subclassed_model_reads_it_from_a_batch(dense_data):
    class Head(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(5)

        def call(self, x):
            return self.dense(x)

    model = Head()
    x, _ = dense_data
    model(x[:2])
    assert num_classes(model) is None  # no symbolic outputs, not probed yet
    assert num_classes(model, x) == 5


# --- issue 21: checked once per call; the numbers do not depend on the data's form ---


def _forms(x, y):
    one_hot = np.eye(3, dtype=np.float32)[y]
    batched = lambda labels: tf.data.Dataset.from_tensor_slices((x, labels)).batch(8)  # noqa: E731
    return {
        "one-hot arrays": (x, one_hot),
        "float64 arrays": (x.astype(np.float64), y.astype(np.int64)),
        "dataset": batched(y),
        "dataset of one-hot labels": batched(one_hot),
        "dataset of float labels": batched(y.astype(np.float32)),
        "dataset of (B, 1) labels": batched(y[:, None]),
        "dataset of int64 labels": batched(y.astype(np.int64)),
    }


@pytest.mark.parametrize("measure", ["fisher_sampled", "mas", "fisher_batch"])
def test_scores_agree_across_data_forms_and_with_the_python_checked_path(
    measure, dense_model, dense_data, monkeypatch
):
    import importance as imp
    from importance.measures import batched

    x, y = dense_data
    expected = imp.compute_importance(measure, dense_model, (x, y), batch_size=8)
    for form, data in _forms(x, y).items():
        got = imp.compute_importance(measure, dense_model, data, batch_size=8)
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-12, err_msg=form)
    # The same datasets read with the per-batch checks in Python (the path of a dataset the
    # compiled step cannot check, e.g. nested inputs) and the measure called directly.
    monkeypatch.setattr(batched, "graph_checkable", lambda data: False)
    spec = imp.get_measure(measure)
    for form, data in _forms(x, y).items():
        direct = spec.fn(dense_model, data, **{**spec.defaults, "batch_size": 8})
        for a, b in zip(direct, expected, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-12, err_msg=form)


def test_batched_fisher_equals_the_per_example_loop(dense_model, dense_data):
    import importance as imp

    x, y = dense_data
    loop = imp.compute_importance("fisher_empirical", dense_model, (x, y), method="loop")
    for data in ((x, y), tf.data.Dataset.from_tensor_slices((x, y)).batch(8)):
        got = imp.compute_importance("fisher_empirical", dense_model, data, batch_size=8)
        for a, b in zip(got, loop, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-12)


def test_arrays_are_sliced_and_checked_once(dense_model, dense_data, monkeypatch):
    import importance as imp
    from importance import validation

    calls = []
    real = validation.check_inputs
    monkeypatch.setattr(validation, "check_inputs", lambda *a, **k: calls.append(1) or real(*a, **k))
    imp.compute_importance("fisher_empirical", dense_model, dense_data, batch_size=8)
    assert len(calls) == 1  # at the edge, not again per batch or per read


def test_the_in_step_screen_flags_every_non_finite_input_and_clears_overflowing_sums():
    from importance.validation import batch_problems, check_flagged_batch

    y = np.zeros(4, np.int32)
    for value in (np.nan, np.inf, -np.inf):
        for dtype in (np.float32, np.float16):
            x = np.ones((4, 3), dtype)
            x[2, 1] = value
            _, first = batch_problems(tf.constant(x), tf.constant(y), classes=3)
            assert int(first) == 2
            with pytest.raises(ValueError, match=rf"non-finite input \({value}\) in example 12;"):
                check_flagged_batch(x, y, start=10)
    huge = np.full((4, 3), 3e38, np.float32)  # finite, but each row's sum overflows
    labels, first = batch_problems(tf.constant(huge), tf.constant([0, 1, 2, 1]), classes=3)
    assert int(first) == 0 and labels.numpy().tolist() == [0, 1, 2, 1]
    check_flagged_batch(huge, np.array([0, 1, 2, 1]), start=0)  # a false alarm: no error
