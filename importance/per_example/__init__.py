"""Sums over examples of per-example gradient moments: sum_i g_i**2 or sum_i |g_i|.

``g_i`` is the gradient, w.r.t. every trainable weight, of a per-example scalar
``objective(outputs)[i]`` where ``outputs`` are the model's outputs on a batch. Fisher
(Kirkpatrick et al. 2017) and MAS (Aljundi et al. 2018) are both such moments; they differ in the
objective and the moment.

Methods:
    ``loop``: one backward pass per example. Slow; the reference the others are checked against.
    ``vmap``: ``tf.vectorized_map`` over examples of the per-example gradient.
    ``factorized``: one backward pass per batch, moments from layer inputs and output gradients
        (see :mod:`importance.per_example.engine`); layers without a closed form are
        vectorised over examples on their own (their weights only).
    ``auto``: ``factorized``, except for models whose layers without a closed form carry the
        cost (only they and small Dense layers hold weights, e.g. an RNN with a custom cell and
        a Dense head):
        there the per-layer vectorisation would re-run their forward pass, and ``vmap`` is
        cheaper (:func:`resolve_method` tells which one runs). Never a method that cannot run
        the model: not ``vmap`` on stacked recurrent layers (TensorFlow cannot vectorise them),
        and where ``vmap`` raises anyway ``auto`` takes the engine from then on.

``vmap`` refuses models with attention layers: vectorising Keras ``MultiHeadAttention`` over
examples kills the process inside TensorFlow on oneDNN CPU builds (TF 2.21), so it raises a
``ValueError`` up front; ``auto`` and ``factorized`` handle attention without vectorising it.

Where the code is (``docs/per_example.md``): this module is the public face; ``moments`` (the
kinds, the chunked sum), ``engine`` (the one-backward-pass engine), ``paths`` (which path each
layer takes), ``reference`` (``loop`` and ``vmap``) and ``layers`` (one module per layer family
and the ``RULES`` table) are the internal surface the tests use.

Autograph: :func:`per_example_moment` and :func:`per_example_moment_sum` (and the engine's own
entry points) are marked ``tf.autograph.experimental.do_not_convert``. Inside a user's
``tf.function`` they trace as written, as ``compute_importance`` traces them (``autograph=False``):
autograph does not transpile the engine and the Keras code it calls, which took about 6 s on
the first trace of a small ResNet. An objective is therefore called unconverted too: Python
``if``/``while`` on tensors in it raise; use ``tf.where``/``tf.cond``.
"""

from __future__ import annotations

import weakref
from typing import Any

import tensorflow as tf

from importance.checks import check_choice
from importance.per_example import engine, reference
from importance.per_example.moments import MOMENTS, Objective, check_moment
from importance.per_example.paths import layer_paths, whole_model_vmap_is_cheaper

__all__ = [
    "METHODS",
    "MOMENTS",
    "Objective",
    "check_method",
    "check_moment",
    "layer_paths",
    "per_example_moment",
    "per_example_moment_sum",
    "resolve_method",
]

METHODS = ("auto", "factorized", "vmap", "loop")


def check_method(method: Any) -> str:
    """``method`` if it is one of :data:`METHODS`.

    Raises:
        ValueError: Naming the bad value and the choices.
    """
    return check_choice("method", method, METHODS)


def resolve_method(model: Any, method: str = "auto") -> str:
    """The method that runs for ``method`` on ``model``: ``auto`` becomes ``factorized`` or
    ``vmap`` (see :func:`importance.per_example.paths.whole_model_vmap_is_cheaper`); others are
    kept.

    Raises:
        ValueError: Unknown method.
    """
    check_method(method)
    if method != "auto":
        return method
    if _VMAP_FAILED.get(model):
        return "factorized"
    return "vmap" if whole_model_vmap_is_cheaper(model) else "factorized"


# Models on which auto's whole-model vmap raised (it then runs the engine on them).
_VMAP_FAILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@tf.autograph.experimental.do_not_convert
def per_example_moment(
    model: Any,
    x: Any,
    objective: Objective,
    *,
    moment: str = "square",
    method: str = "auto",
    targets: Any = None,
) -> list[tf.Tensor]:
    """Sum over the examples of ``x`` of the per-example gradient moment.

    Args:
        model: A built Keras model.
        x: One batch of inputs.
        objective: Maps the model's outputs on the batch, shape ``(B, ...)``, to one scalar per
            example, shape ``(B,)``. Example ``i``'s value must depend only on example ``i``.
        moment: ``"square"`` for sum_i g_i**2, ``"abs"`` for sum_i |g_i|.
        method: One of ``auto``, ``factorized``, ``vmap``, ``loop``.
        targets: Optional per-example values aligned with ``x`` along axis 0 (e.g. labels). When
            given, the objective is called as ``objective(outputs, targets)`` with the rows of
            ``targets`` that belong to ``outputs`` (the whole batch, or one example).

    Returns:
        One float32 tensor per ``model.trainable_weights`` entry (sums, not means).

    Raises:
        ValueError: Unknown moment or method, or ``method="vmap"`` on a model with attention.
    """
    check_moment(moment)
    resolved = resolve_method(model, method)
    if resolved == "factorized":
        return engine.per_example_moment(model, x, objective, moment=moment, targets=targets)
    if resolved == "loop":
        return reference.loop(model, x, objective, moment, targets)
    if method != "auto":
        return reference.vmap(model, x, objective, moment, targets)
    try:
        return reference.vmap(model, x, objective, moment, targets)
    except (TypeError, ValueError, NotImplementedError):
        # auto never keeps a method that cannot run the model: remember it, take the engine.
        _VMAP_FAILED[model] = True
        return engine.per_example_moment(model, x, objective, moment=moment, targets=targets)


@tf.autograph.experimental.do_not_convert
def per_example_moment_sum(
    model: Any, x: Any, objectives: list[Objective], *, moment: str = "square", method: str = "auto"
) -> list[tf.Tensor]:
    """Sum over several objectives of :func:`per_example_moment` on one batch.

    The objectives run one after another (each waits for the previous one's sums), so the peak
    memory is that of one objective; the factorised engine also shares one forward pass between
    them. Used by the exact Fisher (one objective per class).

    Args:
        model: A built Keras model.
        x: One batch of inputs.
        objectives: Functions of the model's outputs, each as ``objective`` of
            :func:`per_example_moment` (without targets).
        moment: ``"square"`` or ``"abs"``.
        method: One of ``auto``, ``factorized``, ``vmap``, ``loop``.

    Returns:
        One float32 tensor per ``model.trainable_weights`` entry.

    Raises:
        ValueError: Unknown moment or method.
    """
    check_moment(moment)
    method = resolve_method(model, method)
    if method == "factorized":
        return engine.per_example_moment_sum(model, x, objectives, moment=moment)
    total: list[tf.Tensor] | None = None
    for objective in objectives:
        with tf.control_dependencies(total or []):
            chained = tf.nest.map_structure(tf.identity, x)
            sums = per_example_moment(model, chained, objective, moment=moment, method=method)
        total = sums if total is None else [t + s for t, s in zip(total, sums, strict=True)]
    return total
