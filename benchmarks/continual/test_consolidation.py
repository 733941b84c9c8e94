"""The consolidation cases: every registered measure as EWC importance x scenario, over seeds.

Ids read ``<strategy>-<measure>-<scenario>`` for EWC (``-k ewc-fisher-evenodd``,
``-k ewc-online-fisher-permuted``) and ``<strategy>-<scenario>`` for the references naive, L2,
replay and joint (``-k l2-evenodd``). A case runs every seed of the scenario: per seed, the lambda
of the grid with the best validation ACC, and its test accuracy matrix, recorded as a
``consolidation`` record. A measure that raises is recorded as failed (the case fails, the run
goes on). Quick mode: the even/odd split with every measure, and 3-task permuted MNIST with the
measures of the power check (see docs/consolidation.md); ``--full``: split MNIST task-, domain-
and class-incremental, 5-task permuted MNIST, and the even/odd split and permuted MNIST again
under PyTorch's initialisation.

* ``test_consolidation``: one strategy (and measure) on one scenario over seeds.
* ``test_fisher_beats_naive_and_l2``: EWC with ``fisher`` ends with a higher ACC than naive and
  than L2 (each at its own chosen lambda) on the even/odd split, paired over seeds.
* ``test_same_seed_same_numbers``: a fresh re-run of seed 0 gives bitwise the same R matrix.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.continual import study as continual
from benchmarks.plugin.failures import MeasureFailed
from benchmarks.plugin.options import RunOptions
from benchmarks.plugin.session import bench_session_of


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    import importance as imp

    name = metafunc.function.__name__
    if name not in ("test_consolidation", "test_same_seed_same_numbers"):
        return
    plan = continual.make_plan(bench_session_of(metafunc.config).options)
    # Under xdist every case of a scenario goes to one worker, which trains each first task once;
    # scenarios are independent, so two of them can run on two workers at once.
    xdist = metafunc.config.pluginmanager.hasplugin("xdist")
    params = []
    for scenario in plan.scenarios:
        marks = [pytest.mark.xdist_group(f"consolidation-{scenario.name}")] if xdist else []
        if name == "test_same_seed_same_numbers":
            params += [pytest.param(scenario, "ewc", m, "separate", id=f"ewc-{m}-{scenario.name}",
                                    marks=marks)
                       for m in ("fisher", "si") if scenario.name == "evenodd"]
            continue
        params += [pytest.param(scenario, s, None, "separate", id=f"{s}-{scenario.name}", marks=marks)
                   for s in continual.references()]
        measures = imp.available_measures() if scenario.measures is None else scenario.measures
        params += [pytest.param(scenario, "ewc", m, "separate", id=f"ewc-{m}-{scenario.name}",
                                marks=marks) for m in measures]
        params += [pytest.param(scenario, "ewc", m, "online", id=f"ewc-online-{m}-{scenario.name}",
                                marks=marks) for m in scenario.online]
    metafunc.parametrize("scenario,strategy,measure,mode", params)


@pytest.fixture(scope="session")
def consolidation(bench_options: RunOptions) -> continual.Study:
    """The process-wide memo of first tasks and outcomes, for this run's consolidation plan."""
    return continual.Study(continual.make_plan(bench_options))


def _outcome(consolidation, bench_records, scenario, seed, strategy, measure, mode="separate"):
    try:
        outcome = consolidation.outcome(scenario, seed, strategy, measure, mode=mode)
    except MeasureFailed as error:
        failed = continual.record(scenario, seed, strategy, measure, None, mode=mode,
                                  error=str(error))
        bench_records.write([failed])
        if isinstance(error, continual.NotApplicable):  # listed in the leaderboard with the reason
            pytest.skip(f"not applicable to EWC: {error}")
        pytest.fail(str(error), pytrace=False)
    return outcome


def test_consolidation(consolidation, bench_records, scenario, strategy, measure, mode):
    """Per seed: the chosen lambda's accuracy matrix, recorded; then its sanity properties."""
    from importance.continual import get_strategy

    if scenario.heads not in get_strategy(strategy).supported_heads:
        pytest.skip(f"strategy {strategy!r} does not support heads={scenario.heads!r}")
    for seed in consolidation.plan.seeds_of(scenario):
        outcome = _outcome(consolidation, bench_records, scenario, seed, strategy, measure, mode)
        bench_records.write([continual.record(scenario, seed, strategy, measure, outcome,
                                              mode=mode)])
        tasks = outcome.R.shape[1]
        assert outcome.R.shape == (tasks, tasks) and tasks >= 2
        assert np.all((outcome.R >= 0) & (outcome.R <= 1))
        assert outcome.lam in outcome.grid
        assert max(outcome.val_acc) == outcome.val_acc[outcome.grid.index(outcome.lam)]
        # The shared first task is the same for every strategy: same R[0, :].
        naive = consolidation.outcome(scenario, seed, "naive")
        np.testing.assert_array_equal(outcome.R[0], naive.R[0])


@pytest.mark.xdist_group("consolidation-evenodd")  # with the cases whose outcomes it reuses
def test_fisher_beats_naive_and_l2(consolidation, bench_records):
    """Even/odd split, one shared head: EWC(fisher) ends with a higher ACC than naive and than L2
    (each at its own chosen lambda), paired over seeds: the mean of the per-seed ACC differences
    is positive."""
    scenario = next(s for s in consolidation.plan.scenarios if s.name == "evenodd")
    lifts = {"naive": [], "l2": []}
    for seed in consolidation.plan.seeds_of(scenario):
        fisher = _outcome(consolidation, bench_records, scenario, seed, "ewc", "fisher")
        acc = float(fisher.R[-1].mean())
        for reference in lifts:
            other = consolidation.outcome(scenario, seed, reference)
            lifts[reference].append(acc - float(other.R[-1].mean()))
    for reference, values in lifts.items():
        assert np.mean(values) > 0, (
            f"EWC(fisher) does not beat {reference} on the even/odd split; ACC lift per seed: "
            + ", ".join(f"{v:+.3f}" for v in values))


def test_same_seed_same_numbers(consolidation, scenario, strategy, measure, mode):
    """A fresh study (first task trained again) at the same seed and lambda gives bitwise the same R."""
    seed = consolidation.plan.seeds_of(scenario)[0]
    kept = consolidation.outcome(scenario, seed, strategy, measure)
    fresh = continual.Study(consolidation.plan)
    again = fresh.outcome(scenario, seed, strategy, measure, grid=(kept.lam,))
    np.testing.assert_array_equal(again.R, kept.R)
    assert again.history.equals(kept.history)
