"""Gradient saliency: vanilla gradient, SmoothGrad, gradient x input, integrated gradients.

All differentiate the target class score ``S_c`` (the model's output column ``c``; pre-softmax
for the project's logits models) with respect to the input pixels, and reduce the channel axis
as stated per method. References are in each function.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from importance.checks import check_positive_int, check_seed
from importance.interpret.inputs import check_images, class_ids
from importance.interpret.outputs import input_gradients
from importance.interpret.registry import register_saliency


def _prepare(model: Any, images: Any, target: Any) -> tuple[tf.Tensor, np.ndarray]:
    images = check_images(images, model)
    return images, class_ids(model, images, target)


@register_saliency
def gradient(model: keras.Model, images: Any, *, target: Any) -> np.ndarray:
    """Vanilla gradient (Simonyan et al. 2014, sec. 3.1): ``max_channels |dS_c/dx|``, (N, H, W).

    Args:
        model: A Keras classifier.
        images: (N, H, W, C) images.
        target: One class id, or one per image.
    """
    images, ids = _prepare(model, images, target)
    return np.abs(input_gradients(model, images, ids)).max(axis=-1)


@register_saliency
def smoothgrad(
    model: keras.Model,
    images: Any,
    *,
    target: Any,
    samples: int = 25,
    sigma: float = 0.15,
    seed: int = 0,
) -> np.ndarray:
    """SmoothGrad (Smilkov et al. 2017): gradients averaged over noisy copies, (N, H, W).

    ``mean_s dS_c/dx (x + eps_s)``, ``eps_s ~ N(0, (sigma * (max x - min x))^2)`` per image (the
    paper's noise level as a fraction of the value range; 10-20 % recommended), then the
    absolute value, max over channels (as the vanilla gradient map).

    Args:
        model: A Keras classifier.
        images: (N, H, W, C) images.
        target: One class id, or one per image.
        samples: Noisy copies per image.
        sigma: Noise level, a fraction of each image's value range (> 0).
        seed: Seed of the noise.
    """
    samples = check_positive_int("samples", samples)
    if not (isinstance(sigma, (int, float)) and sigma > 0):
        raise ValueError(f"sigma must be a positive number. Received: {sigma!r}")
    rng = np.random.default_rng(check_seed(seed))
    images, ids = _prepare(model, images, target)
    x = images.numpy().astype(np.float64)
    spread = sigma * (x.max(axis=(1, 2, 3), keepdims=True) - x.min(axis=(1, 2, 3), keepdims=True))
    total = np.zeros_like(x)
    for _ in range(samples):
        noisy = x + rng.standard_normal(x.shape) * spread
        total += input_gradients(model, tf.constant(noisy, images.dtype), ids)
    return np.abs(total / samples).max(axis=-1)


@register_saliency
def gradient_x_input(model: keras.Model, images: Any, *, target: Any) -> np.ndarray:
    """Gradient * input (Shrikumar et al. 2016; Ancona et al. 2018): ``sum_channels x * dS_c/dx``.

    Signed, (N, H, W): positive where a pixel's value pushes the class score up.

    Args:
        model: A Keras classifier.
        images: (N, H, W, C) images.
        target: One class id, or one per image.
    """
    images, ids = _prepare(model, images, target)
    return (images.numpy().astype(np.float64) * input_gradients(model, images, ids)).sum(axis=-1)


@register_saliency
def integrated_gradients(
    model: keras.Model, images: Any, *, target: Any, steps: int = 32, baseline: float = 0.0
) -> np.ndarray:
    """Integrated gradients (Sundararajan et al. 2017, eq. 3), summed over channels, (N, H, W).

    ``(x - x') * (1/m) sum_{k=1..m} dS_c/dx (x' + k/m (x - x'))`` with a constant baseline image
    ``x'`` (default black) and ``m = steps`` (the right Riemann sum of the paper's sec. 4). Signed;
    the maps of an image sum to about ``S_c(x) - S_c(x')`` (completeness).

    Args:
        model: A Keras classifier.
        images: (N, H, W, C) images.
        target: One class id, or one per image.
        steps: Riemann steps ``m``.
        baseline: Value of every pixel of the baseline image.
    """
    steps = check_positive_int("steps", steps)
    images, ids = _prepare(model, images, target)
    x = images.numpy().astype(np.float64)
    reference = np.full_like(x, float(baseline))
    alphas = np.arange(1, steps + 1) / steps
    path = reference[None] + alphas[:, None, None, None, None] * (x - reference)[None]
    flat = tf.constant(path.reshape(-1, *x.shape[1:]), images.dtype)
    grads = input_gradients(model, flat, np.tile(ids, steps)).reshape(path.shape)
    return ((x - reference) * grads.mean(axis=0)).sum(axis=-1)
