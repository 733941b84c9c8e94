"""Per-example gradient moments of DepthwiseConv2D, SeparableConv2D and a Conv2D grouped by
its input channels (channels_last).

A depthwise convolution convolves each input channel with its own ``depth_multiplier``
filters. Example ``i``'s depthwise kernel gradient is therefore the filter gradient of a
depthwise convolution whose channels are example ``i``'s: folding the batch into the channels
(``n * C`` input channels, ``n * C * M`` output-gradient channels), one
``DepthwiseConv2dNativeBackpropFilter`` gives all ``n`` per-example kernels side by side. The
op exists on every TensorFlow CPU/GPU build (no grouped-convolution support needed).

A separable convolution is a depthwise convolution ``u = depthwise(a)`` followed by a 1x1
(pointwise) convolution ``z = u K_p + b``. The engine computes ``u`` itself and watches it, so
the one backward pass gives ``d objective / d u`` too: the depthwise kernel's moments come from
``(a, g_u)`` as above, the pointwise kernel's from ``(u, g_z)`` as a Dense layer over positions
(``sum_positions u_i^T g_i`` per example, chunked).

A ``Conv2D`` with ``groups`` equal to its input channels (ConvNeXt's 7x7 "depthwise" layers,
``Conv2D(C, 7, groups=C)``; Liu et al., "A ConvNet for the 2020s", CVPR 2022) is the same
convolution: group ``c`` holds input channel ``c`` and output channels ``c * M .. c * M + M - 1``
(``M = filters / groups``), which is a depthwise convolution's channel order with
``depth_multiplier = M``. Its kernel ``(kh, kw, 1, C * M)`` is the depthwise kernel
``(kh, kw, C, M)`` under a reshape (same element order), so the moments are computed on that view
and reshaped back; the forward pass stays the layer's own grouped convolution. Other group
counts (several input channels per group) take the per-layer vmap.

Three forms, chosen per layer by :func:`form` (a cost model): the folded filter gradient above
(:func:`folded_kernel_moment`), elementwise products summed over space, one kernel offset at a
time (:func:`elementwise_kernel_moment`), and one depthwise forward convolution of the folded
inputs with the output gradients as its filter (:func:`forward_kernel_moment`); all are public
so that ``benchmarks.per_example.probes.depthwise_layer_costs`` can time each on its own.

Not under XLA (it refuses a batch-sized channel count when the batch size is not static): the
rule's ``under_xla``. A layer called several times takes the per-layer vmap of ``z`` only
(``g_u`` already holds the path through ``z``): the rule's ``shared_calls``.

Reference: Dangel, Kunstner & Hennig, "BackPACK: Packing more into backprop", ICLR 2020;
Chollet, "Xception: Deep learning with depthwise separable convolutions", CVPR 2017.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from importance.per_example.layers.base import Call, plain_float32
from importance.per_example.layers.windows import same_padding, strided_windows
from importance.per_example.moments import apply_moment, chunked_outer_sum, chunked_sum


def grouped_by_channel(layer: Any) -> bool:
    """Whether ``layer`` is a built ``Conv2D`` (its class's own ``call`` and ``convolution_op``)
    with ``groups > 1`` equal to its input channels: a depthwise convolution written as Conv2D."""
    cls = keras.layers.Conv2D
    return (
        isinstance(layer, cls)
        and type(layer).call is cls.call
        and type(layer).convolution_op is cls.convolution_op
        and layer.built
        and layer.groups > 1
        and int(layer.kernel.shape[2]) == 1  # input channels / groups
        # as DepthwiseConv2D's own ops require (the folded filter gradient does)
        and layer.strides[0] == layer.strides[1]
    )


def supported(layer: Any) -> bool:
    """A plain float32, channels_last, 2-D depthwise or separable convolution (of exactly these
    classes), or a Conv2D grouped by its input channels (:func:`grouped_by_channel`)."""
    return (
        (
            type(layer) in (keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)
            or grouped_by_channel(layer)
        )
        and layer.data_format == "channels_last"
        and plain_float32(layer)
    )


def depthwise_shape(layer: Any) -> tuple[int, ...]:
    """The depthwise kernel's shape ``(kh, kw, C, M)`` (for a grouped Conv2D, of its view)."""
    if isinstance(layer, keras.layers.SeparableConv2D):
        return tuple(int(d) for d in layer.depthwise_kernel.shape)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return tuple(int(d) for d in layer.kernel.shape)
    kh, kw, _, filters = (int(d) for d in layer.kernel.shape)
    return (kh, kw, layer.groups, filters // layer.groups)


def _bias(layer: Any, z: tf.Tensor) -> tf.Tensor:
    if layer.bias is None:
        return z
    return keras.ops.add(z, keras.ops.reshape(layer.bias, (1, 1, 1, -1)))


def forward(layer: Any, a: tf.Tensor, watch: Any = None) -> list[tf.Tensor]:
    """The tensors the engine watches: ``[z]`` (depthwise, grouped Conv2D) or ``[u, z]``
    (separable), ``z`` before the activation; ``watch(u)`` is called before ``z`` is computed
    from ``u``."""
    if isinstance(layer, keras.layers.Conv2D):
        # the layer's own grouped convolution, as its call runs it
        return [_bias(layer, layer.convolution_op(a, layer.kernel))]
    plain = isinstance(layer, keras.layers.DepthwiseConv2D)
    depthwise = layer.kernel if plain else layer.depthwise_kernel
    u = keras.ops.depthwise_conv(
        a,
        depthwise,
        strides=layer.strides,
        padding=layer.padding,
        dilation_rate=layer.dilation_rate,
    )
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return [_bias(layer, u)]
    if watch is not None:
        watch(u)
    return [u, _bias(layer, keras.ops.conv(u, layer.pointwise_kernel, strides=1, padding="valid"))]


# Whether the elementwise formulation may be used (tests set False to force the folded filter
# gradient), and the output positions up to which it is (the cost model). Measured against the
# plain depthwise filter gradient (process CPU, batch 32, 3x3): outputs of 2x2 and 1x1
# elementwise 0.5x, folded 30-73x; 4x4 1.4x vs 1.3x; 8x8 6.3x vs 2.5x; 16x16 4.0x vs 0.8x.
ELEMENTWISE = True
ELEMENTWISE_POSITIONS = 16
# Kernels of at least LARGE_KERNEL taps (5x5, 7x7) take the elementwise form up to
# LARGE_KERNEL_POSITIONS outputs: there the folded filter gradient runs 7-18x the plain one.
# Measured per layer (``python -m benchmarks.per_example.profile_families <model> mas
# --depthwise-layers``: one batch of 32, process CPU ms summed over a model's layers of one
# shape, folded / elementwise / plain, 64x64 inputs, 2026-12-06, load 1.1-1.3): NASNetMobile
# 5x5 over 8x8 (18 layers) 250 / 51 / 37, 7x7 over 8x8 (4 layers) 88 / 17 / 10;
# EfficientNetB0 5x5 over 8x8 (stride 1) 108 / 16 / 6. Larger outputs keep the folded form
# (NASNetMobile 5x5 and 7x7 over 16x16, 8 layers: 69 / 98 / 33), and so do 3x3 kernels over 8x8
# (NASNetMobile, 26 layers: 35 / 36 / 26). Whole models (``compare_settings``, N=64, batch 32,
# CPU over the plain pass, this rule against LARGE_KERNEL_POSITIONS = 0): EfficientNetB0 mas
# 1.12x vs 1.39x, fisher_empirical 1.10x vs 1.38x; NASNetMobile mas 1.04x vs 1.77x,
# fisher_empirical 1.09x vs 1.51x.
LARGE_KERNEL = 25
LARGE_KERNEL_POSITIONS = 64
# Depth multiplier 1 over at most FORWARD_POSITIONS outputs: the forward form (one depthwise
# forward convolution of the folded inputs with the output gradients as its filter), faster
# than both other forms there and than the plain filter gradient itself. Measured (scratch,
# process CPU ms, batch 32, folded / elementwise / forward / plain, 2026-12-07): 5x5 over 8x8,
# 240 channels 104 / 17 / 4.7 / 6.0; 5x5 stride 2 over 8x8, 144 channels 19 / 18 / 6.1 / 6.2;
# 5x5 over 2x2, 1152 channels 496 / 3.9 / 3.3 / 7.2; 3x3 over 4x4, 480 channels 2.3 / 3.8 /
# 1.9 / 1.1. Not past 64 outputs (3x3 over 16x16, 144 channels: 5.4 / 11.9 / 6.3 / 2.5; over
# 64x64: 20 / 60 / 25 / 4.7) and not with a depth multiplier (3x3 over 16x16, multiplier 2:
# 4.5 / 8.2 / 83 / 2.1). Whole models (``compare_settings <model> <measure> '{"forward": {},
# "no forward": {"FORWARD_POSITIONS": 0}}' 64 32 5 64``, CPU over the plain pass, load
# 1.1-1.5): EfficientNetB0 mas 0.99x vs 1.07x; NASNetMobile mas 1.01x vs 1.15x; MobileNetV2 mas
# 1.19x vs 1.20x; ConvNeXtTiny fisher_empirical 1.07x vs 1.07x. FORWARD = False turns it off.
FORWARD = True
FORWARD_POSITIONS = 64


def elementwise_kernel_moment(
    layer: Any, kernel_shape: tuple[int, ...], a: tf.Tensor, g: tf.Tensor, moment: str
) -> tf.Tensor:
    """Per-example depthwise kernel gradients as elementwise products summed over space: for
    kernel offset ``(p, q)`` example ``i``'s gradient is ``sum_positions S_i * g_i`` with
    ``S_i`` its input window shifted by ``(p, q)`` (channel by channel), a (batch x channels)
    tensor per offset: the plain filter gradient's arithmetic, no batch-folded channels."""
    kh, kw, channels, multiplier = kernel_shape
    (sh, sw), (rh, rw) = layer.strides, layer.dilation_rate
    out_h, out_w = int(g.shape[1]), int(g.shape[2])
    pads = [[0, 0], [0, 0]]
    if layer.padding == "same":
        pads = [
            same_padding(int(a.shape[axis]), int(g.shape[axis]), k, s, r)
            for axis, k, s, r in ((1, kh, sh, rh), (2, kw, sw, rw))
        ]
    # The offsets whose window reads some input, per axis; the others read only the zero
    # padding (a 7x7 "same" kernel on a 2x2 output: 9 of 49 offsets, on 1x1: 1), so their
    # per-example gradients are exactly zero and are not computed.
    live = [
        {
            o for o in range(k)
            if any(before <= o * r + j * s < before + size for j in range(out))
        }
        for k, r, s, out, (before, _), size in (
            (kh, rh, sh, out_h, pads[0], int(a.shape[1])),
            (kw, rw, sw, out_w, pads[1], int(a.shape[2])),
        )
    ]
    if layer.padding == "same":
        a = tf.pad(a, [[0, 0], *pads, [0, 0]])

    def block(chunk: list[tf.Tensor]) -> tf.Tensor:
        ac, gc = chunk
        n = tf.shape(ac)[0]
        gc = tf.reshape(gc, [n, out_h, out_w, channels, multiplier])
        window = strided_windows(ac, (out_h, out_w), (sh, sw), ((kh - 1) * rh, (kw - 1) * rw))
        offsets: list[tf.Tensor] = []
        computed: list[tf.Tensor] = []
        zero = tf.zeros([channels] + ([multiplier] if multiplier > 1 else []))
        for p in range(kh):
            for q in range(kw):
                if p not in live[0] or q not in live[1]:
                    offsets.append(zero)
                    continue
                # one offset's product alive at a time (else the executor runs all kh * kw)
                with tf.control_dependencies(computed[-1:]):
                    if multiplier == 1:
                        product = window(p * rh, q * rw) * gc[..., 0]
                    else:
                        product = window(p * rh, q * rw)[..., None] * gc
                    per_example = tf.reduce_sum(product, axis=[1, 2])
                    computed.append(tf.reduce_sum(apply_moment(per_example, moment), axis=0))
                    offsets.append(computed[-1])
        return tf.stack(offsets)  # (kh * kw, channels[, multiplier])

    per_example = (
        int(np.prod(a.shape[1:])) + out_h * out_w * channels * multiplier
        + 2 * int(np.prod(kernel_shape))
    )
    shape = [kh * kw, channels] + ([multiplier] if multiplier > 1 else [])
    held = int(np.prod(a.shape[1:])) + out_h * out_w * channels * multiplier
    moments = chunked_sum(block, [a, g], per_example, shape, held=held)
    return tf.reshape(moments, kernel_shape)


def forward_applies(layer: Any, kernel_shape: tuple[int, ...]) -> bool:
    """Whether :func:`forward_kernel_moment` can compute this layer's moments: depth multiplier
    1 and no dilation."""
    return kernel_shape[3] == 1 and tuple(layer.dilation_rate) == (1, 1)


def form(layer: Any, kernel_shape: tuple[int, ...], positions: int) -> str:
    """The cost model: the form a layer's depthwise kernel moments take over ``positions``
    outputs: ``"forward"`` (:func:`forward_kernel_moment`), ``"elementwise"`` or ``"folded"``."""
    if tuple(layer.dilation_rate) != (1, 1):
        # The folded filter gradient is wrong with dilation on TF 2.21's CPU kernels (relative
        # error 1.7 against the loop, found by issue 21's test): never used there.
        return "elementwise"
    if not ELEMENTWISE:
        return "folded"
    if FORWARD and forward_applies(layer, kernel_shape) and positions <= FORWARD_POSITIONS:
        return "forward"
    taps = kernel_shape[0] * kernel_shape[1]
    if positions <= ELEMENTWISE_POSITIONS or (
        taps >= LARGE_KERNEL and positions <= LARGE_KERNEL_POSITIONS
    ):
        return "elementwise"
    return "folded"


def _depthwise_kernel_moment(
    layer: Any, kernel_shape: tuple[int, ...], a: tf.Tensor, g: tf.Tensor, moment: str
) -> tf.Tensor:
    """``sum_i f(per-example depthwise kernel gradient)``, of shape ``kernel_shape``
    ``(kh, kw, C, M)``, in the form :func:`form` chooses."""
    forms = {
        "forward": forward_kernel_moment,
        "elementwise": elementwise_kernel_moment,
        "folded": folded_kernel_moment,
    }
    chosen = form(layer, kernel_shape, int(g.shape[1]) * int(g.shape[2]))
    return forms[chosen](layer, kernel_shape, a, g, moment)


def forward_kernel_moment(
    layer: Any, kernel_shape: tuple[int, ...], a: tf.Tensor, g: tf.Tensor, moment: str
) -> tf.Tensor:
    """Per-example depthwise kernel gradients as one depthwise *forward* convolution, a chunk of
    the batch at a time: example ``i``'s gradient at kernel offset ``(p, q)``, channel ``c``, is
    ``sum_{y, x} a_i[y * s + p, x * s + q, c] g_i[y, x, c]``, a correlation of the (padded) input
    with the output gradient. With the chunk's examples folded into the channels (``n * C``),
    the input is the image and the output gradients are the depthwise filter, dilated by the
    stride; the ``kh x kw`` outputs are the ``n`` per-example kernels side by side. Depth
    multiplier 1 and no dilation only (:func:`form`); TensorFlow's depthwise forward kernel runs
    this faster than its own filter gradient at few output positions (see the cost model)."""
    kh, kw, channels, multiplier = kernel_shape
    if not forward_applies(layer, kernel_shape):
        raise ValueError(
            f"the forward form needs depth multiplier 1 and no dilation; layer {layer.name!r} "
            f"has multiplier {multiplier} and dilation {tuple(layer.dilation_rate)}"
        )
    (sh, sw), (out_h, out_w) = layer.strides, (int(g.shape[1]), int(g.shape[2]))
    height, width = (out_h - 1) * sh + kh, (out_w - 1) * sw + kw  # the rows the kernel reads
    if layer.padding == "same":
        pads = [same_padding(int(a.shape[1]), out_h, kh, sh),
                same_padding(int(a.shape[2]), out_w, kw, sw)]
        a = tf.pad(a, [[0, 0], *pads, [0, 0]])
    a = a[:, :height, :width]

    def block(chunk: list[tf.Tensor]) -> tf.Tensor:
        ac, gc = chunk
        n = tf.shape(ac)[0]
        image = tf.reshape(tf.transpose(ac, [1, 2, 0, 3]), [1, height, width, n * channels])
        kernel = tf.reshape(tf.transpose(gc, [1, 2, 0, 3]), [out_h, out_w, n * channels, 1])
        per_example = tf.nn.depthwise_conv2d(
            image, kernel, [1, 1, 1, 1], "VALID", dilations=[sh, sw]
        )
        per_example = tf.reshape(per_example, [kh, kw, n, channels])
        return tf.reduce_sum(apply_moment(per_example, moment), axis=2)[..., None]

    held = height * width * channels + out_h * out_w * channels
    per_example = 2 * held + 2 * int(np.prod(kernel_shape))  # the folded copies, the kernels
    return chunked_sum(block, [a, g], per_example, kernel_shape, held=held)


def folded_kernel_moment(
    layer: Any, kernel_shape: tuple[int, ...], a: tf.Tensor, g: tf.Tensor, moment: str
) -> tf.Tensor:
    """Per-example depthwise kernel gradients as one filter gradient with the batch folded into
    the channels (``DepthwiseConv2dNativeBackpropFilter`` on a chunk's ``n * C`` channels), a
    chunk of the batch at a time. Not with dilation (wrong on TF 2.21's CPU kernels)."""
    kh, kw, channels, multiplier = kernel_shape
    height, width = int(a.shape[1]), int(a.shape[2])
    out_h, out_w = int(g.shape[1]), int(g.shape[2])

    def block(chunk: list[tf.Tensor]) -> tf.Tensor:
        ac, gc = chunk
        n = tf.shape(ac)[0]
        image = tf.reshape(tf.transpose(ac, [1, 2, 0, 3]), [1, height, width, n * channels])
        grads = tf.reshape(
            tf.transpose(gc, [1, 2, 0, 3]), [1, out_h, out_w, n * channels * multiplier]
        )
        per_example = tf.raw_ops.DepthwiseConv2dNativeBackpropFilter(
            input=image,
            filter_sizes=tf.stack([kh, kw, n * channels, multiplier]),
            out_backprop=grads,
            strides=[1, *layer.strides, 1],
            padding=layer.padding.upper(),
            dilations=[1, *layer.dilation_rate, 1],
        )
        per_example = tf.reshape(per_example, [kh, kw, n, channels, multiplier])
        return tf.reduce_sum(apply_moment(per_example, moment), axis=2)

    held = height * width * channels + out_h * out_w * channels * multiplier
    per_example = 2 * held + 2 * int(np.prod(kernel_shape))  # the folded copies, the kernels
    return chunked_sum(block, [a, g], per_example, kernel_shape, held=held)


def moments(
    layer: Any, calls: Sequence[Call], grads: Sequence[Sequence[tf.Tensor]], moment: str
) -> list[tf.Tensor]:
    """Moments of ``layer.trainable_weights`` (in that order) from one call's input ``a``, the
    watched tensors of :func:`forward` and their gradients (a shared layer takes the per-layer
    vmap: ``shared_calls="vmap"``)."""
    (call,), (watched_grads,) = calls, grads
    a, watched = call.a, call.z
    out = {}
    if not isinstance(layer, keras.layers.SeparableConv2D):  # depthwise, grouped Conv2D
        (g,) = watched_grads
        kernel = _depthwise_kernel_moment(layer, depthwise_shape(layer), a, g, moment)
        out[id(layer.kernel)] = tf.reshape(kernel, layer.kernel.shape)
    else:
        g_u, g = watched_grads
        out[id(layer.depthwise_kernel)] = _depthwise_kernel_moment(
            layer, depthwise_shape(layer), a, g_u, moment
        )
        positions = int(np.prod(g.shape[1:-1]))
        u, gz = (tf.reshape(t, [tf.shape(t)[0], positions, t.shape[-1]]) for t in (watched[0], g))
        pointwise = chunked_outer_sum(u, gz, moment, held=True)
        out[id(layer.pointwise_kernel)] = tf.reshape(pointwise, layer.pointwise_kernel.shape)
    if layer.bias is not None:
        bias_g = tf.reduce_sum(g, axis=[1, 2])
        out[id(layer.bias)] = tf.reduce_sum(apply_moment(bias_g, moment), axis=0)
    return [out[id(w)] for w in layer.trainable_weights]
