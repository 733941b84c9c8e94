"""Saliency benchmark: faithfulness of every saliency method x task over seeds, and explanations
kept under thresholding for the weight measures.

Ids read ``<method>-<task>``; ``-k saliency`` selects this file's cases. Two groups:

* ``test_saliency``: pytest-benchmark times one method's maps on the task's test images (per
  seed), then the deletion / insertion curves (Petsiuk et al. 2018) are recorded as ``saliency``
  records. On ``planted_region`` each informed method must beat ``random_map`` on deletion area
  (mean over seeds); elsewhere rankings are reported. The same case records, on the first
  16 images (64 with ``--full``), ROAD MoRF/LeRF (Rong et al. 2022), the cascading
  model-parameter randomisation (Adebayo et al. 2018; a ``randomisation`` record, the model
  checked bitwise restored; the model-free controls must fail it) and, on ``planted_region``,
  the pointing game, relevance rank accuracy and the early insertion area (see
  ``study.EARLY_INSERTION_TASKS`` for why).
* ``test_randomisation_cascade``: per task, the cascade figure of a few methods on 2 images
  (``plots/saliency-randomisation-<task>.png``).
* ``test_explanation_kept``: per weight measure, the ``mnist5k`` CNN of seeds 0-2 thresholded at
  p in {0.3, 0.5, 0.7} (threshold_sweep's rules, global scope, noise), Grad-CAM correlated with
  the untouched model's (``explanation`` records): the explanation axis of the overall table.

Quick mode (default): planted_region seeds 0-1 and mnist5k.cnn seed 0, 32 test images, an
11-point deletion grid, every method but ``score_cam`` and ``smoothgrad`` (one forward pass per
channel / 25 gradient passes per image; run with ``--full``), explanation kept for every
registered measure on 3 seeds (the scores are the quick removal table's on the mnist5k CNN).
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
from reports.sections.saliency import explanation_record, randomisation_record, saliency_record


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
        elif metafunc.function.__name__ == "test_randomisation_cascade":
            params.append(pytest.param(task, variant, id=label, marks=marks))
        elif metafunc.function.__name__ == "test_explanation_kept" and task in plan.kept_tasks:
            measures = plan.kept_measures or tuple(imp.available_measures())
            params += [
                pytest.param(m, task, variant, id=f"{m}-{label}", marks=marks) for m in measures
            ]
    names = {
        "test_saliency": "method,task,variant",
        "test_explanation_kept": "measure,task,variant",
        "test_randomisation_cascade": "task,variant",
    }
    metafunc.parametrize(names[metafunc.function.__name__], params)


@pytest.fixture(scope="session")
def saliency_plan(bench_options: RunOptions) -> saliency.Plan:
    """This run's saliency plan (see :func:`benchmarks.saliency.study.make_plan`)."""
    return saliency.make_plan(bench_options)


@pytest.fixture(scope="session")
def saliency_evaluation(bench_options: RunOptions) -> saliency.Evaluation:
    """This run's sanity / ROAD / localisation sizes (see :func:`benchmarks.saliency.study.evaluation`)."""
    return saliency.evaluation(bench_options)


def test_saliency(benchmark, study, bench_records, bench_session, saliency_plan,
                  saliency_evaluation, method, task, variant):  # fmt: skip
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
        fields.update(_evaluate(run, x, y, maps, method, options, task, seed,
                                saliency_evaluation, bench_records))  # fmt: skip
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


def _evaluate(run, x, y, maps, method, options, task, seed, evaluation, bench_records) -> dict:
    """ROAD, localisation, early insertion (saliency-record fields) and the randomisation cascade
    (its own record) of one method, task and seed (issue 24)."""
    from importance.interpret.faithfulness import deletion_insertion
    from importance.interpret.localisation import pointing_game, relevance_rank_accuracy
    from importance.interpret.randomisation import PASS_THRESHOLD, model_randomisation
    from importance.interpret.road import road

    n = evaluation.randomisation_images
    result = road(run.model, x[:n], maps[:n], target=y[:n], fractions=evaluation.road_fractions,
                  seed=seed)  # fmt: skip
    fields = {"road_morf": result.morf.tolist(), "road_lerf": result.lerf.tolist(),
              "road_fractions": list(evaluation.road_fractions)}  # fmt: skip
    if task == "planted_region":
        from tasks.planted_region import region_mask

        fields["pointing_game"] = pointing_game(maps, region_mask()).tolist()
        fields["relevance_rank_accuracy"] = relevance_rank_accuracy(maps, region_mask()).tolist()
    if task in saliency.EARLY_INSERTION_TASKS:
        fine = deletion_insertion(run.model, x[:n], maps[:n], target=y[:n],
                                  steps=evaluation.fine_steps, seed=seed).curves  # fmt: skip
        early = fine[fine.fraction <= evaluation.early_fraction + 1e-12]
        fields["insertion_early"] = float(
            np.trapezoid(early.insertion_probability, early.fraction) / evaluation.early_fraction
        )
        fields["early_fraction"] = evaluation.early_fraction
    before = [w.numpy().tobytes() for w in run.model.weights]
    cascade = model_randomisation(run.model, x[:n], target=y[:n], method=method,
                                  options=options, seed=seed)  # fmt: skip
    assert [w.numpy().tobytes() for w in run.model.weights] == before, "model not restored"
    bench_records.write([randomisation_record(
        method=method, task=task, variant=run.variant, seed=seed, images=len(y[:n]),
        layers=list(cascade.layers), spearman=cascade.spearman.mean(axis=1).tolist(),
        ssim=cascade.ssim.mean(axis=1).tolist(), threshold=PASS_THRESHOLD)])  # fmt: skip
    if method in saliency.MODEL_FREE:
        assert not cascade.passed(), f"{method} reads no model yet passed the randomisation check"
    return fields


def test_randomisation_cascade(study, bench_session, saliency_plan, saliency_evaluation, task,
                               variant):  # fmt: skip
    """The cascade figure of the first seed: a few methods' maps as the layers are randomised."""
    from importance.interpret.randomisation import model_randomisation
    from reports.sections.saliency import plot_randomisation_cascade

    evaluation = saliency_evaluation
    run = study.subject(task, variant, saliency_plan.seeds[task][0])
    x, y = saliency.images(run, saliency_plan)
    x, y = x[: evaluation.cascade_images], y[: evaluation.cascade_images]
    cascades, layers = {}, ()
    for method in evaluation.cascade_methods:
        result = model_randomisation(run.model, x, target=y, method=method, keep_maps=True,
                                     seed=run.seed)  # fmt: skip
        cascades[method], layers = result.maps, result.layers
    label = task_label(task, run.variant)
    path = bench_session.report_dir / "plots" / f"saliency-randomisation-{label}.png"
    plot_randomisation_cascade(x, cascades, layers, path, title=(
        f"{label}, seed {run.seed}: maps as layers are re-initialised from the top"))  # fmt: skip
    assert path.exists()


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
    for seed in plan.kept_seeds:
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
