"""Gradient saliency: vanilla gradient, SmoothGrad, gradient x input, integrated gradients.

All differentiate the target class score ``S_c`` with respect to the input pixels and reduce
the channel axis as stated per method. ``S_c`` is the centred class score of
:func:`importance.interpret.outputs.class_scores`: the target's logit minus the mean logit, the
logits of a probability model being ``log p``. It is a pre-softmax score as the papers use,
and the same for a softmax head and the same network with a logits head, so their maps are
equal. Each method checks its model, images, target and options
(:func:`importance.validation.check_explained`) before any work; ``from_logits`` (default:
decided from the model's outputs) is an option of each. References are in each function.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from importance.checks import check_number, check_positive_int, check_seed
from importance.interpret.outputs import input_gradients
from importance.interpret.registry import register_saliency
from importance.validation import check_explained


@register_saliency
def gradient(
    model: keras.Model, images: Any, *, target: Any, from_logits: bool | None = None
) -> np.ndarray:
    """Vanilla gradient (Simonyan et al. 2014, sec. 3.1): ``max_channels |dS_c/dx|``, (N, H, W).

    Args:
        model: A Keras classifier.
        images: (N, H, W, C) images.
        target: One class id, or one per image.
        from_logits: Whether the model outputs logits; decided on the images when None.
    """
    images, ids, logits = check_explained(model, images, target, from_logits=from_logits)
    return np.abs(input_gradients(model, images, ids, from_logits=logits)).max(axis=-1)


@register_saliency
def smoothgrad(
    model: keras.Model,
    images: Any,
    *,
    target: Any,
    samples: int = 25,
    sigma: float = 0.15,
    seed: int = 0,
    from_logits: bool | None = None,
) -> np.ndarray:
    """SmoothGrad (Smilkov et al. 2017): gradients averaged over noisy copies, (N, H, W).

    ``mean_s dS_c/dx (x + eps_s)``, ``eps_s ~ N(0, (sigma * (max x - min x))^2)`` per image (the
    paper's noise level as a fraction of the value range; 10-20 % recommended), then the
    absolute value, max over channels (as the vanilla gradient map).

    Args:
        model: A Keras classifier.
        images: (N, H, W, C) images.
        target: One class id, or one per image.
        from_logits: Whether the model outputs logits; decided on the images when None.
        samples: Noisy copies per image.
        sigma: Noise level, a fraction of each image's value range (> 0).
        seed: Seed of the noise.
    """
    samples = check_positive_int("samples", samples)
    check_number("sigma", sigma, minimum=0, strict=True)
    rng = np.random.default_rng(check_seed(seed))
    images, ids, logits = check_explained(model, images, target, from_logits=from_logits)
    x = images.numpy().astype(np.float64)
    spread = sigma * (x.max(axis=(1, 2, 3), keepdims=True) - x.min(axis=(1, 2, 3), keepdims=True))
    total = np.zeros_like(x)
    for _ in range(samples):
        noisy = x + rng.standard_normal(x.shape) * spread
        total += input_gradients(model, tf.constant(noisy, images.dtype), ids, from_logits=logits)
    return np.abs(total / samples).max(axis=-1)


@register_saliency
def gradient_x_input(
    model: keras.Model, images: Any, *, target: Any, from_logits: bool | None = None
) -> np.ndarray:
    """Gradient * input (Shrikumar et al. 2016; Ancona et al. 2018): ``sum_channels x * dS_c/dx``.

    Signed, (N, H, W): positive where a pixel's value pushes the class score up.

    Args:
        model: A Keras classifier.
        images: (N, H, W, C) images.
        target: One class id, or one per image.
        from_logits: Whether the model outputs logits; decided on the images when None.
    """
    images, ids, logits = check_explained(model, images, target, from_logits=from_logits)
    grads = input_gradients(model, images, ids, from_logits=logits)
    return (images.numpy().astype(np.float64) * grads).sum(axis=-1)


@register_saliency
def integrated_gradients(
    model: keras.Model,
    images: Any,
    *,
    target: Any,
    steps: int = 32,
    baseline: float = 0.0,
    from_logits: bool | None = None,
) -> np.ndarray:
    """Integrated gradients (Sundararajan et al. 2017, eq. 3), summed over channels, (N, H, W).

    ``(x - x') * (1/m) sum_{k=1..m} dS_c/dx (x' + k/m (x - x'))`` with a constant baseline image
    ``x'`` (default black) and ``m = steps`` (the right Riemann sum of the paper's sec. 4). Signed;
    the maps of an image sum to about ``S_c(x) - S_c(x')`` (completeness).

    Args:
        model: A Keras classifier.
        images: (N, H, W, C) images.
        target: One class id, or one per image.
        from_logits: Whether the model outputs logits; decided on the images when None.
        steps: Riemann steps ``m``.
        baseline: Value of every pixel of the baseline image.
    """
    steps = check_positive_int("steps", steps)
    baseline = check_number("baseline", baseline)
    images, ids, logits = check_explained(model, images, target, from_logits=from_logits)
    x = images.numpy().astype(np.float64)
    reference = np.full_like(x, baseline)
    alphas = np.arange(1, steps + 1) / steps
    path = reference[None] + alphas[:, None, None, None, None] * (x - reference)[None]
    flat = tf.constant(path.reshape(-1, *x.shape[1:]), images.dtype)
    grads = input_gradients(model, flat, np.tile(ids, steps), from_logits=logits)
    grads = grads.reshape(path.shape)
    return ((x - reference) * grads.mean(axis=0)).sum(axis=-1)
