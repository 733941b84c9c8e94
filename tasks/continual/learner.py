"""A sequential learner: tasks learned one after the other by one network, every task evaluated
after every epoch (the original project's continual-learning set-up).

The network is a shared base (an MLP, Keras functional API) with either one head per task
(``heads="per_task"``: task-incremental; task ``t``'s model is ``head_t(base(x))``, the base's
layers shared) or one head for all tasks (``heads="shared"``: one model). Only the base is
*penalised* by a consolidation strategy; a task's own head is free. ::

    from importance.continual import Consolidator
    from tasks.continual import SequentialLearner, prepare_sequence, split_evenodd

    learner = SequentialLearner(prepare_sequence(split_evenodd()), seed=0)
    learner.learn(Consolidator("ewc", measure="fisher", lam=100.0))
    learner.history                  # tidy: epoch, trained, evaluated, split, loss, accuracy
    learner.accuracy_matrix()        # R[i, j]: test accuracy on task j after training task i
    # the figure: reports.plot_task_accuracy({"ewc": learner.history}, "accuracy.png")

**Checks before any work.** The learner, :func:`prepare_sequence` and :meth:`SequentialLearner.learn`
check their arguments through :mod:`importance.checks` and :mod:`importance.validation` before
anything trains: an empty sequence, task indices out of range, NaN/inf inputs, labels outside a
task's classes, ``measure_examples`` that is not a positive integer or exceeds a task's training
split, a bad ``init``; every message names the argument, the bad value and what was expected.

**State after an error or Ctrl-C.** If :meth:`SequentialLearner.train_task` raises or is
interrupted, every weight of the network (base and all heads) and the history are restored to
what they were before that task began. :meth:`SequentialLearner.learn` is all or nothing: if
anything raises inside it (training, a measure between two tasks, the strategy), the learner's
weights, history and progress, and the strategy's anchors, are restored bitwise to what they
were when ``learn`` was called, and the exception propagates.
:func:`tasks.continual.lambda_search.search_lambda` puts the learner back at its starting point
whatever happens.

**Initialisation** (``init=``) is a stated, recorded choice, because it changes the verdict of
the consolidation benchmark (issue 22: L2 against EWC flips with it): ``"keras"`` (Keras'
defaults: Glorot-uniform kernels, zero biases) or ``"pytorch"`` (PyTorch's default
``nn.Linear`` initialisation: ``kaiming_uniform_(a=sqrt(5))`` kernels, i.e.
``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, and biases ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
import pandas as pd

from importance.checks import check_choice, check_int, check_number, check_positive_int, check_seed
from importance.data import evaluate
from importance.validation import check_inputs, split_xy
from tasks.datasets import stratified_split
from tasks.registry import OPTIMIZERS
from tasks.trainer import train

HEADS = ("shared", "per_task")
INITS = ("keras", "pytorch")
HISTORY_COLUMNS = ["epoch", "trained", "evaluated", "split", "loss", "accuracy"]
SPLITS = ("train", "validation", "test")
Split = tuple[np.ndarray, np.ndarray]


@dataclasses.dataclass(frozen=True)
class TaskData:
    """One task of a sequence: its name, classes and train / validation / test arrays."""

    name: str
    num_classes: int
    train: Split
    validation: Split
    test: Split


def check_task_data(task: Any, *, index: int = 0, name: str = "tasks") -> TaskData:
    """``task`` checked: a :class:`TaskData` whose three splits are finite ``(x, y)`` arrays with
    labels in ``[0, num_classes)`` (through :mod:`importance.validation`); returned with its
    splits as checked arrays (int32 labels).

    Raises:
        TypeError: Not a :class:`TaskData`, or a split that is not an ``(x, y)`` pair.
        ValueError: An empty split, NaN/inf inputs, labels out of range, ``num_classes < 2``.
    """
    if not isinstance(task, TaskData):
        raise TypeError(f"{name}[{index}] must be a TaskData (from prepare_sequence). "
                        f"Received: {type(task).__name__}")
    classes = check_int(f"{name}[{index}].num_classes", task.num_classes, minimum=2)
    splits = {}
    for split in SPLITS:
        label = f"{name}[{index}] ({task.name!r}).{split}"
        try:
            x, y = split_xy(getattr(task, split), classes=classes)
            check_inputs(x, name=label)
        except (TypeError, ValueError) as error:
            raise type(error)(f"{label}: {error}") from None
        splits[split] = (x, y)
    return TaskData(task.name, classes, **splits)


def prepare_sequence(
    tasks: Sequence[Any], *, validation_fraction: float = 0.2, max_train: int | None = None,
    max_test: int | None = None, heads: str = "shared",
    splits: Sequence[Any] | None = None,
) -> list[TaskData]:
    """Load ``tasks`` (:class:`tasks.Task`) and carve a validation split from each training set.

    The validation examples come from the training data (stratified, seeded), never from the
    test split; ``max_train`` / ``max_test`` keep a stratified subset first.

    Args:
        tasks: The tasks in training order (:class:`tasks.Task`, or :class:`TaskData` kept as
            given after its checks).
        validation_fraction: Share of each training set carved out for validation, in (0, 1).
        max_train, max_test: Stratified subset sizes (None: everything).
        heads: ``"shared"`` (every task needs the same classes) or ``"per_task"``.
        splits: The researcher's own splits, one per task, used as given instead of loading
            and carving: a mapping with ``"train"``, ``"validation"`` and optionally ``"test"``
            (default: the task's test data), or a ``(train, validation, test)`` triple; each an
            ``(x, y)`` pair. ``validation_fraction``, ``max_train`` and ``max_test`` are then
            ignored.

    Raises:
        ValueError: No task, tasks with different input shapes, different class counts with
            ``heads="shared"``, a bad fraction or size, ``splits`` of another length than
            ``tasks``, or bad data in a split (NaN/inf inputs, labels out of range).
    """
    check_choice("heads", heads, HEADS)
    if isinstance(tasks, (str, bytes)) or not isinstance(tasks, Sequence):
        raise TypeError(f"tasks must be a sequence of tasks. Received: {tasks!r}")
    if not tasks:
        raise ValueError("tasks must hold at least one task. Received: an empty sequence")
    ok = check_number("validation_fraction", validation_fraction, minimum=0, strict=True) < 1
    if not ok:
        raise ValueError(f"validation_fraction must be in (0, 1). Received: {validation_fraction!r}")
    for size_name, size in (("max_train", max_train), ("max_test", max_test)):
        if size is not None:
            check_int(size_name, size, minimum=2)
    if splits is not None and (isinstance(splits, (str, bytes, Mapping))
                               or not isinstance(splits, Sequence) or len(splits) != len(tasks)):
        count = len(splits) if isinstance(splits, Sequence) else splits
        raise ValueError(f"splits must hold one entry per task ({len(tasks)}). Received: {count!r}")
    first = tasks[0]
    out = []
    for index, task in enumerate(tasks):
        if _shape(task) != _shape(first):
            raise ValueError(f"tasks must share one input shape: task {task.name!r} has "
                             f"{tuple(_shape(task))}, expected {tuple(_shape(first))}")
        if heads == "shared" and task.num_classes != first.num_classes:
            raise ValueError(f"heads='shared' needs the same classes in every task: task {task.name!r} "
                             f"has {task.num_classes}, expected {first.num_classes}")
        if isinstance(task, TaskData):
            out.append(check_task_data(task, index=index))
            continue
        if splits is not None:
            fit, validation, test_xy = _explicit(splits[index], task, index)
        else:
            train_xy = _subset(*task.train_data(), max_train)
            test_xy = _subset(*task.test_data(), max_test)
            n_val = max(1, int(round(validation_fraction * len(train_xy[1]))))
            fit, validation = stratified_split(*train_xy, test_size=n_val)
        data = TaskData(task.name, int(task.num_classes), fit, validation, test_xy)
        out.append(check_task_data(data, index=index))
    return out


def _shape(task: Any) -> tuple[int, ...]:
    return tuple(task.train[0].shape[1:]) if isinstance(task, TaskData) else tuple(task.input_shape)


def _explicit(entry: Any, task: Any, index: int) -> tuple[Split, Split, Split]:
    if isinstance(entry, Mapping):
        unknown = set(entry) - set(SPLITS)
        if unknown or "train" not in entry or "validation" not in entry:
            raise ValueError(f"splits[{index}] must have keys 'train', 'validation' and optionally "
                             f"'test'. Received keys: {sorted(entry)}")
        test = entry.get("test")
        return entry["train"], entry["validation"], task.test_data() if test is None else test
    if isinstance(entry, Sequence) and len(entry) == 3:
        return tuple(entry)
    raise TypeError(f"splits[{index}] must be a mapping or a (train, validation, test) triple. "
                    f"Received: {type(entry).__name__}")


def _subset(x: np.ndarray, y: np.ndarray, size: int | None) -> Split:
    if size is None or size >= len(y):
        return x, y
    kept, _ = stratified_split(x, y, test_size=len(y) - size)
    return kept


def _initializers(init: str, seed: int, fan_in: int) -> dict[str, Any]:
    """Kernel and bias initialisers of one Dense layer (``seed`` distinct per layer)."""
    if init == "keras":
        return {"kernel_initializer": keras.initializers.GlorotUniform(seed=seed),
                "bias_initializer": "zeros"}
    # PyTorch nn.Linear.reset_parameters: kaiming_uniform_(a=sqrt(5)) gives the bound
    # gain * sqrt(3 / fan_in) with gain = sqrt(2 / (1 + 5)), i.e. 1 / sqrt(fan_in); the bias is
    # U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    bound = 1.0 / math.sqrt(fan_in)
    return {"kernel_initializer": keras.initializers.RandomUniform(-bound, bound, seed=seed),
            "bias_initializer": keras.initializers.RandomUniform(-bound, bound, seed=seed + 500)}


class SequentialLearner:
    """Shared base + heads, trained task after task; every task evaluated after every epoch.

    Args:
        tasks: The sequence, from :func:`prepare_sequence` (a non-empty list of
            :class:`TaskData`).
        heads: ``"shared"`` (one head) or ``"per_task"`` (one head per task).
        hidden: Widths of the base's ReLU layers (at least one layer).
        seed: Seeds the initial weights and every task's shuffling.
        epochs, batch_size, learning_rate, optimizer: Training of each task.
        measure_examples: Training examples of a task given to a post-hoc measure: None (the
            default) gives the whole training split of the task; an integer gives its first
            ``measure_examples`` examples (at most the smallest task's training split). What
            each importance saw is kept in :attr:`measure_seen`.
        init: ``"keras"`` (Glorot-uniform kernels, zero biases) or ``"pytorch"`` (PyTorch's
            ``nn.Linear`` default, see the module docstring).
        evaluate_every_epoch: Evaluate every task after every epoch (the history behind the
            accuracy-over-epochs plot); False evaluates only before training and at the end of
            each task (the accuracy matrix needs no more), about a quarter of a run's time less.

    Attributes:
        measure_seen: Task index -> number of examples its post-hoc importance was computed on
            (filled by :meth:`learn`; online measures read the training trajectory instead).

    Raises:
        ValueError: A bad option, naming it and the received value (before anything is built).
        TypeError: ``tasks`` that are not :class:`TaskData`.
    """

    def __init__(self, tasks: Sequence[TaskData], *, heads: str = "shared", hidden: Sequence[int] = (100,),
                 seed: int = 0, epochs: int = 3, batch_size: int = 64, learning_rate: float = 1e-3,
                 optimizer: str = "adam", measure_examples: int | None = None, init: str = "keras",
                 evaluate_every_epoch: bool = True):
        check_choice("heads", heads, HEADS)
        check_choice("init", init, INITS)
        check_choice("optimizer", optimizer, OPTIMIZERS)
        if isinstance(tasks, (str, bytes)) or not isinstance(tasks, Sequence):
            raise TypeError(f"tasks must be a sequence of TaskData. Received: {tasks!r}")
        if not tasks:
            raise ValueError("tasks must hold at least one task. Received: an empty sequence")
        if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence) or not hidden:
            raise ValueError("hidden must be a non-empty sequence of layer widths. "
                             f"Received: {hidden!r}")
        hidden = [check_positive_int(f"hidden[{i}]", w) for i, w in enumerate(hidden)]
        if not isinstance(evaluate_every_epoch, bool):
            raise ValueError(f"evaluate_every_epoch must be True or False. "
                             f"Received: {evaluate_every_epoch!r}")
        self.tasks = [check_task_data(t, index=i) for i, t in enumerate(tasks)]
        shape = self.tasks[0].train[0].shape[1:]
        for i, task in enumerate(self.tasks):
            if task.train[0].shape[1:] != shape:
                raise ValueError(f"tasks must share one input shape: tasks[{i}] ({task.name!r}) has "
                                 f"{task.train[0].shape[1:]}, expected {shape}")
            if heads == "shared" and task.num_classes != self.tasks[0].num_classes:
                raise ValueError(f"heads='shared' needs the same classes in every task: tasks[{i}] "
                                 f"({task.name!r}) has {task.num_classes}, expected "
                                 f"{self.tasks[0].num_classes}")
        self.heads, self.seed, self.init = heads, check_seed(seed), init
        self.training = dict(epochs=check_positive_int("epochs", epochs),
                             batch_size=check_positive_int("batch_size", batch_size),
                             learning_rate=check_number("learning_rate", learning_rate, minimum=0,
                                                        strict=True),
                             optimizer=optimizer)
        smallest = min(self.tasks, key=lambda task: len(task.train[1]))
        if measure_examples is not None:
            check_positive_int("measure_examples", measure_examples, allow_none=True)
            if measure_examples > len(smallest.train[1]):
                raise ValueError(
                    f"measure_examples must be at most the training examples of every task "
                    f"(task {smallest.name!r} has {len(smallest.train[1])}) or None for the whole "
                    f"task. Received: {measure_examples!r}")
            measure_examples = int(measure_examples)
        self.measure_examples = measure_examples
        self.evaluate_every_epoch = evaluate_every_epoch
        self.measure_seen: dict[int, int] = {}
        inputs = keras.Input(shape=shape, name="inputs")
        h = keras.layers.Flatten(name="flatten")(inputs)
        fan_in = int(np.prod(shape))
        for i, width in enumerate(hidden):
            h = keras.layers.Dense(width, activation="relu", name=f"base_{i}",
                                   **_initializers(init, self.seed * 1000 + i, fan_in))(h)
            fan_in = width
        count = 1 if heads == "shared" else len(self.tasks)
        self.models = [
            keras.Model(inputs, keras.layers.Dense(
                self.tasks[t].num_classes, name=f"head_{t}",
                **_initializers(init, self.seed * 1000 + 100 + t, fan_in))(h), name=f"task_{t}")
            for t in range(count)
        ]
        self._base = {id(w) for w in self.models[0].trainable_weights[: 2 * len(hidden)]}
        self.tasks_done, self.epochs_done = 0, 0
        self._rows: list[dict[str, Any]] = []

    def check_task(self, t: Any, *, name: str = "t") -> int:
        """``t`` as an int if it is a task index of the sequence.

        Raises:
            ValueError: ``"t must be a task index in [0, T). Received: 5"``.
        """
        from importance.checks import is_integer

        if not is_integer(t) or not 0 <= t < len(self.tasks):
            raise ValueError(f"{name} must be a task index in [0, {len(self.tasks)}). Received: {t!r}")
        return int(t)

    def model(self, t: int) -> keras.Model:
        """Task ``t``'s model (the one model with a shared head)."""
        t = self.check_task(t)
        return self.models[0 if self.heads == "shared" else t]

    def penalised(self, t: int) -> list[bool]:
        """One flag per trainable weight of task ``t``'s model: shared (penalised) or not."""
        if self.heads == "shared":
            return [True] * len(self.model(t).trainable_weights)
        return [id(w) in self._base for w in self.model(t).trainable_weights]

    def measure_data(self, t: int) -> Split:
        """Task ``t``'s training examples for post-hoc measures: all of them (``measure_examples``
        None) or the first ``measure_examples``."""
        x, y = self.tasks[self.check_task(t)].train
        return x[: self.measure_examples], y[: self.measure_examples]

    def state(self) -> dict[str, Any]:
        """Everything :meth:`set_state` needs to go back to this point."""
        weights = {id(w): np.array(w.numpy()) for m in self.models for w in m.weights}
        return {"weights": weights, "rows": list(self._rows), "tasks_done": self.tasks_done,
                "epochs_done": self.epochs_done, "measure_seen": dict(self.measure_seen)}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore weights, history and progress saved by :meth:`state`."""
        for m in self.models:
            for w in m.weights:
                w.assign(state["weights"][id(w)])
        self._rows = list(state["rows"])
        self.tasks_done, self.epochs_done = state["tasks_done"], state["epochs_done"]
        self.measure_seen = dict(state.get("measure_seen", {}))

    def train_task(self, t: int, *, data: Split | None = None, penalty: Any = None, recorder: Any = None) -> None:
        """Train task ``t`` (on ``data``, default its training split); evaluate every task after
        each epoch (or only at the end with ``evaluate_every_epoch=False``)."""
        t = self.check_task(t)
        if t != self.tasks_done:
            raise ValueError(f"task index must be the next task, {self.tasks_done}. Received: {t!r}")
        before = self.state()
        epochs = self.training["epochs"]
        try:
            if not self._rows:  # epoch 0: every task before any training
                self._evaluate_all(trained=t, epoch=0)
            start = self.epochs_done
            every = self.evaluate_every_epoch
            train(self.model(t), data if data is not None else self.tasks[t].train, seed=self.seed * 100 + t,
                  recorder=recorder, penalty=penalty,
                  on_epoch_end=(lambda e, logs: self._evaluate_all(trained=t, epoch=start + e + 1))
                  if every else None, **self.training)
            if not every:
                self._evaluate_all(trained=t, epoch=start + epochs)
        except BaseException:
            self.set_state(before)
            raise
        self.tasks_done += 1

    def _evaluate_all(self, *, trained: int, epoch: int) -> None:
        """One history row per task and split at ``epoch`` (0: before training)."""
        for j, task in enumerate(self.tasks):
            for split in ("validation", "test"):
                loss, accuracy = evaluate(self.model(j), getattr(task, split))
                self._rows.append(dict(epoch=epoch, trained=self.tasks[trained].name, evaluated=task.name,
                                       split=split, loss=loss, accuracy=accuracy))
        self.epochs_done = epoch

    def learn(self, strategy: Any, *, omega: dict[int, list[np.ndarray]] | None = None,
              recorder: Any = None) -> None:
        """Learn the remaining tasks in order with a :class:`importance.continual.Strategy`.

        Args:
            strategy: The strategy (e.g. ``Consolidator("ewc", ...)``); it chooses each task's
                training data (``joint``: all data seen so far) and what is kept between tasks.
            omega: Precomputed normalised importance per finished task index (reused across lambdas).
            recorder: The recorder of the last finished task, for an online measure.

        With an online measure every task but the last is trained with a new recorder (attached
        to its model by :func:`importance.track`); the last task's importance is never computed,
        so it is not recorded. All or nothing: if anything raises, the learner and the strategy's
        anchors are restored to what they were when ``learn`` was called.

        Raises:
            TypeError: ``strategy`` is not a :class:`importance.continual.Strategy`.
            ValueError: A strategy that does not support the learner's heads (``joint`` with
                per-task heads), or ``omega`` keyed by something else than finished task indices.
        """
        import importance
        from importance.continual import Strategy

        if not isinstance(strategy, Strategy):
            raise TypeError("strategy must be an importance.continual.Strategy (e.g. "
                            f"Consolidator('ewc', measure='fisher')). Received: {strategy!r}")
        if self.heads not in strategy.supported_heads:
            needed = strategy.supported_heads[0]
            raise ValueError(f"strategy {strategy.name!r} needs heads={needed!r}. "
                             f"Received: heads={self.heads!r}")
        omega = dict(omega or {})
        for t in omega:
            self.check_task(t, name="omega key")
        before, terms = self.state(), list(strategy.terms)
        try:
            if self.tasks_done:
                self._consolidate(strategy, self.tasks_done - 1, omega, recorder)
            for t in range(self.tasks_done, len(self.tasks)):
                data = strategy.training_data([task.train for task in self.tasks[: t + 1]])
                # Record only a task whose importance will be computed (not the last): a new
                # recorder is part of the trainer's compiled graph, so it would cost a trace.
                last = t + 1 == len(self.tasks)
                recorder = (importance.track(self.model(t), [strategy.measure], patch_fit=False)
                            if strategy.needs_recorder and not last else None)
                penalty = strategy.penalty if strategy.active else None
                self.train_task(t, data=data, penalty=penalty, recorder=recorder)
                if not last:
                    self._consolidate(strategy, t, omega, recorder)
        except BaseException:
            self.set_state(before)
            strategy.terms = terms
            raise

    def _consolidate(self, strategy: Any, t: int, omega: dict, recorder: Any) -> None:
        data = self.measure_data(t)
        strategy.consolidate(self.model(t), self.penalised(t), data=data,
                             recorder=recorder, omega=omega.get(t))
        if strategy.uses_measure and not strategy.needs_recorder:
            self.measure_seen[t] = len(data[1])

    @property
    def history(self) -> pd.DataFrame:
        """Tidy history: one row per epoch, trained task, evaluated task and split."""
        return pd.DataFrame(self._rows, columns=HISTORY_COLUMNS)

    def accuracy_matrix(self, split: str = "test") -> np.ndarray:
        """``R[i, j]``: accuracy on task ``j`` at the end of training task ``i`` (finished tasks)."""
        check_choice("split", split, ("validation", "test"))
        frame = self.history[self.history["split"] == split]
        names = [t.name for t in self.tasks]
        R = np.zeros((self.tasks_done, len(names)))
        for i in range(self.tasks_done):
            last = frame[frame["trained"] == names[i]]["epoch"].max()
            at = frame[frame["epoch"] == last].set_index("evaluated")["accuracy"]
            R[i] = [at[n] for n in names]
        return R
