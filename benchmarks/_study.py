"""The benchmark study behind ``benchmarks/``: plan, shared models, scores and curves.

Everything expensive is computed once per process and shared by every case that needs it:
trained models come from the task cache (:func:`tasks.trained`), scores are computed once per
(measure, task, seed), curves once per (measure, task, level, scope, replace, seed). Every random
choice takes an explicit seed, so the results do not depend on which case (or which xdist worker)
asks first.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import time
import traceback
from typing import Any
from unittest import mock

import numpy as np
import pandas as pd

LEVELS = ("weight", "unit", "layer")
DEFAULT_COMBO = ("global", "noise")
# On `planted` these must beat `random` (paired over seeds); elsewhere rankings are only reported.
INFORMED = ("magnitude", "mas", "si")
INFORMED_PREFIX = "fisher"
# Levels where "beats random" is asserted. At layer level the planted MLP has two layers: two
# possible orders, so random picks any measure's order at half the seeds (reported, not asserted).
BEATS_RANDOM_LEVELS = ("weight", "unit")
EVAL_BATCH_MAX = 2048


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one benchmark run covers."""

    mode: str
    seeds: tuple[int, ...]
    thresholds: tuple[float, ...]
    tasks: tuple[tuple[str, str | None], ...]
    combos: tuple[tuple[str, str], ...]
    extra_combo_tasks: tuple[str, ...]
    measure_examples: int

    def combos_for(self, task: str) -> tuple[tuple[str, str], ...]:
        """(scope, replace) pairs run on ``task``: the default everywhere, the rest where asked."""
        if task in self.extra_combo_tasks or not self.extra_combo_tasks:
            return self.combos
        return (DEFAULT_COMBO,)


def make_plan(*, full: bool, seeds: int | None = None, tasks: str | None = None) -> Plan:
    """The quick plan (default) or the full one, narrowed by ``--bench-seeds``/``--bench-tasks``."""
    if full:
        plan = Plan(
            mode="full", seeds=tuple(range(5)), thresholds=tuple(round(0.05 * i, 2) for i in range(21)),
            tasks=(("planted", None), ("planted_noise", None), ("digits", None), ("mnist5k", None),
                   ("mnist5k", "cnn"), ("mnist5k", "resnet_bn"), ("mnist", None), ("fashion_mnist", None), ("cifar10", None)),
            combos=(("global", "noise"), ("layer", "noise"), ("global", "zero"), ("layer", "zero")),
            extra_combo_tasks=(), measure_examples=2000,
        )
    else:
        plan = Plan(
            mode="quick", seeds=(0, 1, 2), thresholds=tuple(round(0.1 * i, 1) for i in range(11)),
            tasks=(("planted", None), ("planted_noise", None), ("digits", None), ("mnist5k", None)),
            combos=(("global", "noise"), ("layer", "noise"), ("global", "zero")),
            extra_combo_tasks=("planted",), measure_examples=512,
        )
    if seeds is not None:
        if seeds < 1:
            raise ValueError(f"--bench-seeds must be at least 1. Received: {seeds}")
        plan = dataclasses.replace(plan, seeds=tuple(range(seeds)))
    if tasks:
        chosen = []
        for item in tasks.split(","):
            name, _, variant = item.strip().partition(".")
            chosen.append((name, variant or None))
        plan = dataclasses.replace(plan, tasks=tuple(chosen))
    return plan


def task_label(task: str, variant: str | None) -> str:
    """``mnist5k`` for the default variant, ``mnist5k.cnn`` otherwise (as in test ids)."""
    return task if variant is None else f"{task}.{variant}"


def is_informed(measure: str) -> bool:
    """Whether ``measure`` must beat random on the planted task."""
    return measure in INFORMED or (measure.startswith(INFORMED_PREFIX) and "shuffled" not in measure)


class MeasureFailed(RuntimeError):
    """A measure raised (or returned invalid scores) on a task."""


@dataclasses.dataclass
class Run:
    """One trained model of a task and seed, with what every case needs from it."""

    task: Any
    variant: str
    seed: int
    model: Any
    recorder: Any
    snapshot: list[np.ndarray]
    measure_data: tuple[np.ndarray, np.ndarray]
    test_data: tuple[np.ndarray, np.ndarray]
    base_loss: float
    base_accuracy: float


@dataclasses.dataclass
class Curve:
    """A thresholding curve and what an independent spy saw during the sweep."""

    frame: pd.DataFrame
    changed: list[int]  # scalars that differed from the original weights at each evaluation
    zeros: int  # original weights that are exactly 0 (a zero replacement cannot change them)
    sizes: list[int]  # scope group sizes (one for global, one per layer)


class Study:
    """Process-wide memo of trained models, scores and curves for one plan.

    Args:
        plan: The run's plan.
        writer: A :class:`reports.RecordWriter` for timing and failure records.
    """

    def __init__(self, plan: Plan, writer: Any):
        self.plan = plan
        self.writer = writer
        self._runs: dict[tuple, Run] = {}
        self._scores: dict[tuple, Any] = {}
        self._curves: dict[tuple, Curve] = {}

    def run(self, task_name: str, variant: str | None, seed: int) -> Run:
        """The trained model of (task, variant, seed), loaded once per process."""
        import tasks

        task = tasks.get_task(task_name)
        variant = task.resolve_variant(variant)
        key = (task_name, variant, seed)
        if key not in self._runs:
            from importance.data import evaluate

            _seed_globals(seed)
            trained = tasks.trained(task_name, variant=variant, seed=seed, cache=True, track=True)
            model = trained.model
            x, y = task.train_data()
            n = min(self.plan.measure_examples, len(y))
            test = task.test_data()
            loss, accuracy = evaluate(model, test, batch_size=_eval_batch(test))
            self._runs[key] = Run(
                task=task, variant=variant, seed=seed, model=model, recorder=trained.recorder,
                snapshot=[np.array(w.numpy(), copy=True) for w in model.trainable_weights],
                measure_data=(x[:n], y[:n]), test_data=test, base_loss=loss, base_accuracy=accuracy,
            )
        return self._runs[key]

    def scores(self, measure: str, run: Run, *, fresh: bool = False) -> list[np.ndarray]:
        """Scores of ``measure`` on ``run`` (computed once; ``fresh`` recomputes and re-times).

        Raises:
            MeasureFailed: The measure raised; the failure is recorded once.
        """
        key = (measure, run.task.name, run.variant, run.seed)
        if fresh or key not in self._scores:
            self._scores[key] = self._compute(measure, run)
        value = self._scores[key]
        if isinstance(value, MeasureFailed):
            raise value
        return value

    def _compute(self, measure: str, run: Run) -> Any:
        import importance as imp

        spec = imp.get_measure(measure)
        options: dict[str, Any] = {}
        if _accepts(spec.fn, "seed"):
            options["seed"] = run.seed
        if spec.online:
            options["trajectory"] = run.recorder
        _seed_globals(run.seed)
        start = time.perf_counter()
        try:
            scores = imp.compute_importance(measure, run.model, run.measure_data, **options)
        except Exception as error:  # a broken measure is reported, not fatal to the session
            message = f"{type(error).__name__}: {error}"
            self.writer.write([{
                "kind": "failure", "measure": measure, "task": run.task.name, "variant": run.variant,
                "seed": run.seed, "level": None, "error": message,
                "traceback": traceback.format_exc(limit=6),
            }])
            return MeasureFailed(f"measure {measure!r} failed on {run.task.name} seed {run.seed}: {message}")
        seconds = time.perf_counter() - start
        self.writer.write([{
            "kind": "timing", "group": "compute", "measure": measure, "task": run.task.name,
            "variant": run.variant, "seed": run.seed, "seconds": seconds,
            "examples": int(len(run.measure_data[1])),
        }])
        return scores

    def curve(self, measure: str, run: Run, level: str, scope: str, replace: str,
              *, fresh: bool = False) -> Curve:
        """The thresholding curve (computed once unless ``fresh``)."""
        key = (measure, run.task.name, run.variant, run.seed, level, scope, replace)
        if fresh or key not in self._curves:
            self._curves[key] = self._sweep(self.scores(measure, run), run, level, scope, replace)
        return self._curves[key]

    def _sweep(self, scores: list[np.ndarray], run: Run, level: str, scope: str, replace: str) -> Curve:
        import importance as imp
        from importance import thresholding
        from importance.aggregation import layer_groups

        model = run.model
        aggregated = imp.aggregate(scores, model, level=level, reduce="mean")
        changed: list[int] = []
        original_evaluate = thresholding.evaluate

        def spy(spied_model: Any, data: Any, **kwargs: Any) -> Any:
            changed.append(sum(
                int(np.count_nonzero(np.asarray(w.numpy()) != s))
                for w, s in zip(spied_model.trainable_weights, run.snapshot, strict=True)
            ))
            return original_evaluate(spied_model, data, **kwargs)

        with mock.patch.object(thresholding, "evaluate", spy):
            frame = imp.threshold_sweep(model, aggregated, run.test_data, thresholds=list(self.plan.thresholds),
                                        scope=scope, replace=replace, seed=run.seed,
                                        batch_size=_eval_batch(run.test_data))
        if scope == "global":
            sizes = [sum(s.size for s in run.snapshot)]
        else:
            sizes = [sum(run.snapshot[i].size for i in idx) for _, idx in layer_groups(model)]
        zeros = sum(int(np.count_nonzero(s == 0)) for s in run.snapshot)
        return Curve(frame=frame, changed=changed, zeros=zeros, sizes=sizes)


def point_records(measure: str, run: Run, level: str, scope: str, replace: str, curve: Curve) -> list[dict]:
    """The result records of one curve (one per threshold)."""
    common = {"kind": "point", "measure": measure, "task": run.task.name, "variant": run.variant,
              "level": level, "scope": scope, "replace": replace, "seed": run.seed,
              "num_classes": run.task.num_classes, "base_loss": run.base_loss,
              "base_accuracy": run.base_accuracy}
    return [
        {**common, "threshold": float(r.threshold), "loss": float(r.loss), "accuracy": float(r.accuracy),
         "fraction_replaced": float(r.fraction_replaced)}
        for r in curve.frame.itertuples(index=False)
    ]


def expected_count(threshold: float, sizes: list[int]) -> int:
    """round(p * n) per scope group, summed: the number of weights a threshold must replace."""
    return sum(round(threshold * n) for n in sizes)


def chance_accuracy(labels: np.ndarray) -> float:
    """Accuracy of always predicting the most frequent class."""
    return float(np.bincount(np.asarray(labels)).max() / len(labels))


def ln_k(num_classes: int) -> float:
    """Loss of a classifier at chance."""
    return math.log(num_classes)


def _eval_batch(data: tuple[np.ndarray, np.ndarray]) -> int:
    """Evaluate a test split in as few batches as memory allows (one for the quick tasks)."""
    return int(min(len(data[1]), EVAL_BATCH_MAX))


def _accepts(fn: Any, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _seed_globals(seed: int) -> None:
    """Same global seeds whoever asks first (measures should not rely on them, but may)."""
    import keras

    keras.utils.set_random_seed(int(seed))
