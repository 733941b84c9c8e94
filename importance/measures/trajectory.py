"""Online measures computed from a recorded training trajectory: SI and the seed trackers.

Each measure here has a :class:`~importance.online.Tracker` that observes every optimiser step
(``grads``: gradient of the *task* loss at the pre-step weights, ``before``/``after``: the weights
around the step) and a measure registered with ``online=True`` that turns the tracker's state into
one score array per trainable weight. Record a trajectory with :func:`importance.track` before
``model.fit`` or with the project's trainer; see :mod:`importance.online`.

Orientation of the seed trackers: ``sign_flip``, ``momentum`` and ``weight_change`` follow the
original project's ``EWC_Method``, ``omega = 1 / (1 + x)`` of the statistic ``x`` (sign changes,
update reversals, path length), so a weight that flips or moves a lot is *less* important. The
raw statistics are registered under their own names, ``sign_flip_count``,
``momentum_reversals`` and ``weight_path_length`` (higher = more unstable); ranked as
importances they state the opposite hypothesis.

All counts and sums are accumulated in float64 from the float32 step values, so a difference
``after - before`` of two float32 numbers is exact and path lengths telescope exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from importance.measures.registry import register_measure
from importance.online import Recorder, Tracker

_ACC = tf.float64

# Damping of SI's denominator. The official code of Zenke et al. (github.com/ganguli-lab/pathint)
# uses xi = 1e-3 for split MNIST ("fig_split_mnist/Figure split MNIST.ipynb") and split CIFAR
# ("fig_transfer_cifar/train.py": PATH_INT_PROTOCOL(omega_decay='sum', xi=1e-3)); its stored
# permuted-MNIST results were run with xi = 0.1.
DEFAULT_XI = 1e-3


def _steps(grads: Sequence[tf.Tensor], before: Sequence[tf.Tensor], after: Sequence[tf.Tensor]):
    """Per weight: (g, before, delta) in float64."""
    for g, b, a in zip(grads, before, after, strict=True):
        b64 = tf.cast(b, _ACC)
        yield tf.cast(g, _ACC), b64, tf.cast(a, _ACC) - b64


class SITracker(Tracker):
    """State of Synaptic Intelligence: the path integral and the weights at the start.

    Attributes:
        path: Per weight, ``sum_t -g_t * (theta_{t+1} - theta_t)``.
        start: Per weight, the weights before the first observed step.
        last: Per weight, the weights after the last observed step.
        started: One boolean: whether ``start`` has been set.
    """

    def __init__(self, weights: Sequence[Any]):
        super().__init__(weights)
        self.path = self.zeros_like_weights("path", _ACC)
        self.start = self.zeros_like_weights("start")
        self.last = self.zeros_like_weights("last")
        self.started = [tf.Variable(False, trainable=False, name="started")]

    def update(self, grads, before, after) -> None:
        first = tf.logical_not(self.started[0])
        for i, (g, _, delta) in enumerate(_steps(grads, before, after)):
            self.path[i].assign_add(-g * delta)
            self.start[i].assign(tf.where(first, before[i], self.start[i]))
            self.last[i].assign(after[i])
        self.started[0].assign(True)


class SignFlipTracker(Tracker):
    """Counts, per weight, the steps at which the weight's sign changed.

    Attributes:
        count: Number of sign changes so far.
        sign: Last nonzero sign of the weight (0 while the weight has only been exactly 0).
    """

    def __init__(self, weights: Sequence[Any]):
        super().__init__(weights)
        self.count = self.zeros_like_weights("count", _ACC)
        self.sign = self.zeros_like_weights("sign")

    def update(self, grads, before, after) -> None:
        for i, (b, a) in enumerate(zip(before, after, strict=True)):
            reference = tf.where(self.sign[i] != 0, self.sign[i], tf.sign(b))
            new = tf.sign(a)
            flipped = (new != 0) & (reference != 0) & (new != reference)
            self.count[i].assign_add(tf.cast(flipped, _ACC))
            self.sign[i].assign(tf.where(new != 0, new, reference))


class MomentumTracker(Tracker):
    """Counts, per weight, the steps at which the update reversed direction.

    Attributes:
        count: Number of reversals so far.
        direction: Sign of the last nonzero update (0 before the first one).
    """

    def __init__(self, weights: Sequence[Any]):
        super().__init__(weights)
        self.count = self.zeros_like_weights("count", _ACC)
        self.direction = self.zeros_like_weights("direction")

    def update(self, grads, before, after) -> None:
        for i, (_, _, delta) in enumerate(_steps(grads, before, after)):
            new = tf.cast(tf.sign(delta), tf.float32)
            reversed_ = (new != 0) & (self.direction[i] != 0) & (new != self.direction[i])
            self.count[i].assign_add(tf.cast(reversed_, _ACC))
            self.direction[i].assign(tf.where(new != 0, new, self.direction[i]))


class WeightChangeTracker(Tracker):
    """Accumulates, per weight, the path length ``sum_t |theta_{t+1} - theta_t|``.

    Attributes:
        length: The path length so far.
    """

    def __init__(self, weights: Sequence[Any]):
        super().__init__(weights)
        self.length = self.zeros_like_weights("length", _ACC)

    def update(self, grads, before, after) -> None:
        for i, (_, _, delta) in enumerate(_steps(grads, before, after)):
            self.length[i].assign_add(tf.abs(delta))


def _values(variables: Sequence[tf.Variable]) -> list[np.ndarray]:
    return [np.asarray(v.numpy(), dtype=np.float64) for v in variables]


@register_measure("si", online=True, tracker=SITracker)
def si(
    model: Any, data: Any = None, *, recorder: Recorder, xi: float = DEFAULT_XI, clip: bool = True
) -> list[np.ndarray]:
    """Synaptic Intelligence: each weight's share of the task-loss decrease along training.

    ``omega = sum_t -g_t * delta_t / ((theta_T - theta_0)^2 + xi)`` per weight, where ``g_t`` is
    the gradient of the task loss only (never of a regulariser or consolidation penalty) at the
    weights before step ``t``, ``delta_t = theta_{t+1} - theta_t`` the change the optimiser made
    at that step, ``theta_0`` the weights before the first recorded step and ``theta_T`` the
    weights after the last one. The path integral ``sum_t -g_t * delta_t`` is the first-order
    estimate of how much each weight's motion lowered the loss; dividing by the squared total
    displacement makes it a curvature-like importance, ``xi`` keeps it finite for weights that
    end where they started.

    Reference: Zenke, Poole & Ganguli (2017), "Continual Learning Through Synaptic
    Intelligence", ICML. The official code (github.com/ganguli-lab/pathint,
    ``pathint/protocols.py``) applies ``relu`` to omega, so negative totals (weights whose motion
    raised the task loss overall) become 0; individual steps are never clipped.

    Args:
        model: The trained model (unused; the recorder holds everything).
        data: Unused.
        recorder: The :class:`~importance.online.Recorder` that observed training.
        xi: Damping ``xi >= 0`` added to the squared total displacement. Default ``1e-3``,
            as in the official code's split MNIST and split CIFAR runs (its permuted MNIST run
            used 0.1). With ``xi=0`` a weight that ends where it began gets 0.
        clip: Set negative omega to 0, as the official code does. ``False`` keeps the sign.

    Returns:
        One float64 array per trainable weight.

    Raises:
        ValueError: If ``xi`` is negative or not a number.
    """
    if isinstance(xi, bool) or not isinstance(xi, (int, float, np.floating)) or not xi >= 0:
        raise ValueError(f"xi must be a number >= 0. Received: {xi!r}")
    tracker = recorder.tracker("si")
    paths, starts, lasts = (_values(v) for v in (tracker.path, tracker.start, tracker.last))
    scores = []
    for path, start, last in zip(paths, starts, lasts, strict=True):
        denominator = (last - start) ** 2 + float(xi)
        moved = denominator > 0  # False only with xi=0 for a weight that ends where it began
        omega = np.where(moved, path / np.where(moved, denominator, 1.0), 0.0)
        scores.append(np.maximum(omega, 0.0) if clip else omega)
    return scores


def _inverse(statistic: list[np.ndarray]) -> list[np.ndarray]:
    """The original project's orientation: ``omega = 1 / (1 + x)`` of a statistic ``x >= 0``."""
    return [1.0 / (1.0 + x) for x in statistic]


@register_measure("sign_flip_count", online=True, tracker=SignFlipTracker)
def sign_flip_count(model: Any, data: Any = None, *, recorder: Recorder) -> list[np.ndarray]:
    """Number of training steps at which each weight changed sign (raw statistic, high = unstable).

    A step counts when the weight after it has a nonzero sign opposite to the weight's last
    nonzero sign (the sign before the step, or before that if the weight sat exactly at 0). So
    ``0.5 -> -0.1`` counts once, ``0.5 -> 0 -> -0.1`` counts once (at the second step), and a
    weight starting at exactly 0 (a fresh bias) does not count its first move. The count is
    stored as a float. This is the statistic ``x`` of :func:`sign_flip`, whose importance is
    ``1 / (1 + x)``; ranked as an importance, the raw count says "a weight that flips often is
    important", the opposite of the original project's hypothesis.

    Reference: the seed trackers of the original project; sign changes of weights during
    training as a proxy of (un)importance are also studied by Zhou et al. (2019), "Deconstructing
    Lottery Tickets: Zeros, Signs, and the Supermask", NeurIPS.

    Args:
        model: The trained model (unused).
        data: Unused.
        recorder: The :class:`~importance.online.Recorder` that observed training.

    Returns:
        One float64 array per trainable weight, counts in ``[0, steps]``.
    """
    return _values(recorder.tracker("sign_flip_count").count)


@register_measure("sign_flip", online=True, tracker=SignFlipTracker)
def sign_flip(model: Any, data: Any = None, *, recorder: Recorder) -> list[np.ndarray]:
    """Sign stability: ``omega = 1 / (1 + c)`` with ``c`` the weight's number of sign changes.

    The original project's ``EWC_Method`` sign-flipping importance: a weight that flips sign
    often during training is *less* important (omega near 0), one that never flips gets 1.
    ``c`` is :func:`sign_flip_count` (registered as ``"sign_flip_count"``).

    Reference: the seed trackers of the original project (``omega = 1 / (1 + count)``).

    Args:
        model: The trained model (unused).
        data: Unused.
        recorder: The :class:`~importance.online.Recorder` that observed training.

    Returns:
        One float64 array per trainable weight, values in ``(0, 1]``.
    """
    return _inverse(_values(recorder.tracker("sign_flip").count))


@register_measure("momentum_reversals", online=True, tracker=MomentumTracker)
def momentum_reversals(model: Any, data: Any = None, *, recorder: Recorder) -> list[np.ndarray]:
    """Number of momentum reversals: steps at which a weight's update changed direction (raw).

    With ``d_t = sign(theta_{t+1} - theta_t)``, a step counts when ``d_t`` is nonzero and
    opposite to the last nonzero ``d_s`` (``s < t``); steps that leave the weight unchanged
    are skipped, neither counting nor resetting the direction. So updates ``+, -, +`` count 2,
    ``+, 0, -`` counts 1 and the first nonzero update never counts. This is the statistic of
    :func:`momentum`, whose importance is ``1 / (1 + x)``.

    Reference: the seed trackers of the original project (momentum reversals as oscillation
    around a minimum); cf. the sign-agreement heuristics of Jacobs (1988), "Increased rates of
    convergence through learning rate adaptation", Neural Networks 1(4).

    Args:
        model: The trained model (unused).
        data: Unused.
        recorder: The :class:`~importance.online.Recorder` that observed training.

    Returns:
        One float64 array per trainable weight, counts in ``[0, steps - 1]``.
    """
    return _values(recorder.tracker("momentum_reversals").count)


@register_measure("momentum", online=True, tracker=MomentumTracker)
def momentum(model: Any, data: Any = None, *, recorder: Recorder) -> list[np.ndarray]:
    """Update stability: ``omega = 1 / (1 + r)`` with ``r`` the weight's momentum reversals.

    The original project's ``EWC_Method`` momentum importance: a weight whose update keeps
    reversing direction (oscillating) is *less* important. ``r`` is :func:`momentum_reversals`
    (registered as ``"momentum_reversals"``).

    Reference: the seed trackers of the original project (``omega = 1 / (1 + count)``).

    Args:
        model: The trained model (unused).
        data: Unused.
        recorder: The :class:`~importance.online.Recorder` that observed training.

    Returns:
        One float64 array per trainable weight, values in ``(0, 1]``.
    """
    return _inverse(_values(recorder.tracker("momentum").count))


@register_measure("weight_path_length", online=True, tracker=WeightChangeTracker)
def weight_path_length(model: Any, data: Any = None, *, recorder: Recorder) -> list[np.ndarray]:
    """Path length of each weight: ``sum_t |theta_{t+1} - theta_t|`` over recorded steps (raw).

    The sum of absolute step sizes, not the net displacement ``|theta_T - theta_0|``: a weight
    that oscillates travels far even if it ends where it began. This is the statistic of
    :func:`weight_change`, whose importance is ``1 / (1 + x)``.

    Reference: the seed trackers of the original project; the path integral of weight motion is
    the building block of Zenke, Poole & Ganguli (2017), "Continual Learning Through Synaptic
    Intelligence", ICML.

    Args:
        model: The trained model (unused).
        data: Unused.
        recorder: The :class:`~importance.online.Recorder` that observed training.

    Returns:
        One float64 array per trainable weight, all ``>= 0``.
    """
    return _values(recorder.tracker("weight_path_length").length)


@register_measure("weight_change", online=True, tracker=WeightChangeTracker)
def weight_change(model: Any, data: Any = None, *, recorder: Recorder) -> list[np.ndarray]:
    """Weight stillness: ``omega = 1 / (1 + L)`` with ``L`` the weight's path length.

    The original project's ``EWC_Method`` weight-change importance: a weight that moved a lot
    during training is *less* important. ``L = sum_t |theta_{t+1} - theta_t|`` is the path length
    (:func:`weight_path_length`, registered as ``"weight_path_length"``), not the signed sum of
    the steps (the net displacement): oscillation counts as movement.

    Reference: the seed trackers of the original project (``omega = 1 / (1 + change)``).

    Args:
        model: The trained model (unused).
        data: Unused.
        recorder: The :class:`~importance.online.Recorder` that observed training.

    Returns:
        One float64 array per trainable weight, values in ``(0, 1]``.
    """
    return _inverse(_values(recorder.tracker("weight_change").length))
