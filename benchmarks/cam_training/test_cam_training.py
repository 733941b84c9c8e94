"""CAM-guided training (``lint``'s radial CAM penalty) against plain training on ``spurious_mnist``.

Every model is trained once per seed and shared by the cases (:mod:`benchmarks.cam_training.study`).
The leaderboard section (:mod:`reports.sections.cam_training`) chooses the penalty weight on the
validation split with the training correlation, and separately on a group-balanced one (oracle).

Asserted is only what must hold whatever the method's merit: the penalty lowers the CAM mass
outside the object on training images, plain training's worst-group accuracy sits well below its
average (the task is spurious), and runs are deterministic by seed. Whether CAM-guided training
*wins* is reported, not asserted.

Quick: seeds 0-2, weights 1 and 10; ``--full``: seeds 0-4, weights 0.3 ... 30. ``--bench-seeds N``
gives seeds 0 .. N-1 in either mode. The overlay picture goes to the session's report directory.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.cam_training import study as cam_training
from benchmarks.plugin.session import BenchSession

SPURIOUS_GAP = 0.2  # plain training: mean worst-group accuracy <= mean average accuracy - 0.2


@pytest.fixture(scope="session")
def cam_study(bench_session: BenchSession) -> cam_training.Study:
    """The process-wide CAM training study of this run."""
    return cam_training.Study(cam_training.make_plan(bench_session.options), bench_session.writer)


def test_cam_training_grid(cam_study):
    """Train plain and every weight of the grid for every seed; record them for the leaderboard."""
    for seed in cam_study.plan.seeds:
        for weight in (0.0, *cam_study.plan.weights):
            record = cam_study.subject(seed, weight).record
            assert 0.0 <= record["test_worst_group"] <= record["test_average"] <= 1.0


def test_penalty_lowers_cam_mass_outside(cam_study):
    """The mechanism works: with the largest weight, less of the map lies outside the object."""
    strongest = max(cam_study.plan.weights)
    for seed in cam_study.plan.seeds:
        plain = cam_study.subject(seed, 0.0).record["mass_outside"]
        guided = cam_study.subject(seed, strongest).record["mass_outside"]
        assert guided < plain, f"seed {seed}: mass outside {guided:.3f} (weight {strongest}) vs plain {plain:.3f}"


def test_plain_training_is_spurious(cam_study):
    """The task is spurious: plain training's worst group is far below its average."""
    records = [cam_study.subject(seed, 0.0).record for seed in cam_study.plan.seeds]
    average = np.mean([r["test_average"] for r in records])
    worst = np.mean([r["test_worst_group"] for r in records])
    assert worst <= average - SPURIOUS_GAP, f"worst-group {worst:.3f} vs average {average:.3f}"


def test_runs_are_deterministic_by_seed(cam_study):
    """Retrained without the cache, a seed gives bitwise the same weights (plain; CAM with --full)."""
    seed = cam_study.plan.seeds[0]
    weights = (0.0, max(cam_study.plan.weights)) if cam_study.plan.mode == "full" else (0.0,)
    for weight in weights:
        again = cam_training.train(seed, weight, cache=False)
        kept = cam_study.subject(seed, weight).model
        for a, b in zip(kept.get_weights(), again.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)


def test_cam_overlays_picture(cam_study, bench_session):
    """CAM overlays of plain and CAM-guided models on the same test images (minority groups)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from importance.interpret import grad_cam
    from reports.io import atomic_path
    from reports.sections.cam_training import choose_weight, frame
    from tasks import spurious

    plan = cam_study.plan
    runs = frame([cam_study.subject(s, w).record for s in plan.seeds for w in (0.0, *plan.weights)])
    weight = choose_weight(runs, "val_average")
    seed = cam_study.plan.seeds[0]
    test = spurious.task_data().test
    swapped = np.flatnonzero(test.background != test.y)
    pick = swapped[np.linspace(0, len(swapped) - 1, 6).astype(int)]
    models = [("plain", cam_study.subject(seed, 0.0).model),
              (f"CAM-guided (weight {weight:g})", cam_study.subject(seed, weight).model)]
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
    out = bench_session.report_dir / "plots" / "cam-overlays.png"
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=90)
    finally:
        plt.close(fig)
    assert out.stat().st_size > 1000
