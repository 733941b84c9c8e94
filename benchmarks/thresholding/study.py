"""The thresholding study: plan, shared models, scores and curves.

Everything expensive is computed once per process and shared by every case that needs it:
trained models come from the task cache (:func:`tasks.trained`), scores are computed once per
(measure, task, seed), curves once per (measure, task, level, scope, replace, seed). Every random
choice takes an explicit seed, so the results do not depend on which case (or which xdist worker)
asks first.
"""

from __future__ import annotations

import dataclasses
import math
import time
import traceback
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.plugin.failures import MeasureFailed
from benchmarks.plugin.options import RunOptions
from benchmarks.plugin.seeding import seed_everything, seed_of
from reports.records import (
    DEFAULT_REPLACE,
    DEFAULT_SCOPE,
    curve_point_records,
    failure_record,
    task_label,
    timing_record,
)

DEFAULT_TREATMENT = (DEFAULT_SCOPE, DEFAULT_REPLACE)
__all__ = ["DEFAULT_TREATMENT", "Plan", "Study", "Subject", "make_plan", "task_label"]
# On `planted` these must beat `random` (paired over seeds); elsewhere rankings are only reported.
INFORMED = ("magnitude", "mas", "si", "obd", "snip", "lamp", "synflow", "wanda", "hessian_diag")
INFORMED_PREFIX = "fisher"
# Levels where "beats random" is asserted. At layer level the planted MLP has two layers: two
# possible orders, so random picks any measure's order at half the seeds (reported, not asserted).
BEATS_RANDOM_LEVELS = ("weight", "unit")
EVAL_BATCH_MAX = 2048


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one benchmark run (one pytest invocation) covers."""

    mode: str
    seeds: tuple[int, ...]
    thresholds: tuple[float, ...]
    tasks: tuple[tuple[str, str | None], ...]
    treatments: tuple[tuple[str, str], ...]
    extra_treatment_tasks: tuple[str, ...]
    measure_examples: int
    # (task, variant) -> the aggregation levels run on it; a task not named runs every level.
    task_levels: tuple[tuple[tuple[str, str | None], tuple[str, ...]], ...] = ()

    def levels_for(self, task: str, variant: str | None) -> tuple[str, ...]:
        """The aggregation levels run on ``(task, variant)``: all of them unless the plan narrows."""
        from reports.records import LEVELS

        return dict(self.task_levels).get((task, variant), tuple(LEVELS))

    def narrowed(self, task: str, variant: str | None) -> bool:
        """Whether the plan narrows ``(task, variant)`` (the quick CNN table). A narrowed task has
        no compute-time case (a second, timed computation: its compute time comes from the timing
        record of its first computation) and no same-seed rerun of its curves (the sweep is the
        other tasks'; ``--full`` runs both on it)."""
        return (task, variant) in dict(self.task_levels)

    def treatments_for(self, task: str) -> tuple[tuple[str, str], ...]:
        """(scope, replace) pairs (treatments) run on ``task``: the default everywhere, the rest where asked."""
        if task in self.extra_treatment_tasks or not self.extra_treatment_tasks:
            return self.treatments
        return (DEFAULT_TREATMENT,)


def make_plan(options: RunOptions) -> Plan:
    """The quick plan (default) or the full one, narrowed to ``--bench-seeds`` and ``--bench-tasks``
    (``--bench-model``'s task, first in ``options.tasks``, runs every treatment).

    The options are checked by the benchmark session (:mod:`benchmarks.plugin.session`).
    """
    if options.full:
        plan = Plan(
            mode="full", seeds=tuple(range(5)), thresholds=tuple(round(0.05 * i, 2) for i in range(21)),
            tasks=(("planted", None), ("planted_noise", None), ("digits", None), ("mnist5k", None),
                   ("mnist5k", "cnn"), ("mnist5k", "resnet_bn"), ("mnist", None), ("fashion_mnist", None), ("cifar10", None),
                   # keras.applications networks (tasks/applications.py); cifar10's skip offline
                   ("mnist5k_rgb32", "mobilenetv2"), ("cifar10", "mobilenetv2"),
                   ("cifar10", "resnet50"), ("cifar10", "efficientnetb0")),
            treatments=(("global", "noise"), ("layer", "noise"), ("global", "zero"), ("layer", "zero")),
            extra_treatment_tasks=(), measure_examples=2000,
        )
    else:
        plan = Plan(
            mode="quick", seeds=(0, 1, 2), thresholds=tuple(round(0.1 * i, 1) for i in range(11)),
            tasks=(("planted", None), ("planted_noise", None), ("digits", None), ("mnist5k", None),
                   ("mnist5k", "cnn")),
            treatments=(("global", "noise"), ("layer", "noise"), ("global", "zero")),
            extra_treatment_tasks=("planted",), measure_examples=512,
            # The CNN (shared with the saliency and explanation cases): weight level only, the
            # quick removal table beside the explanation axis; every level with --full.
            task_levels=((("mnist5k", "cnn"), ("weight",)),),
        )
    plan = dataclasses.replace(plan, seeds=options.seed_range(len(plan.seeds)))
    if options.tasks:
        plan = dataclasses.replace(plan, tasks=tuple(options.tasks))
    if options.user_task and plan.extra_treatment_tasks:  # --bench-model: every treatment on it
        extra = (*plan.extra_treatment_tasks, options.user_task)
        plan = dataclasses.replace(plan, extra_treatment_tasks=extra)
    return plan


def is_informed(measure: str) -> bool:
    """Whether ``measure`` must beat random on the planted task."""
    return measure in INFORMED or (measure.startswith(INFORMED_PREFIX) and "shuffled" not in measure)


@dataclasses.dataclass
class Subject:
    """One trained model of a task and seed, with what every case needs from it."""

    task: Any
    variant: str
    seed: int
    model: Any
    snapshot: list[np.ndarray]
    measure_data: tuple[np.ndarray, np.ndarray]
    test_data: tuple[np.ndarray, np.ndarray]
    base_loss: float
    base_accuracy: float


@dataclasses.dataclass
class Curve:
    """A thresholding curve and what an independent spy saw during the sweep."""

    frame: pd.DataFrame
    changed: list[int]  # scalars that differed from the original weights at each evaluation (on_evaluate)
    zeros: int  # original weights that are exactly 0 (a zero replacement cannot change them)
    sizes: list[int]  # scope group sizes (one for global, one per layer)


class Study:
    """Process-wide memo of trained models, scores and curves for one plan.

    Args:
        plan: The plan of this benchmark run.
        writer: A :class:`reports.RecordWriter` for timing and failure records.
    """

    def __init__(self, plan: Plan, writer: Any):
        self.plan = plan
        self.writer = writer
        self._subjects: dict[tuple, Subject] = {}
        self._scores: dict[tuple, Any] = {}
        self._curves: dict[tuple, Curve] = {}

    def subject(self, task_name: str, variant: str | None, seed: int) -> Subject:
        """The trained model of (task, variant, seed), loaded once per process."""
        import tasks

        task = tasks.get_task(task_name)
        variant = task.resolve_variant(variant)
        key = (task_name, variant, seed)
        if key not in self._subjects:
            from importance.data import evaluate

            _seed_globals(seed)
            trained = tasks.trained(task_name, variant=variant, seed=seed, cache=True, track=True)
            model = trained.model
            x, y = task.train_data()
            n = min(self.plan.measure_examples, len(y))
            test = task.test_data()
            loss, accuracy = evaluate(model, test, batch_size=_eval_batch(test))
            self._subjects[key] = Subject(
                task=task, variant=variant, seed=seed, model=model,
                snapshot=[np.array(w.numpy(), copy=True) for w in model.trainable_weights],
                measure_data=(x[:n], y[:n]), test_data=test, base_loss=loss, base_accuracy=accuracy,
            )
            if task.pretrained and not any(k[0] == task_name for k in self._subjects if k != key):
                self.writer.write(not_applicable_records(task, variant))
        return self._subjects[key]

    def scores(self, measure: str, subject: Subject, *, fresh: bool = False) -> list[np.ndarray]:
        """Scores of ``measure`` on ``subject`` (computed once; ``fresh`` recomputes and re-times).

        Raises:
            MeasureFailed: The measure raised; the failure is recorded once.
        """
        key = (measure, subject.task.name, subject.variant, subject.seed)
        if subject.task.pretrained and _online(measure):  # recorded by not_applicable_records
            import pytest

            pytest.skip(f"{measure} on {subject.task.name}: not applicable, "
                        f"{subject.task.info['not_applicable']['online measures']}")
        if fresh or key not in self._scores:
            self._scores[key] = self._compute(measure, subject, again=key in self._scores)
        value = self._scores[key]
        if isinstance(value, MeasureFailed):
            raise value
        return value

    def _compute(self, measure: str, subject: Subject, *, again: bool) -> Any:
        """Scores of ``measure`` on ``subject``, timed, or the failure recorded (``again``: this
        computation already ran in this process)."""
        import importance as imp

        options: dict[str, Any] = {"seed": subject.seed} if imp.get_measure(measure).takes_seed else {}
        # Same global seeds whoever asks first (measures should not rely on them, but may): Python,
        # NumPy and Keras at the subject's seed, TensorFlow at this computation's own, set without
        # emptying TensorFlow's kernel cache unless this computation ran before in this process
        # (benchmarks.plugin.seeding: the cache kept saves every computation its kernels).
        seeding = (measure, subject.task.name, subject.variant, subject.seed)
        seed_everything(subject.seed, seed_of(*seeding), keep=not again)
        start = time.perf_counter()
        try:
            scores = imp.compute_importance(measure, subject.model, subject.measure_data, **options)
        except Exception as error:  # a broken measure is reported, not fatal to the session
            message = f"{type(error).__name__}: {error}"
            self.writer.write([failure_record(
                measure=measure, task=subject.task.name, variant=subject.variant, seed=subject.seed, level=None,
                error=message, traceback=traceback.format_exc(limit=6),
            )])
            return MeasureFailed(f"measure {measure!r} failed on {subject.task.name} seed {subject.seed}: {message}")
        seconds = time.perf_counter() - start
        coverage = getattr(imp.get_measure(measure).fn, "coverage", None)
        self.writer.write([timing_record(
            group="compute", measure=measure, task=subject.task.name, variant=subject.variant, seed=subject.seed,
            seconds=seconds, examples=int(len(subject.measure_data[1])), **({"coverage": coverage} if coverage else {}),
        )])
        return scores

    def curve(self, measure: str, subject: Subject, level: str, scope: str, replace: str,
              *, fresh: bool = False) -> Curve:
        """The thresholding curve (computed once unless ``fresh``)."""
        key = (measure, subject.task.name, subject.variant, subject.seed, level, scope, replace)
        if fresh or key not in self._curves:
            self._curves[key] = self._sweep(self.scores(measure, subject), subject, level, scope, replace)
        return self._curves[key]

    def _sweep(self, scores: list[np.ndarray], subject: Subject, level: str, scope: str, replace: str) -> Curve:
        import importance as imp
        from importance.layers import layer_groups

        model = subject.model
        aggregated = imp.aggregate(scores, model, level=level, reduce="mean")
        changed: list[int] = []

        def count_changed(threshold: float, thresholded: Any) -> None:
            changed.append(sum(
                int(np.count_nonzero(np.asarray(w.numpy()) != s))
                for w, s in zip(thresholded.trainable_weights, subject.snapshot, strict=True)
            ))

        frame = imp.threshold_sweep(model, aggregated, subject.test_data, thresholds=list(self.plan.thresholds),
                                    scope=scope, replace=replace, seed=subject.seed,
                                    batch_size=_eval_batch(subject.test_data), on_evaluate=count_changed)
        if scope == "global":
            sizes = [sum(s.size for s in subject.snapshot)]
        else:
            sizes = [sum(subject.snapshot[i].size for i in idx) for _, idx in layer_groups(model)]
        zeros = sum(int(np.count_nonzero(s == 0)) for s in subject.snapshot)
        return Curve(frame=frame, changed=changed, zeros=zeros, sizes=sizes)


def point_records(measure: str, subject: Subject, level: str, scope: str, replace: str, curve: Curve) -> list[dict]:
    """The result records of one curve (one per threshold)."""
    return curve_point_records(
        curve.frame, measure=measure, task=subject.task.name, variant=subject.variant, level=level,
        scope=scope, replace=replace, seed=subject.seed, num_classes=subject.task.num_classes,
        base_loss=subject.base_loss, base_accuracy=subject.base_accuracy,
    )


def not_applicable_records(task: Any, variant: str) -> list[dict]:
    """What a task given trained (``tasks.from_model``) cannot take part in, as records: each
    online measure on the removal (and explanation) axis, and the whole axes it cannot join."""
    import importance as imp
    from reports.sections.applicability import not_applicable_record

    reasons = dict(task.info["not_applicable"])
    online = reasons.pop("online measures")
    axes = ["removal"] + ([] if "explanation" in reasons else ["explanation"])
    where = {"task": task.name, "variant": variant}
    records = [not_applicable_record(**where, axis=axis, measure=m, reason=online)
               for axis in axes for m in imp.available_measures() if _online(m)]
    return records + [not_applicable_record(**where, axis=axis, reason=reason)
                      for axis, reason in reasons.items()]


def _online(measure: str) -> bool:
    import importance as imp

    return bool(imp.get_measure(measure).online)


def expected_count(threshold: float, sizes: list[int]) -> int:
    """round(p * n) per scope group, summed: the number of weights a threshold must replace."""
    return sum(round(threshold * n) for n in sizes)


def quality_shortfall(subject: Subject) -> str | None:
    """Why ``subject``'s model is too poorly trained to rank measures on, or None.

    The model's test accuracy must reach its task's bar (:meth:`tasks.registry.Task.accuracy_bar`;
    a task or variant without one is not checked): thresholding an under-trained model ranks
    measures on weights it never learned to need. The cases check it where they train the models.
    """
    bar = subject.task.accuracy_bar(subject.variant)
    if bar is None or subject.base_accuracy >= bar:
        return None
    return (f"{task_label(subject.task.name, subject.variant)} seed {subject.seed} trained to "
            f"{subject.base_accuracy:.3f} test accuracy, under its task's bar of {bar}")


def chance_accuracy(labels: np.ndarray) -> float:
    """Accuracy of always predicting the most frequent class."""
    return float(np.bincount(np.asarray(labels)).max() / len(labels))


def ln_k(num_classes: int) -> float:
    """Loss of a classifier at chance."""
    return math.log(num_classes)


def _eval_batch(data: tuple[np.ndarray, np.ndarray]) -> int:
    """Evaluate a test split in as few batches as memory allows (one for the quick tasks)."""
    return int(min(len(data[1]), EVAL_BATCH_MAX))


def _seed_globals(seed: int) -> None:
    """The global seeds at ``seed`` before a subject is trained or loaded, whoever asks first (the
    public call, which empties TensorFlow's kernel cache: once per subject; the measures'
    computations are seeded in :meth:`Study._compute`)."""
    import keras

    keras.utils.set_random_seed(int(seed))
