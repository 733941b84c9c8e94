"""Aggregation of importance scores to weight, unit or layer level.

A measure scores every scalar weight. :func:`aggregate` pools those scores over groups of weights
and broadcasts the pooled value back to every member, so the result still has one array per
trainable weight with that weight's shape:

* ``"weight"``: every scalar is its own group (the scores are returned unchanged, as float64).
* ``"unit"``: one output unit of a layer, i.e. the weights that feed it:

  - ``Dense`` and ``Conv1D``/``Conv2D``/``Conv3D``: output unit (filter) ``j`` is the incoming
    kernel slice ``kernel[..., j]`` together with ``bias[j]``;
  - ``Conv1DTranspose``/``Conv2DTranspose``/``Conv3DTranspose``: filter ``j`` is
    ``kernel[..., j, :]`` (Keras stores the output axis second to last) with ``bias[j]``;
  - ``DepthwiseConv1D``/``DepthwiseConv2D``: output channel ``c * depth_multiplier + m`` is
    ``kernel[..., c, m]`` with the bias entry of that channel;
  - ``BatchNormalization``, ``LayerNormalization``, ``GroupNormalization``,
    ``RMSNormalization``: one channel, ``gamma[c]`` with ``beta[c]``.

  Any other layer with trainable weights (``Embedding``, ``EinsumDense``, ``SeparableConv2D``,
  custom layers, or a known layer whose weights are not the expected kernel/bias pair, e.g. with
  LoRA) has no unit structure this module knows. Each of its weight tensors is then treated as
  one unit, and an :class:`AggregationWarning` names the layer.
* ``"layer"``: all trainable weights of one Keras layer together.

Weights belong to the innermost layer that holds them: layers are walked recursively, including
models nested in models, and variables are matched by identity, never by name.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from importance.checks import check_choice
from importance.layers import layer_groups, owning_layers
from importance.scores import validate_scores
from importance.validation import check_model

__all__ = ["LEVELS", "REDUCERS", "AggregationWarning", "aggregate", "layer_groups", "owning_layers"]

LEVELS = ("weight", "unit", "layer")
REDUCERS: dict[str, np.ufunc | str] = {
    "mean": "mean",
    "max": np.maximum,
    "min": np.minimum,
    "sum": np.add,
}

_NORMALIZATIONS = (
    "BatchNormalization",
    "LayerNormalization",
    "GroupNormalization",
    "RMSNormalization",
)


class AggregationWarning(UserWarning):
    """A layer has no known unit structure; its weight tensors are each treated as one unit."""


def aggregate(
    scores: Any, model: Any, *, level: str = "weight", reduce: str = "mean"
) -> list[np.ndarray]:
    """Pool importance scores over weights, units or layers and broadcast them back.

    Args:
        scores: One array per ``model.trainable_weights`` entry, with that weight's shape.
        model: The Keras model the scores belong to.
        level: ``"weight"``, ``"unit"`` or ``"layer"`` (see the module docstring).
        reduce: How a group's scores are pooled: ``"mean"``, ``"max"``, ``"min"`` or ``"sum"``.

    Returns:
        One float64 array per trainable weight, with that weight's shape; every member of a
        group holds the group's pooled score.

    Raises:
        ValueError: Unknown ``level`` or ``reduce``; an unbuilt model or one without trainable
            weights.
        importance.ImportanceError: Scores that do not match the model.

    Warns:
        AggregationWarning: At unit level, for each layer without a known unit structure.
    """
    check_choice("level", level, LEVELS)
    check_choice("reduce", reduce, REDUCERS)
    check_model(model)
    arrays = validate_scores(scores, model, measure="scores")
    if level == "weight":
        return [a.copy() for a in arrays]
    out: list[np.ndarray | None] = [None] * len(arrays)
    for layer, indices in layer_groups(model):
        if level == "layer":
            labels = [np.zeros(arrays[i].shape, dtype=np.int64) for i in indices]
        else:
            labels = _unit_labels(layer, [model.trainable_weights[i] for i in indices])
        pooled = _pool([arrays[i] for i in indices], labels, reduce)
        for i, value in zip(indices, pooled, strict=True):
            out[i] = value
    return out  # type: ignore[return-value]


def _unit_labels(layer: Any, variables: list[Any]) -> list[np.ndarray]:
    """Unit index of every scalar of each of ``layer``'s variables (int arrays, weight shapes)."""
    labels = _known_unit_labels(layer, variables)
    if labels is not None:
        return labels
    warnings.warn(
        f"aggregate(level='unit'): layer {layer.name!r} ({type(layer).__name__}) has no known "
        "output-unit structure; each of its weight tensors is treated as one unit.",
        AggregationWarning,
        stacklevel=3,
    )
    return [np.full(tuple(v.shape), i, dtype=np.int64) for i, v in enumerate(variables)]


def _known_unit_labels(layer: Any, variables: list[Any]) -> list[np.ndarray] | None:
    """Unit labels for the layer types this module understands, else None."""
    kind = _layer_kind(layer)
    if kind is None:
        return None
    shapes = [tuple(v.shape) for v in variables]
    if kind == "normalization":
        if len(set(shapes)) != 1:
            return None
        return [np.arange(int(np.prod(s)), dtype=np.int64).reshape(s) for s in shapes]
    kernel = _safe_attr(layer, "kernel")
    bias = _safe_attr(layer, "bias")
    if kernel is None or not any(v is kernel for v in variables):
        return None
    kshape = tuple(kernel.shape)
    if len(kshape) < 2:
        return None
    if kind == "dense_or_conv":
        kernel_labels = _axis_index(kshape, -1)
    elif kind == "transpose":
        kernel_labels = _axis_index(kshape, -2)
    else:  # depthwise: output channel c * multiplier + m
        kernel_labels = _axis_index(kshape, -2) * kshape[-1] + _axis_index(kshape, -1)
    units = int(kernel_labels.max()) + 1 if kernel_labels.size else 0
    labels = []
    for variable, shape in zip(variables, shapes, strict=True):
        if variable is kernel:
            labels.append(kernel_labels)
        elif bias is not None and variable is bias and shape == (units,):
            labels.append(np.arange(units, dtype=np.int64))
        else:
            return None
    return labels


def _layer_kind(layer: Any) -> str | None:
    from keras import layers as kl

    def classes(*names: str) -> tuple[type, ...]:
        return tuple(getattr(kl, n) for n in names if hasattr(kl, n))

    if isinstance(layer, classes("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")):
        return "transpose"
    if isinstance(layer, classes("DepthwiseConv1D", "DepthwiseConv2D")):
        return "depthwise"
    if isinstance(layer, classes("Dense", "Conv1D", "Conv2D", "Conv3D")):
        return "dense_or_conv"
    if isinstance(layer, classes(*_NORMALIZATIONS)):
        return "normalization"
    return None


def _safe_attr(layer: Any, name: str) -> Any:
    try:
        return getattr(layer, name, None)
    except Exception:  # e.g. a quantized layer's property that cannot be read
        return None


def _axis_index(shape: tuple[int, ...], axis: int) -> np.ndarray:
    """Int array of ``shape`` holding each element's index along ``axis``."""
    view = [1] * len(shape)
    view[axis] = shape[axis]
    index = np.arange(shape[axis], dtype=np.int64).reshape(view)
    return np.ascontiguousarray(np.broadcast_to(index, shape))


def _pool(arrays: list[np.ndarray], labels: list[np.ndarray], reduce: str) -> list[np.ndarray]:
    """Reduce ``arrays`` over equal labels (shared across arrays) and broadcast back."""
    values = np.concatenate([a.ravel() for a in arrays]) if arrays else np.zeros(0)
    flat = np.concatenate([lab.ravel() for lab in labels]) if labels else np.zeros(0, np.int64)
    if values.size == 0:
        return [a.copy() for a in arrays]
    _, inverse = np.unique(flat, return_inverse=True)
    inverse = inverse.ravel()
    order = np.argsort(inverse, kind="stable")
    sorted_groups = inverse[order]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    reducer: Callable[..., np.ndarray] | str = REDUCERS[reduce]
    if reducer == "mean":
        pooled = np.add.reduceat(values[order], starts) / np.diff(np.r_[starts, values.size])
    else:
        pooled = reducer.reduceat(values[order], starts)  # type: ignore[union-attr]
    broadcast = pooled[inverse]
    out, offset = [], 0
    for array in arrays:
        out.append(broadcast[offset : offset + array.size].reshape(array.shape))
        offset += array.size
    return out
