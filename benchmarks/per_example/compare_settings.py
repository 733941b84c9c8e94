"""The engine on a real architecture under several internal settings, side by side (issue 21).

Usage (from the repository root)::

    python -m benchmarks.per_example.compare_settings DenseNet121 fisher_empirical \\
        '{"per example": {"PAIR_POSITIONS": 0}, "pairs": {"PAIR_POSITIONS": 4}}'

Optional further arguments: examples (64), batch (32), rounds (5), image side in pixels
(``app_models.IMAGE``, 64).

Each setting names values of :mod:`importance.per_example.moments` (``PAIR_POSITIONS``,
``FUSED_POSITIONS``, ``FUSED_ROW_ELEMENTS``, ``FUSED_TRANSPOSED_SUM_ELEMENTS``,
``CHUNK_ELEMENTS``, ``HELD_FRACTION``, ``MIN_CHUNK_ELEMENTS``, ``LANES``) and of the depthwise
family's cost model, ``layers/depthwise.py`` (``ELEMENTWISE_POSITIONS``, ``LARGE_KERNEL``,
``LARGE_KERNEL_POSITIONS``, ``FORWARD_POSITIONS``) and of the convolutions' cost model,
``layers/conv.py`` (``PATCH_POSITIONS``, ``PATCH_MIN_CHANNELS``) and of the normalisation
family, ``layers/norm.py`` (``DIRECT_BATCH_NORM``): :data:`SETTABLE`. They are
applied before that setting's step is traced (a compiled step keeps what it was traced with).
For every setting, in one process: the engine's process CPU time over ``n`` examples against a
plain compiled gradient pass interleaved with it (median of the per-round ratios), its peak
memory over the plain pass's on one batch, and its difference from the first setting's moments:
relative over the whole model, the largest relative difference of one entry, and the share of
the first setting's lowest-scored 1 % and 10 % of weights (what thresholding removes first)
that this setting does not also rank lowest. Prints one JSON line.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from benchmarks.per_example.app_models import IMAGE, MODELS, build
from benchmarks.per_example.probes import peak_memory
from benchmarks.per_example.test_per_example_applications import (
    MEASURES,
    objective,
    over_batches,
    plain_step,
    timed,
)
from importance.checks import check_choice
from importance.per_example import engine, moments
from importance.per_example.layers import conv, depthwise, norm

# Each settable value and the module that holds it.
SETTABLE = {
    **{key: moments for key in ("PAIR_POSITIONS", "FUSED_POSITIONS", "CHUNK_ELEMENTS",
                                "HELD_FRACTION", "MIN_CHUNK_ELEMENTS", "LANES",
                                "FUSED_ROW_ELEMENTS", "FUSED_TRANSPOSED_SUM_ELEMENTS")},
    **{key: depthwise for key in ("ELEMENTWISE_POSITIONS", "LARGE_KERNEL",
                                  "LARGE_KERNEL_POSITIONS", "FORWARD_POSITIONS")},
    **{key: conv for key in ("PATCH_POSITIONS", "PATCH_MIN_CHANNELS")},
    "DIRECT_BATCH_NORM": norm,
}


LOWEST = (0.01, 0.1)


@contextlib.contextmanager
def applied(setting: dict, settable: dict | None = None) -> Iterator[None]:
    """The ``settable`` values (name -> module, default :data:`SETTABLE`) as ``setting`` names
    them (the others as they were on entry), all put back on exit, also when the body fails. A
    step traced inside keeps them."""
    settable = SETTABLE if settable is None else settable
    saved = {key: getattr(module, key) for key, module in settable.items()}
    try:
        for key, module in settable.items():
            setattr(module, key, setting.get(key, saved[key]))
        yield
    finally:
        for key, value in saved.items():
            setattr(settable[key], key, value)


def _lowest_changed(first: np.ndarray, other: np.ndarray, share: float) -> float:
    """Share of ``first``'s lowest ``share`` of entries missing from ``other``'s lowest."""
    count = max(1, int(share * first.size))
    lowest_first = np.argsort(first, kind="stable")[:count]
    lowest_other = np.argsort(other, kind="stable")[:count]
    return 1.0 - np.intersect1d(lowest_first, lowest_other).size / count


def main(argv: list[str]) -> None:
    name, measure, settings = argv[0], argv[1], json.loads(argv[2])
    check_choice("model", name, MODELS)
    check_choice("measure", measure, MEASURES)  # objective() reads anything else as Fisher
    n = int(argv[3]) if len(argv) > 3 else 64
    batch = int(argv[4]) if len(argv) > 4 else 32
    rounds = int(argv[5]) if len(argv) > 5 else 5
    image = int(argv[6]) if len(argv) > 6 else IMAGE
    for setting in settings.values():
        unknown = sorted(set(setting) - set(SETTABLE))
        if unknown:
            raise ValueError(f"unknown setting(s) {unknown}; settable: {SETTABLE}")
    model, data = build(name, n, image)
    fn, labelled = objective(measure)
    moment = "abs" if measure == "mas" else "square"
    plain = plain_step(model, measure)
    over_batches(plain, data, batch)
    one_batch = (data[0][:batch], data[1][:batch])
    plain_peak = peak_memory(lambda: over_batches(plain, one_batch, batch), "CPU")
    steps, results, peaks = {}, {}, {}
    for label, setting in settings.items():
        with applied(setting):

            @tf.function(autograph=False, reduce_retracing=True)
            def step(x, y):
                return engine.per_example_moment(
                    model, x, fn, moment=moment, targets=y if labelled else None
                )

            results[label] = over_batches(step, data, batch)  # traced under this setting
            peaks[label] = peak_memory(lambda s=step: over_batches(s, one_batch, batch), "CPU")
        steps[label] = step
    ratios = {label: [] for label in steps}
    for _ in range(rounds):
        for label, step in steps.items():
            _, plain_cpu = timed(lambda: over_batches(plain, data, batch))
            _, cpu = timed(lambda s=step: over_batches(s, data, batch))
            ratios[label].append(cpu / max(plain_cpu, 1e-9))
    first = next(iter(results.values()))
    flat_first = np.concatenate([r.ravel() for r in first])
    report = {}
    for label, result in results.items():
        flat = np.concatenate([r.ravel() for r in result])
        entry = np.abs(flat - flat_first) / np.maximum(np.abs(flat_first), 1e-30)
        report[label] = {
            "cpu_vs_plain": round(float(np.median(ratios[label])), 3),
            "memory_vs_plain": round(peaks[label] / plain_peak, 3) if plain_peak else None,
            "difference": float(np.linalg.norm(flat - flat_first) / np.linalg.norm(flat_first)),
            "largest_entry_difference": float(entry[flat_first != 0].max(initial=0.0)),
            # what thresholding removes first: the share of the first setting's lowest-scored
            # weights that this setting does not also rank lowest
            **{
                f"lowest_{share:.0%}_changed": _lowest_changed(flat_first, flat, share)
                for share in LOWEST
            },
        }
    print(json.dumps({
        "model": name, "measure": measure, "input_shape": list(data[0].shape[1:]), "examples": n,
        "batch": batch, "rounds": rounds,
        "settings": report, "load": os.getloadavg()[0],
    }))


if __name__ == "__main__":
    main(sys.argv[1:])
