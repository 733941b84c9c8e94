"""Occlusion sensitivity (Zeiler & Fergus 2014, sec. 4.2), correct for any stride and image shape.

A window slides over the image; at each position the covered pixels (all channels) are replaced
by a baseline and the drop of the target-class probability ``p_c(x) - p_c(x_occluded)`` is
recorded (the class probabilities as :func:`importance.interpret.outputs.probabilities` reads
them, for a logits or a probability model). Conventions:

* Window positions along an axis of size ``S``: ``0, s, 2s, ...`` while the window fits, plus a
  last window flush with the far edge (``S - w``) when the strides do not reach it. Strides are
  at most the window, so every pixel is covered at least once.
* A pixel's value is the **mean** drop over all windows covering it.

The original project placed patches at the wrong offsets for strides above 1; the test suite
checks this implementation against a slow pixel-by-pixel loop.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from importance.checks import check_positive_int
from importance.interpret.baselines import baseline_images, check_baseline
from importance.interpret.outputs import target_probabilities
from importance.interpret.registry import register_saliency
from importance.validation import check_explained


def _pair(name: str, value: Any) -> tuple[int, int]:
    pair = (value, value) if np.ndim(value) == 0 else tuple(value)
    if len(pair) != 2 or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in pair
    ):
        raise ValueError(
            f"{name} must be a positive integer or a pair of them. Received: {value!r}"
        )
    return int(pair[0]), int(pair[1])


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Start offsets of the windows along one axis (see the module's convention)."""
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] + window < size:
        starts.append(size - window)
    return starts


@register_saliency
def occlusion(
    model: keras.Model,
    images: Any,
    *,
    target: Any,
    window: int | tuple[int, int] = 7,
    strides: int | tuple[int, int] = 3,
    baseline: str = "zero",
    batch_size: int = 1024,
    from_logits: bool | None = None,
) -> np.ndarray:
    """Occlusion sensitivity: mean probability drop of the windows covering each pixel, (N, H, W).

    Args:
        model: A Keras classifier (logits or probabilities out).
        images: (N, H, W, C) images (any H, W).
        target: One class id, or one per image.
        window: Window (height, width), or one int for a square.
        strides: Step (vertical, horizontal), or one int; from 1 up to the window.
        baseline: What replaces occluded pixels: ``"zero"``, ``"mean"`` or ``"blur"``.
        batch_size: Occluded images per forward pass.
        from_logits: Whether the model outputs logits; decided on the images when None.

    Raises:
        ValueError: A window larger than the image, a stride below 1 or above the window, an
            unknown baseline.
    """
    wh, ww = _pair("window", window)
    sh, sw = _pair("strides", strides)
    check_baseline(baseline)
    batch_size = check_positive_int("batch_size", batch_size)
    images, ids, from_logits = check_explained(model, images, target, from_logits=from_logits)
    n, height, width = (int(d) for d in images.shape[:3])
    if wh > height or ww > width:
        raise ValueError(
            f"window {(wh, ww)} is larger than the images ({height}, {width}). "
            f"Expected at most the image size."
        )
    if sh > wh or sw > ww:
        raise ValueError(
            f"strides {(sh, sw)} larger than the window {(wh, ww)} would leave pixels that no "
            f"window covers. Expected strides <= window."
        )
    x = images.numpy()
    base = baseline_images(x, baseline)
    probabilities = target_probabilities(
        model, x, ids, batch_size=batch_size, from_logits=from_logits
    )
    positions = [
        (r, c) for r in window_starts(height, wh, sh) for c in window_starts(width, ww, sw)
    ]
    total = np.zeros((n, height, width))
    count = np.zeros((height, width))
    group = max(1, batch_size // n)
    for first in range(0, len(positions), group):
        chunk = positions[first : first + group]
        occluded = np.repeat(x[None], len(chunk), axis=0)  # (P, N, H, W, C)
        for i, (r, c) in enumerate(chunk):
            occluded[i, :, r : r + wh, c : c + ww] = base[:, r : r + wh, c : c + ww]
        dropped = target_probabilities(
            model,
            occluded.reshape(-1, *x.shape[1:]),
            np.tile(ids, len(chunk)),
            batch_size=batch_size,
            from_logits=from_logits,
        ).reshape(len(chunk), n)
        for i, (r, c) in enumerate(chunk):
            total[:, r : r + wh, c : c + ww] += (probabilities - dropped[i])[:, None, None]
            count[r : r + wh, c : c + ww] += 1
    return total / count
