"""Explanations under thresholding: does a thresholded model still look where the original looked?

The original project's "model augmentation": threshold a network by a weight-importance measure
and compute its saliency maps again. :func:`explanation_kept` runs :func:`importance.threshold_sweep`
(so the replacement rules, the exact counts, the seeded ties and the restoration of the model are
the sweep's) and, at every threshold, computes the maps of the thresholded model and their
Spearman rank correlation with the untouched model's maps, per image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from importance.checks import check_choice, check_number, check_seed
from importance.interpret.registry import compute_saliency, get_saliency
from importance.scores import validate_scores
from importance.thresholding import REPLACEMENTS, SCOPES, threshold_sweep
from importance.validation import check_classifier, check_explained


def rank_correlation(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Spearman rank correlation of each pair of maps (N, H, W) -> (N,).

    Ties get average ranks. The correlation is undefined for a constant map (e.g. an all-zero
    Grad-CAM); it is defined as 1 where both maps are constant (nothing to lose) and 0 where only
    one is (the ranking is gone).
    """
    a = stats.rankdata(np.asarray(first).reshape(len(first), -1), axis=1)
    b = stats.rankdata(np.asarray(second).reshape(len(second), -1), axis=1)
    a -= a.mean(axis=1, keepdims=True)
    b -= b.mean(axis=1, keepdims=True)
    norm = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (a * b).sum(axis=1) / norm
    flat_a, flat_b = (a == 0).all(axis=1), (b == 0).all(axis=1)
    return np.where(norm > 0, rho, np.where(flat_a & flat_b, 1.0, 0.0))


def explanation_kept(
    model: Any,
    scores: Any,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    thresholds: Sequence[float] = (0.3, 0.5, 0.7),
    method: str = "grad_cam",
    scope: str = "global",
    replace: str = "noise",
    seed: int = 0,
    **options: Any,
) -> pd.DataFrame:
    """Rank correlation of the maps of the thresholded model with the untouched model's maps.

    Args:
        model: A trained Keras classifier; restored bitwise afterwards (by the sweep).
        scores: One importance array per trainable weight (a measure's, possibly aggregated).
        images: (N, H, W, C) images to explain (also the sweep's evaluation data).
        labels: Their labels; the maps explain the true class at every threshold.
        thresholds: Fractions of weights replaced.
        method: Registered saliency method.
        scope: ``"global"`` or ``"layer"`` (see :func:`importance.threshold_sweep`).
        replace: ``"noise"`` or ``"zero"``.
        seed: Seed of the sweep (ties and noise).
        **options: Options of the saliency method.

    Returns:
        One row per threshold: ``threshold``, ``loss``, ``accuracy`` (on ``images``),
        ``fraction_replaced`` and ``explanation_kept`` (mean Spearman correlation over images).

    Raises:
        KeyError: Unknown method.
        ValueError: A bad model, images, labels, scores or option, checked before any map is
            computed (:func:`importance.validation.check_explained`,
            :func:`importance.scores.validate_scores`); the model is never changed then. An
            error raised while the model is thresholded ends the sweep with the model restored.
    """
    get_saliency(method)
    check_classifier(model)  # thresholding needs trainable weights
    check_explained(model, images, labels, from_logits=options.get("from_logits"),
                    target_name="labels")
    validate_scores(scores, model)
    check_choice("scope", scope, SCOPES)
    check_choice("replace", replace, REPLACEMENTS)
    check_seed(seed)
    if isinstance(thresholds, (str, bytes)) or np.ndim(thresholds) != 1 or not len(thresholds):
        raise ValueError(
            f"thresholds must be a non-empty sequence of numbers in [0, 1]. Received: {thresholds!r}"
        )
    for value in thresholds:
        if check_number("thresholds", value, minimum=0) > 1:
            raise ValueError(f"thresholds must be numbers in [0, 1]. Received: {value!r}")
    reference = compute_saliency(method, model, images, target=labels, **options)
    kept: dict[float, float] = {}

    def compare(threshold: float, thresholded: Any) -> None:
        maps = compute_saliency(method, thresholded, images, target=labels, **options)
        kept[threshold] = float(rank_correlation(reference, maps).mean())

    frame = threshold_sweep(
        model, scores, (images, labels), thresholds=list(thresholds), scope=scope,
        replace=replace, seed=seed, on_evaluate=compare,
    )  # fmt: skip
    frame["explanation_kept"] = [kept[p] for p in frame["threshold"]]
    return frame
