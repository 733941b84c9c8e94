"""keras.datasets tasks: loaders tested on small generated stand-ins of the same file formats,
and the offline behaviour (skip with a reason, never a socket)."""

from __future__ import annotations

import gzip
import os
import pickle
import struct

import numpy as np
import pytest

import tasks
from tasks import keras_data

N_TRAIN, N_TEST = 12, 5


def _images(n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def _labels(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 10, size=n).astype(np.uint8)


def _write_mnist(directory: str) -> dict[str, np.ndarray]:
    arrays = {
        "x_train": _images(N_TRAIN, (28, 28), 1),
        "y_train": _labels(N_TRAIN, 2),
        "x_test": _images(N_TEST, (28, 28), 3),
        "y_test": _labels(N_TEST, 4),
    }
    np.savez_compressed(os.path.join(directory, "mnist.npz"), **arrays)
    return arrays


def _write_idx(path: str, array: np.ndarray) -> None:
    """IDX format as in the Fashion-MNIST files: magic, sizes (big-endian), then bytes."""
    magic = 2049 if array.ndim == 1 else 2051
    header = struct.pack(">II", magic, array.shape[0])
    if array.ndim == 3:
        header += struct.pack(">II", *array.shape[1:])
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def _write_fashion(directory: str) -> dict[str, np.ndarray]:
    folder = os.path.join(directory, "fashion-mnist")
    os.makedirs(folder)
    arrays = {
        "y_train": _labels(N_TRAIN, 5),
        "x_train": _images(N_TRAIN, (28, 28), 6),
        "y_test": _labels(N_TEST, 7),
        "x_test": _images(N_TEST, (28, 28), 8),
    }
    for name, key in zip(keras_data.FASHION_FILES, ("y_train", "x_train", "y_test", "x_test"), strict=True):
        _write_idx(os.path.join(folder, name), arrays[key])
    return arrays


def _write_cifar(directory: str) -> dict[str, np.ndarray]:
    """Pickled batches as in cifar-10-python.tar.gz: bytes keys, data (N, 3072) channels first."""
    folder = os.path.join(directory, "cifar-10-batches-py-target", "cifar-10-batches-py")
    os.makedirs(folder)
    xs, ys = [], []
    for i, name in enumerate(keras_data.CIFAR_FILES):
        n = 2 if name != "test_batch" else N_TEST
        data = _images(n, (3 * 32 * 32,), 10 + i)
        labels = [int(v) for v in _labels(n, 20 + i)]
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump({b"batch_label": b"x", b"labels": labels, b"data": data, b"filenames": []}, f)
        xs.append(data.reshape(n, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(np.array(labels, dtype=np.uint8))
    return {
        "x_train": np.concatenate(xs[:-1]), "y_train": np.concatenate(ys[:-1]),
        "x_test": xs[-1], "y_test": ys[-1],
    }


WRITERS = {"mnist": _write_mnist, "fashion_mnist": _write_fashion, "cifar10": _write_cifar}


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(keras_data.DATA_ENV, str(tmp_path))
    monkeypatch.delenv(keras_data.DOWNLOAD_ENV, raising=False)
    return tmp_path


def _fresh_task(name: str) -> tasks.Task:
    """A copy of the registered task with its own (empty) data memo, so stand-ins never leak."""
    registered = tasks.get_task(name)
    source = {"mnist": keras_data.MNIST_SOURCE, "fashion_mnist": keras_data.FASHION_SOURCE,
              "cifar10": keras_data.CIFAR10_SOURCE}[name]
    return tasks.Task(
        name, description=registered.description, num_classes=10, input_shape=registered.input_shape,
        load=source.load, build=registered._build, training=registered.training,
        variants=registered.variants, available=source.unavailable_reason,
    )


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_loader_reads_standin_files(name: str, data_dir) -> None:
    arrays = WRITERS[name](str(data_dir))
    task = _fresh_task(name)
    assert task.unavailable_reason() is None
    (xtr, ytr), (xte, yte) = task.train_data(), task.test_data()
    assert xtr.dtype == np.float32 and ytr.dtype == np.int32
    assert xtr.shape == (len(arrays["y_train"]), *task.input_shape)
    assert xte.shape == (len(arrays["y_test"]), *task.input_shape)
    expected_x = arrays["x_train"].reshape(xtr.shape).astype(np.float32) / 255.0
    np.testing.assert_array_equal(xtr, expected_x)
    np.testing.assert_array_equal(yte, arrays["y_test"].astype(np.int32))
    assert 0.0 <= xtr.min() and xtr.max() <= 1.0
    model = task.build_model(0, task.variants[0])
    assert model(xte[:2]).shape == (2, 10)


def test_cifar_reader_matches_keras(data_dir) -> None:
    """Keras' own batch parser reads our stand-in the same way (format check)."""
    cifar = pytest.importorskip("keras.src.datasets.cifar")
    _write_cifar(str(data_dir))
    path = os.path.join(str(data_dir), "cifar-10-batches-py-target", "cifar-10-batches-py", "test_batch")
    theirs_x, theirs_y = cifar.load_batch(path)
    ours_x, ours_y = keras_data._read_cifar_batch(path)
    np.testing.assert_array_equal(ours_x, theirs_x.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(ours_y, np.asarray(theirs_y, dtype=np.uint8))


def test_cifar_reader_refuses_arbitrary_pickles(data_dir) -> None:
    folder = os.path.join(str(data_dir), "cifar-10-batches-py")
    os.makedirs(folder)
    path = os.path.join(folder, "test_batch")
    with open(path, "wb") as f:
        pickle.dump({b"data": os.system, b"labels": []}, f)
    with pytest.raises(pickle.UnpicklingError, match="Refusing to unpickle"):
        keras_data._read_cifar_batch(path)


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_offline_without_files_skips_with_reason(name: str, data_dir) -> None:
    """No files and downloads off: a clear reason, DatasetUnavailable, and no socket opened
    (the root conftest's guard would fail this test on any connection attempt)."""
    task = _fresh_task(name)
    reason = task.unavailable_reason()
    assert reason is not None and name in reason and "downloads are off" in reason
    assert str(data_dir) in reason
    with pytest.raises(tasks.DatasetUnavailable, match="not on this machine"):
        task.train_data()
    with pytest.raises(tasks.DatasetUnavailable, match="not on this machine"):
        tasks.trained(task, cache=False)


def test_registered_keras_tasks_report_availability(data_dir) -> None:
    for name in WRITERS:
        reason = tasks.get_task(name).unavailable_reason()
        assert reason is not None and "IMPORTANCE_BENCH_DOWNLOAD=1" in reason


def test_benchmark_style_skip(data_dir) -> None:
    """What a benchmark does with an offline task: skip with the task's reason."""
    reason = tasks.get_task("cifar10").unavailable_reason()
    with pytest.raises(pytest.skip.Exception, match="cifar10: the keras.datasets files"):
        pytest.skip(reason)
