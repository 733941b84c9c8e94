"""What each layer family costs the per-example engine on a real architecture (issue 21).

Usage (from the repository root)::

    python -m benchmarks.per_example.profile_families MobileNetV2 [measure] [n] [batch]
    python -m benchmarks.per_example.profile_families ResNet50 mas --conv-layers [batch]
    python -m benchmarks.per_example.profile_families NASNetMobile mas --depthwise-layers [batch]
    python -m benchmarks.per_example.profile_families --outer-sums [batch]
    python -m benchmarks.per_example.profile_families --conv-ways [batch]

The models are built at ``app_models.IMAGE`` pixels (64); ``--image N`` builds them at N.

Prints one JSON line: the plain compiled gradient pass's process CPU seconds over ``n``
examples, the engine's, their ratio, the path counts, the load average, and per family the CPU
seconds the engine saves when that family's moments are skipped
(:func:`benchmarks.per_example.test_per_example_applications.family_costs`).

With ``--conv-layers``: the model's Conv2D layers grouped by kernel size and output positions,
each group's layer and weight counts, and the process CPU milliseconds of one batch of their
kernel moments (``conv.conv_kernel_moment``, each layer on its own, random inputs and output
gradients of the layer's shapes) against their plain filter gradients
(``Conv2DBackpropFilter``), medians of 3 rounds: which convolutions carry the engine's cost.

With ``--depthwise-layers``: the model's depthwise kernels (DepthwiseConv2D, SeparableConv2D)
grouped by kernel size, strides and output positions, each group's process CPU milliseconds of
one batch in each form (folded filter gradient, elementwise products, and the forward
convolution where the layer allows it) against the plain depthwise filter gradient, and the
form the cost model takes
(:func:`benchmarks.per_example.probes.depthwise_layer_costs`).

With ``--conv-ways``: 3x3 Conv2D layers of the shapes of :data:`CONV_WAY_SHAPES`, each way of
their kernel moments forced (patches, one offset at a time, grouped filter gradient), as process
CPU time over the plain filter gradient, medians of 7 calls, and the way the cost model takes:
the measurements behind ``conv.PATCH_MIN_CHANNELS``.

With ``--outer-sums``: ``moments.outer_sum_moment`` on random tensors of the shapes of
:data:`OUTER_SUM_SHAPES` (positions, D, F), each way it can take (the fused loop, pairs of
positions, per-example products), abs and square, as process CPU time over the plain
batch-summed product of the same tensors, medians of 10 calls: the measurements behind
``moments.FUSED_POSITIONS``.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import tensorflow as tf

from benchmarks.per_example.app_models import IMAGE, MODELS, build
from benchmarks.per_example.compare_settings import applied
from benchmarks.per_example.probes import (
    conv_filter_grad,
    conv_layer_costs,
    depthwise_layer_costs,
    median_cpu_ms,
)
from benchmarks.per_example.test_per_example_applications import (
    MEASURES,
    family_costs,
    over_batches,
    path_counts,
    plain_step,
    timed,
)
from importance.checks import check_choice
from importance.per_example import moments

# (positions, D, F): late ResNet50 3x3 and 1x1 convolutions at 2x2 outputs, a DenseNet121 3x3
# growth convolution, layers at 3x3, 4x4, 6x6 and 8x8 outputs, and ResNet50's 1x1 expansion and
# a narrow layer at 4x4 (wide and narrow output gradients: the fused loop's orientation)
OUTER_SUM_SHAPES = [
    (4, 2304, 256), (4, 512, 2048), (4, 1152, 32), (9, 2304, 256), (16, 1152, 256),
    (16, 1152, 32), (36, 576, 64), (64, 1152, 128), (16, 256, 1024), (16, 64, 256),
]
WAYS = {  # settings of importance.per_example.moments for each way
    "fused": {"FUSED_POSITIONS": 64, "PAIR_POSITIONS": 0},
    "fused_as_laid_out": {"FUSED_POSITIONS": 64, "PAIR_POSITIONS": 0,
                          "FUSED_ROW_ELEMENTS": float("inf")},
    "pairs": {"FUSED_POSITIONS": 0, "PAIR_POSITIONS": 64},
    "per_example": {"FUSED_POSITIONS": 0, "PAIR_POSITIONS": 0},
}


def outer_sum_costs(batch: int, reps: int = 10) -> list[dict]:
    """Each way of ``outer_sum_moment`` over :data:`OUTER_SUM_SHAPES`: process CPU time over the
    plain batch-summed product (pairs only for the square moment)."""
    rng = np.random.default_rng(0)
    rows = []
    for positions, depth, filters in OUTER_SUM_SHAPES:
        a = tf.constant(rng.normal(size=(batch, positions, depth)), tf.float32)
        g = tf.constant(rng.normal(size=(batch, positions, filters)), tf.float32)
        plain = tf.function(lambda a, g: tf.matmul(
            tf.reshape(a, [-1, a.shape[-1]]), tf.reshape(g, [-1, g.shape[-1]]),
            transpose_a=True))
        plain_cpu = max(median_cpu_ms({"plain": plain}, (a, g), reps)["plain"] / 1e3, 1e-9)
        row = {"positions": positions, "D": depth, "F": filters,
               "plain_ms": round(1e3 * plain_cpu, 2)}
        for moment in ("abs", "square"):
            for way, values in WAYS.items():
                if way == "pairs" and moment == "abs":
                    continue
                with applied(values):  # traced (by its first call) under this way's settings
                    step = tf.function(lambda a, g, m=moment: moments.outer_sum_moment(a, g, m))
                    cpu = median_cpu_ms({way: step}, (a, g), reps)[way] / 1e3
                    row[f"{moment}_{way}"] = round(cpu / plain_cpu, 2)
        rows.append(row)
    return rows


# (output side, channels in, channels out, stride) of 3x3 convolutions: 5x5-8x8 outputs narrow
# and wide (ResNet50's 8x8 128 to 128, DenseNet121's 128 to 32), the fused loop's 4x4, and the
# larger outputs where the grouped filter gradient takes over (the CNN's 14x14 16 to 32).
CONV_WAY_SHAPES = [
    (4, 128, 128, 1), (5, 128, 128, 1), (6, 128, 128, 1), (8, 128, 128, 1), (8, 128, 128, 2),
    (8, 64, 64, 1), (8, 128, 32, 1), (6, 64, 192, 1), (8, 256, 64, 1), (6, 256, 256, 1),
    (8, 256, 256, 1), (8, 192, 192, 1), (7, 512, 512, 1), (12, 128, 128, 1), (16, 64, 64, 1),
    (14, 16, 32, 1),
]
CONV_WAYS = {  # settings of importance.per_example.layers.conv that force each way
    "patches": {"PATCHES": True, "PATCH_POSITIONS": 1 << 30, "PATCH_MIN_CHANNELS": 0},
    "offsets": {"PATCHES": False, "GROUPED": False},
    "grouped": {"PATCHES": False, "PATCH_POSITIONS": 0},
}


def conv_way_costs(batch: int, reps: int = 7) -> list[dict]:
    """Each way of a 3x3 Conv2D's kernel moments (``conv.conv_kernel_moment``, square) over
    :data:`CONV_WAY_SHAPES`, random inputs and output gradients: process CPU time over the plain
    filter gradient, and the way the cost model (``conv.kernel_way``) takes. ``grouped`` is left
    out where this TensorFlow build has no grouped filter gradient."""
    import keras

    from importance.per_example.layers import conv

    rng = np.random.default_rng(0)
    rows = []
    for side, channels, filters, stride in CONV_WAY_SHAPES:
        layer = keras.layers.Conv2D(filters, 3, strides=stride, padding="same")
        layer.build((None, side * stride, side * stride, channels))
        a = tf.constant(rng.normal(size=(batch, side * stride, side * stride, channels)),
                        tf.float32)
        g = tf.constant(rng.normal(size=(batch, side, side, filters)), tf.float32)
        plain = tf.function(lambda a, g, layer=layer: conv_filter_grad(layer, a, g))
        plain_cpu = max(median_cpu_ms({"plain": plain}, (a, g), reps)["plain"] / 1e3, 1e-9)
        row = {"outputs": f"{side}x{side}", "channels": channels, "filters": filters,
               "stride": stride, "plain_ms": round(1e3 * plain_cpu, 2),
               "chosen": conv.kernel_way([3, 3], side * side, channels, filters)}
        for way, values in CONV_WAYS.items():
            if way == "grouped" and not conv.grouped_filter_grad_works():
                continue
            # traced (by its first call) under this way's settings, put back after
            with applied(values, {key: conv for key in values}):
                step = tf.function(lambda a, g, layer=layer: conv.conv_kernel_moment(
                    layer, a, g, "square"))
                cpu = median_cpu_ms({way: step}, (a, g), reps)[way] / 1e3
            row[way] = round(cpu / plain_cpu, 2)
        rows.append(row)
    return rows


def main(argv: list[str]) -> None:
    image = IMAGE
    if "--image" in argv:
        at = argv.index("--image")
        image, argv = int(argv[at + 1]), argv[:at] + argv[at + 2:]
    for option, shape_costs in (("--outer-sums", outer_sum_costs),
                                ("--conv-ways", conv_way_costs)):
        if option not in argv:
            continue
        rest = [a for a in argv if a != option]
        batch = int(rest[0]) if rest else 32
        print(json.dumps({"batch": batch, option.strip("-").replace("-", "_"): shape_costs(batch),
                          "load": os.getloadavg()[0]}))
        return
    for option, costs in (("--conv-layers", conv_layer_costs),
                          ("--depthwise-layers", depthwise_layer_costs)):
        if option not in argv:
            continue
        rest = [a for a in argv if a != option]
        name, measure = rest[0], rest[1] if len(rest) > 1 else "fisher_empirical"
        batch = int(rest[2]) if len(rest) > 2 else 32
        check_choice("model", name, MODELS)
        check_choice("measure", measure, MEASURES)
        model, _ = build(name, 1, image)
        moment = "abs" if measure == "mas" else "square"
        print(json.dumps({"model": name, "measure": measure, "image": image, "batch": batch,
                          option.strip("-").replace("-", "_"): costs(model, moment, batch),
                          "load": os.getloadavg()[0]}))
        return
    name = argv[0]
    measure = argv[1] if len(argv) > 1 else "fisher_empirical"
    n = int(argv[2]) if len(argv) > 2 else 32
    batch = int(argv[3]) if len(argv) > 3 else 16
    check_choice("model", name, MODELS)
    check_choice("measure", measure, MEASURES)  # objective() reads anything else as Fisher
    model, data = build(name, n, image)
    plain = plain_step(model, measure)
    over_batches(plain, data, batch)
    plain_cpu = float(np.median([timed(lambda: over_batches(plain, data, batch))[1]
                                 for _ in range(3)]))
    costs = family_costs(model, data, measure, batch)
    print(json.dumps({
        "model": name, "measure": measure, "image": image, "examples": n, "batch": batch,
        "plain_cpu": plain_cpu,
        "ratio": costs["engine_cpu"] / plain_cpu,
        "family_costs": {k: round(v, 3) for k, v in costs.items()},
        "paths": path_counts(model), "load": os.getloadavg()[0],
    }))


if __name__ == "__main__":
    main(sys.argv[1:])
