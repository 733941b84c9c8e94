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
FULL_TASKS = (("mnist5k_rgb32", "mobilenetv2"),)  # a keras.applications network, --full only
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
    kept_tasks: tuple[str, ...] = ("mnist5k",)  # tasks of the explanation-kept cases
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
    if full:
        chosen = (*TASKS, *FULL_TASKS)
    if options.tasks:
        chosen = tuple(task for task in TASKS if task in options.tasks)
        chosen = (*_convolutional(options.tasks, exclude=chosen), *chosen)
    # --bench-seeds N: seeds 0 .. N-1 on every task; else 0-2 with --full, quick: 0-1 on
    # planted_region, 0 on mnist5k (and on a --bench-tasks task of its own).
    counts = dict.fromkeys((t for t, _ in TASKS), 3) if full else {"planted_region": 2, "mnist5k": 1}
    counts.update({t: 3 if full else 1 for t, _ in chosen if t not in counts})
    seeds = {task: options.seed_range(count) for task, count in counts.items()}
    kept_tasks = ("mnist5k", *(t for t, _ in chosen if t not in dict(TASKS)))
    if full:
        return Plan(seeds, chosen, images=128, steps=20, skip=(), kept_measures=None,
                    kept_tasks=kept_tasks)
    return Plan(seeds, chosen, images=32, steps=10, skip=("score_cam", "smoothgrad"),
                kept_measures=("magnitude", "random"), kept_tasks=kept_tasks)  # fmt: skip


def _convolutional(named: Any, *, exclude: Any) -> tuple[tuple[str, str | None], ...]:
    """The ``--bench-tasks`` (and ``--bench-model``) tasks outside :data:`TASKS` whose
    ``info["convolutional"]`` says they have a 2-D convolution on image inputs
    (``tasks.from_model`` sets it)."""
    import tasks

    out = []
    for task, variant in named:
        if (task, variant) in exclude or task in dict(TASKS):
            continue
        try:
            if tasks.get_task(task).info.get("convolutional"):
                out.append((task, variant))
        except KeyError:
            continue  # the thresholding cases report an unknown task
    return tuple(out)


def images(subject: Any, plan: Plan) -> tuple[np.ndarray, np.ndarray]:
    """The first ``plan.images`` test images of a trained subject, and their labels."""
    x, y = subject.test_data
    return np.asarray(x[: plan.images]), np.asarray(y[: plan.images])
