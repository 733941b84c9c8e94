"""Figures of merit of thresholding curves: robustness score, safe fraction, lift, intervals.

* **Robustness score** of a curve: the area, over thresholds p in [0, 1], under the normalised
  loss increase ``(loss(p) - loss(0)) / (ln K - loss(0))`` (trapezoid rule; ln K is the loss of
  a model at chance). 0: removing weights never hurt; 1: the model is at chance from the first
  weight on. Lower is better.
* **Largest safe fraction**: the largest p such that at every threshold up to p the accuracy
  stays within 1 point (0.01) of the untouched model's.
* **Lift over random**: random's score minus the measure's on the same task, seed and
  aggregation; positive means the measure finds important weights better than chance.
  Significance: two-sided paired t-test over seeds (:func:`scipy.stats.ttest_rel`), p < 0.05.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

SAFE_ACCURACY_DROP = 0.01
SIGNIFICANCE_LEVEL = 0.05


def robustness_score(
    thresholds: Sequence[float],
    losses: Sequence[float],
    *,
    num_classes: int,
    base_loss: float | None = None,
) -> float:
    """Area under the normalised loss increase over p in [0, 1] (trapezoid); lower is better.

    Args:
        thresholds: Fractions p of replaced weights, covering 0 and 1 (any order).
        losses: Loss at each threshold.
        num_classes: K; the loss at chance is ln K.
        base_loss: Loss of the untouched model; the loss at p = 0 when None.

    Raises:
        ValueError: Mismatched lengths, thresholds outside [0, 1] or not covering both ends,
            fewer than 2 classes, or an untouched model already at (or worse than) chance.
    """
    p, loss = _sorted_curve(thresholds, losses)
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2. Received: {num_classes}")
    if p[0] != 0.0 or p[-1] != 1.0:
        raise ValueError(f"thresholds must include 0 and 1. Received: {p.tolist()}")
    base = float(loss[0]) if base_loss is None else float(base_loss)
    chance = math.log(num_classes)
    if not chance > base:
        raise ValueError(
            f"the untouched model's loss ({base:.4g}) must be below chance (ln K = {chance:.4g})."
        )
    increase = (loss - base) / (chance - base)
    return float(np.sum((increase[1:] + increase[:-1]) * np.diff(p)) / 2.0)


def safe_fraction(
    thresholds: Sequence[float],
    accuracies: Sequence[float],
    *,
    base_accuracy: float | None = None,
    tolerance: float = SAFE_ACCURACY_DROP,
) -> float:
    """Largest p such that accuracy stays within ``tolerance`` of the untouched model up to p.

    Args:
        thresholds: Fractions p of replaced weights (any order).
        accuracies: Accuracy at each threshold.
        base_accuracy: Accuracy of the untouched model; the accuracy at the smallest p when None.
        tolerance: Allowed drop (0.01 = 1 point).

    Returns:
        The largest safe threshold; 0.0 when even the first threshold is not safe.
    """
    p, acc = _sorted_curve(thresholds, accuracies)
    base = float(acc[0]) if base_accuracy is None else float(base_accuracy)
    safe = 0.0
    for threshold, accuracy in zip(p, acc, strict=True):
        if accuracy < base - tolerance - 1e-12:
            break
        safe = float(threshold)
    return safe


def lift(baseline_scores: Sequence[float], scores: Sequence[float]) -> np.ndarray:
    """Lift over the baseline per paired seed: the baseline's robustness score minus the measure's.

    Positive means the measure finds the important weights better than the baseline (random).

    Raises:
        ValueError: The two score sequences differ in length.
    """
    a = np.asarray(baseline_scores, dtype=np.float64)
    b = np.asarray(scores, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired scores differ in length: {a.size} and {b.size}.")
    return a - b


def mean_interval(values: Sequence[float], *, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided Student-t confidence interval of the mean.

    Returns:
        ``(mean, low, high)``; low = high = mean for a single value.

    Raises:
        ValueError: No values, or a confidence outside (0, 1).
    """
    from scipy import stats

    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1). Received: {confidence}")
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("mean_interval needs at least one value. Received: []")
    mean = float(x.mean())
    if x.size == 1:
        return mean, mean, mean
    half = float(stats.t.ppf(0.5 + confidence / 2.0, df=x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, mean - half, mean + half


def paired_p_value(baseline: Sequence[float], candidate: Sequence[float]) -> float | None:
    """Two-sided paired t-test p-value (scipy.stats.ttest_rel) of baseline vs candidate.

    Returns:
        The p-value, or None with fewer than 2 pairs or when the differences are all equal
        (no variance: the test is undefined).
    """
    from scipy import stats

    a = np.asarray(baseline, dtype=np.float64)
    b = np.asarray(candidate, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.size} and {b.size}.")
    diff = a - b
    if a.size < 2 or np.allclose(diff, diff[0], rtol=0.0, atol=1e-15):
        return None
    return float(stats.ttest_rel(a, b).pvalue)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of a family of p-values (Holm 1979).

    Controls the family-wise error rate at any level alpha: the k-th smallest of m p-values is
    multiplied by ``m - k + 1`` (k from 1), running maxima keep the order, and values are capped
    at 1. ``None`` (an undefined test) is passed through and does not count towards m.

    Returns:
        The adjusted p-values, in the input's order.

    Raises:
        ValueError: A p-value outside [0, 1] or not finite.
    """
    defined = [(i, float(p)) for i, p in enumerate(p_values) if p is not None]
    for i, p in defined:
        if not (math.isfinite(p) and 0.0 <= p <= 1.0):
            raise ValueError(f"p_values[{i}] must be a probability in [0, 1]. Received: {p}")
    adjusted: list[float | None] = [None] * len(p_values)
    m = len(defined)
    running = 0.0
    for k, (i, p) in enumerate(sorted(defined, key=lambda item: item[1])):
        running = max(running, min(1.0, (m - k) * p))
        adjusted[i] = running
    return adjusted


def _sorted_curve(thresholds: Sequence[float], values: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(thresholds, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if p.ndim != 1 or p.shape != v.shape or p.size < 2:
        raise ValueError(
            f"thresholds and values must be 1-D of equal length >= 2. Received: {p.shape} and {v.shape}"
        )
    if np.any((p < 0.0) | (p > 1.0)):
        raise ValueError(f"thresholds must be in [0, 1]. Received: {p.tolist()}")
    order = np.argsort(p, kind="stable")
    return p[order], v[order]
