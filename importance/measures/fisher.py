"""Diagonal of the Fisher information: per-example (``fisher``) and the minibatch shortcut.

The Fisher diagonal of weight theta is the mean over examples x of E_y[(d log p(y|x) / d theta)^2]
with the gradient taken *per example*. Which y is a choice the literature often leaves implicit
(van de Ven 2025), so it is an explicit option here:

* ``exact``: the expectation over all classes under the model's own p(y|x) (the true Fisher);
* ``sampled``: one y drawn from the model's p(y|x) per example (a Monte Carlo estimate of it);
* ``empirical``: the true label (the "empirical Fisher", Kunstner et al. 2019);
* ``argmax``: the model's most probable class for each example (the convention of FACIL's EWC,
  Masana et al. 2022, "Class-incremental learning: survey and performance evaluation on image
  classification", TPAMI, and of Hsu et al. 2018, "Re-evaluating continual learning scenarios",
  whose EWC code takes ``pred.max(1)``): a deterministic, single-label stand-in for the
  expectation, registered as ``fisher_argmax``.

``fisher_batch`` is the shortcut of many EWC implementations (the EWC blog posts, Avalanche): the
square of a minibatch's *mean* gradient, averaged over minibatches. It is a different quantity
(cross-example terms do not vanish, and it shrinks with the batch size); it is offered as a named
variant so the leaderboard shows what it changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from importance.checks import check_choice, check_seed
from importance.data import (
    DEFAULT_BATCH_SIZE,
    log_probabilities_from_outputs,
    resolve_from_logits,
)
from importance.measures.batched import compiled, mean_over, seeded_batches
from importance.measures.registry import register_measure
from importance.per_example import check_method, per_example_moment, per_example_moment_sum
from importance.validation import num_classes

LABELS = ("exact", "sampled", "empirical", "argmax")


@register_measure("fisher_argmax", labels="argmax")
@register_measure("fisher_empirical", labels="empirical")
@register_measure("fisher_sampled", labels="sampled")
@register_measure("fisher")
def fisher(
    model: Any,
    data: Any,
    *,
    labels: str = "exact",
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    method: str = "auto",
    from_logits: bool | None = None,
    max_examples: int | None = None,
) -> list[np.ndarray]:
    """Diagonal Fisher information: mean over examples of squared per-example gradients.

    F_theta = 1/N sum_i E_y[(d log p(y | x_i) / d theta)^2], with y chosen by ``labels``. The
    ``exact`` expectation takes one per-example moment per class: the per-example objective
    stop_gradient(sqrt(p_c)) * log p_c has squared gradient p_c * (d log p_c / d theta)^2, and
    the classes' moments are summed.

    References: Kirkpatrick et al. 2017, "Overcoming catastrophic forgetting in neural networks"
    (PNAS); Kunstner et al. 2019, "Limitations of the empirical Fisher approximation for natural
    gradient descent" (NeurIPS); van de Ven 2025, "On the computation of the Fisher Information in
    continual learning" (ICLR blogpost track).

    Args:
        model: A built Keras classifier (logits or softmax outputs).
        data: ``(x, y)`` with integer or one-hot labels, or a batched ``tf.data.Dataset``.
        labels: ``"exact"``, ``"sampled"``, ``"empirical"`` or ``"argmax"`` (see the module
            docstring).
        seed: Seed of the sampled labels (``labels="sampled"``); batch b of the data uses the
            stateless seed ``(seed, b)``, see :func:`sample_labels`.
        batch_size: Examples per batch when ``data`` is arrays.
        method: Per-example gradient method of :func:`importance.per_example.per_example_moment`.
        from_logits: Whether the model outputs logits; decided from its outputs on
            ``data`` when None (see :func:`importance.validation.output_kind`).
        max_examples: Use only the first ``max_examples`` examples; all when None.

    Returns:
        One float64 array per trainable weight.

    Raises:
        ValueError: A bad option value (named in the message) or empty data.
    """
    check_choice("labels", labels, LABELS)
    check_method(method)
    seed = check_seed(seed)
    from_logits = resolve_from_logits(model, data, from_logits=from_logits)

    def batch_sums(model: Any, x: Any, y: Any, *seed_pair: Any) -> list[tf.Tensor]:
        return _fisher_sums(model, x, y, *seed_pair or (None,), labels, method, from_logits)

    return mean_over(  # only sampled labels use the seed: no per-batch seed tensor otherwise
        model, data, batch_sums, key=("fisher", labels, method, from_logits), per="example",
        batch_size=batch_size, max_examples=max_examples,
        seed=seed if labels == "sampled" else None, eager=method == "loop",
    )


@register_measure("fisher_batch")
def fisher_batch(
    model: Any,
    data: Any,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    from_logits: bool | None = None,
    max_examples: int | None = None,
) -> list[np.ndarray]:
    """Minibatch shortcut of the Fisher: mean over minibatches of (batch-mean gradient)^2.

    For each minibatch B the gradient of (1/|B|) sum_{i in B} log p(y_i | x_i) with the true
    labels is squared; the squares are averaged over minibatches (unweighted, as in Avalanche's
    ``EWCPlugin``). This is not the Fisher diagonal: see van de Ven 2025, "On the computation of
    the Fisher Information in continual learning", and Kirkpatrick et al. 2017 for the quantity
    it approximates. Its value depends on ``batch_size``.

    Args:
        model: A built Keras classifier (logits or softmax outputs).
        data: ``(x, y)`` with integer or one-hot labels, or a batched ``tf.data.Dataset``.
        batch_size: Examples per minibatch when ``data`` is arrays.
        from_logits: Whether the model outputs logits; decided from its outputs on
            ``data`` when None (see :func:`importance.validation.output_kind`).
        max_examples: Use only the first ``max_examples`` examples; all when None.

    Returns:
        One float64 array per trainable weight.
    """
    from_logits = resolve_from_logits(model, data, from_logits=from_logits)

    def batch_sums(model: Any, x: Any, y: Any) -> list[tf.Tensor]:
        return _batch_mean_squares(model, x, y, from_logits)

    return mean_over(
        model, data, batch_sums, key=("fisher_batch", from_logits), per="batch",
        batch_size=batch_size, max_examples=max_examples,
    )


def sample_labels(
    model: Any,
    data: Any,
    *,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    from_logits: bool | None = None,
    max_examples: int | None = None,
) -> np.ndarray:
    """The labels that ``fisher(..., labels="sampled")`` draws from the model, for checking.

    Arguments as for :func:`fisher`; the same seed and batching give the same labels.

    Returns:
        int32 array of shape ``(N,)``.
    """
    seed = check_seed(seed)
    from_logits = resolve_from_logits(model, data, from_logits=from_logits)

    def draw(model: Any, x: Any, y: Any, seed_pair: Any) -> tf.Tensor:
        logp = log_probabilities_from_outputs(model(x, training=False), from_logits=from_logits)
        return _draw(logp, _uniforms(x, seed_pair))

    step = compiled(model, draw, key=("sample_labels", from_logits))  # compiled, as inside fisher
    batches = seeded_batches(data, seed=seed, batch_size=batch_size, max_examples=max_examples)
    return np.concatenate([step(*batch).numpy() for batch in batches]).astype(np.int32)


def _uniforms(x: Any, seed_pair: Any) -> tf.Tensor:
    """One uniform draw in [0, 1) per example of ``x``, stateless with ``seed_pair``.

    They do not depend on the model, so they can be sliced per example (``targets=``) and give
    the same labels to every per-example method.
    """
    return tf.random.stateless_uniform(tf.shape(x)[:1], seed=seed_pair, dtype=tf.float32)


def _draw(logp: tf.Tensor, u: tf.Tensor) -> tf.Tensor:
    """Labels drawn from ``exp(logp)`` by inverse CDF at ``u`` (no gradient flows through them)."""
    cdf = tf.cumsum(tf.exp(tf.stop_gradient(logp)), axis=-1)
    below = tf.cast(cdf < u[:, None] * cdf[:, -1:], tf.int32)  # unnormalised p: scale u
    return tf.minimum(tf.reduce_sum(below, axis=-1), tf.shape(logp)[-1] - 1)


def _fisher_sums(
    model: Any, x: Any, y: Any, seed_pair: Any, labels: str, method: str, from_logits: bool
) -> list[tf.Tensor]:
    """Sums over the batch of squared per-example gradients of log p(y|x)."""
    if labels == "exact":
        return _exact_sums(model, x, method, from_logits)
    if labels == "sampled":
        # The label is drawn inside the objective from the outputs it already has (no extra
        # forward pass); the uniforms ride along as per-example targets.

        def sampled_log_likelihood(outputs: tf.Tensor, u: tf.Tensor) -> tf.Tensor:
            logp = log_probabilities_from_outputs(outputs, from_logits=from_logits)
            return tf.gather(logp, _draw(logp, u), axis=1, batch_dims=1)

        return per_example_moment(
            model, x, sampled_log_likelihood, moment="square", method=method,
            targets=_uniforms(x, seed_pair),
        )

    if labels == "argmax":
        # The label is the model's own prediction on the example, read from the outputs the
        # objective already has (ties go to the lowest class, as in argmax everywhere).

        def predicted_log_likelihood(outputs: tf.Tensor) -> tf.Tensor:
            logp = log_probabilities_from_outputs(outputs, from_logits=from_logits)
            predicted = tf.argmax(tf.stop_gradient(logp), axis=-1, output_type=tf.int32)
            return tf.gather(logp, predicted, axis=1, batch_dims=1)

        return per_example_moment(model, x, predicted_log_likelihood, moment="square", method=method)

    def log_likelihood(outputs: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        logp = log_probabilities_from_outputs(outputs, from_logits=from_logits)
        return tf.gather(logp, targets, axis=1, batch_dims=1)

    return per_example_moment(model, x, log_likelihood, moment="square", method=method, targets=y)


def _exact_sums(model: Any, x: Any, method: str, from_logits: bool) -> list[tf.Tensor]:
    """Sum over classes c of the moments of stop_gradient(sqrt(p_c)) * log p_c.

    The factorised engine shares one forward pass between the classes; the classes' backward
    passes run one after another (each waits for the previous class's sums), so the peak memory
    is that of one class. The other methods evaluate the classes one after another too.
    """

    def weighted(c: int) -> Callable[[tf.Tensor], tf.Tensor]:
        def objective(outputs: tf.Tensor) -> tf.Tensor:
            logp = log_probabilities_from_outputs(outputs, from_logits=from_logits)[:, c]
            return tf.stop_gradient(tf.sqrt(tf.exp(logp))) * logp

        return objective

    objectives = [weighted(c) for c in range(num_classes(model, x))]
    return per_example_moment_sum(model, x, objectives, moment="square", method=method)


def _batch_mean_squares(model: Any, x: Any, y: Any, from_logits: bool) -> list[tf.Tensor]:
    """Square of the gradient of the batch-mean log-likelihood (true labels)."""
    weights = model.trainable_weights
    with tf.GradientTape() as tape:
        logp = log_probabilities_from_outputs(model(x, training=False), from_logits=from_logits)
        mean_ll = tf.reduce_mean(tf.gather(logp, y, axis=1, batch_dims=1))
    grads = tape.gradient(mean_ll, weights, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return [tf.square(g) for g in grads]

