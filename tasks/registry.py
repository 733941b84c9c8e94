"""The task registry: name -> :class:`Task`, on the shared :class:`importance.registry.Registry`.

A task bundles what a benchmark needs to get a trained classifier: its data (offline by default),
a seeded model builder per architecture *variant*, and the training settings that reach a known
quality. Tasks are registered by name, like measures::

    import tasks

    tasks.available_tasks()                 # sorted names
    task = tasks.get_task("mnist5k")
    (x, y) = task.train_data()              # float32 inputs in [0, 1], int32 labels
    model = task.build_model(0, variant="cnn")   # logits out, built, seeded

A package ships tasks as a module in the entry-point group ``importance.tasks`` that calls
:func:`register_task`; it is imported the first time the registry is read.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from importance.checks import check_choice, check_seed
from importance.registry import Registry

OPTIMIZERS = ("adam", "adamw", "sgd", "momentum", "rmsprop")
ENTRY_POINT_GROUP = "importance.tasks"

TASKS = Registry("task", group=ENTRY_POINT_GROUP, decorator="register_task")


class DatasetUnavailable(RuntimeError):
    """A task's data is not on this machine and downloading is not allowed.

    The message says why and how to make it available; benchmarks skip the task with it.
    """


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    """How a task's model is trained by :func:`tasks.trainer.train`.

    Attributes:
        epochs: Passes over the training data.
        batch_size: Examples per optimiser step.
        learning_rate: Step size of the optimiser.
        optimizer: One of ``"adam"``, ``"adamw"``, ``"sgd"``, ``"momentum"``, ``"rmsprop"``.
        weight_decay: Decoupled weight decay (only with ``"adamw"``); it is not part of the task
            loss, so online measures never see it.
    """

    epochs: int
    batch_size: int
    learning_rate: float
    optimizer: str = "adam"
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        check_choice("optimizer", self.optimizer, OPTIMIZERS)

    def as_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (for cache keys and trainer keywords)."""
        return dataclasses.asdict(self)


class Task:
    """A benchmark task: data, a seeded model builder per variant and training settings.

    Args:
        name: Registry name, e.g. ``"mnist5k"``.
        description: One line saying what the task is.
        num_classes: Number of classes (the models' output width).
        input_shape: Shape of one input example, without the batch axis.
        load: Callable returning ``((x_train, y_train), (x_test, y_test))``; called once, lazily.
            It may raise :class:`DatasetUnavailable`.
        build: Callable ``build(seed, variant)`` returning a built Keras model with logits output.
        training: Training settings of the default variant.
        variants: Model variants; the first is the default.
        variant_training: Settings that differ per variant (falls back to ``training``).
        version: Bumped when the data or a model changes, so that cached models are retrained.
        available: Optional cheap check returning None when the data can be loaded, else the
            reason it cannot (without loading it).
        info: Free-form extra facts (e.g. the planted task's ground truth; ``convolutional``
            puts a task named in ``--bench-tasks`` on the explanation axes).
        accuracy_bars: Test accuracy (a fraction) that every seed's trained model of a variant
            must reach, per variant; a variant without one is not checked. The benchmark's
            removal cases check it on the models they rank measures on
            (:func:`benchmarks.thresholding.study.quality_shortfall`), so a training regression
            fails the run instead of ranking measures on an under-trained model.

    Attributes:
        pretrained: False here; True for a task whose model is given trained
            (:func:`tasks.from_model`), which :func:`tasks.trained` returns without training.
    """

    pretrained = False

    def __init__(
        self,
        name: str,
        *,
        description: str,
        num_classes: int,
        input_shape: tuple[int, ...],
        load: Callable[[], tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]],
        build: Callable[[int, str], Any],
        training: TrainingSettings,
        variants: tuple[str, ...] = ("mlp",),
        variant_training: dict[str, TrainingSettings] | None = None,
        version: str = "1",
        available: Callable[[], str | None] | None = None,
        info: dict[str, Any] | None = None,
        accuracy_bars: dict[str, float] | None = None,
    ):
        if not isinstance(name, str) or not name.strip() or "/" in name:
            raise ValueError(f"A task name must be a non-empty string without '/'. Received: {name!r}")
        if not variants:
            raise ValueError(f"A task needs at least one variant. Received: {variants!r}")
        self.name = name
        self.description = description
        self.num_classes = int(num_classes)
        self.input_shape = tuple(int(d) for d in input_shape)
        self.variants = tuple(variants)
        self.training = training
        self.version = str(version)
        self.info = dict(info or {})
        self._variant_training = dict(variant_training or {})
        self._accuracy_bars = dict(accuracy_bars or {})
        for variant, bar in self._accuracy_bars.items():
            self.resolve_variant(variant)
            if isinstance(bar, bool) or not isinstance(bar, (int, float)) or not 0.0 < bar <= 1.0:
                raise ValueError(f"Task {name!r}: the accuracy bar of variant {variant!r} must be a "
                                 f"fraction in (0, 1]. Received: {bar!r}")
        self._load = load
        self._build = build
        self._available = available
        self._data: tuple[Any, Any] | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Task({self.name!r}, classes={self.num_classes}, input_shape={self.input_shape})"

    def resolve_variant(self, variant: str | None) -> str:
        """The variant name to use (the default when None).

        Raises:
            ValueError: If the task has no such variant.
        """
        if variant is None:
            return self.variants[0]
        if variant not in self.variants:
            raise ValueError(
                f"Task {self.name!r} has no variant {variant!r}. Available: {', '.join(self.variants)}"
            )
        return variant

    def training_settings(self, variant: str | None = None) -> TrainingSettings:
        """Training settings of ``variant`` (the default variant when None)."""
        return self._variant_training.get(self.resolve_variant(variant), self.training)

    def accuracy_bar(self, variant: str | None = None) -> float | None:
        """The test accuracy each trained model of ``variant`` must reach (None: not checked)."""
        return self._accuracy_bars.get(self.resolve_variant(variant))

    def unavailable_reason(self) -> str | None:
        """None when the data can be loaded offline, else the reason it cannot."""
        return None if self._available is None else self._available()

    def train_data(self) -> tuple[np.ndarray, np.ndarray]:
        """Training split ``(x float32, y int32)``; the arrays are read-only and shared."""
        return self._splits()[0]

    def test_data(self) -> tuple[np.ndarray, np.ndarray]:
        """Test split ``(x float32, y int32)``; the arrays are read-only and shared."""
        return self._splits()[1]

    def build_model(self, seed: int = 0, variant: str | None = None) -> Any:
        """A new, built Keras model with logits output; same seed, same initial weights."""
        return self._build(check_seed(seed), self.resolve_variant(variant))

    def _splits(self) -> tuple[Any, Any]:
        with self._lock:
            if self._data is None:
                (xtr, ytr), (xte, yte) = self._load()
                self._data = (_frozen(xtr, ytr, self), _frozen(xte, yte, self))
            return self._data


def _frozen(x: np.ndarray, y: np.ndarray, task: Task) -> tuple[np.ndarray, np.ndarray]:
    """Check a split and return it as read-only float32 / int32 arrays."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.ascontiguousarray(y, dtype=np.int32).reshape(-1)
    if x.shape[1:] != task.input_shape or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"Task {task.name!r} loaded x of shape {x.shape} and y of shape {y.shape}; "
            f"expected (N, {', '.join(map(str, task.input_shape))}) and (N,)."
        )
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def register_task(task: Task) -> Task:
    """Add ``task`` to the registry and return it unchanged.

    Raises:
        ValueError: If a task of that name is already registered.
        TypeError: If ``task`` is not a :class:`Task`.
    """
    if not isinstance(task, Task):
        raise TypeError(f"register_task expects a tasks.Task. Received: {type(task).__name__}")
    return TASKS.add(task.name, task)


def unregister_task(name: str) -> None:
    """Remove a task from the registry (for tests and interactive sessions).

    Raises:
        KeyError: If no task has that name.
    """
    TASKS.unregister(name)


def available_tasks() -> list[str]:
    """Sorted names of all registered tasks, built-ins and plugins."""
    return TASKS.names()


def get_task(name: str) -> Task:
    """Look up a task by name.

    Raises:
        KeyError: If the name is unknown; the message lists the available tasks.
    """
    return TASKS.get(name)
