"""What each layer family costs the per-example engine on a real architecture (issue 21).

Usage (from the repository root)::

    python -m benchmarks.per_example.profile_families MobileNetV2 [measure] [n] [batch]
    python -m benchmarks.per_example.profile_families ResNet50 mas --conv-layers [batch]

Prints one JSON line: the plain compiled gradient pass's process CPU seconds over ``n``
examples, the engine's, their ratio, the path counts, the load average, and per family the CPU
seconds the engine saves when that family's moments are skipped
(:func:`benchmarks.per_example.test_per_example_applications.family_costs`).

With ``--conv-layers``: the model's Conv2D layers grouped by kernel size and output positions,
each group's layer and weight counts, and the process CPU milliseconds of one batch of their
kernel moments (``conv.conv_kernel_moment``, each layer on its own, random inputs and output
gradients of the layer's shapes) against their plain filter gradients
(``Conv2DBackpropFilter``), medians of 3 rounds: which convolutions carry the engine's cost.
"""

from __future__ import annotations

import json
import os
import sys

import keras
import numpy as np
import tensorflow as tf

from benchmarks.per_example.app_models import MODELS, build
from benchmarks.per_example.test_per_example_applications import (
    MEASURES,
    family_costs,
    over_batches,
    path_counts,
    plain_step,
    timed,
)
from importance.checks import check_choice
from importance.per_example.layers import conv


def conv_layer_costs(model, moment: str, batch: int, rounds: int = 3) -> list[dict]:
    """Conv2D layers grouped by (kernel size, output positions): counts, kernel moment and
    plain filter gradient milliseconds of process CPU time for one batch, slowest first."""
    rng = np.random.default_rng(0)
    groups: dict = {}
    for layer in model.layers:
        if type(layer) is not keras.layers.Conv2D or layer.data_format != "channels_last":
            continue
        a = tf.constant(rng.normal(size=(batch, *layer.input.shape[1:])), tf.float32)
        g = tf.constant(rng.normal(size=(batch, *layer.output.shape[1:])), tf.float32)
        kernel = tf.function(lambda a, g, layer=layer: conv.conv_kernel_moment(layer, a, g, moment))
        plain = tf.function(lambda a, g, layer=layer: tf.raw_ops.Conv2DBackpropFilter(
            input=a, filter_sizes=list(layer.kernel.shape), out_backprop=g,
            strides=[1, *layer.strides, 1], padding=layer.padding.upper(),
            dilations=[1, *layer.dilation_rate, 1]))
        calls = {"moment": kernel, "filter_grad": plain}
        for fn in calls.values():
            np.asarray(fn(a, g))  # trace
        cpu = {name: [] for name in calls}
        for _ in range(rounds):
            for name, fn in calls.items():
                cpu[name].append(timed(lambda fn=fn, a=a, g=g: np.asarray(fn(a, g)))[1])
        shape = (tuple(layer.kernel_size), int(np.prod(layer.output.shape[1:3])))
        row = groups.setdefault(shape, {"kernel": list(shape[0]), "positions": shape[1], "layers": 0,
                                        "weights": 0, "moment_ms": 0.0, "filter_grad_ms": 0.0})
        row["layers"] += 1
        row["weights"] += int(np.prod(layer.kernel.shape))
        for name, seconds in cpu.items():
            row[f"{name}_ms"] += 1e3 * float(np.median(seconds))
    rows = sorted(groups.values(), key=lambda r: -r["moment_ms"])
    return [{k: round(v, 1) if isinstance(v, float) else v for k, v in r.items()} for r in rows]


def main(argv: list[str]) -> None:
    if "--conv-layers" in argv:
        rest = [a for a in argv if a != "--conv-layers"]
        name, measure = rest[0], rest[1] if len(rest) > 1 else "fisher_empirical"
        batch = int(rest[2]) if len(rest) > 2 else 32
        check_choice("model", name, MODELS)
        check_choice("measure", measure, MEASURES)
        model, _ = build(name, 1)
        moment = "abs" if measure == "mas" else "square"
        print(json.dumps({"model": name, "measure": measure, "batch": batch,
                          "conv_layers": conv_layer_costs(model, moment, batch),
                          "load": os.getloadavg()[0]}))
        return
    name = argv[0]
    measure = argv[1] if len(argv) > 1 else "fisher_empirical"
    n = int(argv[2]) if len(argv) > 2 else 32
    batch = int(argv[3]) if len(argv) > 3 else 16
    check_choice("model", name, MODELS)
    check_choice("measure", measure, MEASURES)  # objective() reads anything else as Fisher
    model, data = build(name, n)
    plain = plain_step(model, measure)
    over_batches(plain, data, batch)
    plain_cpu = float(np.median([timed(lambda: over_batches(plain, data, batch))[1]
                                 for _ in range(3)]))
    costs = family_costs(model, data, measure, batch)
    print(json.dumps({
        "model": name, "measure": measure, "examples": n, "batch": batch, "plain_cpu": plain_cpu,
        "ratio": costs["engine_cpu"] / plain_cpu,
        "family_costs": {k: round(v, 3) for k, v in costs.items()},
        "paths": path_counts(model), "load": os.getloadavg()[0],
    }))


if __name__ == "__main__":
    main(sys.argv[1:])
