"""The consolidation study: its plan (scenarios, lambda grid, seeds) and a per-process memo of
finished runs.

Per scenario and seed the first task is trained once (with every online tracker recording) and
shared by every strategy, measure and lambda; each measure's importance of that task is computed
once and reused across the lambda grid. Lambda is chosen per strategy, measure and seed by the
validation ACC (validation carved from the training data; ties go to the smaller lambda); the
test accuracy matrix of that lambda is what the leaderboard reports.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from benchmarks.plugin.failures import MeasureFailed
from benchmarks.plugin.options import RunOptions
from reports.sections.consolidation import consolidation_record


def references() -> list[str]:
    """The strategies run without a measure (naive, L2, joint and any such plugin): the
    reference rows of every scenario, fine-tuning first and upper bounds last."""
    from importance.continual import available_strategies, get_strategy

    names = available_strategies(lambda strategy: not strategy.uses_measure)
    return sorted(names, key=lambda n: (get_strategy(n).upper_bound, get_strategy(n).penalised))


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One continual-learning benchmark scenario.

    ``measures``: the EWC measures run on it (None: every registered measure); ``online``: the
    measures also run as online EWC (one anchor, omega accumulated with gamma = 1, Schwarz et al.
    2018); ``seeds``: its default number of seeds (``--bench-seeds`` overrides); ``grid``: its
    lambda grid (None: the plan's); ``init``, ``measure_examples`` and ``evaluate_every_epoch``
    go to the learner (:class:`tasks.continual.SequentialLearner`).
    """

    name: str
    sequence: str
    heads: str
    options: tuple[tuple[str, Any], ...] = ()
    max_train: int = 1000
    max_test: int = 500
    epochs: int = 3
    hidden: tuple[int, ...] = (128,)
    init: str = "keras"
    measure_examples: int | None = None  # None: each importance sees its whole task
    evaluate_every_epoch: bool = False
    measures: tuple[str, ...] | None = None
    online: tuple[str, ...] = ()
    seeds: int | None = None
    grid: tuple[float, ...] | None = None


# Lambda grids log-spaced one point per decade over 4 decades, so that an optimum cannot hide
# (issue 22); the chosen lambda is flagged in the leaderboard when it sits at an edge.
GRID = (0.01, 0.1, 1.0, 10.0, 100.0)
LOW_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)  # permuted MNIST: L2 and random choose lambda <= 0.01
# The literature's methods (Hsu et al. 2018, Table 2) and the two controls that answer "does the
# measure matter?" (EWC(uniform) is L2, which runs as a reference row).
LITERATURE = ("fisher", "fisher_argmax", "si", "mas", "random")
POWER = ("fisher", "mas", "random")
QUICK_SCENARIOS = (
    Scenario("evenodd", "split_evenodd", "shared"),
    Scenario("permuted", "permuted_mnist", "shared", options=(("num_tasks", 3),), measures=POWER,
             grid=LOW_GRID, seeds=5),
)
FULL_SCENARIOS = (
    Scenario("evenodd", "split_evenodd", "shared", evaluate_every_epoch=True),
    Scenario("splitmnist-task", "split_mnist", "per_task", max_train=400, max_test=300,
             measures=LITERATURE, online=("fisher",)),
    Scenario("splitmnist-domain", "split_mnist", "shared", max_train=400, max_test=300,
             measures=LITERATURE, online=("fisher",)),
    Scenario("splitmnist-class", "split_mnist", "shared", options=(("labels", "digit"),),
             max_train=400, max_test=300, measures=LITERATURE, online=("fisher",)),
    Scenario("permuted", "permuted_mnist", "shared", options=(("num_tasks", 5),),
             measures=LITERATURE, online=("fisher",), grid=LOW_GRID),
    Scenario("evenodd-pytorch", "split_evenodd", "shared", init="pytorch",
             measures=LITERATURE + ("uniform",)),
    Scenario("permuted-pytorch", "permuted_mnist", "shared", options=(("num_tasks", 5),),
             init="pytorch", measures=LITERATURE, online=("fisher",), grid=LOW_GRID),
)


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the consolidation cases of one run cover."""

    mode: str
    seeds: tuple[int, ...]
    scenarios: tuple[Scenario, ...]
    grid: tuple[float, ...]
    scenario_seeds: tuple[tuple[str, tuple[int, ...]], ...] = ()

    def seeds_of(self, scenario: Scenario) -> tuple[int, ...]:
        """The seeds run on ``scenario`` (its own default count, or ``--bench-seeds``)."""
        return dict(self.scenario_seeds).get(scenario.name, self.seeds)

    def grid_of(self, scenario: Scenario) -> tuple[float, ...]:
        """The lambda grid of ``scenario``."""
        return scenario.grid or self.grid


def make_plan(options: RunOptions) -> Plan:
    """Quick: the even/odd split with every measure (seeds 0-2) and permuted MNIST with the
    measures of the power check (seeds 0-4); ``--full``: the literature's scenarios, seeds 0-4.
    ``--bench-seeds N`` gives seeds ``0 .. N-1`` on every scenario."""
    scenarios, default = (FULL_SCENARIOS, 5) if options.full else (QUICK_SCENARIOS, 3)
    seeds = {s.name: options.seed_range(s.seeds or default) for s in scenarios}
    return Plan(options.mode, options.seed_range(default), scenarios, GRID,
                tuple(seeds.items()))


class NotApplicable(MeasureFailed):
    """The measure's scores cannot weight a quadratic penalty (signed scores)."""


class Study:
    """Memo of first tasks, importances and outcomes for this process.

    Args:
        plan: The consolidation plan of this run.
    """

    def __init__(self, plan: Plan):
        self.plan = plan
        self.grid = plan.grid
        self._first: dict[tuple, tuple] = {}
        self._omega: dict[tuple, Any] = {}
        self._outcomes: dict[tuple, Any] = {}

    def first(self, scenario: Scenario, seed: int) -> tuple[Any, dict, Any]:
        """(learner, state after task 0, recorder of task 0), trained once per scenario and seed."""
        key = (scenario.name, seed)
        if key not in self._first:
            import importance
            from tasks.continual import SequentialLearner, continual_sequence, prepare_sequence

            data = prepare_sequence(continual_sequence(scenario.sequence, **dict(scenario.options)),
                                    max_train=scenario.max_train, max_test=scenario.max_test, heads=scenario.heads)
            learner = SequentialLearner(data, heads=scenario.heads, hidden=scenario.hidden, seed=seed,
                                        epochs=scenario.epochs, init=scenario.init,
                                        measure_examples=scenario.measure_examples,
                                        evaluate_every_epoch=scenario.evaluate_every_epoch)
            recorder = importance.track(learner.model(0), patch_fit=False)
            learner.train_task(0, recorder=recorder)
            self._first[key] = (learner, learner.state(), recorder)
        return self._first[key]

    def omega(self, scenario: Scenario, seed: int, strategy: str, measure: str | None) -> list[np.ndarray]:
        """The normalised importance of task 0 (cached; a failure is cached and raised again)."""
        from importance.continual import Consolidator, SignedImportanceError

        key = (scenario.name, seed, strategy, measure)
        if key not in self._omega:
            learner, state, recorder = self.first(scenario, seed)
            learner.set_state(state)
            try:
                consolidator = Consolidator(strategy, measure=measure)
                self._omega[key] = consolidator.importance(learner.model(0), learner.penalised(0),
                                                           data=learner.measure_data(0), recorder=recorder)
            except Exception as error:  # noqa: BLE001 - any measure error is reported, the run goes on
                failure = NotApplicable if isinstance(error, SignedImportanceError) else MeasureFailed
                self._omega[key] = failure(f"{measure or strategy}: {type(error).__name__}: {error}")
        if isinstance(self._omega[key], MeasureFailed):
            raise self._omega[key]
        return self._omega[key]

    def outcome(self, scenario: Scenario, seed: int, strategy: str, measure: str | None = None,
                *, grid: tuple[float, ...] | None = None, mode: str = "separate") -> Any:
        """The :class:`tasks.continual.LambdaSearch` of one strategy (and measure), cached."""
        from importance.continual import get_strategy
        from tasks.continual import search_lambda

        key = (scenario.name, seed, strategy, measure, grid, mode)
        if key not in self._outcomes:
            penalised = get_strategy(strategy).penalised
            omega = {0: self.omega(scenario, seed, strategy, measure)} if penalised else None
            learner, state, recorder = self.first(scenario, seed)
            learner.set_state(state)
            started = time.perf_counter()
            try:
                search = search_lambda(learner, strategy, grid=grid or self.plan.grid_of(scenario),
                                       measure=measure, omega=omega, recorder=recorder, mode=mode)
            except Exception as error:  # noqa: BLE001 - an online measure may fail on later tasks
                raise MeasureFailed(f"{measure or strategy}: {type(error).__name__}: {error}") from error
            search.seconds = time.perf_counter() - started
            self._outcomes[key] = search
        return self._outcomes[key]


def record(scenario: Scenario, seed: int, strategy: str, measure: str | None, outcome: Any,
           *, mode: str = "separate", error: str | None = None) -> dict[str, Any]:
    """The ``consolidation`` result record of one outcome (or of a failure, with ``error``).

    ``measure_examples``: the examples each consolidated task's importance was computed on (one
    count per task but the last; None for strategies without a measure and for online measures,
    which read the training trajectory); ``init``: the learner's initialisation.

    The strategy names its own display label and whether lambda matters (``method``,
    ``penalised``), so the report needs no table of strategy names.
    """
    from importance.continual import Consolidator, get_strategy, summary

    base = {"scenario": scenario.name, "sequence": scenario.sequence,
            "heads": scenario.heads, "strategy": strategy, "measure": measure or strategy, "mode": mode,
            "seed": int(seed), "method": Consolidator(strategy, measure=measure, mode=mode).method,
            "penalised": get_strategy(strategy).penalised, "init": scenario.init}
    if outcome is None:
        return consolidation_record(**base, error=error or "failed")
    history = outcome.history[outcome.history["split"] == "test"]
    curve = [[int(r.epoch), str(r.trained), str(r.evaluated), float(r.accuracy)] for r in history.itertuples()]
    return consolidation_record(**base, **summary(outcome.R), **{"lam": outcome.lam, "grid": list(outcome.grid),
            "val_acc": outcome.val_acc, "R": outcome.R.tolist(), "curve": curve, "seconds": getattr(outcome, "seconds", None),
            "tasks": list(dict.fromkeys(history["evaluated"])),
            "measure_examples": [int(outcome.measure_seen[t]) for t in sorted(outcome.measure_seen)]
            or None})
