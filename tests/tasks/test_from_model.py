"""``tasks.from_model``: a trained model and its data as a task, checked at the edge.

The models are planted: their weights are set by hand so that they classify the generated data
(nearly) perfectly without training, so every check knows the truth (the class count, the output
kind, whether it has a convolution) and the edge errors are provoked one at a time.
"""

from __future__ import annotations

import hashlib

import keras
import numpy as np
import pytest
import tensorflow as tf

import tasks
from tasks.registry import TASKS


def _planted_dense(classes: int = 3, *, softmax: bool = False) -> keras.Model:
    """logits = 8 x: the class is the argmax of the input."""
    model = keras.Sequential(
        [
            keras.Input((classes,)),
            keras.layers.Dense(classes, activation="softmax" if softmax else None),
        ]
    )
    model.layers[-1].set_weights(
        [8.0 * np.eye(classes, dtype=np.float32), np.zeros(classes, np.float32)]
    )
    return model


def _planted_conv() -> keras.Model:
    """Two 1x1 filters (+5, -5) on 4x4 images, averaged: class 0 when the image's mean is > 0."""
    model = keras.Sequential(
        [
            keras.Input((4, 4, 1)),
            keras.layers.Conv2D(2, 1, name="conv"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2, name="head"),
        ]
    )
    model.get_layer("conv").set_weights(
        [np.array([[[[5.0, -5.0]]]], np.float32), np.zeros(2, np.float32)]
    )
    model.get_layer("head").set_weights([np.eye(2, dtype=np.float32), np.zeros(2, np.float32)])
    return model


def _dense_data(n: int = 60, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(seed).normal(size=(n, classes)).astype(np.float32)
    return x, np.argmax(x, axis=1).astype(np.int32)


def _conv_data(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(seed).normal(size=(n, 4, 4, 1)).astype(np.float32)
    return x, (x.mean(axis=(1, 2, 3)) < 0).astype(np.int32)


@pytest.fixture(autouse=True)
def _scoped_registry():
    tasks.available_tasks()  # load the built-ins and plugins before the scope saves the registry
    with TASKS.scoped():
        yield


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_model_file_and_an_npz_become_a_registered_task_and_the_file_is_untouched(tmp_path):
    path, data = tmp_path / "my-net.v2.keras", tmp_path / "data.npz"
    model = _planted_conv()
    model.save(path)
    (xtr, ytr), (xte, yte) = _conv_data(seed=0), _conv_data(seed=1)
    np.savez(data, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    before = _sha(path)

    task = tasks.from_model(path, data=data)

    assert (
        task.name == "my-net_v2" and tasks.get_task("my-net_v2") is task
    )  # '.' would read as a variant
    assert (task.num_classes, task.input_shape, task.info["output"]) == (2, (4, 4, 1), "logits")
    assert task.info["convolutional"] is True and "explanation" not in task.info["not_applicable"]
    np.testing.assert_array_equal(task.train_data()[0], xtr)
    np.testing.assert_array_equal(task.test_data()[1], yte)
    run = tasks.trained("my-net_v2", seed=3)  # no training, no cache, whatever the seed
    assert run.recorder is None and not run.from_cache and run.cache_path is None
    assert run.history["test_accuracy"] == pytest.approx(1.0)
    import importance as imp

    imp.threshold_sweep(
        run.model,
        imp.compute_importance("fisher", run.model, task.train_data()),
        task.test_data(),
        thresholds=[0.0, 0.5, 1.0],
        seed=0,
    )
    assert _sha(path) == before


def test_arrays_split_files_datasets_and_one_hot_labels_give_the_same_task(tmp_path):
    model = _planted_dense(softmax=True)
    train, test = _dense_data(seed=0), _dense_data(seed=1)
    np.savez(tmp_path / "train.npz", x=train[0], y=train[1])
    np.savez(tmp_path / "test.npz", x_test=test[0], y_test=test[1])
    batched = tf.data.Dataset.from_tensor_slices((train[0], np.eye(3)[train[1]])).batch(7)
    forms = [
        tasks.from_model(model, train=train, test=test, name="arrays", register=False),
        tasks.from_model(
            model,
            train=tmp_path / "train.npz",
            test=tmp_path / "test.npz",
            name="files",
            register=False,
        ),
        tasks.from_model(model, train=batched, test=test, name="dataset", register=False),
    ]
    for task in forms:
        assert task.num_classes == 3 and task.info["output"] == "probabilities"
        assert task.info["convolutional"] is False and "explanation" in task.info["not_applicable"]
        for got, want in zip((*task.train_data(), *task.test_data()), (*train, *test), strict=True):
            np.testing.assert_array_equal(got, want)
    assert "arrays" not in tasks.available_tasks()  # register=False


def test_the_live_model_is_the_tasks_model_and_its_weights_are_unchanged():
    model = _planted_dense()
    before = [np.array(w.numpy(), copy=True) for w in model.weights]
    task = tasks.from_model(model, train=_dense_data(), test=_dense_data(seed=1), name="live")
    assert (
        tasks.trained("live").model is model and task.info["source"] == f"live model {model.name!r}"
    )
    for weight, saved in zip(model.weights, before, strict=True):
        np.testing.assert_array_equal(weight.numpy(), saved)


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (
            {"model": "missing"},
            FileNotFoundError,
            r"model_or_path '.*missing\.keras' does not exist",
        ),
        (
            {"model": "garbage"},
            ValueError,
            r"model_or_path '.*garbage\.keras' does not load as a Keras model",
        ),
        (
            {"model": "regression"},
            ValueError,
            r"has 1 output unit; only classifiers .*single-output classifier",
        ),
        ({"model": "two_heads"}, ValueError, r"has 2 outputs; only single-output models"),
        ({"model": "untrained"}, ValueError, r"test loss .* not below chance \(ln 3 = 1\.099\)"),
        ({"model": 3}, TypeError, r"model_or_path must be a Keras model .* Received: int"),
        (
            {"test": "narrow"},
            ValueError,
            r"test has inputs of shape \(60, 2\) but the model expects \(None, 3\)",
        ),
        (
            {"train": "labels"},
            ValueError,
            r"train: labels must be class ids in \[0, 3\) for this model\. "
            r"Received 7 for example 4",
        ),
        ({"train": "nan"}, ValueError, r"train has a non-finite input \(nan\) in example 2"),
        (
            {"train": "missing_keys"},
            ValueError,
            r"train file '.*bad\.npz' must hold arrays x_train, y_train \(or x, y\)\. "
            r"Received: a, b",
        ),
        ({"name": "a.b"}, ValueError, r"name must be letters, digits.* Received: 'a\.b'"),
        ({"name": "digits"}, ValueError, r"A task named 'digits' is already registered"),
        ({"data": "both"}, ValueError, r"Pass either data= .* or train= and test=, not both"),
        ({"test": None}, ValueError, r"test is required"),
    ],
)
def test_bad_input_is_refused_naming_the_value(tmp_path, change, error, message):
    np.savez(tmp_path / "bad.npz", a=np.zeros(2), b=np.zeros(2))
    (tmp_path / "garbage.keras").write_bytes(b"not a zip file")
    inputs = keras.Input((3,))
    models = {
        "missing": tmp_path / "missing.keras",
        "garbage": tmp_path / "garbage.keras",
        "regression": keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)]),
        "two_heads": keras.Model(
            inputs, [keras.layers.Dense(3)(inputs), keras.layers.Dense(3)(inputs)]
        ),
        "untrained": keras.Sequential(
            [keras.Input((3,)), keras.layers.Dense(3, kernel_initializer="zeros")]
        ),
    }
    train, test = _dense_data(), _dense_data(seed=1)
    bad_labels, nan = train[1].copy(), train[0].copy()
    bad_labels[4], nan[2, 1] = 7, np.nan
    splits = {
        "narrow": (test[0][:, :2], test[1]),
        "labels": (train[0], bad_labels),
        "nan": (nan, train[1]),
        "missing_keys": tmp_path / "bad.npz",
        None: None,
    }
    kwargs = {"train": train, "test": test, "name": "mine"}
    model = models.get(change.get("model"), change.get("model", _planted_dense()))
    for key in ("train", "test"):
        if key in change:
            kwargs[key] = splits[change[key]]
    if "name" in change:
        kwargs["name"] = change["name"]
    if "data" in change:
        kwargs["data"] = tmp_path / "bad.npz"
    with pytest.raises(error, match=message):
        tasks.from_model(model, **kwargs)


def test_what_a_trained_model_cannot_take_part_in_says_why():
    from tasks.from_model import not_applicable

    conv, dense = not_applicable(convolutional=True), not_applicable(convolutional=False)
    assert set(conv) == {"online measures", "consolidation", "cam_training"}
    assert set(dense) == set(conv) | {"explanation"}
    assert all("needs" in reason or "not retrained" in reason for reason in dense.values())
