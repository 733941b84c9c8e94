"""Pruning criteria from the Taylor expansion of the loss: ``snip``, ``grasp``, ``obd``, ``hessian_diag``.

All four score the removal of a weight (setting it to 0) from the loss L = mean over the measure
data of the cross-entropy -log p(y|x) with the true labels (``obd``: the Fisher, see there):

* ``snip`` (first order): |w * dL/dw|, Lee et al. 2019;
* ``grasp`` (gradient flow): w * (H g), Wang et al. 2020;
* ``obd`` (second order, Fisher as the Hessian): 1/2 F w^2, LeCun et al. 1990;
* ``hessian_diag`` (second order, true Hessian diagonal by Hutchinson): 1/2 diag(H) w^2.

Higher is more important for all of them (the library's convention). Every trainable weight is
covered: the formulas need only the loss's derivatives, which exist for any weight the loss
depends on (a weight it does not reach scores 0).

Gradients and Hessian-vector products (double backpropagation, ``tf.GradientTape`` twice) are
summed over batches by the library's shared batch loop, :func:`importance.measures.batched.sum_over`:
one step compiled per model and configuration, the per-call vectors (grasp's gradient, Hutchinson's
probes) passed to it as arguments. Logits or probabilities is decided by
:func:`importance.data.resolve_from_logits`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from importance.checks import check_positive_int, check_seed
from importance.data import (
    DEFAULT_BATCH_SIZE,
    log_probabilities_from_outputs,
    resolve_from_logits,
)
from importance.measures.batched import mean_over, sum_over
from importance.measures.compute import compute_importance
from importance.measures.registry import register_measure

ZERO = tf.UnconnectedGradients.ZERO


@register_measure("snip")
def snip(
    model: Any,
    data: Any,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_examples: int | None = None,
) -> list[np.ndarray]:
    """SNIP connection sensitivity: |w * dL/dw| / sum over all weights of the same.

    s_j = |g_j| / sum_k |g_k| with g_j = dL(c * w)/dc_j at c = 1 = w_j * dL/dw_j, L the mean
    cross-entropy over the measure data (true labels), the gradient that of the whole data's
    mean (not per example). The normalisation divides every score by one positive number, so it
    does not change the ranking; it is kept as in the paper (skipped when every g_j is 0).
    Reference: Lee et al. 2019, "SNIP: Single-shot Network Pruning based on Connection
    Sensitivity" (ICLR). At weight level the first-order Taylor criterion of Molchanov et al.
    2017/2019 ("Importance Estimation for Neural Network Pruning", CVPR 2019), (w * dL/dw)^2,
    is the square of the unnormalised score, so it ranks the weights identically.

    Args:
        model: A built Keras classifier (logits or softmax outputs).
        data: ``(x, y)`` with integer or one-hot labels, or a batched ``tf.data.Dataset``.
        batch_size: Examples per batch when ``data`` is arrays.
        max_examples: Use only the first ``max_examples`` examples; all when None.

    Returns:
        One float64 array per trainable weight, >= 0.
    """
    weights = model.trainable_weights
    mean_grads = _mean_gradient(model, data, batch_size, max_examples)
    sensitivity = [
        np.abs(np.asarray(w.numpy(), np.float64) * g)
        for w, g in zip(weights, mean_grads, strict=True)
    ]
    total = sum(float(s.sum()) for s in sensitivity)
    return [s / total for s in sensitivity] if total > 0 else sensitivity


@register_measure("grasp")
def grasp(
    model: Any,
    data: Any,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_examples: int | None = None,
) -> list[np.ndarray]:
    """GraSP, oriented so that higher is more important: w * (H g).

    g = dL/dw and H the Hessian of L (mean cross-entropy over the measure data, true labels);
    H g is one Hessian-vector product (the gradient of g . stop_gradient(g)), summed over
    batches after g is known. GraSP's own score is S = -w * (H g) and GraSP *removes the
    weights with the highest S* (those whose removal least reduces, or most increases, the
    gradient norm); the weights GraSP keeps are those with the lowest S. This measure returns
    -S = w * (H g) so that, as for every measure here, the lowest scores are removed first.
    The paper's global normalisation by |sum S| does not change the ranking and is left out, as
    is the temperature (logits / 200) of the authors' code, which is not part of the paper's
    definition. Reference: Wang et al. 2020, "Picking Winning Tickets Before Training by
    Preserving Gradient Flow" (ICLR).

    Args:
        model: A built Keras classifier (logits or softmax outputs).
        data: ``(x, y)`` with integer or one-hot labels, or a batched ``tf.data.Dataset``.
        batch_size: Examples per batch when ``data`` is arrays.
        max_examples: Use only the first ``max_examples`` examples; all when None.

    Returns:
        One float64 array per trainable weight (signed).
    """
    weights = model.trainable_weights
    gradient = [
        tf.constant(g, dtype=w.dtype)
        for g, w in zip(_mean_gradient(model, data, batch_size, max_examples), weights, strict=True)
    ]
    from_logits = resolve_from_logits(model, data)

    def batch_sums(model: Any, x: tf.Tensor, y: tf.Tensor, g: list[tf.Tensor]) -> list[tf.Tensor]:
        return hessian_vector_product(model, x, y, g, from_logits=from_logits)

    mean_hg = mean_over(
        model, data, batch_sums, key=("grasp", from_logits), extra=(gradient,),
        batch_size=batch_size, max_examples=max_examples,
    )
    return [np.asarray(w.numpy(), np.float64) * hg for w, hg in zip(weights, mean_hg, strict=True)]


@register_measure("obd")
def obd(
    model: Any,
    data: Any,
    *,
    labels: str = "exact",
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    method: str = "auto",
    max_examples: int | None = None,
) -> list[np.ndarray]:
    """Optimal Brain Damage with the Fisher as the Hessian: 1/2 F w^2.

    The saliency of removing weight w in OBD's diagonal, quadratic approximation of the loss at
    a minimum is s = 1/2 h w^2 with h the Hessian's diagonal entry; here h is the exact Fisher
    diagonal of the ``fisher`` measure (the expected Hessian of the cross-entropy under the
    model's own labels, which is also positive), computed by that measure and multiplied by
    1/2 w^2. References: LeCun, Denker & Solla 1990, "Optimal Brain Damage" (NeurIPS); Theis et
    al. 2018, "Faster gaze prediction with dense networks and Fisher pruning" (Fisher pruning).

    Args:
        model: A built Keras classifier (logits or softmax outputs).
        data: ``(x, y)`` with integer or one-hot labels, or a batched ``tf.data.Dataset``.
        labels: The Fisher's labels (``exact`` by default; see :func:`importance.measures.fisher.fisher`).
        seed: Seed of sampled labels (``labels="sampled"`` only).
        batch_size: Examples per batch when ``data`` is arrays.
        method: Per-example gradient method of the Fisher.
        max_examples: Use only the first ``max_examples`` examples; all when None.

    Returns:
        One float64 array per trainable weight, >= 0.
    """
    fisher = compute_importance(
        "fisher",
        model,
        data,
        labels=labels,
        seed=seed,
        batch_size=batch_size,
        method=method,
        max_examples=max_examples,
    )
    return [
        0.5 * f * np.square(np.asarray(w.numpy(), np.float64))
        for f, w in zip(fisher, model.trainable_weights, strict=True)
    ]


@register_measure("hessian_diag")
def hessian_diag(
    model: Any,
    data: Any,
    *,
    samples: int = 8,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_examples: int | None = None,
) -> list[np.ndarray]:
    """OBD with the true Hessian: 1/2 diag(H) w^2, the diagonal by Hutchinson's estimator.

    diag(H) ~ 1/S sum_s z_s * (H z_s) with S = ``samples`` Rademacher probes z_s (entries +-1,
    seeded), H the Hessian of L (mean cross-entropy over the measure data, true labels); each
    H z_s is a Hessian-vector product summed over batches. The estimate is unbiased; its
    variance falls as 1/S. Away from a minimum, or with ReLU kinks, diag(H) can be negative:
    such a weight's removal is estimated to lower the loss, so it scores below every positive
    one (scores are signed). References: Yao et al. 2021, "PyHessian: Neural Networks Through
    the Lens of the Hessian" (IEEE BigData; Hutchinson diagonal); Hutchinson 1990; LeCun et al.
    1990, "Optimal Brain Damage" (the saliency 1/2 h w^2).

    Args:
        model: A built Keras classifier (logits or softmax outputs).
        data: ``(x, y)`` with integer or one-hot labels, or a batched ``tf.data.Dataset``.
        samples: Number of Hutchinson probes S.
        seed: Seed of the probes: probe s of weight i draws from ``numpy`` generator (seed, s, i).
        batch_size: Examples per batch when ``data`` is arrays.
        max_examples: Use only the first ``max_examples`` examples; all when None.

    Returns:
        One float64 array per trainable weight (signed).
    """
    samples = check_positive_int("samples", samples)
    weights = model.trainable_weights
    diagonal = hutchinson_diagonal(
        model,
        data,
        samples=samples,
        seed=check_seed(seed),
        batch_size=batch_size,
        max_examples=max_examples,
    )
    return [
        0.5 * d * np.square(np.asarray(w.numpy(), np.float64))
        for d, w in zip(diagonal, weights, strict=True)
    ]


def hutchinson_diagonal(
    model: Any, data: Any, *, samples: int, seed: int, batch_size: int, max_examples: int | None
) -> list[np.ndarray]:
    """1/S sum_s z_s * (H z_s): Hutchinson's estimate of the loss Hessian's diagonal."""
    weights = model.trainable_weights
    probes = [  # one stacked tensor per weight, shape (samples, *weight.shape)
        tf.constant(
            np.stack(
                [
                    np.random.default_rng([seed, s, i]).choice([-1.0, 1.0], size=tuple(w.shape))
                    for s in range(samples)
                ]
            ),
            w.dtype,
        )
        for i, w in enumerate(weights)
    ]
    from_logits = resolve_from_logits(model, data)

    def batch_sums(model: Any, x: tf.Tensor, y: tf.Tensor, z: list[tf.Tensor]) -> list[tf.Tensor]:
        def probe_product(zs: list[tf.Tensor]) -> list[tf.Tensor]:
            hz = hessian_vector_product(model, x, y, zs, from_logits=from_logits)
            return [zi * h for zi, h in zip(zs, hz, strict=True)]

        # One Hessian-vector product traced once, run for every probe (a graph loop).
        dtypes = [w.dtype for w in model.trainable_weights]
        products = tf.map_fn(probe_product, z, fn_output_signature=dtypes)
        return [tf.reduce_sum(p, axis=0) for p in products]

    sums, count = sum_over(
        model, data, batch_sums, key=("hutchinson", from_logits), extra=(probes,),
        batch_size=batch_size, max_examples=max_examples,
    )
    return [s / (count * samples) for s in sums]


def loss_sum(model: Any, x: tf.Tensor, y: tf.Tensor, *, from_logits: bool) -> tf.Tensor:
    """Sum over the batch of the cross-entropy -log p(y|x) (true labels)."""
    logp = log_probabilities_from_outputs(model(x, training=False), from_logits=from_logits)
    return -tf.reduce_sum(tf.gather(logp, y, axis=1, batch_dims=1))


def hessian_vector_product(
    model: Any, x: tf.Tensor, y: tf.Tensor, vector: list[tf.Tensor], *, from_logits: bool
) -> list[tf.Tensor]:
    """H_b v for the batch's summed cross-entropy: the gradient of (dL_b/dw . v), v held fixed."""
    weights = model.trainable_weights
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            loss = loss_sum(model, x, y, from_logits=from_logits)
        grads = inner.gradient(loss, weights, unconnected_gradients=ZERO)
        dot = tf.add_n(
            [tf.reduce_sum(g * tf.stop_gradient(v)) for g, v in zip(grads, vector, strict=True)]
        )
    return outer.gradient(dot, weights, unconnected_gradients=ZERO)


def _mean_gradient(
    model: Any, data: Any, batch_size: int, max_examples: int | None
) -> list[np.ndarray]:
    """dL/dw with L the mean cross-entropy over the data."""
    from_logits = resolve_from_logits(model, data)

    def batch_sums(model: Any, x: tf.Tensor, y: tf.Tensor) -> list[tf.Tensor]:
        with tf.GradientTape() as tape:
            loss = loss_sum(model, x, y, from_logits=from_logits)
        return tape.gradient(loss, model.trainable_weights, unconnected_gradients=ZERO)

    return mean_over(
        model, data, batch_sums, key=("loss_gradient", from_logits),
        batch_size=batch_size, max_examples=max_examples,
    )
