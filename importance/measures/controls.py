"""Controls: another measure's scores shuffled within each layer (``shuffled_*``).

Shuffling keeps each layer's distribution of scores (and so how many weights a layer-wise or
global threshold takes from each layer) but destroys which weight inside the layer gets which
score. If a measure beats its shuffled control, its within-layer ranking carries information;
if not, only its per-layer budget does. Frankle et al. 2021 use this control for pruning at
initialisation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from importance.checks import check_seed
from importance.layers import layer_groups
from importance.measures.compute import compute_importance
from importance.measures.registry import get_measure, register_measure


@register_measure("shuffled_fisher", base="fisher")
@register_measure("shuffled_magnitude", base="magnitude")
def shuffled(model: Any, data: Any = None, *, base: str, seed: int = 0, **base_options: Any) -> list[np.ndarray]:
    """Scores of measure ``base``, randomly permuted within each layer (seeded).

    All trainable weights of one Keras layer (e.g. a kernel and its bias; the innermost layer
    holding them, see :func:`importance.layers.layer_groups`) are shuffled together, so the
    layer keeps exactly its multiset of scores. Reference: Frankle et al. 2021, "Pruning
    Neural Networks at Initialization: Why Are We Missing the Mark?" (ICLR), layer-wise shuffling.

    Args:
        model: A built Keras model.
        data: Passed to the base measure.
        base: Registry name of the measure whose scores are shuffled.
        seed: Seed of the permutations (layer ``j`` uses ``(seed, j)``); also passed to the base
            measure when it takes a ``seed``.
        **base_options: Further options for the base measure.

    Returns:
        One float64 array per trainable weight.

    Raises:
        KeyError: Unknown base measure.
        ValueError: A bad seed, or a base that is itself a shuffled control.
    """
    seed = check_seed(seed)
    spec = get_measure(base)
    if spec.fn is shuffled:
        raise ValueError(f"base must not be a shuffled control itself. Received: {base!r}")
    if spec.takes_seed and "seed" not in base_options:
        base_options["seed"] = seed
    scores = compute_importance(base, model, data, **base_options)
    out = [None] * len(scores)
    for j, (_, members) in enumerate(layer_groups(model)):
        flat = np.concatenate([scores[i].ravel() for i in members])
        flat = np.random.default_rng([seed, j]).permutation(flat)
        offset = 0
        for i in members:
            size = scores[i].size
            out[i] = flat[offset : offset + size].reshape(scores[i].shape)
            offset += size
    return out

