"""The penalty protocol: a regulariser added to the task loss inside a training step.

A penalty is called one way, whatever it needs::

    penalty(model, x, y, epoch, *, state=None) -> float32 scalar tensor

with the batch's inputs ``x`` and int32 labels ``y``, and the 0-based ``epoch`` as an int32
scalar tensor; a penalty that does not need the batch ignores it (the consolidation penalty), one
that does uses it (the CAM penalty). :func:`tasks.trainer.train` adds the value to the task loss
and applies the sum of the gradients, but shows an attached recorder only the task-loss gradient.
Subclass :class:`Penalty` (as Keras' ``Regularizer``): the trainer recognises a penalty by its
class, and wraps any other callable as a function of the model alone (:func:`as_penalty`).

**Traceable penalties.** A penalty whose graph depends only on a hashable structure, with the
values that change between calls passed in as tensors, sets :attr:`Penalty.trace_key` (equal keys
mean the same function of the model and the state, e.g. the same penalised variables) and returns
those values from :meth:`Penalty.trace_state`; it is then called with ``state=`` (a list of
tensors of the same shapes and dtypes) and the trainer reuses one compiled epoch for every call
with the same key. A penalty with ``trace_key`` None is traced afresh on every training call.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

import tensorflow as tf

__all__ = ["FunctionPenalty", "Penalty", "as_penalty"]


class Penalty:
    """Base class of a training-step penalty: ``penalty(model, x, y, epoch, *, state=None)``.

    Attributes:
        trace_key: None (traced on every training call), or a hashable naming the structure of the
            penalty's graph, for a traceable penalty (see the module docstring).
    """

    trace_key: Hashable | None = None

    def __call__(self, model: Any, x: Any = None, y: Any = None, epoch: Any = None, *,
                 state: Sequence[Any] | None = None) -> tf.Tensor:
        """The penalty on the batch ``(x, y)`` in ``epoch``, a float32 scalar tensor.

        Args:
            model: The model being trained.
            x: The batch's inputs.
            y: The batch's int32 labels.
            epoch: The 0-based epoch, an int32 scalar tensor.
            state: For a traceable penalty, the values of :meth:`trace_state` (possibly of another
                penalty with the same :attr:`trace_key`) as tensors; None: its own.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement __call__.")

    def trace_state(self) -> list[tf.Tensor]:
        """The values a traceable penalty takes as ``state`` (none by default)."""
        return []

    def check_training(self, model: Any, *, epochs: int) -> None:
        """Called by the trainer before any step: refuse a training run in which the penalty
        cannot do what it was built for (e.g. a schedule past the last epoch), naming the value.
        Nothing by default."""


class FunctionPenalty(Penalty):
    """A function of the model alone, ``fn(model) -> scalar``, as an untraceable :class:`Penalty`.

    Args:
        fn: The function; called once per step, inside the traced graph.
    """

    def __init__(self, fn: Callable[[Any], Any]):
        self.fn = fn

    def __repr__(self) -> str:
        return f"FunctionPenalty({self.fn!r})"

    def __call__(self, model: Any, x: Any = None, y: Any = None, epoch: Any = None, *,
                 state: Sequence[Any] | None = None) -> tf.Tensor:
        """``fn(model)``; the batch, epoch and state are ignored."""
        return self.fn(model)


def as_penalty(penalty: Any) -> Penalty | None:
    """``penalty`` as a :class:`Penalty`: itself, or a plain callable wrapped as a function of the
    model (:class:`FunctionPenalty`); None stays None.

    Raises:
        TypeError: ``penalty`` is not callable, or is an object written for the old two-signature
            protocol (``receives_batch`` or ``trace_key`` without subclassing :class:`Penalty`).
    """
    if penalty is None or isinstance(penalty, Penalty):
        return penalty
    if not callable(penalty):
        raise TypeError(
            "penalty must be a Penalty or a function of the model. "
            f"Received: {penalty!r} of type {type(penalty).__name__}"
        )
    if hasattr(penalty, "receives_batch") or hasattr(penalty, "trace_key"):
        raise TypeError(
            "A penalty that uses the batch or is traceable must subclass "
            "importance.penalties.Penalty and accept penalty(model, x, y, epoch, *, state=None). "
            f"Received: {penalty!r} of type {type(penalty).__name__}"
        )
    return FunctionPenalty(penalty)
