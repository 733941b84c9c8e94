"""Saliency benchmark: faithfulness of every saliency method x task over seeds, and explanations
kept under thresholding for the weight measures.

Ids read ``<method>-<task>``; ``-k saliency`` selects this file's cases. Two groups:

* ``test_saliency``: pytest-benchmark times one method's maps on the task's test images (per
  seed), then the deletion / insertion curves (Petsiuk et al. 2018) are recorded as ``saliency``
  records. On ``planted_region`` each informed method must beat ``random_map`` on deletion area
  (mean over seeds); elsewhere rankings are reported.
* ``test_explanation_kept``: per weight measure, the ``mnist5k`` CNN thresholded at p in {0.3,
  0.5, 0.7} (threshold_sweep's rules, global scope, noise), Grad-CAM correlated with the untouched
  model's (``explanation`` records).

Quick mode (default): planted_region seeds 0-1 and mnist5k.cnn seed 0, 32 test images, an
11-point deletion grid, every method but ``score_cam`` and ``smoothgrad`` (one forward pass per
channel / 25 gradient passes per image; run with ``--full``), explanation kept for ``magnitude``
and ``random`` only (the quick weight study has no mnist5k CNN whose scores it could share).
``--full``: seeds 0-2, 128 images, a 21-point grid, every method and every registered measure.
``--bench-seeds N`` gives every task seeds 0 .. N-1 and ``--bench-tasks`` keeps the tasks above it
names, in either mode (as parsed by the benchmark session); the overlay pictures go to the
session's report directory.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from benchmarks.plugin.failures import MeasureFailed
from benchmarks.plugin.options import RunOptions
from benchmarks.plugin.session import bench_session_of
from benchmarks.saliency import study as saliency
from reports.records import task_label
from reports.sections.saliency import explanation_record, saliency_record


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    import importance as imp
    from importance.interpret import available_saliency

    plan = saliency.make_plan(bench_session_of(metafunc.config).options)
    grouped = metafunc.config.pluginmanager.hasplugin("xdist")
    params = []
    for task, variant in plan.tasks:
        label = task_label(task, variant)
        marks = [pytest.mark.xdist_group(label)] if grouped else []
        if metafunc.function.__name__ == "test_saliency":
            methods = [m for m in available_saliency() if m not in plan.skip]
            params += [
                pytest.param(m, task, variant, id=f"{m}-{label}", marks=marks) for m in methods
            ]
        elif metafunc.function.__name__ == "test_explanation_kept" and task in plan.kept_tasks:
            measures = plan.kept_measures or tuple(imp.available_measures())
            params += [
                pytest.param(m, task, variant, id=f"{m}-{label}", marks=marks) for m in measures
            ]
    names = {
        "test_saliency": "method,task,variant",
        "test_explanation_kept": "measure,task,variant",
    }
    metafunc.parametrize(names[metafunc.function.__name__], params)


@pytest.fixture(scope="session")
def saliency_plan(bench_options: RunOptions) -> saliency.Plan:
    """This run's saliency plan (see :func:`benchmarks.saliency.study.make_plan`)."""
    return saliency.make_plan(bench_options)


def test_saliency(benchmark, study, bench_records, bench_session, saliency_plan, method, task, variant):
    """Time the method's maps, record their deletion / insertion curves for every seed."""
    from importance.interpret import compute_saliency
    from importance.interpret.faithfulness import deletion_insertion

    plan = saliency_plan
    benchmark.group = f"saliency: {task_label(task, variant)}"
    lifts = []
    for index, seed in enumerate(plan.seeds[task]):
        run = study.subject(task, variant, seed)
        x, y = saliency.images(run, plan)
        options = {"seed": seed} if method in ("random_map", "smoothgrad") else {}
        start = time.perf_counter()
        if index == 0:
            maps = benchmark.pedantic(compute_saliency, args=(method, run.model, x),
                                      kwargs={"target": y, **options}, rounds=1, iterations=1)  # fmt: skip
        else:
            maps = compute_saliency(method, run.model, x, target=y, **options)
        seconds = time.perf_counter() - start
        curves = deletion_insertion(run.model, x, maps, target=y, steps=plan.steps, seed=seed)
        fields = {
            "method": method, "task": task, "variant": run.variant, "seed": seed,
            "images": len(y), "seconds_per_image": seconds / len(y),
            "deletion_area": curves.deletion_area.tolist(), "insertion_area": curves.insertion_area.tolist(),
            **{column: curves.curves[column].tolist() for column in curves.curves.columns},
        }  # fmt: skip
        if task == "planted_region":
            from tasks.planted_region import region_mask

            mass = np.abs(maps)
            fields["mass_inside"] = float(
                ((mass * region_mask()).sum((1, 2)) / mass.sum((1, 2))).mean()
            )
        bench_records.write([saliency_record(**fields)])
        if method in saliency.ASSERT_BEATS_RANDOM.get(task, ()):
            chance = compute_saliency("random_map", run.model, x, target=y, seed=seed)
            random_area = deletion_insertion(
                run.model, x, chance, target=y, steps=plan.steps, seed=seed
            )
            lifts.append(random_area.deletion_area.mean() - curves.deletion_area.mean())
        if method == "grad_cam" and index == 0:
            _overlay(bench_session.report_dir, plan, run, x, y, task, variant)
    benchmark.extra_info.update(
        method=method, task=task, images=plan.images, seeds=list(plan.seeds[task])
    )
    if lifts:
        assert np.mean(lifts) > 0, f"{method} does not beat random_map on {task}: lifts {lifts}"


def _overlay(report_dir, plan, run, x, y, task, variant) -> None:
    """The overlay grid of the first seed: 6 images, the plan's overlay methods side by side."""
    from importance.interpret import compute_saliency
    from reports.sections.saliency import plot_overlay_grid

    maps = {m: compute_saliency(m, run.model, x[:6], target=y[:6]) for m in plan.overlay_methods}
    label = task_label(task, run.variant)  # as the report names it
    plot_overlay_grid(x[:6], maps, report_dir / "plots" / f"saliency-overlay-{label}.png",
                      title=f"{label}, seed {run.seed}: true class explained")  # fmt: skip


def test_explanation_kept(study, bench_records, saliency_plan, measure, task, variant):
    """Grad-CAM of the thresholded CNN vs the untouched one, per weight measure (recorded)."""
    from importance.interpret.under_thresholding import explanation_kept

    plan = saliency_plan
    for seed in plan.seeds[task]:
        run = study.subject(task, variant, seed)
        try:
            scores = study.scores(measure, run)
        except MeasureFailed as error:
            pytest.fail(str(error), pytrace=False)
        x, y = saliency.images(run, plan)
        frame = explanation_kept(run.model, scores, x, y, thresholds=(0.3, 0.5, 0.7), seed=seed)
        bench_records.write([
            explanation_record(
                measure=measure, task=task, variant=run.variant, seed=seed, method="grad_cam",
                threshold=float(row.threshold), explanation_kept=float(row.explanation_kept),
                loss=float(row.loss), accuracy=float(row.accuracy))
            for row in frame.itertuples()
        ])  # fmt: skip
        for weight, snapshot in zip(run.model.trainable_weights, run.snapshot, strict=True):
            assert np.array_equal(weight.numpy(), snapshot), (
                f"{measure}: {weight.path} not restored"
            )
