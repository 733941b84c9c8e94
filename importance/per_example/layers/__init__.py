"""The per-example engine's layer families: one module each, and the table that names them.

Each family module holds its layers' support test (``supported``), forward capture
(``forward``) and moment formula (``moments``) together; :data:`RULES` lists them in the order
:func:`importance.per_example.paths.closed_form` tries them (BackPACK keeps a layer ->
extension table the same way). The documented exceptions are fields of a row: ``under_xla``
(Embedding, depthwise, Conv3D take the per-layer vmap under XLA), ``shared_calls`` (Conv and
depthwise layers called several times take the per-layer vmap), ``linear_in_fg`` (2-D Dense
sums f(g) over objectives first), ``forward_output`` (recurrent layers: the output comes out of
the family's own loop) and the fallback's ``unvectorisable`` (attention takes the
whole-batch Jacobian). Every layer with trainable weights that no row supports takes
:data:`FALLBACK`, the per-layer vmap.

Adding a layer family: one module with ``supported``, ``moments`` (and ``forward`` when the
engine computes the pre-activation itself) and one line in :data:`RULES`.
"""

from __future__ import annotations

from importance.per_example.layers import (
    conv,
    dense,
    depthwise,
    einsum,
    embedding,
    norm,
    recurrent,
    scoped_vmap,
)
from importance.per_example.layers.base import (
    Call,
    LayerRule,
    kernel_and_bias,
    plain_float32,
)

__all__ = ["FALLBACK", "RULES", "Call", "LayerRule", "plain_float32", "rule"]

# The closed forms, in the order they are tried (the first whose ``applies`` holds wins).
RULES: tuple[LayerRule, ...] = (
    LayerRule("einsum", einsum.supported, einsum.moments, forward=einsum.forward),
    LayerRule("norm", norm.supported, norm.moments),
    LayerRule("embedding", embedding.supported, embedding.moments, under_xla=False),
    LayerRule(
        "depthwise", depthwise.supported, depthwise.moments, forward=depthwise.forward,
        under_xla=False, shared_calls="vmap",
    ),
    LayerRule(
        "dense", dense.supported, dense.moments, forward=dense.forward, variables=kernel_and_bias,
        linear_in_fg=dense.linear_in_fg, moments_of_fg=dense.moments_of_fg,
    ),
    LayerRule(
        "conv", conv.supported, conv.moments, forward=conv.forward, variables=kernel_and_bias,
        under_xla=conv.under_xla, shared_calls="vmap",
    ),
    LayerRule(
        "recurrent", recurrent.supported, recurrent.moments, forward=recurrent.forward,
        forward_output=True,
    ),
)

# Any other layer with trainable weights: vectorised over examples on its own.
FALLBACK = LayerRule(
    "vmap", scoped_vmap.supported, scoped_vmap.layer_moments,
    unvectorisable=scoped_vmap.attention_layers,
)

_BY_KIND = {r.kind: r for r in (*RULES, FALLBACK)}


def rule(kind: str) -> LayerRule | None:
    """The rule named ``kind`` (a closed form or ``vmap``), or None for the structural paths
    (``walk``, ``intercept``, ``none``, ``jacobian``)."""
    return _BY_KIND.get(kind)
