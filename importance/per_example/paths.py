"""Which path the per-example engine takes for each layer, read from the model's structure.

A layer with trainable weights takes a closed form (a row of
:data:`importance.per_example.layers.RULES`: ``einsum``, ``norm``, ``embedding``, ``depthwise``,
``dense``, ``conv``, ``recurrent``), is walked (Sequential and functional models, nested ones too), is
intercepted (a layer whose weights all belong to sub-layers with closed forms, e.g.
MultiHeadAttention), or is vectorised over examples on its own (``vmap``,
:data:`~importance.per_example.layers.FALLBACK`); attention inside a layer the engine can neither
walk nor intercept takes the whole-batch Jacobian (``jacobian``). The engine's forward pass
(:class:`importance.per_example.engine.Walker`) decides with these functions; :func:`layer_paths`
reads the same decisions without running the model, and :func:`whole_model_vmap_is_cheaper` is
what ``method="auto"`` decides on.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from importance.per_example.layers import FALLBACK, RULES


def closed_form(layer: Any) -> str | None:
    """The kind of the first rule of :data:`~importance.per_example.layers.RULES` that applies
    to ``layer`` (XLA permitting), or None."""
    for rule in RULES:
        if rule.applies(layer):
            return rule.kind
    return None


def interceptable(layer: Any) -> list[Any]:
    """Sub-layers with a closed form that own all of ``layer``'s trainable weights (e.g. the
    projections of MultiHeadAttention); empty when some weight has none, or for RNNs (their cell
    runs inside a loop)."""
    if isinstance(layer, keras.layers.RNN) or not hasattr(layer, "_flatten_layers"):
        return []
    subs = [s for s in layer._flatten_layers(include_self=False) if closed_form(s) is not None]
    covered = {id(w) for s in subs for w in s.trainable_weights}
    return subs if all(id(w) in covered for w in layer.trainable_weights) else []


def walkable(model: Any) -> bool:
    """Whether the engine runs ``model`` layer by layer (a Sequential or functional model whose
    ``call`` is Keras's own)."""
    from keras.src.models.functional import Functional

    if isinstance(model, keras.Sequential):
        return type(model).call is keras.Sequential.call
    return isinstance(model, Functional) and type(model).call is Functional.call and hasattr(
        model, "_run_through_graph"
    )


def decide(layer: Any, *, single_input: bool = True) -> tuple[str, list[Any]]:
    """How the engine runs one call of ``layer``: ``(path, sub-layers)``.

    ``path`` is a closed form (see :func:`closed_form`; only for a call with one input),
    ``walk`` (run its layers one by one), ``none`` (no trainable weights: run as it is),
    ``intercept`` (run it with the returned sub-layers' calls routed through the engine),
    ``jacobian`` (attention the engine cannot vectorise: those weights take the whole-batch
    Jacobian) or ``vmap`` (vectorised over examples on its own). The engine's forward pass and
    :func:`layer_paths` both decide with it.
    """
    closed = closed_form(layer) if single_input else None
    if closed is not None:
        return closed, []
    if walkable(layer):
        return "walk", []
    if not FALLBACK.supported(layer):
        return "none", []
    subs = interceptable(layer)
    if subs:
        return "intercept", subs
    return ("jacobian" if FALLBACK.unvectorisable(layer) else FALLBACK.kind), []


def layer_paths(model: Any) -> list[tuple[Any, str]]:
    """The path the engine takes for each layer owning trainable weights, read from the model's
    structure (as the forward pass will meet them; a shared layer once).

    Returns:
        ``(layer, kind)`` pairs: a closed form (the ``kind`` of a row of
        :data:`~importance.per_example.layers.RULES`: ``einsum``, ``norm``, ``embedding``,
        ``depthwise``, ``dense``, ``conv``, ``recurrent``), ``vmap`` (vectorised over examples on its own) or
        ``jacobian`` (attention inside a layer the engine can neither walk nor intercept).
    """
    found: dict[int, tuple[Any, str]] = {}

    def visit(layer: Any) -> None:
        path, subs = decide(layer)
        if path == "walk":
            for sub in layer.layers:
                visit(sub)
        for sub in subs:
            found.setdefault(id(sub), (sub, closed_form(sub)))
        if path not in ("walk", "none", "intercept"):
            found.setdefault(id(layer), (layer, path))

    visit(model)
    return list(found.values())


def whole_model_vmap_is_cheaper(model: Any) -> bool:
    """Whether vectorising the whole model over examples costs less than the engine.

    The engine's per-layer vmap re-runs a layer's forward pass per example after the batch's
    forward pass has run it once; vectorising the whole model runs it once, but forms per-example
    gradients of every other layer too. That is cheaper when some layers take the per-layer vmap
    and every other layer with weights is a ``Dense`` layer holding no more weights than they do
    (e.g. a recurrent layer with a custom cell and a Dense head, or a subclassed model the engine
    cannot walk), and
    :func:`whole_model_vmap_can_run`.
    """
    paths = layer_paths(model)
    kinds = [path for _, path in paths]
    if "vmap" not in kinds or any(path not in ("vmap", "dense") for path in kinds):
        return False
    if not whole_model_vmap_can_run(model):
        return False
    sizes = {"vmap": 0, "dense": 0}
    for layer, path in paths:
        sizes[path] += sum(int(np.prod(w.shape)) for w in layer.trainable_weights)
    return sizes["dense"] <= sizes["vmap"]


def recurrent_layers(model: Any) -> list[Any]:
    """The outermost recurrent layers of ``model`` (an ``RNN`` or a ``Bidirectional`` wrapper,
    counted once; the RNNs inside a ``Bidirectional`` are not counted again)."""
    found: list[Any] = []

    def visit(layer: Any) -> None:
        if isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional)):
            found.append(layer)
            return
        for sub in getattr(layer, "_layers", None) or getattr(layer, "layers", None) or []:
            if sub is not layer:
                visit(sub)

    visit(model)
    return found


def whole_model_vmap_can_run(model: Any) -> bool:
    """Whether ``tf.vectorized_map`` of the whole model's per-example gradient is known to run.

    Not for two or more recurrent layers (stacked LSTMs or GRUs, the first returning its
    sequence): TensorFlow 2.21 raises a ``TypeError`` (``dtype variant is not compatible``)
    while vectorising the gradient of a recurrent layer fed by another's sequence; one recurrent
    layer, with or without ``return_sequences``, and a ``Bidirectional`` one run. ``auto`` also
    falls back to the engine when the vectorisation raises on a model this does not foresee.
    """
    return len(recurrent_layers(model)) < 2
