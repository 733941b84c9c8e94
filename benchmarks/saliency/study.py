"""The saliency study's plan: tasks, seeds per task, images, the deletion grid, what quick skips.

The saliency cases need no memo of their own: their trained models, and the weight measures'
scores of the explanation cases, come from the thresholding study's memo (the ``study``
fixture), so a model or a score is computed once per process whichever axis asks first.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from benchmarks.plugin.options import RunOptions

TASKS = (("planted_region", None), ("mnist5k", "cnn"))
ASSERT_BEATS_RANDOM = {"planted_region": ("grad_cam", "occlusion", "integrated_gradients")}
CONTROLS = ("random_map", "centre_prior")


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the saliency cases of one run cover."""

    seeds: dict[str, tuple[int, ...]]
    tasks: tuple[tuple[str, str | None], ...]
    images: int
    steps: int
    skip: tuple[str, ...]
    kept_measures: tuple[str, ...] | None  # None: every registered measure
    kept_seeds: tuple[int, ...] = (0, 1, 2)  # seeds of the explanation-kept cases
    overlay_methods: tuple[str, ...] = (
        "grad_cam",
        "hires_cam",
        "occlusion",
        "integrated_gradients",
    )


def make_plan(options: RunOptions) -> Plan:
    """This study's plan: its own tasks and seeds unless ``--bench-tasks``/``--bench-seeds`` name them."""
    full = options.full
    chosen = TASKS
    if options.tasks:
        chosen = tuple(task for task in TASKS if task in options.tasks)
    # --bench-seeds N: seeds 0 .. N-1 on every task; else 0-2 with --full, quick: 0-1 on
    # planted_region, 0 on mnist5k for faithfulness.
    counts = dict.fromkeys((t for t, _ in TASKS), 3) if full else {"planted_region": 2, "mnist5k": 1}
    seeds = {task: options.seed_range(count) for task, count in counts.items()}
    # Explanation kept: 3 seeds of the mnist5k CNN in either mode (the models and scores the
    # quick removal table on the CNN computes anyway), so the explanation axis of the overall
    # table ranks over independent runs and no interval comes from fewer than 3 seeds.
    kept_seeds = options.seed_range(3)
    if full:
        return Plan(seeds, chosen, images=128, steps=20, skip=(), kept_measures=None,
                    kept_seeds=kept_seeds)
    # Quick: explanation kept for every registered measure (the explanation axis of the overall
    # table), on the CNN whose scores the quick removal table computes anyway.
    return Plan(seeds, chosen, images=32, steps=10, skip=("score_cam", "smoothgrad"),
                kept_measures=None, kept_seeds=kept_seeds)  # fmt: skip


def images(subject: Any, plan: Plan) -> tuple[np.ndarray, np.ndarray]:
    """The first ``plan.images`` test images of a trained subject, and their labels."""
    x, y = subject.test_data
    return np.asarray(x[: plan.images]), np.asarray(y[: plan.images])
