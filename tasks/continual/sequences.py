"""Continual-learning sequences built from the ``mnist5k`` images (offline).

A *sequence* is a list of :class:`tasks.Task` objects learned one after the other by the same
model (same architecture, input shape and number of classes in every task of a sequence):

* ``split_evenodd`` (2 tasks): even digits, then odd digits, label ``floor(d / 2)`` (5 classes),
  as in the EWC tutorial's two-task split.
* ``split_mnist`` (5 tasks): digit pairs (0, 1), (2, 3), ..., (8, 9); label ``d mod 2``
  ("first or second digit of the pair", 2 classes: task-incremental with a head per task,
  domain-incremental with one shared head), or with ``labels="digit"`` the digit itself (10
  classes, one shared head: class-incremental), the three scenarios of Hsu et al. (2018),
  "Re-evaluating continual learning scenarios", and van de Ven & Tolias (2019).
* ``permuted_mnist`` (``num_tasks``, default 3): all ten digits, pixels shuffled by one fixed,
  seeded permutation per task; the first task keeps the original order unless
  ``identity_first=False``.

Each task keeps the ``mnist5k`` train/test split, so the test images of one task never appear in
training of another. The tasks are not in the main registry (the benchmarks would otherwise train
them all); pass them to :func:`tasks.trained` or :func:`tasks.trainer.train` directly::

    for task in tasks.continual_sequence("split_mnist"):
        history = train(model, task.train_data(), **task.training.as_dict())
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from importance.checks import check_choice, check_positive_int
from importance.registry import Registry
from tasks import datasets, models
from tasks.registry import Task, TrainingSettings

SEQUENCES = Registry(
    "sequence", decorator="register_sequence", signature="fn(**options) -> list[Task]"
)
register_sequence = SEQUENCES.register
TRAINING = TrainingSettings(epochs=5, batch_size=64, learning_rate=1e-3)
_SHAPE = (28, 28, 1)

Split = tuple[np.ndarray, np.ndarray]


def _builder(num_classes: int) -> Callable[[int, str], Any]:
    def build(seed: int, variant: str) -> Any:
        return models.mlp(_SHAPE, num_classes, hidden=(256, 128), seed=seed, name="continual_mlp")

    return build


def _select(digits: tuple[int, ...], label: Callable[[np.ndarray], np.ndarray]) -> Callable[[], tuple[Split, Split]]:
    def load() -> tuple[Split, Split]:
        out = []
        for x, y in datasets.mnist5k():
            keep = np.isin(y, digits)
            out.append((x[keep], label(y[keep]).astype(np.int32)))
        return out[0], out[1]

    return load


def _task(name: str, description: str, num_classes: int, load: Callable[[], tuple[Split, Split]]) -> Task:
    return Task(
        name,
        description=description,
        num_classes=num_classes,
        input_shape=_SHAPE,
        load=load,
        build=_builder(num_classes),
        training=TRAINING,
    )


@register_sequence
def split_evenodd() -> list[Task]:
    """Two tasks: even digits then odd digits, label ``d // 2`` (5 classes)."""
    return [
        _task(
            f"split_evenodd_{i}",
            f"mnist5k {kind} digits, label floor(d/2) (task {i + 1} of 2).",
            5,
            _select(tuple(range(i, 10, 2)), lambda y: y // 2),
        )
        for i, kind in enumerate(("even", "odd"))
    ]


@register_sequence
def split_mnist(*, labels: str = "pair") -> list[Task]:
    """Five tasks: digit pairs (2t, 2t + 1); label ``d mod 2`` (``labels="pair"``, 2 classes) or
    the digit ``d`` (``labels="digit"``, 10 classes: class-incremental).

    Raises:
        ValueError: ``labels`` other than ``"pair"`` or ``"digit"``.
    """
    check_choice("labels", labels, ("pair", "digit"))
    if labels == "digit":
        return [
            _task(f"split_mnist_class_{t}",
                  f"mnist5k digits {2 * t} and {2 * t + 1}, label d of 10 (task {t + 1} of 5).",
                  10, _select((2 * t, 2 * t + 1), lambda y: y))
            for t in range(5)
        ]
    return [
        _task(
            f"split_mnist_{t}",
            f"mnist5k digits {2 * t} vs {2 * t + 1}, label d mod 2 (task {t + 1} of 5).",
            2,
            _select((2 * t, 2 * t + 1), lambda y: y % 2),
        )
        for t in range(5)
    ]


def permutation(index: int, *, seed: int = 0, identity_first: bool = True) -> np.ndarray:
    """The pixel permutation (of 784 positions) of permuted-MNIST task ``index``."""
    if identity_first and index == 0:
        return np.arange(28 * 28)
    return np.random.default_rng([int(seed), int(index)]).permutation(28 * 28)


@register_sequence
def permuted_mnist(num_tasks: int = 3, *, seed: int = 0, identity_first: bool = True) -> list[Task]:
    """``num_tasks`` tasks of all ten digits, each with its own seeded pixel permutation.

    Raises:
        ValueError: If ``num_tasks`` is not a positive integer.
    """
    check_positive_int("num_tasks", num_tasks)

    def loader(perm: np.ndarray) -> Callable[[], tuple[Split, Split]]:
        def load() -> tuple[Split, Split]:
            return tuple(
                (x.reshape(len(x), -1)[:, perm].reshape(x.shape), y) for x, y in datasets.mnist5k()
            )

        return load

    suffix = "" if identity_first else "_all"
    return [
        _task(
            f"permuted_mnist_s{seed}{suffix}_{t}",
            f"mnist5k with pixel permutation {t} (seed {seed}; task {t + 1} of {num_tasks}).",
            10,
            loader(permutation(t, seed=seed, identity_first=identity_first)),
        )
        for t in range(int(num_tasks))
    ]


def continual_sequence(name: str, **options: Any) -> list[Task]:
    """The tasks of the registered sequence ``name``, in training order.

    Raises:
        KeyError: Unknown sequence; the message lists the available ones.
    """
    return SEQUENCES.get(name).fn(**options)


def available_sequences() -> list[str]:
    """Names of the registered continual-learning sequences."""
    return SEQUENCES.names()
