"""Per-example gradient moments of recurrent layers (GRU, LSTM, SimpleRNN, Bidirectional), from
the engine's one backward pass.

Every gate pre-activation of a Keras recurrent cell is a sum of two linear maps, the input
projection ``x_t W + b`` and the recurrent projection ``h_{t-1} U (+ b_rec)``. The engine runs
the recurrence itself, unrolled over time, and watches the input projection of all steps at once,
``XW = x W + b`` of shape (batch, T, gates): one backward pass of ``sum_i objective_i`` then gives
``g_t = d objective / d (x_t W + b)`` for every example and step (example ``i`` only affects
``objective_i``). Example ``i``'s gradients are sums over its steps of outer products, like a
Dense layer on a sequence (Goodfellow, "Efficient per-example gradient computations", 2015;
Dangel, Kunstner & Hennig, "BackPACK", ICLR 2020):

* kernel ``W``: ``sum_t x_{i,t}^T g_{i,t}``; input bias: ``sum_t g_{i,t}``;
* recurrent kernel ``U``: ``sum_t h_{i,t-1}^T gh_{i,t}`` with ``gh`` the gradient of the
  recurrent projection. For LSTM, SimpleRNN and GRU gates where the two projections are added,
  ``gh = g``; for the candidate of a GRU with ``reset_after=True`` (``x_h + r * (h U_h + b)``)
  ``gh = r * g``; a GRU with ``reset_after=False`` multiplies ``r * h_{t-1}`` by ``U_h``, so that
  block's left factor is ``r * h_{t-1}``. The recurrent bias (GRU ``reset_after=True``, the second
  bias row) is ``sum_t gh_{i,t}``.

The loop saves ``h_{t-1}`` (and the GRU's reset gate ``r_t``) per step, stacked to
(batch, T, units); the per-example products are one batched matmul per weight, in chunks of the
batch (``moments.chunked_outer_sum``), and the moment (square or abs) is summed over examples. No
per-example re-run of the recurrence (the per-layer vmap's cost) and no batch x parameters tensor
of the model. The equations are Keras 3's (``keras/src/layers/rnn/{gru,lstm,simple_rnn}.py``):
gates ``z, r, h`` (GRU) and ``i, f, c, o`` (LSTM) in the kernel's column order, the cell's
``activation`` and ``recurrent_activation``, zero initial states, ``go_backwards`` (inputs read
in reverse; the sequence returned in processing order, as Keras does), ``return_sequences``.
``Bidirectional`` runs its two layers and merges as Keras does (``concat``, ``sum``, ``ave``,
``mul``, ``None``). The engine runs layers in inference mode, where dropout and recurrent dropout
do nothing, so they are accepted.

Refused (the layer takes the per-layer vmap, which runs Keras' own call): masks (``mask_zero``
upstream, ``Masking``, a mask passed), initial states passed in, ``stateful``, ``return_state``,
``use_cudnn=True``, other cells (custom, stacked, ConvLSTM), subclasses, a compute dtype other
than float32. A call's extra inputs (a mask, initial states) are also refused at run time by the
engine (``engine.extra_inputs``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from importance.per_example.layers.base import Call, plain_float32
from importance.per_example.moments import apply_moment, chunked_outer_sum

# Sequences of at most this many (static) steps are unrolled in Python (one graph op per gate and
# step, no loop: faster on CPU); longer or unknown lengths run a tf.while_loop over TensorArrays.
UNROLL_STEPS = 64

_CELLS = {
    keras.layers.GRUCell: "gru",
    keras.layers.LSTMCell: "lstm",
    keras.layers.SimpleRNNCell: "simple",
}
_LAYERS = (keras.layers.RNN, keras.layers.GRU, keras.layers.LSTM, keras.layers.SimpleRNN)
_MERGES = ("concat", "sum", "ave", "mul", None)


def _kind(layer: Any) -> str:
    return _CELLS[type(layer.cell)]


def _saved_count(layer: Any) -> int:
    """Per-step tensors the moments need: ``h_{t-1}``, and the GRU's reset gate ``r_t``."""
    return 2 if _kind(layer) == "gru" else 1


def _calls_take_one_input(layer: Any) -> bool:
    """Whether every call recorded in the layer's graph (its inbound nodes) passed the sequence
    only: no mask (explicit, or carried by the input from ``mask_zero``/``Masking``) and no
    initial state."""
    from keras.src.backend import get_keras_mask

    for node in getattr(layer, "_inbound_nodes", None) or []:
        arguments = getattr(node, "arguments", None)
        if arguments is None:
            continue
        args, kwargs = arguments.args, arguments.kwargs
        extra = [
            v for k, v in kwargs.items() if k != "training" for v in tf.nest.flatten(v)
        ]
        if len(args) != 1 or any(v is not None and not isinstance(v, bool) for v in extra):
            return False
        if any(get_keras_mask(t) is not None for t in tf.nest.flatten(args[0])):
            return False
    return True


def _rnn_supported(layer: Any) -> bool:
    """A plain Keras ``RNN``/``GRU``/``LSTM``/``SimpleRNN`` (exact classes) over a GRU, LSTM or
    SimpleRNN cell (exact classes), float32, stateless, returning no states, not forced onto
    cuDNN."""
    cell = getattr(layer, "cell", None)
    return (
        type(layer) in _LAYERS
        and type(cell) in _CELLS
        and plain_float32(layer)
        and plain_float32(cell)
        and bool(getattr(cell, "built", False))
        and not layer.stateful
        and not layer.return_state
        and getattr(layer, "use_cudnn", "auto") is not True
    )


def supported(layer: Any) -> bool:
    """A supported recurrent layer (see the module docstring), or a ``Bidirectional`` wrapper of
    two, whose calls in the model's graph pass the sequence only."""
    if isinstance(layer, keras.layers.Bidirectional):
        return (
            type(layer) is keras.layers.Bidirectional
            and plain_float32(layer)
            and not layer.return_state
            and layer.merge_mode in _MERGES
            and _rnn_supported(layer.forward_layer)
            and _rnn_supported(layer.backward_layer)
            and _calls_take_one_input(layer)
        )
    return _rnn_supported(layer) and _calls_take_one_input(layer)


def _directions(layer: Any) -> list[Any]:
    if isinstance(layer, keras.layers.Bidirectional):
        return [layer.forward_layer, layer.backward_layer]
    return [layer]


def _step(kind: str, cell: Any, xw: tf.Tensor, states: list[tf.Tensor]) -> tuple:
    """One step of the cell from its input projection ``xw = x_t W + b``: ``(output, new states,
    saved)``, the equations of Keras 3's cells (implementation 2; dropout is off in inference)."""
    h = states[0]
    u = cell.units
    if kind == "simple":
        out = xw + tf.matmul(h, cell.recurrent_kernel)
        out = cell.activation(out) if cell.activation is not None else out
        return out, [out], []
    if kind == "lstm":
        z = xw + tf.matmul(h, cell.recurrent_kernel)
        z0, z1, z2, z3 = tf.split(z, 4, axis=-1)
        i, f = cell.recurrent_activation(z0), cell.recurrent_activation(z1)
        c = f * states[1] + i * cell.activation(z2)
        o = cell.recurrent_activation(z3)
        out = o * cell.activation(c)
        return out, [out, c], []
    x_z, x_r, x_h = tf.split(xw, 3, axis=-1)
    if cell.reset_after:
        inner = tf.matmul(h, cell.recurrent_kernel)
        if cell.use_bias:
            inner = inner + cell.bias[1]
        r_z, r_r, r_h = tf.split(inner, 3, axis=-1)
        z = cell.recurrent_activation(x_z + r_z)
        r = cell.recurrent_activation(x_r + r_r)
        candidate = cell.activation(x_h + r * r_h)
    else:
        inner = tf.matmul(h, cell.recurrent_kernel[:, : 2 * u])
        z = cell.recurrent_activation(x_z + inner[:, :u])
        r = cell.recurrent_activation(x_r + inner[:, u:])
        candidate = cell.activation(x_h + tf.matmul(r * h, cell.recurrent_kernel[:, 2 * u :]))
    out = z * h + (1 - z) * candidate
    return out, [out], [r]


def _input_projection(cell: Any, kind: str, x: tf.Tensor) -> tf.Tensor:
    """``x W + b`` for every step at once (batch, T, gates); the GRU's input bias row only."""
    xw = tf.matmul(x, cell.kernel)
    if cell.use_bias:
        xw = xw + (cell.bias[0] if kind == "gru" and cell.reset_after else cell.bias)
    return xw


def _run(layer: Any, x: tf.Tensor, watch: Any) -> tuple[tf.Tensor, tf.Tensor, list[tf.Tensor]]:
    """The layer's forward pass: ``(watched input projection, output, saved per-step tensors)``,
    the saved ones (batch, T, units) in the input's time order."""
    cell, kind = layer.cell, _kind(layer)
    xw = _input_projection(cell, kind, x)
    if watch is not None:
        watch(xw)
    seq = tf.reverse(xw, [1]) if layer.go_backwards else xw
    batch = tf.shape(x)[0]
    sizes = [cell.units] * (2 if kind == "lstm" else 1)
    states = [tf.zeros(tf.stack([batch, s]), xw.dtype) for s in sizes]
    steps = x.shape[1]
    count = _saved_count(layer) - 1  # h_{t-1} is read off the outputs
    if steps is not None and steps <= UNROLL_STEPS:
        outputs, saved = [], [[] for _ in range(count)]
        for xw_t in tf.unstack(seq, axis=1):
            out, states, keep = _step(kind, cell, xw_t, states)
            outputs.append(out)
            for store, value in zip(saved, keep, strict=True):
                store.append(value)
        stacked = tf.stack(outputs, axis=1)
        kept = [tf.stack(s, axis=1) for s in saved]
    else:
        stacked, kept = _while(kind, cell, seq, states, count)
    previous = tf.concat([tf.zeros_like(stacked[:, :1]), stacked[:, :-1]], axis=1)  # h_{t-1}
    kept = [previous, *kept]
    if layer.go_backwards:  # saved tensors back in the input's order, paired with XW's gradient
        kept = [tf.reverse(k, [1]) for k in kept]
    output = stacked if layer.return_sequences else stacked[:, -1]
    return xw, output, kept


def _while(
    kind: str, cell: Any, seq: tf.Tensor, states: list[tf.Tensor], count: int
) -> tuple[tf.Tensor, list[tf.Tensor]]:
    """The recurrence as a ``tf.while_loop`` over TensorArrays (any number of steps)."""
    steps = tf.shape(seq)[1]
    inputs = tf.TensorArray(seq.dtype, size=steps).unstack(tf.transpose(seq, [1, 0, 2]))
    arrays = [tf.TensorArray(seq.dtype, size=steps) for _ in range(count + 1)]

    def body(t, arrays, states):
        out, new, keep = _step(kind, cell, inputs.read(t), list(states))
        arrays = [a.write(t, v) for a, v in zip(arrays, [out, *keep], strict=True)]
        for n, s in zip(new, states, strict=True):
            n.set_shape(s.shape)
        return t + 1, arrays, new

    _, arrays, _ = tf.while_loop(
        lambda t, *_: t < steps, body, (tf.constant(0), arrays, states), swap_memory=True,
        maximum_iterations=steps,  # XLA needs it for the TensorArrays
    )
    stacked = [tf.transpose(a.stack(), [1, 0, 2]) for a in arrays]
    return stacked[0], stacked[1:]


def forward(layer: Any, a: tf.Tensor, watch: Any = None) -> tuple[list, tf.Tensor, list]:
    """``(watched, output, saved)``: the input projections (one per direction), the layer's
    output, and the per-step tensors the moments need (``h_{t-1}``, the GRU's ``r_t``)."""
    runs = [_run(d, a, watch) for d in _directions(layer)]
    if len(runs) == 1:
        xw, output, saved = runs[0]
        return [xw], output, saved
    (xw_f, y, saved_f), (xw_b, y_rev, saved_b) = runs
    if layer.return_sequences:
        y_rev = tf.reverse(y_rev, [1])
    merge = layer.merge_mode
    if merge == "concat":
        output = tf.concat([y, y_rev], axis=-1)
    elif merge == "sum":
        output = y + y_rev
    elif merge == "ave":
        output = (y + y_rev) / 2
    elif merge == "mul":
        output = y * y_rev
    else:
        output = (y, y_rev)
    return [xw_f, xw_b], output, [*saved_f, *saved_b]


def _positions(t: tf.Tensor, call: Call, n: tf.Tensor) -> tf.Tensor:
    """``t`` as (batch, positions, features); a call without the batch axis (its gradients come
    per example, its other tensors shared) broadcast along the batch first."""
    if not call.batched and t.shape.rank == 3:
        t = tf.broadcast_to(t[None], tf.concat([[n], tf.shape(t)], 0))
    return tf.reshape(t, [tf.shape(t)[0], -1, t.shape[-1]])


def _direction_moments(
    rnn: Any, xs: list[tf.Tensor], gs: list[tf.Tensor], saved: list[list[tf.Tensor]],
    calls: Sequence[Call], moment: str,
) -> dict[int, tf.Tensor]:
    """Moments of one direction's weights (by variable id), its calls' steps as positions of one
    sequence (a shared layer's per-example gradients are summed over its calls)."""
    cell, kind = rnn.cell, _kind(rnn)
    n = tf.shape(gs[0])[0]
    x = tf.concat([_positions(t, c, n) for t, c in zip(xs, calls, strict=True)], 1)
    g = tf.concat([_positions(t, c, n) for t, c in zip(gs, calls, strict=True)], 1)
    h = tf.concat([_positions(s[0], c, n) for s, c in zip(saved, calls, strict=True)], 1)
    u = cell.units
    out = {id(cell.kernel): chunked_outer_sum(x, g, moment)}
    g_rec = g
    if kind == "gru":
        r = tf.concat([_positions(s[1], c, n) for s, c in zip(saved, calls, strict=True)], 1)
        if cell.reset_after:
            g_rec = tf.concat([g[..., : 2 * u], r * g[..., 2 * u :]], -1)
            out[id(cell.recurrent_kernel)] = chunked_outer_sum(h, g_rec, moment)
        else:
            out[id(cell.recurrent_kernel)] = tf.concat(
                [
                    chunked_outer_sum(h, g[..., : 2 * u], moment),
                    chunked_outer_sum(r * h, g[..., 2 * u :], moment),
                ],
                axis=-1,
            )
    else:
        out[id(cell.recurrent_kernel)] = chunked_outer_sum(h, g, moment)
    if cell.use_bias:
        bias = tf.reduce_sum(g, axis=1)
        if kind == "gru" and cell.reset_after:
            bias = tf.stack([bias, tf.reduce_sum(g_rec, axis=1)], axis=1)
        out[id(cell.bias)] = tf.reduce_sum(apply_moment(bias, moment), axis=0)
    return out


def moments(
    layer: Any, calls: Sequence[Call], grads: Sequence[Sequence[tf.Tensor]], moment: str
) -> list[tf.Tensor]:
    """``sum_i f(per-example gradient)`` of every weight of the layer (each direction's kernel,
    recurrent kernel and bias), from the calls' inputs, saved per-step tensors and the
    gradients of their input projections."""
    found: dict[int, tf.Tensor] = {}
    start = 0
    for d, rnn in enumerate(_directions(layer)):
        count = _saved_count(rnn)
        saved = [c.extra[start : start + count] for c in calls]
        found.update(_direction_moments(
            rnn, [c.a for c in calls], [g[d] for g in grads], saved, calls, moment,
        ))
        start += count
    return [found[id(w)] for w in layer.trainable_weights]

