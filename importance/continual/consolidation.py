"""Consolidation: protecting what earlier tasks learned with an importance-weighted penalty.

After task ``t`` the learner keeps the weights ``theta*`` it reached and an importance ``omega``
per weight, and trains later tasks with the task loss plus

    ``penalty(theta) = lam / 2 * sum_i omega_i * (theta_i - theta*_i)^2``

summed over the *penalised* weights: those every task shares (the base of a multi-head
network, or all weights with one shared head); a task's own head is never penalised.
Kirkpatrick et al. (2017), "Overcoming catastrophic forgetting in neural networks", PNAS, eq. (3).

The strategies that keep anchors and omegas (``l2``, ``ewc``) are in
:mod:`importance.continual.strategies`; this module holds what they share: the lambda check,
the normalisation of omega and the penalty itself (:class:`ConsolidationPenalty`, a traceable
:class:`importance.penalties.Penalty`). Two modes (:data:`MODES`): ``separate``, one anchor and
one omega per past task (the sum of one penalty per task, Kirkpatrick et al. 2017); ``online``, a
single anchor (the latest weights) and ``omega <- gamma * omega + omega_t`` (Schwarz et al. 2018,
"Progress & Compress", ICML, sec. 3.1; ``gamma = 1`` accumulates without decay).

**Normalisation.** Measures live on wildly different scales (Fisher ~1e-6, counts ~1e3). Every
task's omega is divided by its mean over the penalised weights, so it has **mean 1 over the
penalised weights** (L2's omega already has), and one lambda grid serves every measure. An omega
that is negative anywhere, or zero everywhere, is rejected (it cannot be a penalty weight).
This is a deviation from EWC, whose lambda multiplies the raw Fisher.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from importance.checks import check_number
from importance.penalties import Penalty
from importance.scores import ImportanceError

MODES = ("separate", "online")


def check_lam(lam: Any) -> float:
    """``lam`` as a float.

    Raises:
        ValueError: Unless ``lam`` is a finite number ``>= 0``.
    """
    return check_number("lam", lam, minimum=0)


class SignedImportanceError(ImportanceError):
    """A measure's scores take negative values (e.g. ``grasp``, ``hessian_diag``): as penalty
    weights they would reward moving a weight away from its anchor, so EWC refuses them."""


def normalise(
    scores: Sequence[Any], penalised: Sequence[bool], *, measure: str = "scores"
) -> list[np.ndarray]:
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
            f"penalised must have one flag per weight ({len(scores)}). "
            f"Received: {len(penalised)} flags"
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
        raise ImportanceError(
            f"Measure {measure!r} gave zero importance to every penalised weight."
        )
    return [a / mean if p else np.zeros_like(a) for a, p in zip(arrays, penalised, strict=True)]


Terms = list[tuple[list[Any], list[tf.Tensor], list[tf.Tensor]]]
"""One ``(variables, anchors, omegas)`` triple per consolidated task (one in online mode)."""


def anchor(terms: Terms, model: Any, penalised: Sequence[bool], omega: Sequence[np.ndarray], *,
           mode: str = "separate", gamma: float = 1.0) -> Terms:
    """``terms`` with the penalised weights of ``model`` anchored at their current values.

    In ``separate`` mode the new term is appended; in ``online`` mode it replaces the single
    term, its omega accumulated as ``gamma * old omega + omega`` (the anchors are the new ones).

    Args:
        terms: The terms so far (not modified).
        model: The model that has just learned a task.
        penalised: One flag per ``model.trainable_weights`` entry.
        omega: The task's normalised importance, one array per trainable weight.
        mode: One of :data:`MODES`.
        gamma: Decay of the accumulated omega (online mode).

    Raises:
        ValueError: ``omega`` or ``penalised`` without one entry per trainable weight, or (online
            mode) other penalised weights than the accumulated term's.
    """
    weights = list(model.trainable_weights)
    if len(omega) != len(weights) or len(penalised) != len(weights):
        raise ValueError(
            f"omega and penalised need one entry per trainable weight ({len(weights)}). "
            f"Received: {len(omega)} and {len(penalised)}"
        )
    keep = [i for i, flag in enumerate(penalised) if flag]
    variables = [weights[i] for i in keep]
    anchors = [tf.constant(np.asarray(weights[i].numpy(), np.float32)) for i in keep]
    omegas = [np.asarray(omega[i], np.float64) for i in keep]
    terms = list(terms)
    if mode == "online" and terms:
        old_vars, _, old_omegas = terms[0]
        if [id(v) for v in old_vars] != [id(v) for v in variables]:
            raise ValueError("online mode needs the same penalised weights for every task.")
        omegas = [
            gamma * np.asarray(o, np.float64) + n for o, n in zip(old_omegas, omegas, strict=True)
        ]
        terms = []
    terms.append((variables, anchors, [tf.constant(o, tf.float32) for o in omegas]))
    return terms


class ConsolidationPenalty(Penalty):
    """The penalty of a strategy's terms, traceable once for any lam, anchors and omegas.

    ``penalty(model)`` is ``lam / 2 * sum_terms sum_i omega_i (theta_i - theta*_i)^2`` with the
    strategy's terms and lam at the time of the call (the batch and epoch of the
    :class:`~importance.penalties.Penalty` call are ignored). For the trainer's compiled epoch
    (the traceable protocol of :mod:`importance.penalties`) the values are *state*:
    :meth:`trace_state` gives ``lam / 2`` and every term's anchors and omegas as tensors, and
    :attr:`trace_key` names only the structure (the penalised variables of each term), so one
    traced graph serves a new lambda, new anchors or omegas, and any strategy penalising the same
    variables.

    Args:
        strategy: Whose ``terms`` (:data:`Terms`) and ``lam`` are read (when called or asked for
            its state), e.g. a :class:`importance.continual.Strategy`.
    """

    def __init__(self, strategy: Any):
        self.strategy = strategy

    @property
    def trace_key(self) -> tuple[Any, ...]:
        """The structure: one tuple of penalised variable ids per term."""
        structure = tuple(tuple(id(v) for v in variables) for variables, _, _ in self.strategy.terms)
        return ("consolidation", structure)

    def trace_state(self) -> list[tf.Tensor]:
        """``[lam / 2, *anchors of term 0, *omegas of term 0, *anchors of term 1, ...]``."""
        state = [tf.constant(0.5 * self.strategy.lam, tf.float32)]
        for _, anchors, omegas in self.strategy.terms:
            state += [*anchors, *omegas]
        return state

    def __call__(self, model: Any = None, x: Any = None, y: Any = None, epoch: Any = None, *,
                 state: Sequence[Any] | None = None) -> tf.Tensor:
        """The penalty; with ``state`` (from :meth:`trace_state` of a penalty with the same
        :attr:`trace_key`) its values are taken from there. ``x``, ``y`` and ``epoch`` are
        ignored."""
        state = self.trace_state() if state is None else list(state)
        half_lam, position = state[0], 1
        total = tf.constant(0.0, tf.float32)
        for variables, _, _ in self.strategy.terms:
            count = len(variables)
            anchors = state[position : position + count]
            omegas = state[position + count : position + 2 * count]
            position += 2 * count
            for v, a, o in zip(variables, anchors, omegas, strict=True):
                total += tf.reduce_sum(o * tf.square(tf.convert_to_tensor(v) - a))
        return half_lam * total
