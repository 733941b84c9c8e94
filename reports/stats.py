"""Statistics of the leaderboard: intervals that respect the data, rank uncertainty, rank tests.

One home for what the sections need beyond :mod:`reports.scoring` (which keeps the figures of
merit, :func:`~reports.scoring.mean_interval`, :func:`~reports.scoring.paired_p_value` and
:func:`~reports.scoring.holm`):

* :func:`seed_interval`: a mean over seeds with a 95 % Student-t interval only from
  :data:`MIN_INTERVAL_SEEDS` seeds on, clipped to the quantity's range when it is bounded;
  :func:`format_seed_interval` prints the values instead below that ("n = 2, no interval").
* :func:`wilson_interval`: the Wilson score interval of a proportion (Wilson 1927), inside [0, 1].
* :func:`median_interval`: a median with its distribution-free interval from order statistics
  (Conover 1999, section 3.2), for timings and ratios whose noise is skewed (a shared machine).
* :func:`block_ranks`: ranks of k methods within each of N blocks (ties: average ranks).
* :func:`friedman`: Friedman's test on those ranks, with the tie correction, and Iman and
  Davenport's F form (Demsar 2006, section 3.2.2).
* :func:`nemenyi_q` and :func:`critical_difference`: the post-hoc Nemenyi test's critical
  difference of mean ranks, ``q_alpha * sqrt(k (k + 1) / (6 N))`` (Demsar 2006, eq. in 3.2.2;
  q_alpha is the studentized range statistic over sqrt 2, Demsar's table 5).
* :func:`bootstrap_rank_interval`: a percentile bootstrap interval of each method's position
  in the ranking by mean rank, resampling blocks (tasks, then seeds within a task), seeded.
* :func:`cliques`: the groups of methods whose mean ranks lie within the critical difference
  (the bars of a critical-difference diagram).

References:
    Demsar, J. (2006). Statistical comparisons of classifiers over multiple data sets. JMLR 7.
    Wilson, E. B. (1927). Probable inference, the law of succession, and statistical inference.
    Conover, W. J. (1999). Practical nonparametric statistics, 3rd ed. Wiley. Section 3.2.
    Efron, B. & Tibshirani, R. (1993). An introduction to the bootstrap. Chapman & Hall.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from reports.scoring import mean_interval

MIN_INTERVAL_SEEDS = 3
CONFIDENCE = 0.95
BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_SEED = 0


def seed_interval(
    values: Sequence[float],
    *,
    bounds: tuple[float, float] | None = None,
    confidence: float = CONFIDENCE,
) -> tuple[float, float | None, float | None]:
    """Mean over seeds and a Student-t interval, or no interval below 3 seeds.

    Args:
        values: One value per seed.
        bounds: ``(low, high)`` of a bounded quantity (accuracy: ``(0, 1)``); the interval is
            clipped to it. None: unbounded.
        confidence: Two-sided confidence level.

    Returns:
        ``(mean, low, high)``; ``low`` and ``high`` are None with fewer than
        :data:`MIN_INTERVAL_SEEDS` values (a t interval from 2 values is too wide to mean
        anything and crosses any bound).

    Raises:
        ValueError: No values, or bounds with low > high.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("values must hold at least one value. Received: []")
    if x.size < MIN_INTERVAL_SEEDS:
        return float(x.mean()), None, None
    mean, low, high = mean_interval(x, confidence=confidence)
    if bounds is not None:
        lo, hi = bounds
        if lo > hi:
            raise ValueError(f"bounds must be (low, high) with low <= high. Received: {bounds}")
        low, high = min(max(low, lo), hi), min(max(high, lo), hi)
    return mean, low, high


def format_seed_interval(
    values: Sequence[float], *, bounds: tuple[float, float] | None = None, digits: int = 3
) -> str:
    """``mean [low, high]`` from 3 seeds on; below, the values: ``0.576 (n = 2, no interval:
    0.512, 0.640)``; ``–`` without values."""
    x = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not x:
        return "–"
    mean, low, high = seed_interval(x, bounds=bounds)
    if low is None:
        if len(x) == 1:
            return f"{mean:.{digits}f} (n = 1)"
        shown = ", ".join(f"{v:.{digits}f}" for v in x)
        return f"{mean:.{digits}f} (n = {len(x)}, no interval: {shown})"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def wilson_interval(
    successes: int, trials: int, *, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (Wilson 1927); always inside [0, 1].

    Raises:
        ValueError: ``trials`` < 1 or ``successes`` outside [0, trials].
    """
    from scipy import stats

    if trials < 1:
        raise ValueError(f"trials must be at least 1. Received: {trials}")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be in [0, {trials}]. Received: {successes}")
    z = float(stats.norm.ppf(0.5 + confidence / 2.0))
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z / (1 + z * z / trials) * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials**2))
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends, no round-off
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


def median_interval(
    values: Sequence[float], *, confidence: float = CONFIDENCE
) -> tuple[float, float | None, float | None]:
    """A median and its distribution-free confidence interval from order statistics.

    With the values sorted, ``x_(1) <= ... <= x_(n)``, the interval is ``[x_(k), x_(n + 1 - k)]``
    for the largest ``k`` whose coverage ``1 - 2 P(B <= k - 1)``, B ~ Binomial(n, 1/2), is at
    least ``confidence`` (Conover 1999, section 3.2: the interval for the population median
    needs no assumption on the distribution, so it suits timings, whose noise on a shared
    machine is skewed). Below 6 values no interval reaches 95 % (five values give 93.75 % from
    the smallest to the largest), and the bounds are None.

    Args:
        values: Independent draws (per-round timings or ratios).
        confidence: Two-sided confidence level, in (0, 1).

    Returns:
        ``(median, low, high)``; ``low`` and ``high`` are None when no pair of order
        statistics reaches ``confidence``.

    Raises:
        ValueError: No values, a value that is not finite, or ``confidence`` outside (0, 1).
    """
    from scipy import stats

    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if x.size == 0:
        raise ValueError("values must hold at least one value. Received: []")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"values must be finite. Received: {x[~np.isfinite(x)][:5].tolist()}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1). Received: {confidence}")
    n = x.size
    # coverage of [x_(k), x_(n+1-k)] is 1 - 2 * cdf(k - 1); it falls as k grows
    k = np.arange(1, n // 2 + 1)
    covered = k[1.0 - 2.0 * stats.binom.cdf(k - 1, n, 0.5) >= confidence]
    median = float(np.median(x))
    if covered.size == 0:
        return median, None, None
    best = int(covered.max())
    return median, float(x[best - 1]), float(x[n - best])


def block_ranks(scores: np.ndarray, *, higher_is_better: bool) -> np.ndarray:
    """Ranks (1 = best) of the k columns within each of the N rows; ties get average ranks.

    Raises:
        ValueError: ``scores`` is not a 2-D array without NaN.
    """
    from scipy import stats

    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or np.isnan(s).any():
        raise ValueError(f"scores must be a 2-D array (blocks x methods) without NaN. "
                         f"Received: shape {s.shape}")
    return stats.rankdata(-s if higher_is_better else s, method="average", axis=1)


@dataclasses.dataclass(frozen=True)
class Friedman:
    """Friedman's test of k methods over N blocks (Demsar 2006, 3.2.2).

    Attributes:
        blocks: N. methods: k.
        chi2: Friedman's statistic, tie-corrected; ``p_chi2`` its chi-square (k - 1) p-value.
        f: Iman and Davenport's ``(N - 1) chi2 / (N (k - 1) - chi2)``, F((k-1), (k-1)(N-1))
            distributed; ``p`` its p-value (the one the leaderboard reads: less conservative).
    """

    blocks: int
    methods: int
    chi2: float
    p_chi2: float
    f: float
    p: float


def friedman(ranks: np.ndarray) -> Friedman:
    """Friedman's test on within-block ranks (rows: blocks, columns: methods).

    ``chi2 = [12 / (N k (k + 1)) * sum_j R_j^2 - 3 N (k + 1)] / C``, R_j the rank sum of method j
    and ``C = 1 - sum(t^3 - t) / (N k (k^2 - 1))`` over tied groups (1 without ties).

    Raises:
        ValueError: Fewer than 2 blocks or 2 methods.
    """
    from scipy import stats

    r = np.asarray(ranks, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] < 2 or r.shape[1] < 2:
        raise ValueError(f"ranks must be blocks x methods with at least 2 of each. "
                         f"Received: shape {r.shape}")
    n, k = r.shape
    ties = 0.0
    for row in r:
        _, counts = np.unique(row, return_counts=True)
        ties += float(np.sum(counts.astype(np.float64) ** 3 - counts))
    correction = 1.0 - ties / (n * k * (k * k - 1))
    sums = r.sum(axis=0)
    raw = 12.0 / (n * k * (k + 1)) * float(np.sum(sums**2)) - 3.0 * n * (k + 1)
    chi2 = raw / correction if correction > 0 else 0.0
    p_chi2 = float(stats.chi2.sf(chi2, k - 1))
    denominator = n * (k - 1) - chi2
    f = (n - 1) * chi2 / denominator if denominator > 1e-12 else math.inf
    p = float(stats.f.sf(f, k - 1, (k - 1) * (n - 1))) if math.isfinite(f) else 0.0
    return Friedman(blocks=n, methods=k, chi2=float(chi2), p_chi2=p_chi2, f=float(f), p=p)


def nemenyi_q(methods: int, *, alpha: float = 0.05) -> float:
    """q_alpha of the Nemenyi test: the studentized range quantile (k methods, infinite degrees
    of freedom) over sqrt 2, as tabulated by Demsar (2006, table 5a: 1.960 for k = 2, 3.164 for
    k = 10).

    Raises:
        ValueError: Fewer than 2 methods, or alpha outside (0, 1).
    """
    from scipy import stats

    if methods < 2:
        raise ValueError(f"methods must be at least 2. Received: {methods}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1). Received: {alpha}")
    return float(stats.studentized_range.ppf(1.0 - alpha, methods, np.inf) / math.sqrt(2.0))


def critical_difference(methods: int, blocks: int, *, alpha: float = 0.05) -> float:
    """Nemenyi critical difference of mean ranks: ``q_alpha * sqrt(k (k + 1) / (6 N))``.

    Two methods whose mean ranks differ by at least this much differ at level alpha (family-wise,
    over all pairs).
    """
    if blocks < 1:
        raise ValueError(f"blocks must be at least 1. Received: {blocks}")
    return nemenyi_q(methods, alpha=alpha) * math.sqrt(methods * (methods + 1) / (6.0 * blocks))


def positions(mean_ranks: np.ndarray) -> np.ndarray:
    """Position of each method when sorted by mean rank (1 = best; ties share the best)."""
    from scipy import stats

    return stats.rankdata(np.asarray(mean_ranks, dtype=np.float64), method="min", axis=-1)


def bootstrap_rank_interval(
    ranks: np.ndarray,
    groups: Sequence[object] | None = None,
    *,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of each method's position by mean rank.

    Each replicate draws the groups (tasks) with replacement and, inside each drawn group, its
    blocks (seeds) with replacement (a two-stage bootstrap; one group: seeds only), averages the
    drawn blocks' ranks and takes each method's position (:func:`positions`).

    Args:
        ranks: Within-block ranks, blocks x methods (:func:`block_ranks`).
        groups: The group (task) of each block; None: every block its own group.
        samples: Number of bootstrap replicates B.
        seed: Seed of the resampling.
        confidence: Two-sided level of the percentile interval.

    Returns:
        ``(low, high)`` positions per method (integers as floats).
    """
    return bootstrap_combined_interval([(ranks, groups)], samples=samples, seed=seed,
                                       confidence=confidence)


def bootstrap_combined_interval(
    parts: Sequence[tuple[np.ndarray, Sequence[object] | None]],
    *,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`bootstrap_rank_interval` of the mean over parts (axes) of each method's mean rank.

    Every part (``(ranks, groups)``, the same methods in the same column order) is resampled
    independently in each replicate, as :func:`bootstrap_rank_interval` describes.
    """
    if not parts:
        raise ValueError("parts must hold at least one (ranks, groups) pair. Received: []")
    prepared = []
    for index, (ranks, groups) in enumerate(parts):
        r = np.asarray(ranks, dtype=np.float64)
        if r.ndim != 2 or r.shape[0] < 1 or r.shape[1] != np.asarray(parts[0][0]).shape[1]:
            raise ValueError(f"parts[{index}] ranks must be blocks x methods, the same methods "
                             f"in every part. Received: shape {r.shape}")
        labels = list(range(r.shape[0])) if groups is None else list(groups)
        if len(labels) != r.shape[0]:
            raise ValueError(f"parts[{index}] groups must have one label per block "
                             f"({r.shape[0]}). Received: {len(labels)}")
        members = [np.flatnonzero([g == label for g in labels]) for label in dict.fromkeys(labels)]
        prepared.append((r, members))
    rng = np.random.default_rng(seed)
    total = np.zeros((samples, prepared[0][0].shape[1]))
    for r, members in prepared:
        sizes = np.array([m.size for m in members])
        padded = np.zeros((len(members), sizes.max()), dtype=np.int64)
        for g, m in enumerate(members):
            padded[g, : m.size] = m
        chosen = rng.integers(len(members), size=(samples, len(members)))  # tasks
        size = sizes[chosen][..., None]
        inner = np.floor(rng.random((samples, len(members), sizes.max())) * size).astype(np.int64)
        rows = padded[chosen[..., None], np.minimum(inner, size - 1)]  # seeds within each task
        valid = np.arange(sizes.max()) < size
        drawn_ranks = r[rows] * valid[..., None]
        total += drawn_ranks.sum(axis=(1, 2)) / valid.sum(axis=(1, 2))[:, None]
    drawn = positions(total / len(prepared))
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(drawn, [tail, 100.0 - tail], axis=0, method="inverted_cdf")
    return low, high


def cliques(mean_ranks: Sequence[float], cd: float) -> list[tuple[int, int]]:
    """Maximal runs of methods (sorted by mean rank) spanning less than ``cd``: the groups not
    shown to differ, drawn as bars in a critical-difference diagram.

    Returns:
        ``(first, last)`` indices into the sorted order, for runs of at least 2 methods.
    """
    order = np.sort(np.asarray(mean_ranks, dtype=np.float64))
    runs = []
    for i in range(order.size):
        j = i
        while j + 1 < order.size and order[j + 1] - order[i] < cd:
            j += 1
        if j > i and not any(a <= i and j <= b for a, b in runs):
            runs.append((i, j))
    return runs


# --- one axis of the overall table: block scores -> ranks, interval, test ------------------


@dataclasses.dataclass(frozen=True)
class AxisScores:
    """The scores of one axis, ready to rank.

    Attributes:
        name: ``removal``, ``consolidation``, ``explanation``.
        scores: blocks x measures (index: block labels, columns: measures); one independent
            run per block (a task and seed), no NaN (incomplete measures are in ``missing``).
        groups: The group (task) of each block, for the two-stage bootstrap.
        higher_is_better: Whether a larger score ranks first.
        missing: measure -> why the axis has no score for it.
        blocks: What a block is, for the header ("task x seed").
    """

    name: str
    scores: pd.DataFrame
    groups: tuple
    higher_is_better: bool
    missing: dict[str, str]
    blocks: str


@dataclasses.dataclass(frozen=True)
class AxisRanking:
    """The ranking of one axis: per measure its mean rank, position and position interval.

    ``table`` has columns measure, mean_rank, position, low, high (sorted by mean rank);
    ``ranks`` are the within-block ranks (blocks x measures); ``test`` is None below 2 blocks
    or 2 measures; ``cd`` the Nemenyi critical difference at alpha 0.05 (None without a test).
    """

    axis: AxisScores
    ranks: pd.DataFrame
    table: pd.DataFrame
    test: Friedman | None
    cd: float | None


def rank_axis(axis: AxisScores, *, samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED
              ) -> AxisRanking:
    """Within-block ranks, mean ranks, bootstrap position intervals, Friedman and Nemenyi."""
    scores = axis.scores
    columns = ["measure", "mean_rank", "position", "low", "high"]
    if scores.empty or scores.shape[1] == 0:
        return AxisRanking(axis, scores, pd.DataFrame(columns=columns), None, None)
    ranks = pd.DataFrame(block_ranks(scores.to_numpy(), higher_is_better=axis.higher_is_better),
                         index=scores.index, columns=scores.columns)
    mean = ranks.mean(axis=0).to_numpy()
    low, high = bootstrap_rank_interval(ranks.to_numpy(), axis.groups, samples=samples, seed=seed)
    table = pd.DataFrame({"measure": scores.columns, "mean_rank": mean, "position": positions(mean),
                          "low": low, "high": high})
    table = table.sort_values(["mean_rank", "measure"], kind="stable").reset_index(drop=True)
    test = cd = None
    if ranks.shape[0] >= 2 and ranks.shape[1] >= 2:
        test = friedman(ranks.to_numpy())
        cd = critical_difference(ranks.shape[1], ranks.shape[0])
    return AxisRanking(axis, ranks, table, test, cd)


def significant_pairs(ranking: AxisRanking) -> list[tuple[str, str]]:
    """(better, worse) pairs whose mean ranks differ by at least the critical difference, when
    the Friedman test rejects at 0.05 (Demsar's protocol: no post-hoc test otherwise)."""
    if ranking.test is None or ranking.cd is None or not ranking.test.p < 0.05:
        return []
    rows = list(ranking.table[["measure", "mean_rank"]].itertuples(index=False))
    return [(a.measure, b.measure) for i, a in enumerate(rows) for b in rows[i + 1:]
            if b.mean_rank - a.mean_rank >= ranking.cd]
