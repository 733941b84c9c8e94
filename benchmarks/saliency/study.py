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
CONTROLS = ("random_map", "centre_prior", "sobel_map")


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
    # planted_region, 0 on mnist5k for faithfulness (and on a --bench-tasks task of its own).
    counts = dict.fromkeys((t for t, _ in TASKS), 3) if full else {"planted_region": 2, "mnist5k": 1}
    counts.update({t: 3 if full else 1 for t, _ in chosen if t not in counts})
    seeds = {task: options.seed_range(count) for task, count in counts.items()}
    kept_tasks = ("mnist5k", *(t for t, _ in chosen if t not in dict(TASKS)))
    # Explanation kept: 3 seeds of the mnist5k CNN in either mode (the models and scores the
    # quick removal table on the CNN computes anyway), so the explanation axis of the overall
    # table ranks over independent runs and no interval comes from fewer than 3 seeds.
    kept_seeds = options.seed_range(3)
    if full:
        return Plan(seeds, chosen, images=128, steps=20, skip=(), kept_measures=None,
                    kept_seeds=kept_seeds, kept_tasks=kept_tasks)
    # Quick: explanation kept for every registered measure (the explanation axis of the overall
    # table), on the CNN whose scores the quick removal table computes anyway.
    return Plan(seeds, chosen, images=32, steps=10, skip=("score_cam", "smoothgrad"),
                kept_measures=None, kept_seeds=kept_seeds, kept_tasks=kept_tasks)  # fmt: skip


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


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """The evaluations beyond the deletion curve (issue 24), sized for quick or ``--full``.

    Attributes:
        randomisation_images: First test images the model-randomisation cascade explains, ROAD
            removes pixels from and the early insertion inserts into (the deletion and insertion
            curves keep the plan's images).
        road_fractions: Fractions removed by ROAD (Rong et al. 2022 use 0.1 ... 0.9).
        fine_steps: Insertion grid intervals where the 11-point grid saturates (below).
        early_fraction: The "early insertion" area covers fractions [0, early_fraction].
        cascade_methods: Methods drawn in the randomisation-cascade figure.
        cascade_images: Images per method in that figure.
    """

    randomisation_images: int
    road_fractions: tuple[float, ...]
    fine_steps: int = 196  # 4 pixels per step on 28 x 28 images
    early_fraction: float = 0.05
    cascade_methods: tuple[str, ...] = (
        "grad_cam",
        "hires_cam",
        "gradient",
        "integrated_gradients",
        "occlusion",
        "sobel_map",
    )
    cascade_images: int = 2


# Where insertion from a blurred image saturates: on planted_region the class hangs on a 6-pixel
# bar (0.8 % of the image), so every informed map inserts it within the first grid step (10 %) and
# the insertion area is 0.977 for all of them (measured for blur, mean and zero baselines; ROAD
# LeRF saturates the same way). There the insertion column is the area over the first 5 % of
# pixels on a 4-pixel grid, which separates the methods (0.77-0.89 against random_map's 0.50).
EARLY_INSERTION_TASKS = ("planted_region",)
# Controls that read no model: the randomisation check must fail them (similarity 1).
MODEL_FREE = ("random_map", "centre_prior", "sobel_map")


def evaluation(options: RunOptions) -> Evaluation:
    """Quick: 16 images through the cascade and ROAD, ROAD at 10/30/50/70/90 %; ``--full``: 64
    images and ROAD at every 10 % as the paper."""
    if options.full:
        fractions = tuple(k / 10 for k in range(1, 10))
        return Evaluation(randomisation_images=64, road_fractions=fractions)
    return Evaluation(randomisation_images=16, road_fractions=(0.1, 0.3, 0.5, 0.7, 0.9))
