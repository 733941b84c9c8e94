"""Full MNIST, Fashion-MNIST and CIFAR-10 from the files ``keras.datasets`` keeps, offline.

``keras.datasets.<name>.load_data()`` downloads into ``~/.keras/datasets`` (or ``$KERAS_HOME``).
These loaders read the same files in the same formats *without* going through the network:

* ``mnist``: ``mnist.npz`` with uint8 arrays ``x_train``, ``y_train``, ``x_test``, ``y_test``;
* ``fashion_mnist``: ``fashion-mnist/{train,t10k}-{labels-idx1,images-idx3}-ubyte.gz`` (IDX files,
  8-byte label header, 16-byte image header);
* ``cifar10``: ``cifar-10-batches-py-target/cifar-10-batches-py/`` (Keras 3) or
  ``cifar-10-batches-py/`` (older Keras), pickled batches ``data_batch_1..5`` and ``test_batch``
  with keys ``data`` (uint8, ``(N, 3072)``, channels first) and ``labels``.

The directory searched is ``$IMPORTANCE_BENCH_DATA`` when set, else Keras' cache directories.
When the files are missing, the task raises :class:`tasks.DatasetUnavailable` with the reason,
unless ``IMPORTANCE_BENCH_DOWNLOAD=1`` allows ``keras.datasets`` to download them.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np

from tasks import applications, models
from tasks.registry import DatasetUnavailable, Task, TrainingSettings, register_task

DATA_ENV = "IMPORTANCE_BENCH_DATA"
DOWNLOAD_ENV = "IMPORTANCE_BENCH_DOWNLOAD"
FASHION_FILES = (
    "train-labels-idx1-ubyte.gz",
    "train-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
)
CIFAR_DIRS = ("cifar-10-batches-py-target/cifar-10-batches-py", "cifar-10-batches-py")
CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)

Splits = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def data_dirs() -> list[str]:
    """Directories searched for dataset files, in order."""
    if os.environ.get(DATA_ENV):
        return [os.path.expanduser(os.environ[DATA_ENV])]
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return [os.path.join(home, "datasets"), os.path.join("/tmp", ".keras", "datasets")]


def read_mnist_npz(path: str) -> Splits:
    """Read Keras' ``mnist.npz``: uint8 ``(N, 28, 28)`` images and labels."""
    with np.load(path, allow_pickle=False) as f:
        return (f["x_train"], f["y_train"]), (f["x_test"], f["y_test"])


def _read_idx(path: str, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


def read_fashion_dir(directory: str) -> Splits:
    """Read Keras' Fashion-MNIST IDX ``.gz`` files from ``directory``."""
    paths = [os.path.join(directory, name) for name in FASHION_FILES]
    y_train, y_test = _read_idx(paths[0], 8), _read_idx(paths[2], 8)
    x_train = _read_idx(paths[1], 16).reshape(len(y_train), 28, 28)
    x_test = _read_idx(paths[3], 16).reshape(len(y_test), 28, 28)
    return (x_train, y_train), (x_test, y_test)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only NumPy arrays and plain containers (the CIFAR batches hold nothing else)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"Refusing to unpickle {module}.{name} from a CIFAR batch.")
        if module == "numpy.core.multiarray":
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def _read_cifar_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        batch = _ArrayUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
    batch = {k.decode("utf8") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return data, np.asarray(batch["labels"], dtype=np.uint8)


def read_cifar10_dir(directory: str) -> Splits:
    """Read CIFAR-10's pickled batches from ``directory``: uint8 ``(N, 32, 32, 3)`` images."""
    parts = [_read_cifar_batch(os.path.join(directory, name)) for name in CIFAR_FILES]
    x_train = np.concatenate([p[0] for p in parts[:-1]])
    y_train = np.concatenate([p[1] for p in parts[:-1]])
    return (x_train, y_train), parts[-1]


def _find(relative: tuple[str, ...], required: tuple[str, ...] = ()) -> str | None:
    """First existing ``dir/rel`` (with all ``required`` files inside) over the data dirs."""
    for base in data_dirs():
        for rel in relative:
            path = os.path.join(base, rel)
            if os.path.exists(path) and all(os.path.exists(os.path.join(path, r)) for r in required):
                return path
    return None


class _KerasDataset:
    """Locates, reads and scales one ``keras.datasets`` dataset."""

    def __init__(self, name: str, relative: tuple[str, ...], required: tuple[str, ...], reader: Callable[[str], Splits]):
        self.name, self.relative, self.required, self.reader = name, relative, required, reader

    def unavailable_reason(self) -> str | None:
        if _find(self.relative, self.required) is not None or os.environ.get(DOWNLOAD_ENV) == "1":
            return None
        where = " or ".join(os.path.join(d, self.relative[0]) for d in data_dirs())
        return (
            f"{self.name}: the keras.datasets files are not on this machine ({where} not found) "
            f"and downloads are off. Run keras.datasets.{self.name}.load_data() once with network, "
            f"or set {DOWNLOAD_ENV}=1."
        )

    def load(self) -> Splits:
        path = _find(self.relative, self.required)
        if path is not None:
            (xtr, ytr), (xte, yte) = self.reader(path)
        elif os.environ.get(DOWNLOAD_ENV) == "1":
            import keras

            (xtr, ytr), (xte, yte) = getattr(keras.datasets, self.name).load_data()
        else:
            raise DatasetUnavailable(self.unavailable_reason())
        return _scale(xtr, ytr), _scale(xte, yte)


def _scale(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float32) / 255.0
    if x.ndim == 3:
        x = x[..., None]
    return x, np.asarray(y).reshape(-1).astype(np.int32)


def _register(name: str, source: _KerasDataset, input_shape: tuple[int, ...], description: str, variants: tuple[str, ...], training: TrainingSettings, variant_training: dict[str, TrainingSettings]) -> Task:
    def build(seed: int, variant: str) -> Any:
        if variant in applications.APPLICATIONS:  # keras.applications networks, weights=None
            return applications.application(
                variant, input_shape, 10, seed=seed, name=f"{name}_{variant}"
            )
        if variant == "cnn":
            filters = (32, 64) if input_shape[-1] == 3 else (16, 32)
            return models.cnn(input_shape, 10, filters=filters, dense=128, seed=seed, name=f"{name}_cnn")
        return models.mlp(input_shape, 10, hidden=(256, 128), seed=seed, name=f"{name}_mlp")

    return register_task(
        Task(
            name,
            description=description,
            num_classes=10,
            input_shape=input_shape,
            load=source.load,
            build=build,
            variants=variants,
            training=training,
            variant_training=variant_training,
            available=source.unavailable_reason,
        )
    )


_MLP = TrainingSettings(epochs=5, batch_size=128, learning_rate=1e-3)
_CNN = TrainingSettings(epochs=4, batch_size=128, learning_rate=1e-3)

MNIST_SOURCE = _KerasDataset("mnist", ("mnist.npz",), (), read_mnist_npz)
FASHION_SOURCE = _KerasDataset("fashion_mnist", ("fashion-mnist",), FASHION_FILES, read_fashion_dir)
CIFAR10_SOURCE = _KerasDataset("cifar10", CIFAR_DIRS, CIFAR_FILES, read_cifar10_dir)

MNIST = _register(
    "mnist", MNIST_SOURCE, (28, 28, 1),
    "Full MNIST (60,000 / 10,000) from keras.datasets' files; skipped offline without them.",
    ("mlp", "cnn"), _MLP, {"cnn": _CNN},
)
FASHION_MNIST = _register(
    "fashion_mnist", FASHION_SOURCE, (28, 28, 1),
    "Fashion-MNIST (60,000 / 10,000) from keras.datasets' files; skipped offline without them.",
    ("mlp", "cnn"), _MLP, {"cnn": _CNN},
)
CIFAR10 = _register(
    "cifar10", CIFAR10_SOURCE, (32, 32, 3),
    "CIFAR-10 (50,000 / 10,000) from keras.datasets' files; skipped offline without them.",
    ("cnn", *applications.APPLICATIONS),
    TrainingSettings(epochs=10, batch_size=128, learning_rate=1e-3), {},
)
