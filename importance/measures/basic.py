"""Baseline measures that need no data: ``random``, ``magnitude`` and ``uniform``.

They are the floor and the classic heuristic a real measure has to beat on the leaderboard:
random scores (seeded), the weights' absolute values (magnitude pruning, Han et al. 2015) and
all-ones (every weight equally important, i.e. a plain L2 penalty in consolidation).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from importance.checks import check_seed
from importance.measures.registry import register_measure


@register_measure("random")
def random(model: Any, data: Any = None, *, seed: int = 0) -> list[np.ndarray]:
    """Uniform random scores in [0, 1), seeded: the chance baseline.

    Weight ``i`` draws from its own generator seeded with ``(seed, i)``, so the same seed gives
    the same scores. Reference: the random-pruning baseline of Frankle et al. 2021, "Pruning
    Neural Networks at Initialization: Why Are We Missing the Mark?" (ICLR).

    Args:
        model: A built Keras model.
        data: Ignored.
        seed: Seed of the random scores.

    Returns:
        One float64 array per trainable weight.
    """
    seed = check_seed(seed)
    return [
        np.random.default_rng([seed, i]).random(tuple(w.shape))
        for i, w in enumerate(model.trainable_weights)
    ]


@register_measure("magnitude")
def magnitude(model: Any, data: Any = None) -> list[np.ndarray]:
    """Absolute value of each weight, |w|.

    Reference: Han et al. 2015, "Learning both Weights and Connections for Efficient Neural
    Networks" (NeurIPS).

    Args:
        model: A built Keras model.
        data: Ignored.

    Returns:
        One float64 array per trainable weight.
    """
    return [np.abs(np.asarray(w.numpy(), dtype=np.float64)) for w in model.trainable_weights]


@register_measure("uniform")
def uniform(model: Any, data: Any = None) -> list[np.ndarray]:
    """All ones: every weight equally important (as a penalty, plain L2 to the old weights).

    The control of Kirkpatrick et al. 2017 ("Overcoming catastrophic forgetting in neural
    networks", PNAS), who compare EWC with an unweighted L2 penalty.

    Args:
        model: A built Keras model.
        data: Ignored.

    Returns:
        One float64 array of ones per trainable weight.
    """
    return [np.ones(tuple(w.shape), dtype=np.float64) for w in model.trainable_weights]
