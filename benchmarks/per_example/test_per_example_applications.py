"""Per-example moments on real architectures: keras.applications models and recurrent text
models (issue 21), pytest-benchmark group ``per-example-applications``.

For each model of :mod:`benchmarks.per_example.app_models` (random weights, generated data,
N examples, logits) and measure (``fisher_empirical``, ``mas``), one row times
``compute_importance(measure, model, data, method="auto")`` against a plain compiled gradient
pass of the summed objective over the same batches, **interleaved** (plain, then the measure,
every round), and records in ``extra_info``:

* ``ratio_wall`` and ``ratio_cpu``: medians over the rounds of the measure's wall time and
  process CPU time (``time.process_time``, all threads) over the plain pass's of the same round;
  ``ratio_cpu_interval``: the 95 % interval of that CPU median from the rounds' order
  statistics (``reports.stats.median_interval``; ``--full`` has 9 rounds, quick
  mode's 3 give none), and ``goal``: where issue 21's 1.2x goal lies against it (``"under"``:
  met significantly, ``"above"``: missed significantly, ``"inside"``: this run cannot tell;
  ``probes.bar_verdict``);
  ``first_call_ratio``: the first (tracing) call of each, wall;
* ``rel_error_vs_compiled``: the engine's relative error against the per-example reference that
  runs the same compiled forward pass (:func:`importance.per_example.reference.compiled_loop`)
  on the first batch; ``eager_floor``: the eager per-example loop's distance to that same
  reference on the first examples (the float32 floor of any compiled method: oneDNN's graph
  rewrites flip a few ReLU masks of deep nets);
* ``rel_error_one_at_a_time``: ``compute_importance`` run on each of the first examples alone
  (batches of one, the reference's forward pass) against the reference; ``batch_floor``: the
  plain compiled gradient of the first batch against the sum of its examples' plain gradients
  taken one at a time: how far the batch size alone moves a plain pass (oneDNN picks its
  kernels by batch size and rounds differently; DenseNet121 at 64x64: 3e-4);
* ``memory_vs_plain``: TensorFlow allocator peak on one batch over the plain pass's;
* ``paths``: how many layers take each path of the engine
  (:func:`importance.per_example.layer_paths`), and ``method``: what ``auto`` ran;
* ``load``: the 1-minute load average at the start and end of the row.

Bars (issue 21): error vs the compiled reference <= 1e-5, asserted one example at a time, and
on the whole batch at the larger of 1e-5 and ``batch_floor`` (deviation: the reference runs a
forward pass of one example, and where a plain pass itself moves by more than 1e-5 with the
batch size no batched method can meet 1e-5; an error that mixes examples, such as the minibatch
shortcut, is of order 1, far above any floor measured, 3e-4); CPU time <= 1.5x the
plain pass for the image models, <= 2.5x for the recurrent ones, memory <= 1.5x (recorded, not
asserted: ``bars_missed`` lists the missed ones, and under ``--full`` ``family_costs`` says which
layer families cost what, from the engine with one family's moments skipped at a time).

Quick mode: ``fisher_empirical`` on MobileNetV2 (32x32 inputs) and the GRU model at reduced
sizes; ``--full`` runs every model and both measures, the images at issue 21's 64x64 (Xception
at 72x72, its smallest accepted size rounded up).
"""

from __future__ import annotations

import os
import time
from collections import Counter

import numpy as np
import pytest
import tensorflow as tf

import importance as imp
from benchmarks.per_example.app_models import IMAGE, MODELS, QUICK_IMAGE, RECURRENT, build
from benchmarks.per_example.probes import bar_verdict, peak_memory
from importance.per_example import layer_paths, resolve_method
from importance.per_example.reference import compiled_loop, loop
from importance.testing import relative_error
from reports.stats import median_interval

N, BATCH = 64, 32
QUICK_N, QUICK_BATCH = 32, 16
FLOOR_EXAMPLES = 4
ROUNDS, ROUNDS_FULL = 3, 9  # 9: a 95 % interval of the median from its 2nd and 8th ratios
MAX_ERROR = 1e-5
MAX_RATIO, MAX_RATIO_RECURRENT, MAX_MEMORY = 1.5, 2.5, 1.5
GOAL = 1.2  # issue 21's goal for the image models, CPU over the plain pass
MEASURES = ("fisher_empirical", "mas")
QUICK = {("MobileNetV2", "fisher_empirical"), ("gru", "fisher_empirical")}
CASES = [(model, measure) for model in MODELS for measure in MEASURES]


def objective(measure: str):
    """(per-example objective, labelled) of a measure on a logits model."""
    if measure == "mas":
        return (lambda out: tf.reduce_sum(tf.square(out), axis=-1)), False
    return (lambda out, y: tf.gather(tf.nn.log_softmax(out), y, axis=1, batch_dims=1)), True


def plain_step(model, measure):
    """A compiled plain gradient pass of the summed objective of one batch."""
    fn, labelled = objective(measure)

    @tf.function(autograph=False, reduce_retracing=True)
    def step(x, y):
        with tf.GradientTape() as tape:
            out = model(x, training=False)
            total = tf.reduce_sum(fn(out, y) if labelled else fn(out))
        return tape.gradient(total, model.trainable_weights)

    return step


def over_batches(step, data, batch):
    x, y = data
    out = None
    for start in range(0, len(y), batch):
        out = step(x[start : start + batch], y[start : start + batch])
    return [np.asarray(tf.convert_to_tensor(g)) for g in out]  # wait for the last batch


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def summed(results: list) -> list:
    """Per weight, the sum of several results (lists of arrays or tensors, one per weight; an
    Embedding's plain gradient is IndexedSlices)."""
    return [np.sum([np.asarray(tf.convert_to_tensor(r[k])) for r in results], axis=0)
            for k in range(len(results[0]))]


def path_counts(model) -> dict:
    return dict(Counter(kind for _, kind in layer_paths(model)))


def family_costs(model, data, measure, batch, rounds=3) -> dict:
    """CPU seconds the engine saves, per layer family, when that family's moments are skipped
    (replaced by zeros; each variant traced afresh): what each family costs in this model."""
    from importance.per_example import engine
    from importance.per_example.layers import RULES

    fn, labelled = objective(measure)
    moment = "abs" if measure == "mas" else "square"

    def cpu_seconds() -> float:
        @tf.function(autograph=False, reduce_retracing=True)
        def step(x, y):
            return engine.per_example_moment(
                model, x, fn, moment=moment, targets=y if labelled else None
            )

        over_batches(step, data, batch)
        return float(np.median([timed(lambda: over_batches(step, data, batch))[1]
                                for _ in range(rounds)]))

    def zero(layer, calls, grads, moment):
        return [tf.zeros(w.shape) for w in calls[0].variables()]

    whole = cpu_seconds()
    costs = {"engine_cpu": whole}
    kinds = set(path_counts(model))
    for rule in RULES:
        if rule.kind not in kinds:
            continue
        saved = (rule.moments, rule.linear_in_fg)
        object.__setattr__(rule, "moments", zero)  # frozen dataclass: restored below
        object.__setattr__(rule, "linear_in_fg", lambda call: False)
        try:
            costs[rule.kind] = whole - cpu_seconds()
        finally:
            object.__setattr__(rule, "moments", saved[0])
            object.__setattr__(rule, "linear_in_fg", saved[1])
    return costs


@pytest.fixture(scope="module")
def built() -> dict:
    return {}


@pytest.mark.parametrize(("model_name", "measure"), CASES, ids=["-".join(c) for c in CASES])
def test_per_example_applications(benchmark, bench_options, built, model_name, measure):
    full = bench_options.full
    if not full and (model_name, measure) not in QUICK:
        pytest.skip("--full only")
    benchmark.group = "per-example-applications"
    load_start = os.getloadavg()[0]
    n, batch, image = (N, BATCH, IMAGE) if full else (QUICK_N, QUICK_BATCH, QUICK_IMAGE)
    if model_name not in built:
        built[model_name] = build(model_name, n, image)
    model, data = built[model_name]
    plain = plain_step(model, measure)

    def method():
        return imp.compute_importance(measure, model, data, batch_size=batch, method="auto")

    def plain_pass():
        return over_batches(plain, data, batch)

    first_plain, _ = timed(plain_pass)
    first_method, _ = timed(method)
    rounds = ROUNDS_FULL if full else ROUNDS
    walls, cpus = [], []
    pending = {}

    def setup():
        pending["plain"] = timed(plain_pass)
        return (), {}

    def measured():
        wall, cpu = timed(method)
        p_wall, p_cpu = pending["plain"]
        walls.append(wall / p_wall)
        cpus.append(cpu / max(p_cpu, 1e-9))

    benchmark.pedantic(measured, setup=setup, rounds=rounds, iterations=1)
    ratio_wall = float(np.median(walls))
    cpu_interval = median_interval(cpus)
    ratio_cpu = cpu_interval[0]

    # Error against the compiled per-example reference on the first batch (the engine's step is
    # already traced for this batch shape), and the eager loop's distance to it (the floor).
    fn, labelled = objective(measure)
    moment = "abs" if measure == "mas" else "square"
    x, y = data[0][:batch], data[1][:batch]
    targets = tf.constant(y) if labelled else None
    reference = compiled_loop(model, fn, moment, example=x, targets=targets)
    args = (x, targets) if labelled else (x,)
    ref_sums = reference(*args)
    got = imp.compute_importance(measure, model, (x, y), batch_size=batch, method="auto")
    error = relative_error([g * batch for g in got], ref_sums)
    few = (x[:FLOOR_EXAMPLES], targets[:FLOOR_EXAMPLES]) if labelled else (x[:FLOOR_EXAMPLES],)
    few_reference = reference(*few)
    floor = relative_error(loop(model, few[0], fn, moment, few[1] if labelled else None), few_reference)
    one_at_a_time = relative_error(summed([
        imp.compute_importance(measure, model, (x[i : i + 1], y[i : i + 1]), batch_size=1,
                               method="auto") for i in range(FLOOR_EXAMPLES)
    ]), few_reference)
    batch_floor = relative_error(
        summed([plain(x, y)]), summed([plain(x[i : i + 1], y[i : i + 1]) for i in range(batch)])
    )

    peak = peak_memory(lambda: imp.compute_importance(
        measure, model, (x, y), batch_size=batch, method="auto"), "CPU")
    plain_peak = peak_memory(lambda: over_batches(plain, (x, y), batch), "CPU")
    memory = peak / plain_peak if plain_peak > 0 else None

    bar = MAX_RATIO_RECURRENT if model_name in RECURRENT else MAX_RATIO
    missed = [name for name, hit in (
        ("time", ratio_cpu <= bar), ("memory", memory is None or memory <= MAX_MEMORY),
    ) if not hit]
    info = dict(
        group="per-example-applications", device="CPU", model=model_name, measure=measure,
        method=resolve_method(model, "auto"), params=int(model.count_params()),
        input_shape=list(data[0].shape[1:]), examples=n,
        batch=batch, rounds=rounds, ratio_wall=ratio_wall, ratio_cpu=ratio_cpu,
        ratio_cpu_interval=None if cpu_interval[1] is None else list(cpu_interval[1:]),
        goal=None if model_name in RECURRENT else bar_verdict(cpu_interval, GOAL),
        ratio_vs_plain_interleaved=ratio_wall, first_call_ratio=first_method / first_plain,
        rel_error_vs_compiled=error, rel_error_one_at_a_time=one_at_a_time,
        batch_floor=batch_floor, eager_floor=floor, error_examples=batch,
        floor_examples=FLOOR_EXAMPLES, memory_vs_plain=memory, paths=path_counts(model),
        bars_missed=missed, load=[load_start, os.getloadavg()[0]],
    )
    if missed and full and info["method"] == "factorized":
        info["family_costs"] = family_costs(model, data, measure, batch)
    benchmark.extra_info.update(info)
    assert one_at_a_time <= MAX_ERROR, (
        f"relative error {one_at_a_time:.2e} vs the compiled reference, one example at a time, "
        f"> {MAX_ERROR}"
    )
    error_bar = max(MAX_ERROR, batch_floor)
    assert error <= error_bar, (
        f"relative error {error:.2e} vs the compiled reference > {error_bar:.1e} (the larger of "
        f"{MAX_ERROR} and the plain gradient's batch floor {batch_floor:.1e})"
    )
