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
