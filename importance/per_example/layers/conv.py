"""Per-example gradient moments of Conv1D, Conv2D and Conv3D layers.

Example ``i``'s kernel gradient is ``sum over output positions of patch_i (x) g_i``; it does not
factorise like a Dense layer's, so it is formed per example, a chunk of the batch at a time:

* several input channels, by the cost model :func:`kernel_way`: the patches (im2col) in one
  batched matmul; one kernel offset at a time; or one grouped filter gradient per chunk (the
  batch folded into the groups of ``Conv2DBackpropFilter``), when this TensorFlow build supports
  grouped kernels and the graph is not compiled by XLA;
* one input channel: all kernel offsets in one matmul of the stacked shifted windows;
* otherwise (dilation, XLA, builds without grouped kernels): one kernel offset at a time, so no
  patch tensor is formed.

Conv3D takes one grouped 2-D filter gradient per depth offset; it needs grouped kernels and no
dilation, and not XLA (its rule's ``under_xla``). ``channels_first`` layers are transposed to
channels_last for the kernel moments. A layer called several times takes the per-layer vmap.

Internal surface (tests set these with ``monkeypatch``): :data:`GROUPED` (whether grouped filter
gradients work here; None until probed, False forces the per-offset loop), :data:`PATCHES`
(False: never patches), the cost model's :data:`PATCH_POSITIONS` and :data:`PATCH_MIN_CHANNELS`,
and :func:`grouped_kernel_moment`, looked up at each call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from importance.per_example.layers.base import Call, plain_float32
from importance.per_example.layers.windows import same_padding, strided_windows
from importance.per_example.moments import (
    apply_moment,
    chunked_sum,
    fused_applies,
    in_xla,
    outer_sum_elements,
    outer_sum_moment,
)

CLASSES = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)


def supported(layer: Any) -> bool:
    """A plain float32 Conv1D/2D/3D with ``groups=1`` running its class's own ``call`` and
    ``convolution_op``; a Conv3D also ``channels_last``, without dilation, and only where grouped
    filter gradients work."""
    if not plain_float32(layer):
        return False
    for cls in CLASSES:
        if isinstance(layer, cls) and (
            type(layer).call is cls.call
            and type(layer).convolution_op is cls.convolution_op
            and layer.groups == 1
            and (
                cls is not keras.layers.Conv3D
                or (layer.data_format == "channels_last" and _conv3d_usable(layer))
            )
        ):
            return True
    return False


def under_xla(layer: Any) -> bool:
    """Conv1D/2D also under XLA (per kernel offset); Conv3D not (its grouped filter gradients
    need a static group count)."""
    return not isinstance(layer, keras.layers.Conv3D)


def forward(layer: Any, a: tf.Tensor, watch: Any = None) -> list[tf.Tensor]:
    """``[z]``, the pre-activation, with the bias added as the layer adds it."""
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
        return [z]
    # As the layer does (keras.ops.add, whose bias-add shortcut the bias gradient must follow).
    if channels_last:
        shape = (1,) * (layer.rank + 1) + (layer.filters,)
    else:
        shape = (1, layer.filters) + (1,) * layer.rank
    return [keras.ops.add(z, keras.ops.reshape(layer.bias, shape))]


def moments(
    layer: Any, calls: Sequence[Call], grads: Sequence[Sequence[tf.Tensor]], moment: str
) -> list[tf.Tensor]:
    """``sum_i f(per-example gradient)`` of the kernel (and bias) of one call (a shared layer
    takes the per-layer vmap: ``shared_calls="vmap"``)."""
    (call,), ((g,),) = calls, grads
    a = call.a
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


def conv_kernel_moment(layer: Any, a: tf.Tensor, g: tf.Tensor, moment: str) -> tf.Tensor:
    """sum_i f(dL_i/dK) of a Conv1D/Conv2D kernel, one kernel offset at a time.

    For kernel offset (p, q) the per-example gradient is S_i^T g_i, where S_i is the input
    window shifted by (p, q) (strided like the convolution), so no patch tensor is formed.
    """
    sizes, strides, rates = list(layer.kernel_size), list(layer.strides), list(layer.dilation_rate)
    padding = layer.padding
    if layer.rank == 1:
        a, g = a[:, None], g[:, None]
        sizes, strides, rates = [1] + sizes, [1] + strides, [1] + rates
    pads = [[0, 0]]
    for axis in (1, 2):
        k_eff = (sizes[axis - 1] - 1) * rates[axis - 1] + 1
        n_in, n_out, s = int(a.shape[axis]), int(g.shape[axis]), strides[axis - 1]
        if padding == "causal":  # Conv1D only: the layer pads (k - 1) * dilation on the left
            pads.append([k_eff - 1, 0])
        elif padding == "same":
            pads.append(same_padding(n_in, n_out, sizes[axis - 1], s, rates[axis - 1]))
        else:
            pads.append([0, 0])
    out_h, out_w = int(g.shape[1]), int(g.shape[2])
    channels, filters = int(a.shape[-1]), int(g.shape[-1])
    if out_h * out_w == 1:  # one output position: the moments factorise as a Dense layer's
        return single_position_moment(layer, tf.pad(a, pads + [[0, 0]]), g, sizes, rates, moment)
    way = kernel_way(sizes, out_h * out_w, channels, filters)
    if channels > 1 and not in_xla() and PATCHES and way == "patches":
        padded = tf.pad(a, pads + [[0, 0]]) if any(p != [0, 0] for p in pads[1:]) else a
        return patch_kernel_moment(layer, padded, g, sizes, strides, rates, moment)
    if (channels > 1 and way != "offsets" and rates == [1, 1] and not in_xla()
            and grouped_filter_grad_works()):
        if padding == "same":  # TensorFlow's SAME pads as computed above: no padded copy
            return grouped_kernel_moment(layer, a, g, sizes, strides, "SAME", moment)
        padded = tf.pad(a, pads + [[0, 0]])
        return grouped_kernel_moment(layer, padded, g, sizes, strides, "VALID", moment)
    a = tf.pad(a, pads + [[0, 0]])

    def windows(ac: tf.Tensor) -> list[tf.Tensor]:
        """The input window of every kernel offset, (n, out_h * out_w, channels) each."""
        last = ((sizes[0] - 1) * rates[0], (sizes[1] - 1) * rates[1])
        window = strided_windows(ac, (out_h, out_w), strides, last)
        shape = [tf.shape(ac)[0], out_h * out_w, channels]
        return [
            tf.reshape(window(p * rates[0], q * rates[1]), shape)
            for p in range(sizes[0])
            for q in range(sizes[1])
        ]

    def block(chunk: list[tf.Tensor]) -> tf.Tensor:
        ac, gc = chunk
        gc = tf.reshape(gc, [tf.shape(gc)[0], out_h * out_w, filters])
        if channels == 1:  # one input channel: all offsets in one matmul, (n, K, P) x (n, P, F)
            stacked = tf.stack([w[..., 0] for w in windows(ac)], axis=1)
            return tf.reduce_sum(apply_moment(tf.matmul(stacked, gc), moment), axis=0)[:, None, :]
        offsets = [
            tf.reduce_sum(apply_moment(tf.matmul(w, gc, transpose_a=True), moment), axis=0)
            for w in windows(ac)
        ]
        return tf.stack(offsets)

    if channels == 1:  # the stacked windows and the per-example kernels (gc's reshape is a view)
        per_example = (out_h * out_w + filters) * sizes[0] * sizes[1]
    else:  # a window and a reshaped copy of the output gradients per offset, and the kernels
        per_example = (out_h * out_w * (channels + filters)
                       + sizes[0] * sizes[1] * channels * filters)
    held = int(np.prod(a.shape[1:])) + out_h * out_w * filters
    shape = [sizes[0] * sizes[1], channels, filters]
    kernel = chunked_sum(block, [a, g], per_example, shape, held=held, balanced=True)
    return tf.reshape(kernel, layer.kernel.shape)


# Whether the patch (im2col) formulation may be chosen (tests set False to force the others).
PATCHES = True
# Output positions up to which a kernel larger than 1x1 does not take the grouped filter
# gradient (measured, 2-core CPU, batch 32: 8x8 outputs 2.4x vs 5.7x the plain filter gradient,
# 4x4 3.7x vs 8.3x, 16x16 2.2x vs 1.4x; 1x1 kernels always take patches: 1.1-1.2x vs 2-5x).
PATCH_POSITIONS = 64
# Above the fused loop's positions and up to PATCH_POSITIONS, the patches only for layers at
# least this wide in input and output channels; narrower ones take one kernel offset at a time.
# Measured (``profile_families --conv-ways 32``, idle 2-core CPU, 3x3 kernels at 5x5-8x8 outputs,
# CPU over the plain filter gradient, patches / offsets / grouped; docs/per_example.md has the
# table): 128 to 128 channels 4.1-4.4x / 2.6-3.3x / 3.9-5.2x, 128 to 32 5.0x / 2.2x / 2.5x,
# 64 to 192 2.9x / 2.4x / 3.6x, 256 to 64 5.2x / 2.8x / 3.6x; but 512 to 512 1.9x / 2.4x / 3.2x,
# 256 to 256 2.5-3.2x / 2.7-5.4x / 2.3-5.7x, 192 to 192 2.9x / 3.0x / 3.2x.
PATCH_MIN_CHANNELS = 192


def kernel_way(sizes: list[int], positions: int, channels: int, filters: int) -> str:
    """The cost model's way to a Conv2D kernel's moments with several input channels:
    ``"patches"`` (1x1 kernels, a Dense layer over pixels; outputs the fused loop takes; wide
    layers up to :data:`PATCH_POSITIONS` positions), ``"offsets"`` (narrower layers up to
    :data:`PATCH_POSITIONS`) or ``"grouped"`` (more positions). Where a way cannot run (XLA,
    dilation, no grouped kernels, :data:`PATCHES` off), the next is taken: patches, grouped,
    offsets."""
    if sizes == [1, 1] or fused_applies(positions):
        return "patches"
    if positions > PATCH_POSITIONS:
        return "grouped"
    return "patches" if min(channels, filters) >= PATCH_MIN_CHANNELS else "offsets"


def single_position_moment(
    layer: Any, a: tf.Tensor, g: tf.Tensor, sizes: list[int], rates: list[int], moment: str
) -> tf.Tensor:
    """A convolution with one output position per example is a Dense layer on that position's
    patch ``p_i``: example ``i``'s kernel gradient is ``p_i g_i^T``, so
    ``sum_i f(p_i g_i^T) = f(p)^T f(g)`` for f = square or abs (as for Dense; no per-example
    tensor). ``a`` is padded as the convolution pads it."""
    windows = [
        a[:, p * rates[0], q * rates[1], :] for p in range(sizes[0]) for q in range(sizes[1])
    ]
    patch = tf.concat(windows, axis=-1)  # (batch, kh * kw * channels), the kernel's order
    flat_g = tf.reshape(g, [tf.shape(g)[0], g.shape[-1]])
    kernel = tf.matmul(apply_moment(patch, moment), apply_moment(flat_g, moment), transpose_a=True)
    return tf.reshape(kernel, layer.kernel.shape)


def patch_kernel_moment(
    layer: Any,
    a: tf.Tensor,
    g: tf.Tensor,
    sizes: list[int],
    strides: list[int],
    rates: list[int],
    moment: str,
) -> tf.Tensor:
    """Per-example kernel gradients as one batched matmul of each example's patches (im2col)
    with its output gradients: ``P_i^T G_i`` (patches ``P_i``: positions x kh*kw*C), a chunk of
    the batch at a time (the square moment over few positions from pairs of positions:
    ``moments.outer_sum_moment``). A 1x1 kernel needs no patches (the strided input itself: a Dense layer
    over pixels). ``a`` is padded already (VALID)."""
    out_h, out_w, filters = int(g.shape[1]), int(g.shape[2]), int(g.shape[3])
    channels = int(a.shape[3])
    positions, depth = out_h * out_w, sizes[0] * sizes[1] * channels

    def block(chunk: list[tf.Tensor]) -> tf.Tensor:
        ac, gc = chunk
        n = tf.shape(ac)[0]
        if sizes == [1, 1]:
            patches = strided_windows(ac, (out_h, out_w), strides, (0, 0))(0, 0)
        else:
            patches = tf.image.extract_patches(
                ac, [1, *sizes, 1], [1, *strides, 1], [1, *rates, 1], "VALID"
            )
        patches = tf.reshape(patches, [n, positions, depth])
        grads = tf.reshape(gc, [n, positions, filters])
        return outer_sum_moment(patches, grads, moment)

    per_example = positions * (depth + filters) + outer_sum_elements(
        positions, depth, filters, moment
    )
    held = int(np.prod(a.shape[1:])) + positions * filters
    kernel = chunked_sum(block, [a, g], per_example, [depth, filters], held=held, balanced=True)
    return tf.reshape(kernel, layer.kernel.shape)


def grouped_kernel_moment(
    layer: Any,
    a: tf.Tensor,
    g: tf.Tensor,
    sizes: list[int],
    strides: list[int],
    padding: str,
    moment: str,
) -> tf.Tensor:
    """Per-example kernel gradients as one grouped filter gradient (batch folded into groups).

    The inputs of a chunk of ``n`` examples become one image with ``n * C`` channels and the
    output gradients one with ``n * F`` channels; the filter gradient of the grouped convolution
    (``n`` groups) is then the ``n`` per-example kernel gradients side
    by side.
    """
    height, width, channels = int(a.shape[1]), int(a.shape[2]), int(a.shape[3])
    out_h, out_w, filters = int(g.shape[1]), int(g.shape[2]), int(g.shape[3])

    def block(chunk: list[tf.Tensor]) -> tf.Tensor:
        ac, gc = chunk
        n = tf.shape(ac)[0]
        image = tf.transpose(tf.reshape(ac, [n, height * width, channels]), [1, 0, 2])
        grads = tf.transpose(tf.reshape(gc, [n, out_h * out_w, filters]), [1, 0, 2])
        per_example = tf.raw_ops.Conv2DBackpropFilter(
            input=tf.reshape(image, [1, height, width, n * channels]),
            filter_sizes=tf.stack([sizes[0], sizes[1], channels, n * filters]),
            out_backprop=tf.reshape(grads, [1, out_h, out_w, n * filters]),
            strides=[1, *strides, 1],
            padding=padding,
        )
        per_example = tf.reshape(per_example, [sizes[0] * sizes[1] * channels, n, filters])
        return tf.reduce_sum(apply_moment(per_example, moment), axis=1)

    held = height * width * channels + out_h * out_w * filters
    per_example = held + 2 * sizes[0] * sizes[1] * channels * filters
    shape = [sizes[0] * sizes[1] * channels, filters]
    kernel = chunked_sum(block, [a, g], per_example, shape, held=held, balanced=True)
    return tf.reshape(kernel, layer.kernel.shape)


# Whether grouped filter gradients work on this TensorFlow build: None until probed (once, by
# grouped_filter_grad_works); tests set it to False to force the per-offset loop.
GROUPED: bool | None = None


def grouped_filter_grad_works() -> bool:
    """Whether this TensorFlow build computes grouped filter gradients (probed once, eagerly).

    oneDNN (TensorFlow's default CPU kernels on x86) and cuDNN do; TensorFlow's own CPU kernel
    (``TF_ENABLE_ONEDNN_OPTS=0``) refuses grouped inputs, and the per-offset path is used.
    """
    global GROUPED
    if GROUPED is None:
        with tf.init_scope():
            x = np.arange(2 * 4 * 4 * 2, dtype=np.float32).reshape(1, 4, 4, 4) / 10.0
            dy = np.ones((1, 2, 2, 6), np.float32)
            try:
                got = tf.raw_ops.Conv2DBackpropFilter(
                    input=x, filter_sizes=[3, 3, 2, 6], out_backprop=dy, strides=[1, 1, 1, 1],
                    padding="VALID",
                ).numpy()
            except (tf.errors.OpError, ValueError):
                GROUPED = False
            else:
                # group 0 (channels 0-1, filters 0-2) sees input channels 0-1 only
                group0 = [x[0, p : p + 2, q : q + 2, :2] for p in range(3) for q in range(3)]
                expected = np.stack([w.sum((0, 1)) for w in group0])
                GROUPED = bool(np.allclose(got[..., 0].reshape(9, 2), expected, rtol=1e-5))
    return GROUPED


def _conv3d_usable(layer: Any) -> bool:
    """Whether :func:`conv3d_kernel_moment` applies: grouped filter gradients available, no
    dilation (else the engine vectorises the layer on its own; XLA: the rule's ``under_xla``)."""
    return list(layer.dilation_rate) == [1, 1, 1] and grouped_filter_grad_works()


def conv3d_kernel_moment(layer: Any, a: tf.Tensor, g: tf.Tensor, moment: str) -> tf.Tensor:
    """sum_i f(dL_i/dK) of a channels_last Conv3D kernel, one depth offset at a time.

    For depth offset ``p`` the per-example gradient is a 2-D filter gradient summed over the
    output depth positions: the depth positions become the batch of ``Conv2DBackpropFilter``
    (which sums over its batch) and the examples are folded into the groups, as in
    :func:`grouped_kernel_moment`. A chunk's inputs are transposed once, depth first, so each
    offset's window is a slice of the leading axis; the offsets run one after another.
    """
    (kd, kh, kw), (sd, sh, sw) = layer.kernel_size, layer.strides
    depth, height, width, channels = (int(d) for d in a.shape[1:])
    out_d, out_h, out_w, filters = (int(d) for d in g.shape[1:])
    if layer.padding == "same":
        pads = same_padding(depth, out_d, kd, sd)
        a = tf.pad(a, [[0, 0], pads, [0, 0], [0, 0], [0, 0]])
        depth += sum(pads)

    def block(chunk: list[tf.Tensor]) -> tf.Tensor:
        ac, gc = chunk
        n = tf.shape(ac)[0]
        grads = tf.reshape(tf.transpose(gc, [1, 2, 3, 0, 4]), [out_d, out_h, out_w, n * filters])
        volume = tf.reshape(tf.transpose(ac, [1, 2, 3, 0, 4]), [depth, height, width, n * channels])
        offsets: list[tf.Tensor] = []
        for p in range(kd):
            with tf.control_dependencies(offsets[-1:]):
                per_example = tf.raw_ops.Conv2DBackpropFilter(
                    input=volume[p : p + (out_d - 1) * sd + 1 : sd],
                    filter_sizes=tf.stack([kh, kw, channels, n * filters]),
                    out_backprop=grads,
                    strides=[1, sh, sw, 1],
                    padding=layer.padding.upper(),
                )
                per_example = tf.reshape(per_example, [kh * kw * channels, n, filters])
                offsets.append(tf.reduce_sum(apply_moment(per_example, moment), axis=1))
        return tf.stack(offsets)

    held = depth * height * width * channels + out_d * out_h * out_w * filters
    per_example = held + out_d * height * width * channels + 2 * kh * kw * channels * filters
    kernel = chunked_sum(block, [a, g], per_example, [kd, kh * kw * channels, filters], held=held,
                         balanced=True)
    return tf.reshape(kernel, layer.kernel.shape)
