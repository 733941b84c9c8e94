"""The leaderboard cases: every registered measure x task x aggregation level (x scope, replacement).

Ids read ``<measure>-<task>-<level>[-<scope>-<replace>]``: ``-k fisher-mnist5k-unit`` selects
the Fisher case on mnist5k at unit level (and its layer-shuffled control ``shuffled_fisher``;
``-k "[fisher-mnist5k-unit]"`` selects that case alone). A case runs every seed of the plan.

Three groups:

* ``test_compute_time``: pytest-benchmark times each measure's computation per task (seed 0);
  the scores are kept for the cases, and quality figures go into ``benchmark.extra_info``.
* ``test_case``: the thresholding curves of one measure, task, level, scope and replacement
  over seeds, recorded for the leaderboard, with the threshold-robustness properties asserted.
* ``test_beats_random``: on ``planted``, every informed measure beats ``random``, paired over
  seeds. On the other tasks rankings are reported, not asserted.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from benchmarks.plugin.failures import MeasureFailed
from benchmarks.plugin.session import bench_session_of
from benchmarks.thresholding import study as thresholding

# Stated tolerances of the properties (see the README, "The scores").
BASE_LOSS_RTOL = 1e-6  # p = 0 reproduces the untouched model's loss
CHANCE_LOSS_ATOL = 0.05  # p = 1 with noise: |loss - ln K| <= 0.05 nats
CHANCE_ACCURACY_ATOL = 0.10  # p = 1: accuracy <= majority-class share + 10 points
ZERO_LOSS_ATOL = 1e-5  # p = 1 with zeros: every logit is 0, the loss is ln K


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    import importance as imp

    config = metafunc.config
    plan: thresholding.Plan = bench_session_of(config).plan
    measures = imp.available_measures()
    grouped = config.pluginmanager.hasplugin("xdist")
    params = []
    for task, variant in plan.tasks:
        label = thresholding.task_label(task, variant)
        marks = _task_marks(task, label, grouped)
        if metafunc.function.__name__ == "test_compute_time":
            if not plan.narrowed(task, variant):
                params += [pytest.param(m, task, variant, id=f"{m}-{label}", marks=marks)
                           for m in measures]
        elif metafunc.function.__name__ == "test_case":
            for level in plan.levels_for(task, variant):
                for scope, replace in plan.treatments_for(task):
                    if level == "layer" and scope == "layer":
                        continue  # one score per layer ranked within the layer: ties only
                    extra = "" if (scope, replace) == thresholding.DEFAULT_TREATMENT else f"-{scope}-{replace}"
                    params += [pytest.param(m, task, variant, level, scope, replace,
                                            id=f"{m}-{label}-{level}{extra}", marks=marks) for m in measures]
        elif metafunc.function.__name__ == "test_beats_random" and task == "planted":
            informed = [m for m in measures if thresholding.is_informed(m)]
            params += [pytest.param(m, task, variant, level, id=f"{m}-{label}-{level}", marks=marks)
                       for level in thresholding.BEATS_RANDOM_LEVELS for m in informed]
    names = {
        "test_compute_time": "measure,task,variant",
        "test_case": "measure,task,variant,level,scope,replace",
        "test_beats_random": "measure,task,variant,level",
    }[metafunc.function.__name__]
    metafunc.parametrize(names, params)


def _task_marks(task: str, label: str, grouped: bool) -> list:
    import tasks

    marks = [pytest.mark.xdist_group(label)] if grouped else []
    try:
        reason = tasks.get_task(task).unavailable_reason()
    except KeyError as error:
        reason = str(error)
    if reason:
        marks.append(pytest.mark.skip(reason=f"task {label}: {reason}"))
    return marks


def test_compute_time(benchmark, study, measure, task, variant):
    """Time one computation of the measure on the task (seed 0); keep its scores for the cases."""
    seed = study.plan.seeds[0]
    subject = study.subject(task, variant, seed)
    benchmark.group = f"compute: {thresholding.task_label(task, variant)}"
    benchmark.extra_info.update(measure=measure, task=task, variant=subject.variant, seed=seed,
                                examples=int(len(subject.measure_data[1])))
    try:
        benchmark.pedantic(study.scores, args=(measure, subject), kwargs={"fresh": True},
                           rounds=1, iterations=1, warmup_rounds=0)
    except MeasureFailed as error:
        pytest.fail(str(error), pytrace=False)
    from reports.scoring import robustness_score, safe_fraction

    for level in study.plan.levels_for(task, variant):
        curve = study.curve(measure, subject, level, *thresholding.DEFAULT_TREATMENT).frame
        benchmark.extra_info[f"robustness_score_{level}"] = robustness_score(
            curve["threshold"], curve["loss"], num_classes=subject.task.num_classes, base_loss=subject.base_loss)
        benchmark.extra_info[f"safe_fraction_{level}"] = safe_fraction(
            curve["threshold"], curve["accuracy"], base_accuracy=subject.base_accuracy)


def test_case(study, bench_records, measure, task, variant, level, scope, replace):
    """Curves over seeds, recorded; then the threshold-robustness properties, for every seed."""
    curves = []
    for seed in study.plan.seeds:
        subject = study.subject(task, variant, seed)
        try:
            curve = study.curve(measure, subject, level, scope, replace)
        except MeasureFailed as error:
            pytest.fail(str(error), pytrace=False)
        bench_records.write(thresholding.point_records(measure, subject, level, scope, replace, curve))
        curves.append((subject, curve))
    # Same seed, same curve: the sweep runs again for the first seed, once per measure and task
    # (its first level, default treatment; the scores are the cached ones, so what is checked is
    # the sweep's seeded ranking, noise and evaluation), except on a task the plan narrows.
    rerun = (not study.plan.narrowed(task, variant) and (scope, replace) == thresholding.DEFAULT_TREATMENT
             and level == study.plan.levels_for(task, variant)[0])
    for index, (subject, curve) in enumerate(curves):
        _check_properties(study, measure, subject, level, scope, replace, curve,
                          rerun=rerun and index == 0)


def _check_properties(study, measure, subject, level, scope, replace, curve, *, rerun: bool) -> None:
    frame = curve.frame.set_index("threshold")
    where = f"{measure} on {subject.task.name} seed {subject.seed} ({level}, {scope}, {replace})"
    thresholds = list(study.plan.thresholds)
    assert list(frame.index) == thresholds, where
    # The model is trained to its task's accuracy bar (tests/tasks/test_tasks_quality.py trains
    # only the cheap tasks: the MNIST models are checked here, where they are trained anyway).
    shortfall = thresholding.quality_shortfall(subject)
    assert shortfall is None, f"{where}: {shortfall}"
    # p = 0: the untouched model's loss.
    assert frame.loc[0.0, "loss"] == pytest.approx(subject.base_loss, rel=BASE_LOSS_RTOL), where
    assert frame.loc[0.0, "accuracy"] == subject.base_accuracy, where
    # p = 1: at chance.
    chance = thresholding.ln_k(subject.task.num_classes)
    tolerance = CHANCE_LOSS_ATOL if replace == "noise" else ZERO_LOSS_ATOL
    assert abs(frame.loc[1.0, "loss"] - chance) <= tolerance, (
        f"{where}: loss at p=1 is {frame.loc[1.0, 'loss']:.4f}, ln K = {chance:.4f} (tolerance {tolerance})")
    majority = thresholding.chance_accuracy(subject.test_data[1])
    assert frame.loc[1.0, "accuracy"] <= majority + CHANCE_ACCURACY_ATOL, (
        f"{where}: accuracy at p=1 is {frame.loc[1.0, 'accuracy']:.3f}, majority class {majority:.3f}")
    # The replaced fraction is exact at every threshold, and the weights really were replaced.
    total = sum(curve.sizes)
    assert len(curve.changed) == len(thresholds), where
    for p, changed in zip(thresholds, curve.changed, strict=True):
        expected = thresholding.expected_count(p, curve.sizes)
        assert frame.loc[p, "fraction_replaced"] == pytest.approx(expected / total, abs=1e-12), (where, p)
        slack = curve.zeros if replace == "zero" else 0  # an original 0 replaced by 0 looks unchanged
        assert expected - slack <= changed <= expected, (
            f"{where}: at p={p} {changed} weights differ from the model, expected {expected}")
    # The model is bitwise unchanged after the case.
    for weight, snapshot in zip(subject.model.trainable_weights, subject.snapshot, strict=True):
        assert np.array_equal(np.asarray(weight.numpy()), snapshot), f"{where}: {weight.path} changed"
    # Same seed, same curve (the sweep runs again for the case's first seed).
    if not rerun:
        return
    again = study.curve(measure, subject, level, scope, replace, fresh=True).frame
    pd.testing.assert_frame_equal(again, curve.frame, check_exact=True, obj=where)


def test_beats_random(study, measure, task, variant, level):
    """On the planted task an informed measure's robustness score beats random's at every seed (paired)."""
    from reports.records import BASELINE
    from reports.scoring import lift, robustness_score

    robustness: dict[str, list[float]] = {measure: [], BASELINE: []}
    for seed in study.plan.seeds:
        subject = study.subject(task, variant, seed)
        for name in robustness:
            try:
                frame = study.curve(name, subject, level, *thresholding.DEFAULT_TREATMENT).frame
            except MeasureFailed as error:
                pytest.fail(str(error), pytrace=False)
            robustness[name].append(robustness_score(frame["threshold"], frame["loss"],
                                                 num_classes=subject.task.num_classes, base_loss=subject.base_loss))
    lifts = lift(robustness[BASELINE], robustness[measure]).tolist()
    assert all(lift > 0 for lift in lifts) and not math.isnan(sum(lifts)), (
        f"{measure} does not beat random on {task} at {level} level; lift per seed: "
        + ", ".join(f"{lift:+.4f}" for lift in lifts))
