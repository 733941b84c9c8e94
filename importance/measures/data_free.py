"""Data-free pruning criteria: ``lamp`` (layer-adaptive magnitude) and ``synflow`` (path flow).

Both look only at the weights; the data argument is ignored.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from importance.measures.registry import register_measure
from importance.validation import output_kind


@register_measure("lamp")
def lamp(model: Any, data: Any = None) -> list[np.ndarray]:
    """LAMP score: w_u^2 / sum_{v >= u} w_v^2 within each weight tensor, sorted by magnitude.

    The weights of one tensor are sorted by |w| ascending (ties in index order, a stable sort);
    weight u's score is its square over the sum of the squares of itself and every weight after
    it. The largest weight of every tensor scores 1; a weight whose tail of squares sums to 0
    (only zeros from it on) scores 0. Reference: Lee et al. 2021, "Layer-adaptive Sparsity for
    the Magnitude-based Pruning" (ICLR).

    Coverage: LAMP prunes the kernels of Dense and Conv layers. Here every trainable weight
    tensor (biases and normalisation weights included) is scored by the same formula as its
    own "layer", so every weight takes part in the benchmark's global ranking.

    Args:
        model: A built Keras model.
        data: Ignored.

    Returns:
        One float64 array per trainable weight, in [0, 1].
    """
    return [_lamp_scores(np.asarray(w.numpy(), np.float64)) for w in model.trainable_weights]


lamp.coverage = "every weight tensor scored as its own layer (biases, normalisation weights too)"


def _lamp_scores(weight: np.ndarray) -> np.ndarray:
    squares = np.square(weight).ravel()
    order = np.argsort(squares, kind="stable")
    ranked = squares[order]
    tails = np.cumsum(ranked[::-1])[::-1]  # tails[k] = sum of ranked[k:]
    scores = np.zeros_like(ranked)
    np.divide(ranked, tails, out=scores, where=tails > 0)
    out = np.empty_like(scores)
    out[order] = scores
    return out.reshape(weight.shape)


@register_measure("synflow")
def synflow(model: Any, data: Any = None) -> list[np.ndarray]:
    """SynFlow score |w * dR/dw| with R = 1^T (prod_l |W_l|) 1, no data.

    R is the output sum of the network with every weight replaced by its absolute value, fed a
    single all-ones input: for a ReLU network with non-negative weights and input, every unit is
    active and R is the sum over input-output paths of the products of |weights| (the path norm).
    The score of weight w is |w * dR/dw| (w and dR/dw of that absolute-valued network). As in the
    authors' code the network runs in float64 (a copy: the model itself is not touched) to keep
    R and its gradient finite in deep networks, in inference mode, with *all* its weights made
    absolute (BatchNorm's moving statistics too). A softmax output is replaced by its logits
    (R would be constant 1). Reference: Tanaka et al. 2020, "Pruning neural networks without
    any data by iteratively conserving synaptic flow" (NeurIPS); this is its single-shot score
    (the paper iterates it over 100 pruning rounds).

    Coverage: SynFlow prunes the kernels of Dense and Conv layers. Here the same score is given
    to every trainable weight (biases, BatchNorm's gamma and beta: they are parameters of the
    absolute-valued network too). Activations other than ReLU are kept as they are, so R is the
    path norm only for ReLU-like networks.

    Args:
        model: A built Sequential or functional Keras model with one input.
        data: Ignored.

    Returns:
        One float64 array per trainable weight, >= 0.

    Raises:
        ValueError: A subclassed model or one with several inputs (the copy cannot be made).
    """
    copy = _float64_copy(model)
    for target, source in zip(copy.weights, model.weights, strict=True):
        target.assign(np.abs(np.asarray(source.numpy(), np.float64)).astype(target.dtype))
    ones = tf.ones((1, *model.inputs[0].shape[1:]), dtype=tf.float64)
    with tf.GradientTape() as tape:
        flow = tf.reduce_sum(tf.cast(copy(ones, training=False), tf.float64))
    grads = tape.gradient(
        flow, copy.trainable_weights, unconnected_gradients=tf.UnconnectedGradients.ZERO
    )
    return [
        np.abs(np.asarray(g.numpy(), np.float64) * np.asarray(w.numpy(), np.float64))
        for g, w in zip(grads, copy.trainable_weights, strict=True)
    ]


synflow.coverage = (
    "every trainable weight scored (biases, BatchNorm too); softmax output replaced by "
    "logits; non-ReLU activations kept"
)


def _float64_copy(model: Any) -> Any:
    """A float64 copy of a Sequential/functional model whose softmax output gives logits."""
    inputs = getattr(model, "inputs", None)
    if not inputs or len(inputs) != 1:
        raise ValueError(
            f"synflow needs a built model with exactly one input. Received: {type(model).__name__} "
            f"with inputs {inputs!r}"
        )
    last = model.layers[-1]
    # Decided like everywhere else, from the outputs (here on a ones input: data-free measure).
    probe = np.ones((2, *tuple(inputs[0].shape)[1:]), dtype=np.float32)
    softmax_out = output_kind(model, probe) == "probabilities"

    def clone_layer(layer: Any) -> Any:
        config = {**layer.get_config(), "dtype": "float64"}
        if softmax_out and layer is last:
            if type(last).__name__ == "Softmax":
                return keras.layers.Identity(dtype="float64", name=layer.name)
            config["activation"] = "linear"
        return layer.__class__.from_config(config)

    try:
        copy = keras.models.clone_model(model, clone_function=clone_layer)
    except Exception as error:  # noqa: BLE001 - any failure means the model cannot be copied
        raise ValueError(
            f"synflow could not copy the model {model.name!r} in float64: {error}"
        ) from error
    if len(copy.weights) != len(model.weights):
        raise ValueError(
            f"synflow's float64 copy of {model.name!r} has {len(copy.weights)} weights, "
            f"the model {len(model.weights)}: unsupported model"
        )
    return copy
