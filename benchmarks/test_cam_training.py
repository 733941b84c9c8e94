"""CAM-guided training (``lint``'s radial CAM penalty) against plain training on ``spurious_mnist``.

Every model is trained once per seed and shared by the cases (plain models through
:func:`tasks.trained`, CAM-guided ones through the same on-disk cache, keyed with the penalty's
options). The leaderboard section (:mod:`reports.sections.cam_training`) chooses the penalty
weight on the validation split with the training correlation, and separately on a group-balanced
one (oracle).

Asserted is only what must hold whatever the method's merit: the penalty lowers the CAM mass
outside the object on training images, plain training's worst-group accuracy sits well below its
average (the task is spurious), and runs are deterministic by seed. Whether CAM-guided training
*wins* is reported, not asserted.

Quick: seeds 0-1, weights 1 and 10; ``--full``: seeds 0-4, weights 0.3 ... 30. ``--bench-seeds N``
gives seeds 0 .. N-1 in either mode. The overlay picture goes to the session's report directory.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from _session import BenchSession

from reports.sections.cam_training import CAM_SPLITS, cam_training_record

TASK = "spurious_mnist"
VARIANT = "difference"
WIDTH = 0.25
SCHEDULE = (2, 3, 4, 5)  # lint's phases: cross-entropy only, then + CAM penalty, then cross-entropy only
MASS_EXAMPLES = 256
SPURIOUS_GAP = 0.2  # plain training: mean worst-group accuracy <= mean average accuracy - 0.2


@dataclasses.dataclass
class Run:
    model: Any
    record: dict[str, Any]


class CamStudy:
    """Trains (or loads) each model once per process and records it.

    Args:
        session: The benchmark session: its plan's mode and seeds, its record writer and its
            report directory.
    """

    def __init__(self, session: BenchSession):
        plan = session.plan
        full = plan.mode == "full"
        # The plan's seeds (0-4 with --full, 0 .. N-1 with --bench-seeds N); quick mode keeps two.
        self.seeds = plan.seeds if full or session.requested_seeds else plan.seeds[:2]
        self.weights = (0.3, 1.0, 3.0, 10.0, 30.0) if full else (1.0, 10.0)
        self.mode = plan.mode
        self.writer = session.writer
        self.report_dir = session.report_dir
        self._runs: dict[tuple[int, float], Run] = {}

    def run(self, seed: int, weight: float) -> Run:
        key = (seed, float(weight))
        if key not in self._runs:
            model = train(seed, weight)
            self._runs[key] = Run(model, self._record(model, seed, weight))
            self.writer.write([self._runs[key].record])
        return self._runs[key]

    def _record(self, model: Any, seed: int, weight: float) -> dict[str, Any]:
        from importance.interpret.penalty import cam_mass_outside
        from tasks import spurious

        data = spurious.task_data()
        fields = {"task": TASK, "seed": seed, "mode": self.mode,
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
    if cache and task_cache.load(path, key, model, None) is not None:
        return model
    penalty = CamPenalty(model, **options)
    history = run_training(model, task.train_data(), seed=seed, penalty=penalty, **settings)
    if cache:
        task_cache.save(path, key, model, None, history)
    return model


@pytest.fixture(scope="session")
def cam_study(bench_session: BenchSession) -> CamStudy:
    """The process-wide CAM training study of this run."""
    return CamStudy(bench_session)


def test_cam_training_grid(cam_study):
    """Train plain and every weight of the grid for every seed; record them for the leaderboard."""
    for seed in cam_study.seeds:
        for weight in (0.0, *cam_study.weights):
            record = cam_study.run(seed, weight).record
            assert 0.0 <= record["test_worst_group"] <= record["test_average"] <= 1.0


def test_penalty_lowers_cam_mass_outside(cam_study):
    """The mechanism works: with the largest weight, less of the map lies outside the object."""
    strongest = max(cam_study.weights)
    for seed in cam_study.seeds:
        plain = cam_study.run(seed, 0.0).record["mass_outside"]
        guided = cam_study.run(seed, strongest).record["mass_outside"]
        assert guided < plain, f"seed {seed}: mass outside {guided:.3f} (weight {strongest}) vs plain {plain:.3f}"


def test_plain_training_is_spurious(cam_study):
    """The task is spurious: plain training's worst group is far below its average."""
    records = [cam_study.run(seed, 0.0).record for seed in cam_study.seeds]
    average = np.mean([r["test_average"] for r in records])
    worst = np.mean([r["test_worst_group"] for r in records])
    assert worst <= average - SPURIOUS_GAP, f"worst-group {worst:.3f} vs average {average:.3f}"


def test_runs_are_deterministic_by_seed(cam_study):
    """Retrained without the cache, a seed gives bitwise the same weights (plain; CAM with --full)."""
    seed = cam_study.seeds[0]
    weights = (0.0, max(cam_study.weights)) if cam_study.mode == "full" else (0.0,)
    for weight in weights:
        again = train(seed, weight, cache=False)
        for a, b in zip(cam_study.run(seed, weight).model.get_weights(), again.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)


def test_cam_overlays_picture(cam_study):
    """CAM overlays of plain and CAM-guided models on the same test images (minority groups)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from importance.interpret import grad_cam
    from reports.io import atomic_path
    from reports.sections.cam_training import choose_weight, frame
    from tasks import spurious

    runs = frame([cam_study.run(s, w).record for s in cam_study.seeds for w in (0.0, *cam_study.weights)])
    weight = choose_weight(runs, "val_average")
    seed = cam_study.seeds[0]
    test = spurious.task_data().test
    swapped = np.flatnonzero(test.background != test.y)
    pick = swapped[np.linspace(0, len(swapped) - 1, 6).astype(int)]
    models = [("plain", cam_study.run(seed, 0.0).model),
              (f"CAM-guided (weight {weight:g})", cam_study.run(seed, weight).model)]
    fig, axes = plt.subplots(len(models), len(pick), figsize=(2 * len(pick), 2.3 * len(models)), squeeze=False)
    for row, (label, model) in enumerate(models):
        maps = grad_cam(model, test.x[pick], target=test.y[pick])
        predicted = np.asarray(model(test.x[pick])).argmax(axis=-1)
        for col, i in enumerate(pick):
            ax = axes[row, col]
            ax.imshow(test.x[i, ..., 0], cmap="gray", vmin=0, vmax=1)
            ax.imshow(maps[col], cmap="jet", alpha=0.45)
            ax.set_title(f"y={test.y[i]} pred={predicted[col]}", fontsize=8)
            ax.axis("off")
        axes[row, 0].text(-0.1, 0.5, label, transform=axes[row, 0].transAxes, rotation=90,
                          ha="right", va="center", fontsize=8)
    fig.suptitle(f"Grad-CAM of the true class, seed {seed}, test images with the other class's background",
                 fontsize=9)
    fig.tight_layout()
    out = cam_study.report_dir / "plots" / "cam-overlays.png"
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=90)
    finally:
        plt.close(fig)
    assert out.stat().st_size > 1000
