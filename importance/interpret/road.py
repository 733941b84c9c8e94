"""ROAD: RemOve And Debias (Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy for
Attribution Methods", ICML).

Deleting pixels by setting them to a constant (the deletion curve's zero baseline) leaves an
image the model never saw, and the mask's shape itself leaks which pixels were removed. ROAD
removes them by **noisy linear imputation** instead (sec. 4 of the paper): each removed pixel
takes the weighted mean of its 8 neighbours (weight 1/6 for the 4 direct neighbours, 1/12 for
the 4 diagonal ones; neighbours outside the image are left out), a sparse linear system over
all removed pixels at once, solved with :func:`scipy.sparse.linalg.spsolve`; then Gaussian
noise of standard deviation ``noise`` (the paper's 0.01 for images in [0, 1]) is added to the
imputed values.

Two orders, at each fraction ``f`` of a grid (the paper's 10 %, 20 %, ..., 90 %):
**MoRF** (most relevant first) removes the top ``f`` of the pixels; the target-class
probability should fall fast, so a *lower* mean is better. **LeRF** (least relevant first)
removes the bottom ``f``; the probability should stay, so a *higher* mean is better. Each curve
is summarised per image by its mean over the grid (as pytorch-grad-cam's
``ROAD*RelevantFirstAverage``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from importance.checks import check_seed
from importance.interpret.faithfulness import pixel_ranks
from importance.interpret.inputs import check_images, class_ids
from importance.interpret.outputs import probabilities
from importance.validation import check_maps, output_kind

FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# (row offset, column offset), weight: the neighbours of the linear imputation (Rong et al. 2022)
NEIGHBOURS = (
    ((-1, -1), 1 / 12), ((-1, 0), 1 / 6), ((-1, 1), 1 / 12), ((0, -1), 1 / 6),
    ((0, 1), 1 / 6), ((1, -1), 1 / 12), ((1, 0), 1 / 6), ((1, 1), 1 / 12),
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Road:
    """ROAD curves of one set of maps.

    Attributes:
        curves: DataFrame with columns ``fraction``, ``morf_probability``, ``lerf_probability``
            (means over the images), one row per fraction removed.
        morf: Per-image mean of the MoRF probability curve (N,); lower is better.
        lerf: Per-image mean of the LeRF probability curve (N,); higher is better.
    """

    curves: pd.DataFrame
    morf: np.ndarray
    lerf: np.ndarray


def linear_imputation(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """``image`` (H, W, C) with the ``removed`` (H, W) pixels imputed from their neighbours.

    Solves, for every removed pixel ``i``, ``sum_j w_j (x_i - x_j) = 0`` over its neighbours
    ``j`` inside the image (weights :data:`NEIGHBOURS`), the known pixels' values on the right
    side; one sparse system shared by the channels. No noise (see :func:`noisy_linear_imputation`).

    Raises:
        ValueError: Every pixel removed (the system has no known value to start from).
    """
    from scipy import sparse
    from scipy.sparse.linalg import spsolve

    height, width = removed.shape
    if removed.all():
        raise ValueError("removed must leave at least one pixel of the image. Received all.")
    out = np.array(image, dtype=np.float64)
    unknown = np.flatnonzero(removed)
    if unknown.size == 0:
        return out
    index = np.full(height * width, -1)
    index[unknown] = np.arange(unknown.size)
    rows, cols = np.divmod(unknown, width)
    flat = out.reshape(height * width, -1)
    diagonal = np.zeros(unknown.size)
    entries_i, entries_j, entries_v = [], [], []
    rhs = np.zeros((unknown.size, flat.shape[1]))
    for (dr, dc), weight in NEIGHBOURS:
        r, c = rows + dr, cols + dc
        inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        neighbour = np.where(inside, r * width + c, 0)
        diagonal += weight * inside
        known = inside & (index[neighbour] < 0)
        missing = inside & (index[neighbour] >= 0)
        rhs[known] += weight * flat[neighbour[known]]
        entries_i.append(np.flatnonzero(missing))
        entries_j.append(index[neighbour[missing]])
        entries_v.append(np.full(int(missing.sum()), -weight))
    i = np.concatenate([np.arange(unknown.size), *entries_i])
    j = np.concatenate([np.arange(unknown.size), *entries_j])
    v = np.concatenate([diagonal, *entries_v])
    system = sparse.csc_matrix((v, (i, j)), shape=(unknown.size, unknown.size))
    solution = spsolve(system, rhs)
    flat[unknown] = np.asarray(solution).reshape(unknown.size, -1)
    return out


def noisy_linear_imputation(
    image: np.ndarray, removed: np.ndarray, *, noise: float = 0.01, rng: np.random.Generator
) -> np.ndarray:
    """:func:`linear_imputation` plus ``N(0, noise^2)`` on every imputed value (Rong et al. 2022)."""
    out = linear_imputation(image, removed)
    out[removed] += noise * rng.standard_normal(out[removed].shape)
    return out


def road(
    model: Any,
    images: Any,
    maps: Any,
    *,
    target: Any,
    fractions: Sequence[float] = FRACTIONS,
    noise: float = 0.01,
    seed: int = 0,
    batch_size: int = 512,
) -> Road:
    """ROAD MoRF and LeRF curves of ``maps`` for the target classes (Rong et al. 2022).

    Pixels are ranked as the deletion curve ranks them
    (:func:`importance.interpret.faithfulness.pixel_ranks`, ties in a seeded order); at fraction
    ``f``, ``round(f H W)`` pixels (all channels) are removed by noisy linear imputation.

    Args:
        model: A Keras classifier (logits or probabilities out).
        images: (N, H, W, C) images.
        maps: (N, H, W) saliency maps, higher = more important.
        target: The class whose probability is tracked: one id or one per image.
        fractions: Fractions of pixels removed, each in (0, 1).
        noise: Standard deviation of the noise added to imputed values (>= 0).
        seed: Seed of the tie-breaking order and of the noise.
        batch_size: Images per forward pass.

    Raises:
        ValueError: Maps of another shape than the images', non-finite maps, bad options.
    """
    fractions = np.asarray(fractions, dtype=np.float64)
    if fractions.ndim != 1 or fractions.size == 0 or not ((fractions > 0) & (fractions < 1)).all():
        raise ValueError(
            f"fractions must be a non-empty sequence of numbers in (0, 1). Received: "
            f"{fractions.tolist()!r}"
        )
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not noise >= 0:
        raise ValueError(f"noise must be a non-negative number. Received: {noise!r}")
    rng = np.random.default_rng(check_seed(seed))
    images = check_images(images, model)
    maps = check_maps(maps, images)
    ids = class_ids(model, images, target)
    x = images.numpy()
    ranks = pixel_ranks(maps, seed=seed)
    pixels = maps.shape[1] * maps.shape[2]
    counts = [round(f * pixels) for f in fractions]
    stacks = {"morf": [], "lerf": []}
    for k in counts:
        for n in range(len(x)):
            for order, removed in (("morf", ranks[n] < k), ("lerf", ranks[n] >= pixels - k)):
                stacks[order].append(noisy_linear_imputation(x[n], removed, noise=noise, rng=rng))
    from_logits = output_kind(model, x) == "logits"  # decided on the images themselves
    results = {}
    for order, stack in stacks.items():
        batch = np.stack(stack).astype(x.dtype)
        probs = probabilities(model, batch, batch_size=batch_size, from_logits=from_logits)
        probs = probs.reshape(len(fractions), len(ids), -1)
        results[order] = probs[:, np.arange(len(ids)), ids]  # (F, N)
    curves = pd.DataFrame({"fraction": fractions,
                           "morf_probability": results["morf"].mean(axis=1),
                           "lerf_probability": results["lerf"].mean(axis=1)})  # fmt: skip
    return Road(curves=curves, morf=results["morf"].mean(axis=0), lerf=results["lerf"].mean(axis=0))
