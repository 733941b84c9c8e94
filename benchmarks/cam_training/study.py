"""The CAM-guided training study: its plan (seeds, penalty weights) and a memo of trained models.

Every model is trained once per seed and shared by the cases (plain models through
:func:`tasks.trained`, CAM-guided ones through the same on-disk cache, keyed with the penalty's
options). Each model's evaluation is recorded as a ``cam_training`` record the first time it is
asked for.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from benchmarks.plugin.options import RunOptions
from reports.sections.cam_training import CAM_SPLITS, cam_training_record

TASK = "spurious_mnist"
VARIANT = "difference"
WIDTH = 0.25
SCHEDULE = (2, 3, 4, 5)  # lint's phases: cross-entropy only, then + CAM penalty, then cross-entropy only
MASS_EXAMPLES = 256


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the CAM training cases of one run cover."""

    mode: str
    seeds: tuple[int, ...]
    weights: tuple[float, ...]  # CAM penalty weights; plain training (weight 0) runs beside them


def make_plan(options: RunOptions) -> Plan:
    """Quick: seeds 0-2 (the fewest a Student-t interval is drawn from), weights 1 and 10;
    ``--full``: seeds 0-4, weights 0.3 ... 30. ``--bench-seeds N`` gives seeds ``0 .. N-1`` in
    either mode."""
    if options.full:
        return Plan(options.mode, options.seed_range(5), (0.3, 1.0, 3.0, 10.0, 30.0))
    return Plan(options.mode, options.seed_range(3), (1.0, 10.0))


@dataclasses.dataclass
class Subject:
    """One trained model (plain, or CAM-guided at one weight) of a seed, with its record."""

    model: Any
    record: dict[str, Any]


class Study:
    """Trains (or loads) each model once per process and records it.

    Args:
        plan: The CAM training plan of this run.
        writer: A :class:`reports.RecordWriter` for the ``cam_training`` records.
    """

    def __init__(self, plan: Plan, writer: Any):
        self.plan = plan
        self.writer = writer
        self._subjects: dict[tuple[int, float], Subject] = {}

    def subject(self, seed: int, weight: float) -> Subject:
        """The model of ``seed`` trained plain (``weight`` 0) or CAM-guided, and its record."""
        key = (seed, float(weight))
        if key not in self._subjects:
            model = train(seed, weight)
            self._subjects[key] = Subject(model, self._record(model, seed, weight))
            self.writer.write([self._subjects[key].record])
        return self._subjects[key]

    def _record(self, model: Any, seed: int, weight: float) -> dict[str, Any]:
        from importance.interpret.penalty import cam_mass_outside
        from tasks import spurious

        data = spurious.task_data()
        fields = {"task": TASK, "seed": seed, "mode": self.plan.mode,
                  "method": "cam" if weight else "plain", "variant": VARIANT if weight else None,
                  "weight": float(weight), "width": WIDTH if weight else None,
                  "schedule": list(SCHEDULE) if weight else None}
        for name in CAM_SPLITS:
            result = spurious.evaluate_groups(model, getattr(data, name))
            fields[f"{name}_average"] = result["average"]
            fields[f"{name}_worst_group"] = result["worst_group"]
        fields["mass_outside"] = cam_mass_outside(
            model, data.train.x[:MASS_EXAMPLES], data.train.y[:MASS_EXAMPLES], centre_mask=data.centre_mask)
        return cam_training_record(**fields)


def train(seed: int, weight: float, *, cache: bool = True) -> Any:
    """The plain (weight 0) or CAM-guided model of ``seed``, through the task cache."""
    import tasks
    from importance.interpret.penalty import CamPenalty
    from tasks import cache as task_cache
    from tasks.trainer import train as run_training

    if not weight:
        return tasks.trained(TASK, seed=seed, track=False, cache=cache).model
    task = tasks.get_task(TASK)
    settings = task.training_settings().as_dict()
    model = task.build_model(seed)
    options = {"variant": VARIANT, "weight": float(weight), "width": WIDTH, "schedule": list(SCHEDULE)}
    key = task_cache.cache_key(task, task.variants[0], seed, {**settings, "cam_penalty": options}, None)
    path = task_cache.entry_path(task_cache.cache_dir(), key)

    def fit() -> dict:
        penalty = CamPenalty(model, **options)
        return run_training(model, task.train_data(), seed=seed, penalty=penalty, **settings)

    if cache:
        task_cache.load_or_train(path, key, model, None, fit)  # locked: one process trains it
    else:
        fit()
    return model
