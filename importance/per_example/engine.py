"""Per-example gradient moments in one backward pass (the BackPACK idea, in TensorFlow).

The engine runs the model's forward pass itself, layer by layer (:class:`Walker`: Sequential and
functional models, nested ones too), and captures every call of a layer with trainable weights
(:class:`~importance.per_example.layers.Call`): the tensors its family's rule watches (the
pre-activation, or the layer's outputs). One backward pass of ``sum_i objective_i`` then gives
every call's output gradients ``g`` at once (example ``i`` only affects ``objective_i``), and each
family's rule (:data:`importance.per_example.layers.RULES`) turns a layer's calls and gradients
into the moments of its weights: closed forms for Dense, Conv1D/2D/3D, normalisation, Embedding,
EinsumDense (so MultiHeadAttention's projections), depthwise/separable convolutions and
recurrent layers (GRU, LSTM, SimpleRNN, Bidirectional: the engine runs their recurrence), each
float32 without LoRA or quantisation; a layer called several times sums its per-example
gradients over the calls before the moment. Every other layer with trainable weights
(custom layers and cells, masked recurrent calls, subclassed models) is vectorised over examples on its own
(:data:`~importance.per_example.layers.FALLBACK`); the whole-batch Jacobian
(:func:`jacobian_moments`) is left only for attention inside a layer that is neither walkable
nor covered by closed forms.

Internal surface: tests replace :func:`jacobian_moments` with ``monkeypatch`` to check it does
not run (it is looked up at each call), and read :class:`Walker`'s captured calls.

Reference: Dangel, Kunstner & Hennig, "BackPACK: Packing more into backprop", ICLR 2020.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from importance.per_example import moments
from importance.per_example.layers import FALLBACK, Call, LayerRule, rule, scoped_vmap
from importance.per_example.moments import Objective, apply_moment, check_moment
from importance.per_example.paths import decide


@tf.autograph.experimental.do_not_convert
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


@tf.autograph.experimental.do_not_convert
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
    captures: list[Call] = []
    with tf.GradientTape(watch_accessed_variables=False, persistent=True) as tape:
        walker = Walker(tape, captures, batch_of(x))
        outputs = walker.call(model, x)
        values = [objective(outputs) for objective in objectives] if captures else []
        totals = [tf.reduce_sum(v) for v in values]
    groups: dict[int, list[Call]] = {}
    for capture in captures:
        if all(id(v) in index for v in capture.variables()):
            groups.setdefault(id(capture.layer), []).append(capture)
    usable = list(groups.values())
    results: list[tf.Tensor | None] = [None] * len(weights)
    # Moments linear in f(g) (2-D Dense: the rule's linear_in_fg): sum the objectives' f(g)
    # (batch x units, small) and multiply once. Other moments are formed per objective and summed.
    summed_fg: dict[int, tf.Tensor] = {}
    for total, value in zip(totals, values, strict=True) if usable else []:
        done = [r for r in results if r is not None] + list(summed_fg.values())
        with tf.control_dependencies(done):
            flat = output_gradients(tape, total, value, [c for group in usable for c in group])
            split = []
            for group in usable:
                grads = []
                for c in group:
                    grads.append(flat[: len(c.z)])
                    flat = flat[len(c.z) :]
                split.append(grads)
            # Lanes (moments.LANES): in backward order, the order the output gradients arrive,
            # each layer's moments wait for those of the layer before it in the same lane.
            lanes: list[list[tf.Tensor]] = [[] for _ in range(max(moments.LANES, 1))]
            chained = 0
            for u in reversed(range(len(usable))):
                group, grads = usable[u], split[u]
                if (
                    len(group) == 1
                    and group[0].batched
                    and group[0].rule.linear_in_fg(group[0])
                ):
                    fg = apply_moment(grads[0][0], moment)
                    summed_fg[u] = fg if u not in summed_fg else summed_fg[u] + fg
                    continue
                lane, chained = chained % len(lanes), chained + 1
                with tf.control_dependencies(lanes[lane] if moments.LANES else []):
                    values = group_moments(group, grads, moment)
                lanes[lane] = list(values)
                for variable, value in zip(group[0].variables(), values, strict=True):
                    k = index[id(variable)]
                    results[k] = value if results[k] is None else results[k] + value
    for u, fg in summed_fg.items():
        call = usable[u][0]
        values = call.rule.moments_of_fg(call, fg, moment)
        for variable, value in zip(call.variables(), values, strict=True):
            results[index[id(variable)]] = value
    del tape
    missing = [k for k, r in enumerate(results) if r is None]
    for objective in objectives if missing else []:
        fallback = jacobian_moments(model, x, objective, [weights[k] for k in missing], moment)
        for k, value in zip(missing, fallback, strict=True):
            results[k] = value if results[k] is None else results[k] + value
    return results


def batch_of(x: Any) -> tuple[int | None, tf.Tensor]:
    """The batch size of the model's inputs ``x``: ``(static or None, dynamic)``."""
    first = tf.convert_to_tensor(tf.nest.flatten(x)[0])
    return first.shape[0] if first.shape.rank else None, tf.shape(first)[0]


def has_batch_axis(t: Any, batch: tuple[int | None, tf.Tensor]) -> bool:
    """Whether ``t``'s axis 0 is the batch axis of the model's inputs, read from static shapes:
    with a known batch size, a leading axis of that size; with an unknown one (a graph traced
    for any batch size), an unknown leading axis. A tensor built without the batch (e.g. a
    position embedding's ``arange(maxlen)``) has neither. A batch-free axis of exactly the
    batch's size cannot be told apart (documented in ``docs/per_example.md``)."""
    shape = tf.convert_to_tensor(t).shape
    if shape.rank is None:
        return True  # unknown rank: nothing to go on, keep the batch reading
    if shape.rank == 0:
        return False
    static = batch[0]
    return shape[0] is None if static is None else shape[0] == static


def output_gradients(
    tape: tf.GradientTape, total: tf.Tensor, values: tf.Tensor, calls: list[Call]
) -> list[tf.Tensor]:
    """Per watched tensor of ``calls``, in order: ``d total / d z`` for a batched ``z`` (one
    backward pass gives every example's part), and for a batch-free ``z`` (every example reads
    the same tensor, so the summed gradient mixes the examples) the per-example gradients
    ``d values_i / d z``, shape ``(batch, *z.shape)``, as the Jacobian of the ``(batch,)``
    objective (pfor, a while loop where pfor cannot convert an op)."""
    watched = [z for c in calls for z in c.z]
    free = [k for c in calls for k in c.batch_free]
    batched = [z for z, f in zip(watched, free, strict=True) if not f]
    out = iter(
        tape.gradient(total, batched, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        if batched else []
    )
    unbatched = [z for z, f in zip(watched, free, strict=True) if f]
    per_example: Any = iter([])
    if unbatched:
        try:
            jac = tape.jacobian(
                values, unbatched, unconnected_gradients=tf.UnconnectedGradients.ZERO,
                experimental_use_pfor=True,
            )
        except (ValueError, TypeError, NotImplementedError):  # an op pfor cannot vectorise
            jac = tape.jacobian(
                values, unbatched, unconnected_gradients=tf.UnconnectedGradients.ZERO,
                experimental_use_pfor=False,
            )
        per_example = iter(jac)
    return [next(per_example) if f else next(out) for f in free]


def extra_inputs(layer: Any, args: Any, kwargs: Any) -> bool:
    """Whether a call passes ``layer`` more than its one input tensor: a tensor among its keyword
    arguments (a mask, initial states), or a Keras mask carried by the input that the layer's
    ``call`` would receive (``mask_zero`` upstream). A closed form with a ``forward`` reads only
    the one input, so such a call takes the per-layer vmap (the layer's own call) instead."""
    from keras.src.backend import get_keras_mask

    if len(args) != 1:
        return True
    leaves = tf.nest.flatten({k: v for k, v in kwargs.items() if k != "training"})
    if any(tf.is_tensor(v) or isinstance(v, np.ndarray) for v in leaves):
        return True
    takes_mask = getattr(layer, "_call_has_mask_arg", False)
    return bool(takes_mask) and get_keras_mask(args[0]) is not None


def _bind(objective: Callable[..., tf.Tensor], targets: Any) -> Objective:
    return lambda outputs: objective(outputs, targets)


def jacobian_moments(
    model: Any, x: Any, objective: Objective, variables: list[Any], moment: str
) -> list[tf.Tensor]:
    """The last resort, for weights no call's rule covered (attention inside a layer the engine
    can neither walk nor intercept): per-example gradients as the whole batch's Jacobian of the
    ``(B,)`` objective (pfor), then the moment summed over examples."""
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


def group_moments(group: list[Call], grads: list[list[tf.Tensor]], moment: str) -> list[tf.Tensor]:
    """Moments of one layer's weights from all its calls, by the layer's rule: a rule with
    ``shared_calls="vmap"`` sends a layer called several times to the per-layer vmap of its
    output; otherwise the rule's ``moments`` sums the calls' per-example gradients itself."""
    head = group[0]
    if len(group) > 1 and head.rule.shared_calls == "vmap":
        return scoped_vmap.output_moments(group, grads, moment)
    return head.rule.moments(head.layer, group, grads, moment)


class Walker:
    """Runs a model's forward pass layer by layer, appending every call of a layer with
    trainable weights to ``captures`` (a :class:`~importance.per_example.layers.Call` each)."""

    def __init__(
        self, tape: tf.GradientTape, captures: list[Call], batch: tuple[int | None, Any] | None = None
    ) -> None:
        # batch: the inputs' batch size (see batch_of); None reads every call as batched.
        self.tape, self.captures, self.batch = tape, captures, batch

    def _append(self, call: Call) -> None:
        """Records a call; a call whose inputs or watched tensors lack the batch axis (a table
        looked up at ``arange(maxlen)``, shared by every example) is made per-example: its
        batch-free inputs are broadcast along a new batch axis, and its batch-free watched
        tensors take per-example gradients (:func:`output_gradients`)."""
        if self.batch is None:
            self.captures.append(call)
            return
        free_inputs = [not has_batch_axis(t, self.batch) for t in call.inputs]
        call.batch_free = [not has_batch_axis(z, self.batch) for z in call.z]
        if not any(free_inputs) and not any(call.batch_free):
            self.captures.append(call)
            return
        n = self.batch[1]
        tiled = [
            tf.broadcast_to(t[None], tf.concat([[n], tf.shape(t)], 0)) if free else t
            for t, free in zip(call.inputs, free_inputs, strict=True)
        ]
        if call.a is not None and call.inputs and call.a is call.inputs[0]:
            call.a = tiled[0]
        elif call.a is not None and not has_batch_axis(call.a, self.batch):
            call.a = tf.broadcast_to(call.a[None], tf.concat([[n], tf.shape(call.a)], 0))
        call.inputs = tiled
        call.batched = False
        self.captures.append(call)

    def call(self, layer: Any, *args: Any, **kwargs: Any) -> Any:
        """Runs one call of ``layer`` as :func:`~importance.per_example.paths.decide` says."""
        path, subs = decide(layer, single_input=len(args) == 1)
        family = rule(path)  # None for the structural paths
        if family is not None and family.forward is not None:
            if not extra_inputs(layer, args, kwargs):
                return self._capture(layer, args[0], family)
            # The closed form reads the call's one input: a mask or initial state takes the
            # per-layer vmap, which runs the layer's own call with them.
            path, family = FALLBACK.kind, FALLBACK
        if path == "walk":
            return self._walk(layer, args[0] if len(args) == 1 else list(args))
        kwargs.pop("training", None)
        if getattr(layer, "_call_has_training_arg", False):
            kwargs["training"] = False
        if path == "intercept":
            return self._intercept(layer, subs, args, kwargs)
        if family is None:  # none, or jacobian (vmap would crash on attention)
            return layer(*args, **kwargs)
        return self._capture_outputs(layer, family, args, kwargs)  # e.g. norm, embedding, vmap

    def _capture(self, layer: Any, a: Any, family: LayerRule) -> tf.Tensor:
        """A call whose watched tensors the rule's ``forward`` computes from its one input."""
        a = tf.convert_to_tensor(a)
        if family.forward_output:  # e.g. recurrent: the output comes out of the family's loop
            # (forward watches its tensors before computing the output from them)
            z, output, extra = family.forward(layer, a, watch=self.tape.watch)
            replay = lambda ts: family.forward(layer, ts[0])[0]  # noqa: E731
        else:
            z, extra = family.forward(layer, a, watch=self.tape.watch), []
            replay = lambda ts: family.forward(layer, ts[0])  # noqa: E731
            self.tape.watch(z)  # before the activation is computed from it
            output = layer.activation(z[-1]) if layer.activation is not None else z[-1]
        self._append(Call(layer, family, a, z, inputs=[a], forward=replay, extra=extra))
        return output

    def _capture_outputs(self, layer: Any, family: LayerRule, args: Any, kwargs: Any) -> Any:
        """A call the layer runs itself; its floating outputs are watched."""
        structure = (args, kwargs)
        leaves = tf.nest.flatten(structure)
        where = [
            k for k, leaf in enumerate(leaves) if tf.is_tensor(leaf) or isinstance(leaf, np.ndarray)
        ]
        inputs = [tf.convert_to_tensor(leaves[k]) for k in where]

        def forward(tensors: list[tf.Tensor]) -> list[tf.Tensor]:
            new = list(leaves)
            for k, t in zip(where, tensors, strict=True):
                new[k] = t
            call_args, call_kwargs = tf.nest.pack_sequence_as(structure, new)
            outputs = run(*call_args, **call_kwargs)
            return [t for t in tf.nest.flatten(outputs) if t.dtype.is_floating]

        # Inside ``_intercept`` the layer's own ``call`` is routed here: run the class's.
        run = (lambda *a, **k: type(layer).call(layer, *a, **k)) if "call" in vars(layer) else layer
        outputs = run(*args, **kwargs)
        z = [t for t in tf.nest.flatten(outputs) if t.dtype.is_floating]
        self.tape.watch(z)
        a = inputs[0] if inputs else None
        self._append(Call(layer, family, a, z, inputs=inputs, forward=forward))
        return outputs

    def _intercept(self, layer: Any, subs: list[Any], args: Any, kwargs: Any) -> Any:
        """Runs ``layer`` with its sub-layers' calls routed through the walker (restored after)."""
        patched = []
        try:
            for sub in subs:
                routed = functools.partial(self._routed, layer, sub)
                object.__setattr__(sub, "call", routed)
                patched.append(sub)
            return layer(*args, **kwargs)
        finally:
            for sub in patched:
                sub.__dict__.pop("call", None)

    def _routed(self, layer: Any, sub: Any, inputs: Any, *rest: Any, **kwargs: Any) -> Any:
        """A sub-layer's call inside an intercepted ``layer``, run through the engine (in
        inference mode, like every layer it runs).

        Raises:
            ValueError: ``layer`` calls ``sub`` with ``training=True`` where ``sub``'s output
                depends on the mode (BatchNormalization's batch statistics, ...): one example's
                output would then depend on the rest of the batch, so its per-example gradient
                is not the one of the example alone, and the engine does not silently switch the
                mode back.
        """
        if kwargs.get("training") is True and getattr(sub, "_call_has_training_arg", False):
            raise ValueError(
                f"The layer {layer.name!r} ({type(layer).__name__}) calls its sub-layer "
                f"{sub.name!r} ({type(sub).__name__}) with training=True. In training mode a "
                f"{type(sub).__name__}'s output for one example depends on the whole batch (batch "
                "statistics), so per-example gradients of a batch are not those of each example "
                "alone; method='factorized' runs every layer in inference mode and will not "
                "override an explicit training=True. Received: training=True inside "
                f"{layer.name!r}. Expected: the sub-layer called with the outer call's "
                "`training` argument (e.g. training=training), or method='loop' (each example "
                "run alone)."
            )
        return self.call(sub, inputs, **kwargs)  # a mask or state the sub-layer gets is kept

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
