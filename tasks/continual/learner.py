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

**State after an error or Ctrl-C.** If training a task raises or is interrupted, every weight of
the network (base and all heads) and the history are restored to what they were before that
task began; the tasks finished before it are kept, and the exception propagates. If computing
an importance between two tasks raises, nothing has changed yet: the learner stays at the end of
the last finished task and the strategy keeps the anchors it had.
:func:`tasks.continual.lambda_search.search_lambda` puts the learner back at its starting point
whatever happens.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import pandas as pd

from importance.data import evaluate
from tasks.datasets import stratified_split
from tasks.trainer import train

HEADS = ("shared", "per_task")
HISTORY_COLUMNS = ["epoch", "trained", "evaluated", "split", "loss", "accuracy"]
Split = tuple[np.ndarray, np.ndarray]


@dataclasses.dataclass(frozen=True)
class TaskData:
    """One task of a sequence: its name, classes and train / validation / test arrays."""

    name: str
    num_classes: int
    train: Split
    validation: Split
    test: Split


def prepare_sequence(
    tasks: Sequence[Any], *, validation_fraction: float = 0.2, max_train: int | None = None,
    max_test: int | None = None, heads: str = "shared",
) -> list[TaskData]:
    """Load ``tasks`` (:class:`tasks.Task`) and carve a validation split from each training set.

    The validation examples come from the training data (stratified, seeded), never from the
    test split; ``max_train`` / ``max_test`` keep a stratified subset first.

    Raises:
        ValueError: Fewer than one task, tasks with different input shapes, different class
            counts with ``heads="shared"``, or a bad fraction or size.
    """
    if heads not in HEADS:
        raise ValueError(f"heads must be one of {HEADS}. Received: {heads!r}")
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1). Received: {validation_fraction!r}")
    if not tasks:
        raise ValueError("tasks must hold at least one task. Received: an empty sequence")
    first = tasks[0]
    out = []
    for task in tasks:
        if tuple(task.input_shape) != tuple(first.input_shape):
            raise ValueError(f"tasks must share one input shape: task {task.name!r} has "
                             f"{tuple(task.input_shape)}, expected {tuple(first.input_shape)}")
        if heads == "shared" and task.num_classes != first.num_classes:
            raise ValueError(f"heads='shared' needs the same classes in every task: task {task.name!r} "
                             f"has {task.num_classes}, expected {first.num_classes}")
        train_xy = _subset(*task.train_data(), max_train, "max_train")
        test_xy = _subset(*task.test_data(), max_test, "max_test")
        n_val = max(1, int(round(validation_fraction * len(train_xy[1]))))
        fit, validation = stratified_split(*train_xy, test_size=n_val)
        out.append(TaskData(task.name, int(task.num_classes), fit, validation, test_xy))
    return out


def _subset(x: np.ndarray, y: np.ndarray, size: int | None, name: str) -> Split:
    if size is None or size >= len(y):
        return x, y
    if isinstance(size, bool) or not isinstance(size, int) or size < 2:
        raise ValueError(f"{name} must be an integer >= 2 or None. Received: {size!r}")
    kept, _ = stratified_split(x, y, test_size=len(y) - size)
    return kept


class SequentialLearner:
    """Shared base + heads, trained task after task; history of every task after every epoch.

    Args:
        tasks: The sequence, from :func:`prepare_sequence`.
        heads: ``"shared"`` (one head) or ``"per_task"`` (one head per task).
        hidden: Widths of the base's ReLU layers.
        seed: Seeds the initial weights and every task's shuffling.
        epochs, batch_size, learning_rate, optimizer: Training of each task.
        measure_examples: Training examples of a task given to a post-hoc measure.
    """

    def __init__(self, tasks: Sequence[TaskData], *, heads: str = "shared", hidden: Sequence[int] = (100,),
                 seed: int = 0, epochs: int = 3, batch_size: int = 64, learning_rate: float = 1e-3,
                 optimizer: str = "adam", measure_examples: int = 300):
        if heads not in HEADS:
            raise ValueError(f"heads must be one of {HEADS}. Received: {heads!r}")
        self.tasks, self.heads, self.seed = list(tasks), heads, int(seed)
        self.training = dict(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                             optimizer=optimizer)
        self.measure_examples = int(measure_examples)
        shape = self.tasks[0].train[0].shape[1:]
        inputs = keras.Input(shape=shape, name="inputs")
        h = keras.layers.Flatten(name="flatten")(inputs)
        init = lambda i: keras.initializers.GlorotUniform(seed=self.seed * 1000 + i)  # noqa: E731
        for i, width in enumerate(hidden):
            h = keras.layers.Dense(int(width), activation="relu", kernel_initializer=init(i), name=f"base_{i}")(h)
        count = 1 if heads == "shared" else len(self.tasks)
        self.models = [
            keras.Model(inputs, keras.layers.Dense(self.tasks[t].num_classes, kernel_initializer=init(100 + t),
                                                   name=f"head_{t}")(h), name=f"task_{t}")
            for t in range(count)
        ]
        self._base = {id(w) for w in self.models[0].trainable_weights[: 2 * len(hidden)]}
        self.tasks_done, self.epochs_done = 0, 0
        self._rows: list[dict[str, Any]] = []

    def model(self, t: int) -> keras.Model:
        """Task ``t``'s model (the one model with a shared head)."""
        return self.models[0 if self.heads == "shared" else t]

    def penalised(self, t: int) -> list[bool]:
        """One flag per trainable weight of task ``t``'s model: shared (penalised) or not."""
        if self.heads == "shared":
            return [True] * len(self.model(t).trainable_weights)
        return [id(w) in self._base for w in self.model(t).trainable_weights]

    def measure_data(self, t: int) -> Split:
        """The first ``measure_examples`` training examples of task ``t`` (for post-hoc measures)."""
        x, y = self.tasks[t].train
        return x[: self.measure_examples], y[: self.measure_examples]

    def state(self) -> dict[str, Any]:
        """Everything :meth:`set_state` needs to go back to this point."""
        weights = {id(w): np.array(w.numpy()) for m in self.models for w in m.weights}
        return {"weights": weights, "rows": list(self._rows), "tasks_done": self.tasks_done,
                "epochs_done": self.epochs_done}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore weights, history and progress saved by :meth:`state`."""
        for m in self.models:
            for w in m.weights:
                w.assign(state["weights"][id(w)])
        self._rows = list(state["rows"])
        self.tasks_done, self.epochs_done = state["tasks_done"], state["epochs_done"]

    def train_task(self, t: int, *, data: Split | None = None, penalty: Any = None, recorder: Any = None) -> None:
        """Train task ``t`` (on ``data``, default its training split); evaluate all after each epoch."""
        if t != self.tasks_done:
            raise ValueError(f"task index must be the next task, {self.tasks_done}. Received: {t!r}")
        before = self.state()
        try:
            if not self._rows:  # epoch 0: every task before any training
                self._evaluate_all(trained=t)
            train(self.model(t), data if data is not None else self.tasks[t].train, seed=self.seed * 100 + t,
                  recorder=recorder, penalty=penalty, on_epoch_end=lambda e, logs: self._evaluate_all(trained=t),
                  **self.training)
        except BaseException:
            self.set_state(before)
            raise
        self.tasks_done += 1

    def _evaluate_all(self, *, trained: int) -> None:
        """One history row per task and split at the current epoch (epoch 0: before training)."""
        epoch = self.epochs_done + (1 if self._rows else 0)
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
        so it is not recorded.

        Raises:
            ValueError: A strategy that does not support the learner's heads (``joint`` with
                per-task heads).
        """
        import importance

        if self.heads not in strategy.supported_heads:
            needed = strategy.supported_heads[0]
            raise ValueError(f"strategy {strategy.name!r} needs heads={needed!r}. "
                             f"Received: heads={self.heads!r}")
        omega = dict(omega or {})
        if self.tasks_done:
            self._consolidate(strategy, self.tasks_done - 1, omega, recorder)
        for t in range(self.tasks_done, len(self.tasks)):
            data = strategy.training_data([task.train for task in self.tasks[: t + 1]])
            # Record only a task whose importance will be computed (not the last): a new recorder
            # is part of the trainer's compiled graph, so it would cost a trace for nothing.
            last = t + 1 == len(self.tasks)
            recorder = (importance.track(self.model(t), [strategy.measure], patch_fit=False)
                        if strategy.needs_recorder and not last else None)
            penalty = strategy.penalty if strategy.active else None
            self.train_task(t, data=data, penalty=penalty, recorder=recorder)
            if not last:
                self._consolidate(strategy, t, omega, recorder)

    def _consolidate(self, strategy: Any, t: int, omega: dict, recorder: Any) -> None:
        strategy.consolidate(self.model(t), self.penalised(t), data=self.measure_data(t),
                             recorder=recorder, omega=omega.get(t))

    @property
    def history(self) -> pd.DataFrame:
        """Tidy history: one row per epoch, trained task, evaluated task and split."""
        return pd.DataFrame(self._rows, columns=HISTORY_COLUMNS)

    def accuracy_matrix(self, split: str = "test") -> np.ndarray:
        """``R[i, j]``: accuracy on task ``j`` at the end of training task ``i`` (finished tasks)."""
        frame = self.history[self.history["split"] == split]
        names = [t.name for t in self.tasks]
        R = np.zeros((self.tasks_done, len(names)))
        for i in range(self.tasks_done):
            last = frame[frame["trained"] == names[i]]["epoch"].max()
            at = frame[frame["epoch"] == last].set_index("evaluated")["accuracy"]
            R[i] = [at[n] for n in names]
        return R
