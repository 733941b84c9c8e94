"""Control maps that look at no model: ``random_map`` (seeded), ``centre_prior`` and ``sobel_map``.

A method that does not beat ``random_map`` on the faithfulness curves explains nothing; one that
does not beat ``centre_prior`` may only have learnt that objects sit in the middle.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from importance.checks import check_number, check_seed
from importance.interpret.registry import register_saliency
from importance.validation import check_explained


@register_saliency
def random_map(model: keras.Model, images: Any, *, target: Any, seed: int = 0) -> np.ndarray:
    """Uniform random values in [0, 1), seeded: the chance baseline of the faithfulness curves.

    Args:
        model: Only used to check ``images`` and ``target``.
        images: (N, H, W, C) images.
        target: One class id, or one per image (checked, not used).
        seed: Seed of the values.
    """
    seed = check_seed(seed)
    images, _, _ = check_explained(model, images, target)
    return np.random.default_rng(check_seed(seed)).random(tuple(images.shape[:3]))


@register_saliency
def centre_prior(
    model: keras.Model, images: Any, *, target: Any, width: float = 0.25
) -> np.ndarray:
    """A Gaussian bump at the image centre, the same for every image: the centre-bias control.

    ``exp(-(dy^2 / (2 (width H)^2) + dx^2 / (2 (width W)^2)))`` with ``dy, dx`` the distances from
    the centre in pixels.

    Args:
        model: Only used to check ``images`` and ``target``.
        images: (N, H, W, C) images.
        target: One class id, or one per image (checked, not used).
        width: Standard deviation as a fraction of the image's height and width (> 0).
    """
    width = check_number("width", width, minimum=0, strict=True)
    images, _, _ = check_explained(model, images, target)
    n, height, width_px = (int(d) for d in images.shape[:3])
    dy = (np.arange(height) - (height - 1) / 2) / (width * height)
    dx = (np.arange(width_px) - (width_px - 1) / 2) / (width * width_px)
    bump = np.exp(-(dy[:, None] ** 2 + dx[None, :] ** 2) / 2)
    return np.broadcast_to(bump, (n, height, width_px)).copy()


@register_saliency
def sobel_map(model: keras.Model, images: Any, *, target: Any) -> np.ndarray:
    """The Sobel edge detector's gradient magnitude, a control that looks at the image only.

    Adebayo et al. 2018 ("Sanity Checks for Saliency Maps", fig. 1) show that an edge detector
    draws maps that look much like many saliency methods' while knowing nothing of the model;
    Quantus uses it as its edge-detection control. Per channel, the 3 x 3 Sobel derivatives
    (Sobel & Feldman 1968) ``gy = [[1, 2, 1], [0, 0, 0], [-1, -2, -1]] * x`` and
    ``gx = gy^T * x`` (correlation, border pixels repeated) give ``sqrt(gx^2 + gy^2)``; the map
    is its maximum over the channels. It ignores the model and the target, so it fails the
    model-randomisation check by construction.

    Args:
        model: Only used to check ``images`` and ``target``.
        images: (N, H, W, C) images.
        target: One class id, or one per image (checked, not used).
    """
    from scipy import ndimage

    images, _, _ = check_explained(model, images, target)
    x = images.numpy().astype(np.float64)
    # ndimage.sobel would also smooth across the image and channel axes: correlate in H, W only
    kernel = np.array([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]])
    gy = ndimage.correlate(x, kernel[None, :, :, None], mode="nearest")
    gx = ndimage.correlate(x, kernel.T[None, :, :, None], mode="nearest")
    return np.hypot(gx, gy).max(axis=-1)
