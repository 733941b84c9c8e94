"""Baseline images that replace pixels: ``zero``, ``mean`` (per image and channel) and ``blur``."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from importance.checks import check_number

BASELINES = ("zero", "mean", "blur")


def baseline_images(images: np.ndarray, kind: str, *, blur_sigma: float = 5.0) -> np.ndarray:
    """The baseline version of each image, same shape as ``images`` (N, H, W, C).

    Args:
        images: Images (N, H, W, C).
        kind: ``"zero"`` (all zeros), ``"mean"`` (each image's channel means) or ``"blur"``
            (Gaussian blur over H and W, as the insertion curve of Petsiuk et al. 2018 starts from).
        blur_sigma: Standard deviation of the blur in pixels.

    Raises:
        ValueError: Unknown kind or a non-positive blur_sigma.
    """
    if kind not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}. Received: {kind!r}")
    if kind == "zero":
        return np.zeros_like(images)
    if kind == "mean":
        return np.broadcast_to(images.mean(axis=(1, 2), keepdims=True), images.shape).copy()
    blur_sigma = check_number("blur_sigma", blur_sigma, minimum=0, strict=True)
    return ndimage.gaussian_filter(images, sigma=(0, blur_sigma, blur_sigma, 0), mode="nearest")


def check_baseline(kind: Any) -> str:
    """``kind`` if it names a baseline. Raises ValueError listing them otherwise."""
    if kind not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}. Received: {kind!r}")
    return kind
