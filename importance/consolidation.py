"""Consolidation: protecting what earlier tasks learned with an importance-weighted penalty.

After task ``t`` the learner keeps the weights ``theta*`` it reached and an importance ``omega``
per weight, and trains later tasks with the task loss plus

    ``penalty(theta) = lam / 2 * sum_i omega_i * (theta_i - theta*_i)^2``

summed over the *penalised* weights: those every task shares (the base of a multi-head
network, or all weights with one shared head); a task's own head is never penalised.
Kirkpatrick et al. (2017), "Overcoming catastrophic forgetting in neural networks", PNAS, eq. (3).

Strategies (:data:`STRATEGIES`):

* ``naive``: plain fine-tuning, no penalty.
* ``l2``: ``omega = 1`` for every penalised weight.
* ``ewc``: ``omega`` from **any registered measure** (:func:`importance.compute_importance`),
  computed on the task just learned: post-hoc measures from the model and that task's training
  data, online measures (SI, the seed trackers) from the trajectory recorded while learning it.
  Two modes (:data:`MODES`): ``separate``, one anchor and one omega per past task (the sum of
  one penalty per task, Kirkpatrick et al. 2017); ``online``, a single anchor (the latest
  weights) and ``omega <- gamma * omega + omega_t`` (Schwarz et al. 2018, "Progress &
  Compress", ICML, sec. 3.1; ``gamma = 1`` accumulates without decay).
* ``joint``: multi-task training on all data seen so far, no penalty (the upper bound).

**Normalisation.** Measures live on wildly different scales (Fisher ~1e-6, counts ~1e3). Every
task's omega is divided by its mean over the penalised weights, so it has **mean 1 over the
penalised weights** (L2's omega already has), and one lambda grid serves every measure. An omega
that is negative anywhere, or zero everywhere, is rejected (it cannot be a penalty weight).
This is a deviation from EWC, whose lambda multiplies the raw Fisher.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from importance import ImportanceError, compute_importance, get_measure

STRATEGIES = ("naive", "l2", "ewc", "joint")
MODES = ("separate", "online")
PENALISED_STRATEGIES = ("l2", "ewc")


def check_lam(lam: Any) -> float:
    """``lam`` as a float.

    Raises:
        ValueError: Unless ``lam`` is a finite number ``>= 0``.
    """
    if isinstance(lam, bool) or not isinstance(lam, (int, float, np.integer, np.floating)):
        raise ValueError(f"lam must be a finite number >= 0. Received: {lam!r}")
    if not math.isfinite(float(lam)) or lam < 0:
        raise ValueError(f"lam must be a finite number >= 0. Received: {lam!r}")
    return float(lam)


class SignedImportanceError(ImportanceError):
    """A measure's scores take negative values (e.g. ``grasp``, ``hessian_diag``): as penalty
    weights they would reward moving a weight away from its anchor, so EWC refuses them."""


def normalise(scores: Sequence[Any], penalised: Sequence[bool], *, measure: str = "scores") -> list[np.ndarray]:
    """Scale ``scores`` to mean 1 over the penalised weights; the others get 0.

    Args:
        scores: One array per trainable weight.
        penalised: One flag per trainable weight: is it shared by the tasks (penalised)?
        measure: Name used in error messages.

    Returns:
        float64 arrays, same shapes; their mean over all penalised entries is 1.

    Raises:
        SignedImportanceError: Negative values on penalised weights (a signed measure).
        ImportanceError: Non-finite values on penalised weights, or all zero there.
        ValueError: ``penalised`` does not have one flag per array, or flags nothing.
    """
    if len(scores) != len(penalised):
        raise ValueError(
            f"penalised must have one flag per weight ({len(scores)}). Received: {len(penalised)} flags"
        )
    if not any(penalised):
        raise ValueError("penalised flags no weight: there is nothing to consolidate.")
    arrays = [np.asarray(s, dtype=np.float64) for s in scores]
    shared = np.concatenate([a.ravel() for a, p in zip(arrays, penalised, strict=True) if p])
    if np.all(np.isfinite(shared)) and (shared < 0).any():
        raise SignedImportanceError(
            f"Measure {measure!r} gives signed scores (min {shared.min():.3g} on penalised "
            "weights): a quadratic penalty needs omega >= 0, so it cannot drive EWC as it is."
        )
    if not np.all(np.isfinite(shared)):
        raise ImportanceError(
            f"Measure {measure!r} gave non-finite importance on penalised weights "
            f"(min {np.nanmin(shared):.3g}); a penalty weight must be >= 0."
        )
    mean = shared.mean()
    if not mean > 0:
        raise ImportanceError(f"Measure {measure!r} gave zero importance to every penalised weight.")
    return [a / mean if p else np.zeros_like(a) for a, p in zip(arrays, penalised, strict=True)]


class Consolidator:
    """The state and penalty of one consolidation strategy along a task sequence.

    Usage, with ``penalised`` the flags of the shared weights of ``model``::

        strategy = Consolidator("ewc", measure="fisher", lam=100.0)
        train(model, task_a, ...)                      # or learner.train_task(...)
        strategy.consolidate(model, penalised, data=task_a)
        train(model, task_b, ..., penalty=strategy.penalty)

    Args:
        strategy: One of :data:`STRATEGIES`.
        lam: Penalty strength ``>= 0`` (ignored by ``naive`` and ``joint``).
        measure: Registered measure name (``ewc`` only; required there).
        mode: ``"separate"`` or ``"online"`` (``ewc`` only).
        gamma: Decay of the online mode's accumulated omega, in ``(0, 1]``.
        measure_options: Keyword options for the measure.

    Raises:
        ValueError: Unknown strategy or mode, bad lam or gamma, a measure with a strategy other
            than ``ewc`` or none with ``ewc``.
        KeyError: Unknown measure; the message lists the available ones.
    """

    def __init__(
        self,
        strategy: str,
        *,
        lam: float = 0.0,
        measure: str | None = None,
        mode: str = "separate",
        gamma: float = 1.0,
        measure_options: dict[str, Any] | None = None,
    ):
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}. Received: {strategy!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}. Received: {mode!r}")
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0 < gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1]. Received: {gamma!r}")
        if strategy == "ewc" and measure is None:
            raise ValueError("strategy 'ewc' needs a measure (a registered name). Received: None")
        if strategy != "ewc" and measure is not None:
            raise ValueError(f"measure is only used by strategy 'ewc'. Received: measure={measure!r} "
                             f"with strategy={strategy!r}")
        self.spec = get_measure(measure) if measure is not None else None
        self.strategy, self.measure, self.mode = strategy, measure, mode
        self.lam, self.gamma = check_lam(lam), float(gamma)
        self.measure_options = dict(measure_options or {})
        # One (variables, anchors, omegas) triple per consolidated task (one in online mode).
        self.terms: list[tuple[list[Any], list[tf.Tensor], list[tf.Tensor]]] = []

    @property
    def needs_recorder(self) -> bool:
        """True when the measure is online: record the training of every task for it."""
        return self.spec is not None and self.spec.online

    def importance(self, model: Any, penalised: Sequence[bool], *, data: Any = None,
                   recorder: Any = None) -> list[np.ndarray]:
        """The normalised omega of the task ``model`` just learned (see :func:`normalise`).

        Raises:
            RuntimeError: An online measure with no recorder of the task's training (None or 0 steps).
        """
        if self.strategy == "l2":
            return normalise([np.ones(tuple(w.shape)) for w in model.trainable_weights], penalised)
        if self.strategy != "ewc":
            raise ValueError(f"strategy {self.strategy!r} has no importance.")
        options = dict(self.measure_options)
        if self.spec.online:
            if recorder is None or recorder.num_steps == 0:
                raise RuntimeError(
                    f"Measure {self.measure!r} is online and no training trajectory was recorded "
                    f"for this task (recorder={'None' if recorder is None else '0 steps'}). "
                    "Train the task with recorder=importance.track(model, patch_fit=False)."
                )
            options["recorder"] = recorder
        scores = compute_importance(self.measure, model, data, **options)
        return normalise(scores, penalised, measure=self.measure)

    def consolidate(self, model: Any, penalised: Sequence[bool], *, data: Any = None,
                    recorder: Any = None, omega: Sequence[np.ndarray] | None = None) -> None:
        """Anchor the penalised weights of ``model`` at their current values with their omega.

        Args:
            model: The model that has just learned a task.
            penalised: One flag per ``model.trainable_weights`` entry.
            data: The task's data for a post-hoc measure.
            recorder: The recorder of the task's training, for an online measure.
            omega: A precomputed :meth:`importance` (reused across a lambda grid).
        """
        if self.strategy not in PENALISED_STRATEGIES:
            return
        if omega is None:
            omega = self.importance(model, penalised, data=data, recorder=recorder)
        weights = list(model.trainable_weights)
        if len(omega) != len(weights) or len(penalised) != len(weights):
            raise ValueError(f"omega and penalised need one entry per trainable weight ({len(weights)}). "
                             f"Received: {len(omega)} and {len(penalised)}")
        keep = [i for i, flag in enumerate(penalised) if flag]
        variables = [weights[i] for i in keep]
        anchors = [tf.constant(np.asarray(weights[i].numpy(), np.float32)) for i in keep]
        omegas = [np.asarray(omega[i], np.float64) for i in keep]
        if self.mode == "online" and self.terms:
            old_vars, _, old_omegas = self.terms[0]
            if [id(v) for v in old_vars] != [id(v) for v in variables]:
                raise ValueError("online mode needs the same penalised weights for every task.")
            omegas = [self.gamma * np.asarray(o, np.float64) + n for o, n in zip(old_omegas, omegas, strict=True)]
            self.terms = []
        self.terms.append((variables, anchors, [tf.constant(o, tf.float32) for o in omegas]))

    @property
    def penalty(self) -> ConsolidationPenalty:
        """The penalty of the current terms and lam, for ``tasks.trainer.train(penalty=...)``:
        ``strategy.penalty(model)`` is ``lam / 2 * sum_terms sum_i omega_i (theta_i - theta*_i)^2``
        (0 with no term). See :class:`ConsolidationPenalty`."""
        return ConsolidationPenalty(self)

    @property
    def active(self) -> bool:
        """Whether :meth:`penalty` can be nonzero (a penalised strategy, lam > 0, a term)."""
        return self.strategy in PENALISED_STRATEGIES and self.lam > 0 and bool(self.terms)


class ConsolidationPenalty:
    """The penalty of a :class:`Consolidator`, traceable once for any lam, anchors and omegas.

    ``penalty(model)`` is ``lam / 2 * sum_terms sum_i omega_i (theta_i - theta*_i)^2`` with the
    consolidator's terms and lam at the time of the call. For the trainer's compiled epoch
    (:mod:`tasks.trainer`, the traceable protocol) the values are *state*: :meth:`trace_state`
    gives ``lam / 2`` and every term's anchors and omegas as tensors, and :attr:`trace_key` names
    only the structure (the penalised variables of each term), so one traced graph serves a new
    lambda, new anchors or omegas, and any consolidator penalising the same variables.

    Args:
        consolidator: Whose terms and lam are read (when called or asked for its state).
    """

    def __init__(self, consolidator: Consolidator):
        self.consolidator = consolidator

    @property
    def trace_key(self) -> tuple[Any, ...]:
        """The structure: one tuple of penalised variable ids per term."""
        return ("consolidation", tuple(tuple(id(v) for v in variables) for variables, _, _ in self.consolidator.terms))

    def trace_state(self) -> list[tf.Tensor]:
        """``[lam / 2, *anchors of term 0, *omegas of term 0, *anchors of term 1, ...]``."""
        state = [tf.constant(0.5 * self.consolidator.lam, tf.float32)]
        for _, anchors, omegas in self.consolidator.terms:
            state += [*anchors, *omegas]
        return state

    def __call__(self, model: Any = None, *, state: Sequence[Any] | None = None) -> tf.Tensor:
        """The penalty; with ``state`` (from :meth:`trace_state` of a penalty with the same
        :attr:`trace_key`) its values are taken from there."""
        state = self.trace_state() if state is None else list(state)
        half_lam, position = state[0], 1
        total = tf.constant(0.0, tf.float32)
        for variables, _, _ in self.consolidator.terms:
            count = len(variables)
            anchors, omegas = state[position : position + count], state[position + count : position + 2 * count]
            position += 2 * count
            for v, a, o in zip(variables, anchors, omegas, strict=True):
                total += tf.reduce_sum(o * tf.square(tf.convert_to_tensor(v) - a))
        return half_lam * total
