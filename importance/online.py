"""Recording a training trajectory for online measures (SI, sign flips, momentum, weight change).

Online measures need what happens *during* training: the task-loss gradient and the weights before
and after every optimiser step. A :class:`Recorder` holds one :class:`Tracker` per online measure
(each online measure names its tracker class when it is registered:
``register_measure("si", online=True, tracker=SITracker)``) and is fed in one of two ways:

* a training loop calls :meth:`Recorder.observe` in its step with the gradient of the task loss
  (never of a regulariser such as an EWC penalty); ``tasks.trainer.train`` does;
* plain ``model.fit``: :func:`track` patches the model's ``train_step`` so that every step also
  computes the task-loss gradient (one extra forward/backward pass per step, at the pre-step
  weights, with the model's *compiled* loss only: ``model.losses`` such as weight or activity
  regularisers are left out) and feeds the recorder. The extra pass changes no model state, so
  training itself is unchanged. Call :func:`track` *before* ``model.fit`` (before or after
  ``compile``); ``model.fit`` with ``jit_compile=True`` works too::

      recorder = importance.track(model)              # all registered online measures
      model.fit(x, y, epochs=3)
      scores = importance.compute_importance("si", model)
      recorder.stop()                                 # optional: restores train_step

:func:`importance.compute_importance` finds the recorder of a model by itself and passes it to
the measure as ``recorder=``. This module knows no measure names: :func:`importance.track`
(in :mod:`importance.measures.compute`) looks the trackers up and calls :func:`attach`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

_RECORDERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class Tracker:
    """Accumulates per-weight statistics over training steps.

    Subclasses create their ``tf.Variable`` state in ``__init__`` (one variable per trainable
    weight, via :meth:`zeros_like_weights`) and update it in :meth:`update`, which runs inside a
    ``tf.function`` and must only use TensorFlow ops.

    Args:
        weights: The model's trainable weights, in order.
    """

    def __init__(self, weights: Sequence[Any]):
        self.shapes = [tuple(w.shape) for w in weights]

    def zeros_like_weights(self, label: str, dtype: tf.DType = tf.float32) -> list[tf.Variable]:
        """One zero ``tf.Variable`` per weight, for state named ``label``."""
        return [
            tf.Variable(tf.zeros(shape, dtype=dtype), trainable=False, name=f"{label}_{i}")
            for i, shape in enumerate(self.shapes)
        ]

    def update(
        self, grads: Sequence[tf.Tensor], before: Sequence[tf.Tensor], after: Sequence[tf.Tensor]
    ) -> None:
        """Observe one optimiser step (TensorFlow ops only)."""
        raise NotImplementedError

    def variables(self) -> dict[str, list[tf.Variable]]:
        """All state of this tracker, name -> one variable per weight (for saving and loading)."""
        return {k: v for k, v in vars(self).items() if _is_variable_list(v)}


def _is_variable_list(value: Any) -> bool:
    return (
        isinstance(value, list) and bool(value) and all(isinstance(v, tf.Variable) for v in value)
    )


class Recorder:
    """Holds the trackers of one model and counts the steps they have observed.

    Args:
        model: A built Keras model.
        trackers: Online measure name -> its :class:`Tracker` class (what
            ``importance.track`` looks up in the registry). Measures that share a tracker class
            share one tracker.

    Raises:
        ValueError: The model has not been built.
    """

    def __init__(self, model: Any, trackers: Mapping[str, type[Tracker]]):
        if not getattr(model, "built", False):
            raise ValueError(
                "The model must be built before tracking it (call it on a batch first)."
            )
        weights = list(model.trainable_weights)
        self.shapes = [tuple(w.shape) for w in weights]
        shared: dict[type[Tracker], Tracker] = {}
        self.trackers: dict[str, Tracker] = {}
        for name, cls in trackers.items():
            if cls not in shared:
                shared[cls] = cls(weights)
            self.trackers[name] = shared[cls]
        self.steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="recorded_steps")
        self._restore_train_step: Callable[[], None] | None = None

    @property
    def num_steps(self) -> int:
        """Number of optimiser steps observed so far."""
        return int(self.steps.numpy())

    def tracker(self, name: str) -> Tracker:
        """The tracker of online measure ``name``.

        Raises:
            RuntimeError: If this recorder does not record that measure.
        """
        if name not in self.trackers:
            raise RuntimeError(
                f"This recorder does not record {name!r} (it records {sorted(self.trackers)}). "
                f"Call importance.track(model, measures=[..., {name!r}]) before training."
            )
        return self.trackers[name]

    def observe(self, grads: Sequence[Any], before: Sequence[Any], after: Sequence[Any]) -> None:
        """Feed one optimiser step to every tracker. Safe inside ``tf.function``.

        Args:
            grads: Gradient of the *task* loss w.r.t. each trainable weight, at ``before``.
            before: Each weight's value before the step.
            after: Each weight's value after the step.

        Raises:
            ValueError: If the three lists do not have one entry per tracked weight.
        """
        expected = len(self.shapes)
        if not len(grads) == len(before) == len(after) == expected:
            raise ValueError(
                f"observe() needs one gradient, before and after value per trainable weight "
                f"({expected}). Received: {len(grads)}, {len(before)}, {len(after)}"
            )
        before = [tf.cast(b, tf.float32) for b in before]
        after = [tf.cast(a, tf.float32) for a in after]
        grads = [
            tf.zeros_like(b) if g is None else tf.cast(g, tf.float32)
            for g, b in zip(grads, before, strict=True)
        ]
        for tracker in {id(t): t for t in self.trackers.values()}.values():  # shared ones once
            tracker.update(grads, before, after)
        self.steps.assign_add(1)

    def state_dict(self) -> dict[str, np.ndarray]:
        """All recorded state as flat NumPy arrays (keys ``tracker/label/index``), for caching."""
        state = {"steps": np.asarray(self.num_steps)}
        for name, tracker in self.trackers.items():
            for label, variables in tracker.variables().items():
                for i, var in enumerate(variables):
                    state[f"{name}/{label}/{i}"] = var.numpy()
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore state saved by :meth:`state_dict`.

        Raises:
            ValueError: If a key is missing or a shape differs.
        """
        if "steps" not in state:
            raise ValueError("Saved trajectory has no entry 'steps'.")
        values = []
        for name, tracker in self.trackers.items():
            for label, variables in tracker.variables().items():
                for i, var in enumerate(variables):
                    key = f"{name}/{label}/{i}"
                    if key not in state:
                        raise ValueError(f"Saved trajectory has no entry {key!r}.")
                    value = np.asarray(state[key])
                    if value.shape != tuple(var.shape):
                        raise ValueError(
                            f"Saved {key!r} has shape {value.shape}, expected {tuple(var.shape)}."
                        )
                    values.append((var, value))
        for var, value in values:  # all checked first: a bad state changes nothing
            var.assign(value)
        self.steps.assign(int(state["steps"]))

    def stop(self) -> None:
        """Stop recording ``model.fit`` steps (restores the model's own ``train_step``)."""
        if self._restore_train_step is not None:
            self._restore_train_step()
            self._restore_train_step = None


def attach(model: Any, recorder: Recorder, *, patch_fit: bool = True) -> Recorder:
    """Make ``recorder`` the recorder of ``model`` (found later by :func:`recorder_for`).

    A previous recorder of the model stops. With ``patch_fit`` the model's ``train_step`` is
    wrapped so that ``model.fit`` feeds the recorder (see :func:`importance.track`).

    Returns:
        ``recorder``.
    """
    previous = _RECORDERS.get(model)
    if previous is not None:
        previous.stop()
    _RECORDERS[model] = recorder
    if patch_fit:
        recorder._restore_train_step = _patch_train_step(model, recorder)
    return recorder


def recorder_for(model: Any) -> Recorder | None:
    """The recorder attached to ``model`` by :func:`track`, or None."""
    return _RECORDERS.get(model)


def require_recorder(model: Any, name: str) -> Recorder:
    """The recorder of ``model``, checked to hold at least one step of measure ``name``.

    Raises:
        RuntimeError: With instructions, when nothing was recorded.
    """
    recorder = _RECORDERS.get(model)
    how = (
        f"Measure {name!r} is online: it needs the training trajectory. Record one by calling "
        "`recorder = importance.track(model)` before `model.fit(...)`, or, in your own training "
        "loop, `recorder = importance.track(model, patch_fit=False)` and "
        "`recorder.observe(task_grads, before, after)` at every step; then call "
        "compute_importance again."
    )
    if recorder is None:
        raise RuntimeError(f"No training trajectory was recorded for this model. {how}")
    recorder.tracker(name)
    if recorder.num_steps == 0:
        raise RuntimeError(f"The recorder of this model has observed 0 training steps. {how}")
    return recorder


def _patch_train_step(model: Any, recorder: Recorder) -> Callable[[], None]:
    """Wrap ``model.train_step`` so that ``model.fit`` feeds ``recorder``; return the undo.

    Before the model's own step, the wrapper runs one extra forward/backward pass at the pre-step
    weights to get the gradient of the compiled loss alone (no ``model.losses``: weight or
    activity regularisers and ``add_loss`` penalties are left out). That pass runs inside a
    ``keras.StatelessScope``, so it changes no state: batch-norm statistics, metrics and random
    seed generators are untouched, and dropout draws the same mask the real step will draw.
    Training with the patch is therefore identical to training without it.
    """
    import keras

    original = model.train_step
    had_instance_attr = "train_step" in vars(model)

    def train_step(data: Any) -> Any:
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        weights = list(model.trainable_weights)
        before = [tf.identity(w.value) for w in weights]
        with tf.GradientTape() as tape:
            loss = _task_loss(model, x, y, sample_weight)
        grads = tape.gradient(loss, weights, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        with tf.control_dependencies(grads + before):
            logs = original(data)
        with tf.control_dependencies(tf.nest.flatten(logs)):
            after = [tf.identity(w.value) for w in weights]
        recorder.observe(grads, before, after)
        return logs

    model.train_step = train_step
    model.train_function = None  # Keras caches the compiled step; force a retrace

    def undo() -> None:
        if had_instance_attr:
            model.train_step = original
        else:
            vars(model).pop("train_step", None)
        model.train_function = None

    return undo


def _task_loss(model: Any, x: Any, y: Any, sample_weight: Any) -> tf.Tensor:
    """The compiled loss of ``model`` on a batch, without regularisers, changing no state."""
    import keras

    compiled = getattr(model, "_compile_loss", None)
    if compiled is None:
        raise RuntimeError(
            "importance.track(model) records model.fit through the model's compiled loss, and this "
            "model has none: call model.compile(loss=...) first, or feed "
            "recorder.observe(task_grads, before, after) from your own training loop."
        )
    with keras.StatelessScope():
        if getattr(model, "_call_has_training_arg", True):
            y_pred = model(x, training=True)
        else:
            y_pred = model(x)
    if not compiled.built:  # builds loss-tracking metrics: must not run in a stateless scope
        compiled.build(y, y_pred)
    with keras.StatelessScope():
        return compiled(y, y_pred, sample_weight)
