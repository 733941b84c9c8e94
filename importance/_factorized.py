"""Per-example gradient moments in one backward pass (the BackPACK idea, in TensorFlow).

For a Dense layer ``z = a @ W + b`` the gradient of example ``i``'s objective w.r.t. the kernel is
the outer product ``a_i g_i^T`` where ``g_i = d objective_i / d z_i``. Because example ``i`` only
affects ``objective_i``, one backward pass of ``sum_i objective_i`` gives every ``g_i`` at once,
and the moments factorise: ``sum_i (a_i g_i^T)**2 = (a**2)^T (g**2)`` and
``sum_i |a_i g_i^T| = |a|^T |g|``. When the layer sees extra axes (sequences), the per-example
gradient is a sum over positions and does not factorise; it is then formed per example, in chunks
of the batch. Convolutions are handled the same way from per-example patches:
``G_i = P_i^T g_i`` with ``P_i`` the (positions x kernel) patch matrix of example ``i``.
Their per-example kernel gradients come from one grouped filter gradient per layer (the batch
folded into the groups), or, for one input channel, one matmul of the stacked shifted windows;
the per-offset loop is kept for dilation, XLA and builds without grouped kernels.

Supported (factorised): ``keras.layers.Dense`` (any input rank) and ``Conv1D`` / ``Conv2D``
(``channels_last``, ``groups=1``, any strides, dilation, ``valid`` / ``same`` / ``causal``
padding), float32, without LoRA or quantisation, each called once per forward pass, inside
Sequential and functional models (nested ones too). Every other trainable weight (BatchNorm,
Embedding, custom layers, shared layers, subclassed models) falls back to per-example gradients
from ``GradientTape.jacobian`` with ``pfor`` (vectorised) for those weights only.

Reference: Dangel, Kunstner & Hennig, "BackPACK: Packing more into backprop", ICLR 2020.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from importance._conv_moments import _chunked, _conv_kernel_moment, _f

Objective = Callable[[tf.Tensor], tf.Tensor]
MOMENTS = ("square", "abs")


def per_example_moment(
    model: Any, x: Any, objective: Objective, *, moment: str = "square", targets: Any = None
) -> list[tf.Tensor]:
    """Sum over the batch of per-example gradient moments, from one backward pass.

    Args:
        model: A built Keras model.
        x: One batch of inputs (a tensor or the nested structure the model takes).
        objective: Maps the model's outputs on the whole batch, shape ``(B, ...)``, to one scalar
            per example, shape ``(B,)``; example ``i``'s value must depend only on example ``i``.
        moment: ``"square"`` for ``sum_i g_i**2`` or ``"abs"`` for ``sum_i |g_i|``.
        targets: Optional per-example values aligned with ``x`` (e.g. labels); when given the
            objective is called as ``objective(outputs, targets)`` on the whole batch.

    Returns:
        One float32 tensor per ``model.trainable_weights`` entry.

    Raises:
        ValueError: Unknown moment.
    """
    if moment not in MOMENTS:
        raise ValueError(f"moment must be one of {MOMENTS}. Received: {moment!r}")
    if targets is not None:
        objective = _bind(objective, targets)
    return per_example_moment_sum(model, x, [objective], moment=moment)


def per_example_moment_sum(
    model: Any, x: Any, objectives: list[Objective], *, moment: str = "square"
) -> list[tf.Tensor]:
    """Sum over several objectives of :func:`per_example_moment`, sharing one forward pass.

    The objectives' backward passes and moments run one after another (each waits for the
    previous one's sums), so the peak memory is that of one objective. Used by the exact Fisher
    (one objective per class).

    Args:
        model: A built Keras model.
        x: One batch of inputs.
        objectives: Functions of the model's outputs, each as ``objective`` of
            :func:`per_example_moment`.
        moment: ``"square"`` or ``"abs"``.

    Returns:
        One float32 tensor per ``model.trainable_weights`` entry.
    """
    if moment not in MOMENTS:
        raise ValueError(f"moment must be one of {MOMENTS}. Received: {moment!r}")
    weights = list(model.trainable_weights)
    index = {id(w): k for k, w in enumerate(weights)}
    captures: list[_Capture] = []
    with tf.GradientTape(watch_accessed_variables=False, persistent=len(objectives) > 1) as tape:
        outputs = _Walker(tape, captures).call(model, x)
        totals = [tf.reduce_sum(objective(outputs)) for objective in objectives] if captures else []
    calls: dict[int, int] = {}
    for capture in captures:
        calls[id(capture.layer)] = calls.get(id(capture.layer), 0) + 1
    usable = [
        c
        for c in captures
        if calls[id(c.layer)] == 1 and all(id(v) in index for v in c.variables())
    ]
    results: list[tf.Tensor | None] = [None] * len(weights)
    # 2-D Dense moments are linear in f(g): sum the objectives' f(g) (batch x units, small) and
    # multiply once. Other layers' moments are formed per objective and summed.
    summed_fg: dict[int, tf.Tensor] = {}
    for total in totals if usable else []:
        with tf.control_dependencies([r for r in results if r is not None] + list(summed_fg.values())):
            grads = tape.gradient(
                total, [c.z for c in usable], unconnected_gradients=tf.UnconnectedGradients.ZERO
            )
            for u, (capture, grad) in enumerate(zip(usable, grads, strict=True)):
                if capture.linear_in_fg():
                    fg = _f(grad, moment)
                    summed_fg[u] = fg if u not in summed_fg else summed_fg[u] + fg
                    continue
                for variable, value in zip(capture.variables(), capture.moments(grad, moment), strict=True):
                    k = index[id(variable)]
                    results[k] = value if results[k] is None else results[k] + value
    for u, fg in summed_fg.items():
        for variable, value in zip(usable[u].variables(), usable[u].moments_of_fg(fg, moment), strict=True):
            results[index[id(variable)]] = value
    del tape
    missing = [k for k, r in enumerate(results) if r is None]
    for objective in objectives if missing else []:
        fallback = _jacobian_moments(model, x, objective, [weights[k] for k in missing], moment)
        for k, value in zip(missing, fallback, strict=True):
            results[k] = value if results[k] is None else results[k] + value
    return results


def _bind(objective: Callable[..., tf.Tensor], targets: Any) -> Objective:
    return lambda outputs: objective(outputs, targets)


def _jacobian_moments(
    model: Any, x: Any, objective: Objective, variables: list[Any], moment: str
) -> list[tf.Tensor]:
    """Fallback: vectorised per-example gradients (jacobian of the (B,) objective, pfor)."""
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch([v.value for v in variables])
        values = objective(model(x, training=False))
    jac = tape.jacobian(
        values,
        [v.value for v in variables],
        unconnected_gradients=tf.UnconnectedGradients.ZERO,
        experimental_use_pfor=True,
    )
    return [tf.reduce_sum(_f(j, moment), axis=0) for j in jac]


class _Capture:
    """One call of a supported layer: its input ``a`` and pre-activation output ``z``."""

    def __init__(self, layer: Any, a: tf.Tensor, z: tf.Tensor) -> None:
        self.layer, self.a, self.z = layer, a, z

    def variables(self) -> list[Any]:
        bias = getattr(self.layer, "bias", None)
        return [self.layer.kernel] + ([bias] if bias is not None else [])

    def linear_in_fg(self) -> bool:
        """Whether the moments are linear in f(g) (a 2-D Dense layer): sums over objectives
        can then be taken on f(g) first."""
        return isinstance(self.layer, keras.layers.Dense) and self.a.shape.rank == 2

    def moments_of_fg(self, fg: tf.Tensor, moment: str) -> list[tf.Tensor]:
        """Moments of a 2-D Dense layer from f(g) (summed over objectives)."""
        out = [tf.matmul(_f(self.a, moment), fg, transpose_a=True)]
        if getattr(self.layer, "bias", None) is not None:
            out.append(tf.reduce_sum(fg, axis=0))
        return out

    def moments(self, g: tf.Tensor, moment: str) -> list[tf.Tensor]:
        layer, a = self.layer, self.a
        if self.linear_in_fg():
            return self.moments_of_fg(_f(g, moment), moment)
        if isinstance(layer, keras.layers.Dense):
            positions = int(np.prod(a.shape[1:-1]))
            a = tf.reshape(a, [tf.shape(a)[0], positions, a.shape[-1]])
            g = tf.reshape(g, [tf.shape(g)[0], positions, g.shape[-1]])
            per_example = int(a.shape[-1]) * (positions + int(g.shape[-1]))
            kernel = _chunked(
                lambda ac, gc: tf.reduce_sum(_f(tf.matmul(ac, gc, transpose_a=True), moment), 0),
                a, g, per_example, layer.kernel.shape,
            )
            bias_g = tf.reduce_sum(g, axis=1)
        else:
            kernel = _conv_kernel_moment(layer, a, g, moment)
            bias_g = tf.reduce_sum(tf.reshape(g, [tf.shape(g)[0], -1, g.shape[-1]]), axis=1)
        out = [kernel]
        if getattr(layer, "bias", None) is not None:
            out.append(tf.reduce_sum(_f(bias_g, moment), axis=0))
        return out


def _supported(layer: Any) -> bool:
    if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
        return False
    if layer.compute_dtype != "float32" or not layer.trainable:
        return False
    if isinstance(layer, keras.layers.Dense):
        return type(layer).call is keras.layers.Dense.call
    for cls in (keras.layers.Conv1D, keras.layers.Conv2D):
        if isinstance(layer, cls):
            return (
                type(layer).call is cls.call
                and type(layer).convolution_op is cls.convolution_op
                and layer.data_format == "channels_last"
                and layer.groups == 1
            )
    return False


def _walkable(model: Any) -> bool:
    from keras.src.models.functional import Functional

    if isinstance(model, keras.Sequential):
        return type(model).call is keras.Sequential.call
    return isinstance(model, Functional) and type(model).call is Functional.call and hasattr(
        model, "_run_through_graph"
    )


class _Walker:
    """Runs a model's forward pass layer by layer, capturing (a, z) of supported layers."""

    def __init__(self, tape: tf.GradientTape, captures: list[_Capture]) -> None:
        self.tape, self.captures = tape, captures

    def call(self, layer: Any, *args: Any, **kwargs: Any) -> Any:
        if _supported(layer) and len(args) == 1:
            return self._capture(layer, args[0])
        if _walkable(layer):
            return self._walk(layer, args[0] if len(args) == 1 else list(args))
        kwargs.pop("training", None)
        if getattr(layer, "_call_has_training_arg", False):
            kwargs["training"] = False
        return layer(*args, **kwargs)

    def _capture(self, layer: Any, a: Any) -> tf.Tensor:
        a = tf.convert_to_tensor(a)
        if isinstance(layer, keras.layers.Dense):
            z = keras.ops.matmul(a, layer.kernel)
        else:
            padded, padding = a, layer.padding
            if padding == "causal":
                left = (layer.kernel_size[0] - 1) * layer.dilation_rate[0]
                padded, padding = tf.pad(a, [[0, 0], [left, 0], [0, 0]]), "valid"
            z = keras.ops.conv(
                padded,
                layer.kernel,
                strides=list(layer.strides),
                padding=padding,
                dilation_rate=layer.dilation_rate,
                data_format="channels_last",
            )
        if layer.bias is not None:
            z = z + layer.bias
        self.tape.watch(z)
        self.captures.append(_Capture(layer, a, z))
        return layer.activation(z) if layer.activation is not None else z

    def _walk(self, model: Any, x: Any) -> Any:
        if isinstance(model, keras.Sequential):
            if model._functional is not None:
                return self._walk(model._functional, x)
            for layer in model.layers:
                x = self.call(layer, x)
            return x
        inputs = model._standardize_inputs(x)
        outputs = model._run_through_graph(
            inputs, operation_fn=lambda op: lambda *a, **k: self.call(op, *a, **k)
        )
        return outputs[0] if isinstance(outputs, (list, tuple)) and len(outputs) == 1 else outputs
