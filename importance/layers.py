"""The layer walks: which Keras layer owns each trainable weight, and a model's layers by name.

Weights belong to the innermost layer that holds them: layers are walked recursively, including
models nested in models and layers tracked inside custom layers, and variables are matched by
identity, never by name. Aggregation (unit and layer level), the layer scope of the thresholding
sweep and the layer-shuffled controls all group weights this way.

:func:`model_layers` is the other walk, over the layers a user sees and names: each model's
``layers`` list, nested models descended into. The CAM layer search uses it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def owning_layers(model: Any) -> list[Any]:
    """The innermost Keras layer holding each trainable weight, aligned with ``trainable_weights``.

    Layers are walked recursively (nested models, layers inside custom layers); a variable is
    attributed to the deepest layer whose ``trainable_weights`` contain it (by identity). A
    variable no sublayer holds belongs to ``model`` itself.
    """
    owner: dict[int, Any] = {}
    for layer in _walk(model):
        for variable in layer.trainable_weights:
            owner[id(variable)] = layer
    return [owner.get(id(v), model) for v in model.trainable_weights]


def layer_groups(model: Any) -> list[tuple[Any, list[int]]]:
    """Trainable weights grouped by owning layer: ``[(layer, [weight indices]), ...]``.

    Indices refer to ``model.trainable_weights``; groups are in order of their first weight.
    """
    groups: dict[int, tuple[Any, list[int]]] = {}
    for index, layer in enumerate(owning_layers(model)):
        groups.setdefault(id(layer), (layer, []))[1].append(index)
    return list(groups.values())


def model_layers(model: Any) -> Iterator[Any]:
    """Every layer of ``model`` in the order of ``model.layers``, depth first into nested models.

    Unlike the ownership walk of :func:`owning_layers`, it reads only the ``layers`` lists:
    the model itself is not yielded, nor the layers a custom layer holds as attributes, nor a
    nested Sequential's input layer (it is not in its ``layers``); a layer used twice is yielded
    twice. These are the layers a user can name.
    """
    for layer in getattr(model, "layers", []):
        yield layer
        if hasattr(layer, "layers"):
            yield from model_layers(layer)


def _walk(layer: Any, seen: set[int] | None = None) -> list[Any]:
    """``layer`` and all its sublayers, parents before children."""
    seen = set() if seen is None else seen
    if id(layer) in seen:
        return []
    seen.add(id(layer))
    flatten = getattr(layer, "_flatten_layers", None)
    if flatten is not None:
        children = list(flatten(include_self=False, recursive=False))
    else:
        children = list(getattr(layer, "layers", []) or [])
    order = [layer]
    for child in children:
        order.extend(_walk(child, seen))
    return order
