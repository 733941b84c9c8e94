"""Thresholding sweep: replace the least important weights and measure loss and accuracy.

For each threshold ``p`` the ``round(p * N)`` trainable weights with the lowest importance are
replaced (``N`` scalars in the scope: the whole model with ``scope="global"``, each Keras layer
with ``scope="layer"``), the model is evaluated, and its weights are restored. Ties in importance
are broken by a seeded random order, so the count is exact and the replaced set is reproducible.

The ranking helpers (:func:`replacement_ranks`, :func:`replacement_counts`,
:func:`replacement_mask`) are pure NumPy so they can be tested without a model.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from importance.checks import check_choice, check_positive_int, check_seed
from importance.data import DEFAULT_BATCH_SIZE, evaluate, resolve_from_logits
from importance.layers import layer_groups
from importance.scores import validate_scores
from importance.validation import check_data

SCOPES = ("global", "layer")
REPLACEMENTS = ("noise", "zero")
DEFAULT_THRESHOLDS = tuple(round(0.1 * i, 1) for i in range(11))
NOISE_SCALE = 0.1  # noise std = std(w) / 10, as in the original study


def replacement_counts(fraction: float, sizes: Sequence[int] | int) -> np.ndarray:
    """How many weights each group replaces at ``fraction``: ``round(fraction * size)``.

    Python's ``round`` is used (halves go to the even neighbour), e.g. ``round(0.5 * 5) == 2``.

    Args:
        fraction: Threshold in [0, 1].
        sizes: Number of weights in each group (or one int for a single group).

    Returns:
        Int64 array of counts, one per group.
    """
    fraction = _check_threshold(fraction)
    sizes_array = np.atleast_1d(np.asarray(sizes, dtype=np.int64))
    return np.array([round(fraction * int(s)) for s in sizes_array], dtype=np.int64)


def replacement_ranks(scores_flat: Any, *, seed: int = 0, groups: Any = None) -> np.ndarray:
    """Rank of every weight within its group, lowest importance first, ties in seeded random order.

    Args:
        scores_flat: 1-D importance scores.
        seed: Seed of the tie-breaking order.
        groups: Optional 1-D int group id per score (e.g. the layer); ranks restart in each group.

    Returns:
        Int64 array: 0 for the least important weight of its group, 1 for the next, ...
        The weights with rank < k are the k to replace in their group.
    """
    scores = np.asarray(scores_flat, dtype=np.float64).ravel()
    n = scores.size
    group = np.zeros(n, np.int64) if groups is None else np.asarray(groups, np.int64).ravel()
    if group.size != n:
        raise ValueError(f"groups has {group.size} entries but scores has {n}.")
    key = np.random.default_rng([check_seed(seed), 0]).permutation(n)
    if n == 0:
        return np.zeros(0, np.int64)
    order = np.lexsort((key, scores, group))
    sorted_group = group[order]
    starts = np.flatnonzero(np.r_[True, sorted_group[1:] != sorted_group[:-1]])
    first = np.repeat(starts, np.diff(np.r_[starts, n]))
    ranks = np.empty(n, np.int64)
    ranks[order] = np.arange(n, dtype=np.int64) - first
    return ranks


def replacement_mask(
    scores_flat: Any, fraction: float, *, seed: int = 0, groups: Any = None
) -> np.ndarray:
    """Boolean mask of the weights replaced at ``fraction`` (see :func:`replacement_ranks`).

    Exactly ``round(fraction * n_g)`` weights are marked in each group ``g`` (the whole array when
    ``groups`` is None), and every marked score is <= every unmarked score of its group.
    """
    ranked = _Ranked.of(scores_flat, seed=seed, groups=groups)
    return ranked.mask(fraction)[0]


class _Ranked:
    """Ranks within groups and the group sizes: what the masks of every threshold derive from."""

    def __init__(self, ranks: np.ndarray, group: np.ndarray):
        self.ranks = ranks
        _, inverse, self.sizes = np.unique(group, return_inverse=True, return_counts=True)
        self.inverse = inverse.ravel()

    @classmethod
    def of(cls, scores_flat: Any, *, seed: int, groups: Any) -> _Ranked:
        scores = np.asarray(scores_flat, dtype=np.float64).ravel()
        group = np.zeros(scores.size, np.int64) if groups is None else np.asarray(groups, np.int64).ravel()
        return cls(replacement_ranks(scores, seed=seed, groups=group), group)

    def mask(self, fraction: float) -> tuple[np.ndarray, int]:
        """The replaced weights at ``fraction`` (boolean, flat) and how many they are."""
        if self.ranks.size == 0:
            return np.zeros(0, bool), 0
        counts = replacement_counts(fraction, self.sizes)
        return self.ranks < counts[self.inverse], int(counts.sum())


def threshold_sweep(
    model: Any,
    scores: Any,
    data: Any,
    *,
    thresholds: Sequence[float] | None = None,
    scope: str = "global",
    replace: str = "noise",
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_evaluate: Callable[[float, Any], None] | None = None,
    from_logits: bool | None = None,
) -> pd.DataFrame:
    """Loss and accuracy as the least important fraction of the trainable weights is replaced.

    Args:
        model: A built Keras classifier (logits or probabilities out).
        scores: One importance array per ``model.trainable_weights`` entry (e.g. from
            :func:`importance.compute_importance`, possibly :func:`importance.aggregate`-d).
        data: ``(x, y)`` arrays or a batched ``tf.data.Dataset`` (see :mod:`importance.data`).
        thresholds: Fractions in [0, 1]; default ``0, 0.1, ..., 1.0``.
        scope: ``"global"`` ranks all trainable weights of the model together; ``"layer"``
            replaces the fraction within each Keras layer (the innermost layer holding the
            weight, see :func:`importance.layers.owning_layers`).
        replace: ``"noise"``: N(0, (std(w) / 10)^2) with std(w) the standard deviation of the
            weight tensor, seeded; ``"zero"``: 0.
        seed: Seed of the tie-breaking order and of the noise.
        batch_size: Evaluation batch size for array data.
        on_evaluate: Called as ``on_evaluate(threshold, model)`` at every threshold, just before
            the model is evaluated, while the replaced weights are in place (e.g. to check which
            weights differ, or to compute another metric on the thresholded model). The weights
            are restored afterwards whatever it does; an exception it raises ends the sweep.
        from_logits: Whether the model outputs logits; decided once from its outputs on
            ``data`` when None, before any weight is replaced (see
            :func:`importance.validation.output_kind`).

    Returns:
        A DataFrame with one row per threshold and columns ``threshold``, ``loss`` (mean
        cross-entropy), ``accuracy`` and ``fraction_replaced`` (replaced count / N).

    Raises:
        ValueError: A threshold outside [0, 1], unknown ``scope``/``replace``, a model that is
            not built, has no trainable weights or is not a single-output classifier, bad data
            (non-finite inputs, labels outside the classes, an infinite or unbatched dataset,
            see :mod:`importance.validation`), a bad seed.
        importance.ImportanceError: Scores that do not match the model.

    The ranking and the noise are drawn once per sweep: the weights replaced at a threshold are
    also replaced at every higher one, with the same values. ``round`` is Python's (halves to
    even). Each threshold sees the original weights with exactly its replaced ones changed; the
    model's weights are restored bitwise when the sweep ends, also on an exception or
    KeyboardInterrupt.
    """
    check_choice("scope", scope, SCOPES)
    check_choice("replace", replace, REPLACEMENTS)
    seed = check_seed(seed)
    levels = _check_thresholds(DEFAULT_THRESHOLDS if thresholds is None else thresholds)
    check_positive_int("batch_size", batch_size)
    dataset = check_data(data, model=model)
    arrays = validate_scores(scores, model, measure="scores")
    from_logits = resolve_from_logits(model, dataset, from_logits=from_logits)

    variables = list(model.trainable_weights)
    originals = [np.array(v.numpy(), copy=True) for v in variables]
    sizes = [a.size for a in originals]
    offsets = np.cumsum([0] + sizes)
    total = int(offsets[-1])
    if scope == "global":
        group = np.zeros(total, np.int64)
    else:
        group = np.empty(total, np.int64)
        for g, (_, indices) in enumerate(layer_groups(model)):
            for i in indices:
                group[offsets[i] : offsets[i + 1]] = g
    ranked = _Ranked.of(np.concatenate([a.ravel() for a in arrays]), seed=seed, groups=group)
    replacements = _replacement_values(originals, replace, seed)

    rows = []
    replaced: set[int] = set()  # variables holding replaced values now
    try:
        for p in levels:
            mask, count = ranked.mask(p)
            touched = _assign(variables, originals, replacements, mask, offsets)
            # A variable replaced at the previous threshold and untouched at this one gets its
            # original back; one replaced at both is overwritten whole by _assign.
            _restore(variables, originals, sorted(replaced - set(touched)))
            replaced = set(touched)
            if on_evaluate is not None:
                on_evaluate(p, model)
            loss, accuracy = evaluate(model, dataset, batch_size=batch_size, from_logits=from_logits)
            rows.append((p, loss, accuracy, count / total))
    finally:
        _restore(variables, originals, range(len(variables)))
    return pd.DataFrame(rows, columns=["threshold", "loss", "accuracy", "fraction_replaced"])


def _replacement_values(originals: list[np.ndarray], replace: str, seed: int) -> list[np.ndarray]:
    """What each weight becomes when replaced, drawn once per sweep (same noise at every p)."""
    if replace == "zero":
        return [np.zeros_like(a) for a in originals]
    rng = np.random.default_rng([seed, 1])
    out = []
    for a in originals:
        std = float(np.std(a.astype(np.float64))) if a.size else 0.0
        out.append(rng.normal(0.0, NOISE_SCALE * std, size=a.shape).astype(a.dtype))
    return out


def _assign(variables, originals, replacements, mask, offsets) -> list[int]:
    touched = []
    for i, variable in enumerate(variables):
        local = mask[offsets[i] : offsets[i + 1]]
        if not local.any():
            continue
        value = np.where(local.reshape(originals[i].shape), replacements[i], originals[i])
        variable.assign(value)
        touched.append(i)
    return touched


def _restore(variables, originals, indices) -> None:
    for i in indices:
        variables[i].assign(originals[i])


def _check_threshold(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"threshold must be a number in [0, 1]. Received: {value!r}")
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"threshold must be in [0, 1]. Received: {value!r}")
    return value


def _check_thresholds(thresholds: Any) -> list[float]:
    if isinstance(thresholds, (str, bytes)) or np.ndim(thresholds) == 0:
        raise ValueError(
            f"thresholds must be a sequence of numbers in [0, 1]. Received: {thresholds!r}"
        )
    levels = [_check_threshold(t.item() if isinstance(t, np.generic) else t) for t in thresholds]
    if not levels:
        raise ValueError("thresholds must not be empty. Received: []")
    return levels
