"""What every layer family of the per-example engine is made of: the rule, the captured call and
the shared support guard.

A family module (``dense.py``, ``conv.py``, ...) holds the three things the engine needs to know
about its layers: whether a layer is supported, how its forward pass is captured, and the
per-example moments of its weights. :mod:`importance.per_example.layers` lists them as
:class:`LayerRule` rows; the documented exceptions (XLA, a layer called several times, the
Dense shortcut over objectives) are fields of a row, not branches of the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import tensorflow as tf

from importance.per_example.moments import in_xla


def plain_float32(layer: Any, *, float32: bool = True) -> bool:
    """The guard every closed form shares: a trainable layer without LoRA or quantisation,
    computing in float32 (unless ``float32=False``: the family casts to float32 itself).

    Whether the layer runs its class's own ``call`` stays with the family (each names its
    classes).
    """
    return (
        not getattr(layer, "lora_enabled", False)
        and not getattr(layer, "quantization_mode", None)
        and (not float32 or getattr(layer, "compute_dtype", None) == "float32")
        and bool(getattr(layer, "trainable", False))
    )


def kernel_and_bias(layer: Any) -> list[Any]:
    """``[kernel, bias]`` (or ``[kernel]`` without bias): the weights of a Dense or Conv layer."""
    bias = getattr(layer, "bias", None)
    return [layer.kernel] + ([bias] if bias is not None else [])


def trainable_weights(layer: Any) -> list[Any]:
    """``layer.trainable_weights``, in that order: the weights of most families."""
    return list(layer.trainable_weights)


class Call:
    """One call of a layer with trainable weights, as the engine's forward pass ran it.

    Attributes:
        layer: The layer.
        rule: Its family's :class:`LayerRule`.
        a: The call's first input tensor (None when it has none).
        z: The watched tensors, whose gradients the backward pass returns: the pre-activation
            (and what the family's ``forward`` watches before it) for families with a
            ``forward``, else the layer's floating outputs.
        inputs: The call's tensors that carry the batch axis.
        forward: Recomputes ``z`` from such tensors (for the per-layer vectorised path).
        batch_free: Per watched tensor, whether it lacks the batch axis (set by the engine; its
            gradients then arrive per example, with a leading batch axis).
        batched: False for a call whose inputs or outputs lacked the batch axis (the engine
            broadcast its inputs along one).
        extra: Tensors the family's ``forward`` kept for its ``moments`` besides ``a`` and the
            gradients (rules with ``forward_output``: a recurrent layer's per-step states).
    """

    def __init__(
        self,
        layer: Any,
        rule: LayerRule,
        a: Any,
        z: list[tf.Tensor],
        *,
        inputs: list[tf.Tensor],
        forward: Callable[[list[tf.Tensor]], list[tf.Tensor]],
        extra: Sequence[tf.Tensor] = (),
    ) -> None:
        self.layer, self.rule, self.a, self.z = layer, rule, a, z
        self.inputs, self.forward = inputs, forward
        self.extra = list(extra)
        # Set by the engine: which watched tensors lack the batch axis (their gradients are then
        # per-example, batch x shape), and whether the call was batched as it ran.
        self.batch_free = [False] * len(z)
        self.batched = True

    @property
    def kind(self) -> str:
        """The family's name (``rule.kind``)."""
        return self.rule.kind

    def variables(self) -> list[Any]:
        """The weights this call's moments are for, in the order ``rule.moments`` returns."""
        return self.rule.variables(self.layer)


# moments(layer, calls, grads, moment): grads[c] holds the gradients of the summed objective
# w.r.t. calls[c].z; returns one tensor per rule.variables(layer), summed over the examples.
Moments = Callable[[Any, Sequence[Call], Sequence[Sequence[tf.Tensor]], str], list[tf.Tensor]]


def _never(call: Call) -> bool:
    return False


@dataclass(frozen=True)
class LayerRule:
    """How the engine handles one layer family (one row of
    :data:`importance.per_example.layers.RULES`).

    Attributes:
        kind: The family's name, as :func:`importance.per_example.layer_paths` reports it.
        supported: Whether a layer has this closed form (one call with one input).
        moments: Per-example moments of the layer's weights from its calls and the gradients of
            their watched tensors (see ``Moments``).
        forward: ``forward(layer, a, watch=None)`` computes the watched tensors from the call's
            one input, the last one the pre-activation (``watch`` is called on earlier ones
            before later ones are computed from them); the engine applies ``layer.activation``.
            None: the layer runs its own ``call`` (inference mode) and its floating outputs are
            watched.
        forward_output: Whether ``forward`` returns ``(watched, output, extra)``: the layer's
            output is then not its activation of the last watched tensor (a recurrent layer's
            output comes out of its loop), and ``extra`` (tensors ``moments`` needs) is kept on
            the :class:`Call`.
        variables: The weights ``moments`` returns, in its order.
        under_xla: Whether the closed form also holds in a graph compiled by XLA
            (``jit_compile=True``); a bool or a function of the layer. Where it does not, the
            layer takes the per-layer vmap there.
        shared_calls: ``"sum"``: ``moments`` sums a shared layer's per-example gradients over
            its calls itself. ``"vmap"``: a layer called more than once takes the per-layer vmap
            of its output (the last watched tensor of each call).
        linear_in_fg: Whether a single call's moments are linear in f(g) (f the moment, g the
            output gradient): the engine then sums f(g) over several objectives first and calls
            ``moments_of_fg`` once (the exact Fisher's classes).
        moments_of_fg: ``moments_of_fg(call, fg, moment)``, for calls where ``linear_in_fg``.
        unvectorisable: Only for the per-layer vmap rule: the sub-layers it must not vectorise
            (attention crashes ``tf.vectorized_map``); a layer holding some takes the
            whole-batch Jacobian instead.
    """

    kind: str
    supported: Callable[[Any], bool]
    moments: Moments
    forward: Callable[..., Any] | None = None
    forward_output: bool = False
    variables: Callable[[Any], list[Any]] = trainable_weights
    under_xla: bool | Callable[[Any], bool] = True
    shared_calls: str = "sum"
    linear_in_fg: Callable[[Call], bool] = _never
    moments_of_fg: Callable[[Call, tf.Tensor, str], list[tf.Tensor]] | None = None
    unvectorisable: Callable[[Any], list[Any]] | None = None

    def __post_init__(self) -> None:
        if self.shared_calls not in ("sum", "vmap"):
            raise ValueError(
                f"shared_calls must be 'sum' or 'vmap'. Received: {self.shared_calls!r}"
            )

    def applies(self, layer: Any) -> bool:
        """Whether ``layer`` takes this closed form here (``supported``, and XLA permitting)."""
        if not self.supported(layer):
            return False
        under_xla = self.under_xla(layer) if callable(self.under_xla) else self.under_xla
        return under_xla or not in_xla()
