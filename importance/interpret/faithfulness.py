"""Deletion and insertion curves of saliency maps (Petsiuk et al. 2018, RISE, sec. 4.2).

A map ranks the pixels of its image, most important first (ties broken by a seeded random order).
**Deletion**: the top fraction ``f`` of pixels (all channels) is replaced by a baseline image
(default zeros); a faithful map makes the target-class probability fall fast, so a *lower* area
under the probability-vs-``f`` curve is better. **Insertion**: the top fraction ``f`` is restored
into a blurred copy of the image; the probability should rise fast, so a *higher* area is better.
Both curves also record the accuracy (argmax == label). Areas use the trapezoid rule over
``f`` in [0, 1] on an evenly spaced grid of ``steps + 1`` points.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from importance.checks import check_positive_int, check_seed
from importance.interpret.baselines import baseline_images, check_baseline
from importance.interpret.outputs import probabilities
from importance.validation import check_explained, check_maps, check_target, num_classes


@dataclasses.dataclass(frozen=True)
class Faithfulness:
    """Deletion and insertion curves of one set of maps.

    Attributes:
        curves: DataFrame with columns ``fraction``, ``deletion_probability``,
            ``deletion_accuracy``, ``insertion_probability``, ``insertion_accuracy`` (means over
            the images), one row per grid point.
        deletion_area: Per-image area under the deletion probability curve (N,); lower is better.
        insertion_area: Per-image area under the insertion probability curve (N,); higher is better.
    """

    curves: pd.DataFrame
    deletion_area: np.ndarray
    insertion_area: np.ndarray


def pixel_ranks(maps: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """Rank of each pixel in its map (0 = most important), (N, H, W); ties in a seeded order."""
    n = maps.shape[0]
    flat = maps.reshape(n, -1)
    tie_break = np.random.default_rng(check_seed(seed)).random(flat.shape)
    order = np.lexsort((tie_break, -flat), axis=1)
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(flat.shape[1])[None].repeat(n, 0), axis=1)
    return ranks.reshape(maps.shape)


def deletion_insertion(
    model: Any,
    images: Any,
    maps: Any,
    *,
    target: Any,
    labels: Any = None,
    steps: int = 16,
    deletion_baseline: str = "zero",
    insertion_baseline: str = "blur",
    seed: int = 0,
    batch_size: int = 512,
    from_logits: bool | None = None,
) -> Faithfulness:
    """Deletion and insertion curves of ``maps`` for the target classes.

    Args:
        model: A Keras classifier (logits or probabilities out; see
            :func:`importance.interpret.outputs.probabilities`).
        images: (N, H, W, C) images.
        maps: (N, H, W) saliency maps, higher = more important.
        target: The class whose probability is tracked: one id or one per image.
        labels: True labels for the accuracy (default: ``target``).
        steps: Grid intervals over the fraction of pixels in [0, 1].
        deletion_baseline: What deleted pixels become: ``"zero"``, ``"mean"`` or ``"blur"``.
        insertion_baseline: What the insertion curve starts from.
        seed: Seed of the tie-breaking order.
        batch_size: Images per forward pass.
        from_logits: Whether the model outputs logits; decided from its outputs on the images
            when None (:func:`importance.validation.output_kind`). The probabilities tracked are
            the softmax of a logits model's outputs and a probability model's outputs as they
            are, so a softmax head and a logits head give the same curves.

    Raises:
        ValueError: Bad model, images, target or labels (checked by
            :func:`importance.validation.check_explained` before any work), maps of another
            shape than the images', non-finite maps, bad options.
    """
    steps = check_positive_int("steps", steps)
    check_baseline(deletion_baseline)
    check_baseline(insertion_baseline)
    seed = check_seed(seed)
    batch_size = check_positive_int("batch_size", batch_size)
    images, ids, from_logits = check_explained(model, images, target, from_logits=from_logits)
    maps = check_maps(maps, images)
    truth = ids
    if labels is not None:
        classes = num_classes(model, images)
        truth = check_target(labels, num_images=len(ids), num_classes=classes, name="labels")
        truth = truth.numpy()
    x = images.numpy()
    ranks = pixel_ranks(maps, seed=seed)[..., None]
    fractions = np.linspace(0.0, 1.0, steps + 1)
    pixels = maps.shape[1] * maps.shape[2]
    removed = baseline_images(x, deletion_baseline)
    start = baseline_images(x, insertion_baseline)
    deletion = np.stack([np.where(ranks < round(f * pixels), removed, x) for f in fractions])
    insertion = np.stack([np.where(ranks < round(f * pixels), x, start) for f in fractions])
    results = {}
    for name, stack in (("deletion", deletion), ("insertion", insertion)):
        probs = probabilities(
            model, stack.reshape(-1, *x.shape[1:]), batch_size=batch_size, from_logits=from_logits
        )
        probs = probs.reshape(len(fractions), len(ids), -1)
        results[f"{name}_probability"] = probs[:, np.arange(len(ids)), ids]  # (F, N)
        results[f"{name}_accuracy"] = (probs.argmax(-1) == truth[None]).astype(np.float64)
    curves = pd.DataFrame(
        {"fraction": fractions, **{key: value.mean(axis=1) for key, value in results.items()}}
    )
    return Faithfulness(
        curves=curves,
        deletion_area=_area(results["deletion_probability"], fractions),
        insertion_area=_area(results["insertion_probability"], fractions),
    )


def _area(curves: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Trapezoid area of each column of ``curves`` (F, N) over ``fractions`` (F,)."""
    return (np.diff(fractions)[:, None] * (curves[1:] + curves[:-1]) / 2).sum(axis=0)
