"""Consolidation strategies as classes: each carries its own behaviour along a task sequence.

A learner (e.g. :class:`tasks.continual.learner.SequentialLearner`) asks the strategy, never its
name:

* :meth:`Strategy.training_data`: what to train task ``t`` on (``joint``: all data seen so far);
* :meth:`Strategy.consolidate`: what to keep after a task (``l2``, ``ewc``: anchors and omegas);
* :attr:`Strategy.penalty` / :attr:`Strategy.active`: the penalty of the tasks learned so far
  (a traceable :class:`importance.penalties.Penalty`);
* class attributes: :attr:`~Strategy.penalised` (lam matters, so it is searched),
  :attr:`~Strategy.uses_measure` (omega from a registered measure), :attr:`~Strategy.upper_bound`
  (a reference that sees every task's data), :attr:`~Strategy.supported_heads`,
  :attr:`~Strategy.label`.

The built-ins (:data:`~importance.continual.registry.STRATEGIES`):

* ``naive``: plain fine-tuning, no penalty.
* ``l2``: ``omega = 1`` for every penalised weight.
* ``ewc``: ``omega`` from **any registered measure** (:func:`importance.compute_importance`),
  computed on the task just learned: post-hoc measures from the model and that task's training
  data, online measures (SI, the seed trackers) from the trajectory recorded while learning it.
* ``joint``: multi-task training on all data seen so far, no penalty (the upper bound).
* ``replay``: experience replay, a small reference that is **not an importance method**: each
  task is trained on its own data plus a fixed memory of ``memory`` examples (default 200) drawn
  evenly and seeded from the earlier tasks' training data, no penalty. It is the rehearsal row the
  literature quotes beside the regularisers (Hsu et al. 2018, "Re-evaluating continual learning
  scenarios", "naive rehearsal"; Chaudhry et al. 2019, "On tiny episodic memories in continual
  learning").

A new strategy is one subclass, registered by name::

    from importance.continual import Strategy, register_strategy, normalise

    @register_strategy("magnitude")
    class Magnitude(Strategy):
        \"\"\"omega = |theta| at the end of each task.\"\"\"
        label, penalised = "magnitude", True

        def importance(self, model, penalised, *, data=None, recorder=None):
            return normalise([abs(w.numpy()) for w in model.trainable_weights], penalised)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from importance.checks import check_choice, check_number
from importance.continual.consolidation import (
    MODES,
    ConsolidationPenalty,
    Terms,
    anchor,
    check_lam,
    normalise,
)
from importance.continual.registry import STRATEGIES, available_strategies, register_strategy
from importance.measures import compute_importance, get_measure
from importance.validation import check_classifier, check_data

__all__ = ["EWC", "L2", "Consolidator", "Joint", "Naive", "Replay", "Strategy"]

Split = tuple[np.ndarray, np.ndarray]


class Strategy:
    """One consolidation strategy's state and behaviour along a task sequence.

    The base class is plain fine-tuning: it trains each task on its own data and keeps nothing.
    A penalised subclass (``penalised = True``) implements :meth:`importance`; the base then
    anchors the penalised weights after every task with that omega (:meth:`consolidate`) and
    :attr:`penalty` is ``lam / 2 * sum_terms sum_i omega_i (theta_i - theta*_i)^2``.

    Args:
        lam: Penalty strength ``>= 0`` (ignored unless :attr:`penalised`).
        measure: Registered measure name (required when :attr:`uses_measure`, refused otherwise).
        mode: ``"separate"`` (one anchor and omega per past task) or ``"online"`` (one anchor,
            ``omega <- gamma * omega + omega_t``); see :data:`MODES`.
        gamma: Decay of the online mode's accumulated omega, in ``(0, 1]``.
        measure_options: Keyword options for the measure.
        name: The registered name (the factory :func:`Consolidator` passes it).

    Attributes:
        label: Short display name (``"naive"``, ``"L2"``, ``"EWC"``, ``"joint"``).
        penalised: Whether the strategy adds a penalty scaled by ``lam`` (so lam is searched).
        uses_measure: Whether omega comes from a registered measure (``measure=`` needed).
        upper_bound: Whether the strategy is a reference that trains on every task's data.
        supported_heads: The learner head layouts it works with (``"shared"``, ``"per_task"``).
        terms: One ``(variables, anchors, omegas)`` triple per consolidated task (see
            :func:`~importance.continual.consolidation.anchor`).

    Raises:
        ValueError: Unknown mode, bad lam or gamma, a measure given to a strategy that uses none
            or none to one that needs it.
        KeyError: Unknown measure; the message lists the available ones.
    """

    label: ClassVar[str] = ""
    penalised: ClassVar[bool] = False
    uses_measure: ClassVar[bool] = False
    upper_bound: ClassVar[bool] = False
    supported_heads: ClassVar[tuple[str, ...]] = ("shared", "per_task")

    def __init__(
        self,
        *,
        lam: float = 0.0,
        measure: str | None = None,
        mode: str = "separate",
        gamma: float = 1.0,
        measure_options: dict[str, Any] | None = None,
        name: str | None = None,
    ):
        self.name = name or self.label or type(self).__name__
        check_choice("mode", mode, MODES)
        try:
            check_number("gamma", gamma, minimum=0, strict=True)
        except ValueError:
            ok = False
        else:
            ok = gamma <= 1
        if not ok:
            raise ValueError(f"gamma must be in (0, 1]. Received: {gamma!r}")
        if measure_options is not None and not isinstance(measure_options, dict):
            raise TypeError("measure_options must be a dict of the measure's keyword options. "
                            f"Received: {measure_options!r}")
        if self.uses_measure and measure is None:
            raise ValueError(
                f"strategy {self.name!r} needs a measure (a registered name). Received: None"
            )
        if not self.uses_measure and measure is not None:
            users = " or ".join(repr(n) for n in available_strategies(lambda cls: cls.uses_measure))
            raise ValueError(f"measure is only used by strategy {users}. "
                             f"Received: measure={measure!r} with strategy={self.name!r}")
        self.spec = get_measure(measure) if measure is not None else None
        self.measure, self.mode = measure, mode
        self.lam, self.gamma = check_lam(lam), float(gamma)
        self.measure_options = dict(measure_options or {})
        self.terms: Terms = []

    def __repr__(self) -> str:
        measure = f", measure={self.measure!r}" if self.measure is not None else ""
        return (f"{type(self).__name__}(name={self.name!r}, lam={self.lam:g}{measure}, "
                f"mode={self.mode!r})")

    @property
    def method(self) -> str:
        """The display name of this configuration (``"L2"``; ``"EWC(fisher)"`` for EWC)."""
        return self.label or self.name

    @property
    def needs_recorder(self) -> bool:
        """True when the measure is online: record the training of every task for it."""
        return self.spec is not None and self.spec.online

    def training_data(self, seen: Sequence[Split]) -> Split:
        """What to train the current task on, given the training splits of the tasks seen so far
        (the current one last): its own split."""
        return seen[-1]

    def importance(self, model: Any, penalised: Sequence[bool], *, data: Any = None,
                   recorder: Any = None) -> list[np.ndarray]:
        """The normalised omega of the task ``model`` just learned (penalised strategies).

        Raises:
            ValueError: The strategy has no importance (it is not penalised).
        """
        raise ValueError(f"strategy {self.name!r} has no importance.")

    def consolidate(self, model: Any, penalised: Sequence[bool], *, data: Any = None,
                    recorder: Any = None, omega: Sequence[np.ndarray] | None = None) -> None:
        """After a task: anchor the penalised weights of ``model`` at their current values with
        their omega (penalised strategies; the others keep nothing).

        Args:
            model: The model that has just learned a task.
            penalised: One flag per ``model.trainable_weights`` entry.
            data: The task's data for a post-hoc measure.
            recorder: The recorder of the task's training, for an online measure.
            omega: A precomputed :meth:`importance` (reused across a lambda grid).
        """
        if not self.penalised:
            return
        data = self.check_inputs(model, penalised, data=data, omega=omega)
        if omega is None:
            omega = self.importance(model, penalised, data=data, recorder=recorder)
        self.terms = anchor(self.terms, model, penalised, omega, mode=self.mode, gamma=self.gamma)

    def check_inputs(self, model: Any, penalised: Sequence[bool], *, data: Any = None,
                     omega: Sequence[Any] | None = None) -> Any:
        """Check what :meth:`consolidate` is given, before any work, through
        :mod:`importance.validation`; return ``data`` checked (arrays as a checked ``(x, y)``).

        Raises:
            TypeError: Not a Keras model, or ``penalised`` not a sequence of booleans.
            ValueError: A multi-output or unbuilt model, ``penalised`` or ``omega`` without one
                entry per trainable weight, bad data for a post-hoc measure (NaN/inf inputs,
                labels out of the model's class range, wrong input width, no examples).
        """
        check_classifier(model)
        count = len(model.trainable_weights)
        if isinstance(penalised, (str, bytes)) or not isinstance(penalised, Sequence) or not all(
                isinstance(p, (bool, np.bool_)) for p in penalised):
            raise TypeError("penalised must be a sequence of booleans, one per trainable weight. "
                            f"Received: {penalised!r}")
        if len(penalised) != count:
            raise ValueError(f"penalised must have one flag per trainable weight ({count}). "
                             f"Received: {len(penalised)} flags")
        if omega is not None and len(omega) != count:
            raise ValueError(f"omega must have one array per trainable weight ({count}). "
                             f"Received: {len(omega)} arrays")
        if omega is None and data is not None and self.spec is not None and not self.spec.online:
            return check_data(data, model=model)
        return data

    @property
    def penalty(self) -> ConsolidationPenalty:
        """The penalty of the current terms and lam, for ``tasks.trainer.train(penalty=...)``:
        ``strategy.penalty(model)`` is ``lam / 2 * sum_terms sum_i omega_i (theta_i - theta*_i)^2``
        (0 with no term). See :class:`~importance.continual.consolidation.ConsolidationPenalty`."""
        return ConsolidationPenalty(self)

    @property
    def active(self) -> bool:
        """Whether :attr:`penalty` can be nonzero (a penalised strategy, lam > 0, a term)."""
        return self.penalised and self.lam > 0 and bool(self.terms)


@register_strategy("naive")
class Naive(Strategy):
    """Plain fine-tuning: each task on its own data, no penalty."""

    label = "naive"


@register_strategy("l2")
class L2(Strategy):
    """omega = 1 for every penalised weight: a plain L2 pull towards the last task's weights."""

    label = "L2"
    penalised = True

    def importance(self, model: Any, penalised: Sequence[bool], *, data: Any = None,
                   recorder: Any = None) -> list[np.ndarray]:
        """Ones on the penalised weights (already mean 1), zeros elsewhere."""
        return normalise([np.ones(tuple(w.shape)) for w in model.trainable_weights], penalised)


@register_strategy("ewc")
class EWC(Strategy):
    """omega from any registered measure, on the task just learned (Kirkpatrick et al. 2017)."""

    label = "EWC"
    penalised = True
    uses_measure = True

    @property
    def method(self) -> str:
        """``EWC(<measure>)``, ``EWC-online(<measure>)`` in online mode."""
        return f"EWC{'-online' if self.mode == 'online' else ''}({self.measure})"

    def importance(self, model: Any, penalised: Sequence[bool], *, data: Any = None,
                   recorder: Any = None) -> list[np.ndarray]:
        """The measure's scores on ``data`` (post-hoc) or ``recorder`` (online), normalised.

        Raises:
            RuntimeError: An online measure with no recorder of the task's training (None or 0
                steps).
        """
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


@register_strategy("joint")
class Joint(Strategy):
    """Multi-task training on all data seen so far, no penalty (the upper bound)."""

    label = "joint"
    upper_bound = True
    supported_heads = ("shared",)

    def training_data(self, seen: Sequence[Split]) -> Split:
        """Every seen task's training split, concatenated in task order."""
        return np.concatenate([s[0] for s in seen]), np.concatenate([s[1] for s in seen])


@register_strategy("replay")
class Replay(Strategy):
    """Experience replay with a small memory (a reference, not an importance method).

    Task ``t`` trains on its own training split plus ``memory`` examples of the earlier tasks
    (``memory // t`` from each, the first of a seeded permutation of its training split, so the
    stored examples of a task do not change as later tasks arrive). No penalty. One shared head
    only: a replayed example of another task needs that task's head.

    Args:
        memory: Examples kept in memory over all earlier tasks (a positive integer).
        seed: Seed of the choice of stored examples.
        **options: As for :class:`Strategy`.
    """

    label = "replay"
    supported_heads = ("shared",)

    def __init__(self, *, memory: int = 200, seed: int = 0, **options: Any):
        super().__init__(**options)
        from importance.checks import check_positive_int, check_seed

        self.memory = check_positive_int("memory", memory)
        self.seed = check_seed(seed)

    def training_data(self, seen: Sequence[Split]) -> Split:
        """The current split plus the memory drawn from the earlier splits (task order)."""
        *earlier, current = seen
        if not earlier:
            return current
        per_task = max(1, self.memory // len(earlier))
        xs, ys = [current[0]], [current[1]]
        for t, (x, y) in enumerate(earlier):
            order = np.random.default_rng([self.seed, t]).permutation(len(y))[:per_task]
            xs.append(x[np.sort(order)])
            ys.append(y[np.sort(order)])
        return np.concatenate(xs), np.concatenate(ys)


def Consolidator(strategy: str, **options: Any) -> Strategy:  # noqa: N802 - the public entry, kept
    """The registered strategy ``strategy``, built with ``options`` (over its registered defaults).

    Usage, with ``penalised`` the flags of the shared weights of ``model``::

        strategy = Consolidator("ewc", measure="fisher", lam=100.0)
        train(model, task_a, ...)                      # or learner.train_task(...)
        strategy.consolidate(model, penalised, data=task_a)
        train(model, task_b, ..., penalty=strategy.penalty)

    Args:
        strategy: A registered name (:func:`~importance.continual.available_strategies`).
        **options: ``lam``, ``measure``, ``mode``, ``gamma``, ``measure_options`` (see
            :class:`Strategy`).

    Raises:
        ValueError: Unknown strategy, or a bad option (see :class:`Strategy`).
        KeyError: Unknown measure; the message lists the available ones.
    """
    check_choice("strategy", strategy, available_strategies())
    entry = STRATEGIES.get(strategy)
    return entry.fn(**{**entry.defaults, **options}, name=strategy)
