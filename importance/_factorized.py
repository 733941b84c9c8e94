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

Closed forms: ``Dense`` (any input rank), ``Conv1D`` / ``Conv2D`` (``groups=1``, any strides,
dilation, ``valid`` / ``same`` / ``causal`` padding, ``channels_last`` or ``channels_first``) and
``Conv3D`` (here and :mod:`importance._conv_moments`), normalisation layers
(:mod:`importance._norm_moments`), ``Embedding`` (:mod:`importance._embedding_moments`),
``EinsumDense`` and so MultiHeadAttention's projections (:mod:`importance._sequence_moments`),
``DepthwiseConv2D`` / ``SeparableConv2D`` (:mod:`importance._depthwise_moments`), each float32
without LoRA or quantisation, inside Sequential and functional models (nested ones too); a
layer called several times sums its per-example gradients over the calls before the moment.
Every other layer with trainable weights (recurrent, custom, subclassed models) is vectorised
over examples on its own (:mod:`importance._scoped_vmap`); the whole-batch Jacobian is left
only for attention inside a layer that is neither walkable nor covered by closed forms.

Reference: Dangel, Kunstner & Hennig, "BackPACK: Packing more into backprop", ICLR 2020.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from importance import (
    _depthwise_moments,
    _embedding_moments,
    _norm_moments,
    _scoped_vmap,
    _sequence_moments,
)
from importance._conv_moments import conv3d_kernel_moment, conv_kernel_moment
from importance._layer_paths import decide
from importance._moments import Objective, apply_moment, check_moment, chunked_sum


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
    check_moment(moment)
    weights = list(model.trainable_weights)
    index = {id(w): k for k, w in enumerate(weights)}
    captures: list[_Capture] = []
    with tf.GradientTape(watch_accessed_variables=False, persistent=len(objectives) > 1) as tape:
        outputs = _Walker(tape, captures).call(model, x)
        totals = [tf.reduce_sum(objective(outputs)) for objective in objectives] if captures else []
    groups: dict[int, list[_Capture]] = {}
    for capture in captures:
        if all(id(v) in index for v in capture.variables()):
            groups.setdefault(id(capture.layer), []).append(capture)
    usable = list(groups.values())
    results: list[tf.Tensor | None] = [None] * len(weights)
    # 2-D Dense moments are linear in f(g): sum the objectives' f(g) (batch x units, small) and
    # multiply once. Other layers' moments are formed per objective and summed.
    summed_fg: dict[int, tf.Tensor] = {}
    for total in totals if usable else []:
        with tf.control_dependencies([r for r in results if r is not None] + list(summed_fg.values())):
            flat = tape.gradient(
                total, [z for group in usable for c in group for z in c.z],
                unconnected_gradients=tf.UnconnectedGradients.ZERO,
            )
            for u, group in enumerate(usable):
                grads = []
                for c in group:
                    grads.append(flat[: len(c.z)])
                    flat = flat[len(c.z) :]
                if len(group) == 1 and group[0].linear_in_fg():
                    fg = apply_moment(grads[0][0], moment)
                    summed_fg[u] = fg if u not in summed_fg else summed_fg[u] + fg
                    continue
                for variable, value in zip(group[0].variables(), _group_moments(group, grads, moment), strict=True):
                    k = index[id(variable)]
                    results[k] = value if results[k] is None else results[k] + value
    for u, fg in summed_fg.items():
        for variable, value in zip(usable[u][0].variables(), usable[u][0].moments_of_fg(fg, moment), strict=True):
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
    return [tf.reduce_sum(apply_moment(j, moment), axis=0) for j in jac]


class _Capture:
    """One call of a layer with trainable weights, as the walker ran it.

    ``kind``: ``dense`` / ``conv`` / ``einsum`` (``z`` is the pre-activation), ``norm`` /
    ``embedding`` / ``vmap`` (``z`` are the layer's outputs). ``inputs`` are the call's tensors
    and ``forward`` recomputes ``z`` from them (for the per-layer vectorised path).
    """

    def __init__(self, layer: Any, a: Any, z: Any, *, kind: str = "dense", inputs: Any = None, forward: Any = None) -> None:
        self.layer, self.a, self.kind = layer, a, kind
        self.z = z if isinstance(z, list) else [z]
        self.inputs = [a] if inputs is None else inputs
        self.forward = forward or (lambda ts: [_pre_activation(layer, ts[0])])

    def variables(self) -> list[Any]:
        if self.kind not in ("dense", "conv"):
            return list(self.layer.trainable_weights)
        bias = getattr(self.layer, "bias", None)
        return [self.layer.kernel] + ([bias] if bias is not None else [])

    def linear_in_fg(self) -> bool:
        """Whether the moments are linear in f(g) (a 2-D Dense layer): sums over objectives
        can then be taken on f(g) first."""
        return self.kind == "dense" and self.a.shape.rank == 2

    def moments_of_fg(self, fg: tf.Tensor, moment: str) -> list[tf.Tensor]:
        """Moments of a 2-D Dense layer from f(g) (summed over objectives)."""
        out = [tf.matmul(apply_moment(self.a, moment), fg, transpose_a=True)]
        if getattr(self.layer, "bias", None) is not None:
            out.append(tf.reduce_sum(fg, axis=0))
        return out

    def moments(self, g: tf.Tensor, moment: str) -> list[tf.Tensor]:
        layer, a = self.layer, self.a
        if self.linear_in_fg():
            return self.moments_of_fg(apply_moment(g, moment), moment)
        if self.kind == "dense":
            positions = int(np.prod(a.shape[1:-1]))
            a = tf.reshape(a, [tf.shape(a)[0], positions, a.shape[-1]])
            g = tf.reshape(g, [tf.shape(g)[0], positions, g.shape[-1]])
            per_example = int(a.shape[-1]) * (positions + int(g.shape[-1]))
            kernel = chunked_sum(
                lambda c: tf.reduce_sum(apply_moment(tf.matmul(c[0], c[1], transpose_a=True), moment), 0),
                [a, g], per_example, layer.kernel.shape,
            )
            bias_g = tf.reduce_sum(g, axis=1)
        else:
            # keras.ops.add adds a bias along the last axis whenever its size matches, also for
            # channels_first outputs (Keras 3.x): the bias gradient follows what the model did.
            bias_axis = g.shape.rank - 1 if g.shape[-1] == layer.filters else 1
            bias_g = tf.reduce_sum(g, axis=[ax for ax in range(1, g.shape.rank) if ax != bias_axis])
            if layer.data_format == "channels_first":  # kernel moments in channels_last layout
                order = [0, *range(2, a.shape.rank), 1]
                a, g = tf.transpose(a, order), tf.transpose(g, order)
            conv3d = isinstance(layer, keras.layers.Conv3D)
            kernel = (conv3d_kernel_moment if conv3d else conv_kernel_moment)(layer, a, g, moment)
        out = [kernel]
        if getattr(layer, "bias", None) is not None:
            out.append(tf.reduce_sum(apply_moment(bias_g, moment), axis=0))
        return out


def _group_moments(group: list[_Capture], grads: list[list[tf.Tensor]], moment: str) -> list[tf.Tensor]:
    """Moments of one layer's weights from all its calls (a shared layer's per-example
    gradients are summed over its calls before the moment)."""
    layer, kind = group[0].layer, group[0].kind
    if kind in ("dense", "conv") and len(group) == 1:
        return group[0].moments(grads[0][0], moment)
    if kind == "dense":  # shared: the calls become positions of one sequence
        def positions(t: tf.Tensor) -> tf.Tensor:
            return tf.reshape(t, [tf.shape(t)[0], -1, t.shape[-1]])

        a = tf.concat([positions(c.a) for c in group], axis=1)
        return _Capture(layer, a, []).moments(tf.concat([positions(g[0]) for g in grads], axis=1), moment)
    firsts = [c.a for c in group], [g[0] for g in grads]
    if kind == "einsum":
        return _sequence_moments.moments(layer, *firsts, moment)
    if kind == "norm":
        return _norm_moments.moments(layer, *firsts, moment)
    if kind == "embedding":
        return _embedding_moments.moments(layer, *firsts, moment)
    if kind == "depthwise" and len(group) == 1:
        return _depthwise_moments.moments(layer, group[0].a, group[0].z, grads[0], moment)
    if kind == "depthwise":  # shared: only z (g_u already holds the path through z)
        calls = [(c.inputs, lambda ts, c=c: c.forward(ts)[-1:]) for c in group]
        return _scoped_vmap.moments(group[0].variables(), calls, [g[-1:] for g in grads], moment)
    calls = [(c.inputs, c.forward) for c in group]
    return _scoped_vmap.moments(group[0].variables(), calls, grads, moment)


def _pre_activation(layer: Any, a: tf.Tensor) -> tf.Tensor:
    """A Dense / Conv / EinsumDense layer's output before its activation."""
    if isinstance(layer, keras.layers.EinsumDense):
        return _sequence_moments.pre_activation(layer, a)
    if isinstance(layer, keras.layers.Dense):
        z = keras.ops.matmul(a, layer.kernel)
        return z + layer.bias if layer.bias is not None else z
    padded, padding, channels_last = a, layer.padding, layer.data_format == "channels_last"
    if padding == "causal":
        left = (layer.kernel_size[0] - 1) * layer.dilation_rate[0]
        space = [[left, 0]]
        padded = tf.pad(a, [[0, 0]] + (space + [[0, 0]] if channels_last else [[0, 0]] + space))
        padding = "valid"
    z = keras.ops.conv(
        padded,
        layer.kernel,
        strides=list(layer.strides),
        padding=padding,
        dilation_rate=layer.dilation_rate,
        data_format=layer.data_format,
    )
    if layer.bias is None:
        return z
    # As the layer does (keras.ops.add, whose bias-add shortcut the bias gradient must follow).
    shape = (1,) * (layer.rank + 1) + (layer.filters,) if channels_last else (1, layer.filters) + (1,) * layer.rank
    return keras.ops.add(z, keras.ops.reshape(layer.bias, shape))


class _Walker:
    """Runs a model's forward pass layer by layer, capturing every call of a layer with
    trainable weights (see ``_Capture``)."""

    def __init__(self, tape: tf.GradientTape, captures: list[_Capture]) -> None:
        self.tape, self.captures = tape, captures

    def call(self, layer: Any, *args: Any, **kwargs: Any) -> Any:
        path, subs = decide(layer, single_input=len(args) == 1)
        if path in ("dense", "conv", "einsum", "depthwise"):
            return self._capture(layer, args[0], path)
        if path == "walk":
            return self._walk(layer, args[0] if len(args) == 1 else list(args))
        kwargs.pop("training", None)
        if getattr(layer, "_call_has_training_arg", False):
            kwargs["training"] = False
        if path in ("none", "jacobian"):  # jacobian: vmap would crash on attention
            return layer(*args, **kwargs)
        if path == "intercept":
            return self._intercept(layer, subs, args, kwargs)
        return self._capture_outputs(layer, path, args, kwargs)  # norm, embedding, vmap

    def _capture(self, layer: Any, a: Any, kind: str) -> tf.Tensor:
        a = tf.convert_to_tensor(a)
        if kind == "depthwise":
            forward = lambda ts: _depthwise_moments.forward(layer, ts[0])  # noqa: E731
            z = _depthwise_moments.forward(layer, a, watch=self.tape.watch)
        else:
            forward, z = None, [_pre_activation(layer, a)]
        self.tape.watch(z)
        self.captures.append(_Capture(layer, a, z, kind=kind, forward=forward))
        return layer.activation(z[-1]) if layer.activation is not None else z[-1]

    def _capture_outputs(self, layer: Any, kind: str, args: Any, kwargs: Any) -> Any:
        structure = (args, kwargs)
        leaves = tf.nest.flatten(structure)
        where = [k for k, leaf in enumerate(leaves) if tf.is_tensor(leaf) or isinstance(leaf, np.ndarray)]
        inputs = [tf.convert_to_tensor(leaves[k]) for k in where]

        def forward(tensors: list[tf.Tensor]) -> list[tf.Tensor]:
            new = list(leaves)
            for k, t in zip(where, tensors, strict=True):
                new[k] = t
            call_args, call_kwargs = tf.nest.pack_sequence_as(structure, new)
            return [t for t in tf.nest.flatten(run(*call_args, **call_kwargs)) if t.dtype.is_floating]

        # Inside ``_intercept`` the layer's own ``call`` is routed here: run the class's.
        run = (lambda *a, **k: type(layer).call(layer, *a, **k)) if "call" in vars(layer) else layer
        outputs = run(*args, **kwargs)
        z = [t for t in tf.nest.flatten(outputs) if t.dtype.is_floating]
        self.tape.watch(z)
        self.captures.append(_Capture(layer, inputs[0] if inputs else None, z, kind=kind, inputs=inputs, forward=forward))
        return outputs

    def _intercept(self, layer: Any, subs: list[Any], args: Any, kwargs: Any) -> Any:
        """Runs ``layer`` with its sub-layers' calls routed through the walker (restored after)."""
        patched = []
        try:
            for sub in subs:
                object.__setattr__(sub, "call", lambda inputs, *rest, _sub=sub, **kw: self.call(_sub, inputs))
                patched.append(sub)
            return layer(*args, **kwargs)
        finally:
            for sub in patched:
                sub.__dict__.pop("call", None)

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
