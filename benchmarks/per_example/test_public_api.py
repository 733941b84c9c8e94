"""The public API at engine cost: ``compute_importance`` against the engine and a plain pass.

pytest-benchmark group ``per-example-api`` (a sibling of ``per-example``, on its models: the
784-128-10 MLP on N=2048 and the small CNN on N=1024, batch 128, trained one epoch; see
:mod:`benchmarks.per_example.models`). For ``fisher_empirical`` and ``mas``, with the data given
as ``(x, y)`` arrays and as a batched ``tf.data.Dataset``, each round times three calls over the
same batches, interleaved so that a shared machine's load hits all three alike (where
pytest-benchmark makes one call, under xdist, the remaining rounds run here, as in
``probes.time_method``):

* ``plain``: a compiled gradient pass of the batch-mean objective (log-likelihood of the true
  label, or the squared output norm for MAS), its gradients cast to float64 in the graph and
  added up in place on the host (the floor: what any loop over the data must at least do);
* ``engine``: the same loop with :func:`importance.per_example.per_example_moment` (the default
  method) in place of the gradient, no checks (what the measure costs below the public API);
* ``api``: ``importance.compute_importance(measure, model, data)`` itself: the checks, the
  batching and the engine, as a user calls it.

Each call's process CPU time (all threads; the bar) and wall time are taken; ``extra_info`` holds
their medians and the per-round ratios' medians, with the ratios' 95 % intervals of the median
(order statistics, ``reports.stats.median_interval``; a missed bar's message says whether the
bar lies inside the interval, where one run cannot tell the two apart), and on a model with
convolutions ``conv_layer_costs``: each convolution's per-example kernel moments against its
plain filter gradient on one batch (what the engine adds on the CNN; also named in an expected
failure's reason). Quick mode runs the MLP rows (~11 CPU s); ``--full`` adds the CNN's. The
bars (issue 21): the API at most 1.15x the plain pass in process CPU time, for every row, and at
most 1.08x the engine alone (what this layer adds). Where the engine alone is not
significantly under 1.15x the plain pass (its interval reaches the bar; with too few rounds for
an interval, its median is over it), an API over the first bar is reported as an expected
failure naming the engine's ratio (the engine's own work, tracked by the ``per-example``
group), never silently passed; an API over it while the engine is significantly under it
fails. The API's scores must equal the engine's (float tolerance), so the speed is not bought
with a different number.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

import importance as imp
from benchmarks.per_example.models import BATCH, build
from benchmarks.per_example.probes import against_bar, bar_verdict, check_bars, conv_layer_costs
from importance.per_example import per_example_moment
from reports.stats import median_interval

MEASURES = ("fisher_empirical", "mas")
FORMS = ("arrays", "dataset")
MODELS = ("mlp", "cnn")
MAX_CPU_RATIO = 1.15
# What the public API may add to the engine (checks, batching, conversions, the score checks).
MAX_OWN_RATIO = 1.08
# Rounds (quick, full): an MLP call takes ~20 ms and a CNN call ~120 ms of CPU on a loaded core.
# The CNN's rows sit at the 1.15x bar (1.13-1.21x over 15 rounds), so --full gives them 31.
ROUNDS = {"mlp": (21, 41), "cnn": (7, 31)}
CASES = [(m, measure, form) for m in MODELS for measure in MEASURES for form in FORMS]
QUICK_MODELS = ("mlp",)  # the CNN rows (tracing the engine and the API's steps) with --full


@pytest.fixture(scope="module")
def built() -> dict:
    return {}


def _objective(measure: str) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """The per-example objective of the measure (the engine's) and of the plain pass (its mean)."""
    if measure == "mas":
        return lambda outputs, y: tf.reduce_sum(tf.square(outputs), axis=-1)
    return lambda outputs, y: tf.gather(tf.nn.log_softmax(outputs), y, axis=1, batch_dims=1)


def _plain_step(model: Any, measure: str) -> Callable[..., list[tf.Tensor]]:
    objective = _objective(measure)

    def step(x: tf.Tensor, y: tf.Tensor) -> list[tf.Tensor]:
        with tf.GradientTape() as tape:
            value = tf.reduce_mean(objective(model(x, training=False), y))
        grads = tape.gradient(value, model.trainable_weights)
        return [tf.cast(g, tf.float64) for g in grads]

    return tf.function(step, reduce_retracing=True, autograph=False)


def _engine_step(model: Any, measure: str) -> Callable[..., list[tf.Tensor]]:
    objective = _objective(measure)
    moment = "abs" if measure == "mas" else "square"

    def step(x: tf.Tensor, y: tf.Tensor) -> list[tf.Tensor]:
        if measure == "mas":
            sums = per_example_moment(model, x, lambda out: objective(out, None), moment=moment)
        else:
            sums = per_example_moment(model, x, objective, moment=moment, targets=y)
        return [tf.cast(s, tf.float64) for s in sums]

    return tf.function(step, reduce_retracing=True, autograph=False)


def _batches(data: Any) -> Any:
    """The batches as a hand-written loop reads them: array slices, or the dataset itself."""
    if isinstance(data, tf.data.Dataset):
        return data
    x, y = data
    return (
        (tf.convert_to_tensor(x[i : i + BATCH]), tf.convert_to_tensor(y[i : i + BATCH]))
        for i in range(0, len(y), BATCH)
    )


def _loop(step: Callable[..., list[tf.Tensor]], data: Any) -> list[np.ndarray]:
    totals = None
    for x, y in _batches(data):
        arrays = [np.asarray(s) for s in step(x, y)]
        if totals is None:
            totals = [np.array(a) for a in arrays]
        else:
            for total, array in zip(totals, arrays, strict=True):
                np.add(total, array, out=total)
    return totals


def _convolution_costs(built: dict, model_name: str, measure: str) -> list[dict]:
    """The model's convolutions' per-example kernel moments against their plain filter gradients
    (:func:`benchmarks.per_example.probes.conv_layer_costs`, one batch, once per model and
    moment): where a convolutional model's engine time goes beyond the plain pass."""
    moment = "abs" if measure == "mas" else "square"
    key = ("conv_layer_costs", model_name, moment)
    if key not in built:
        built[key] = conv_layer_costs(built[model_name][0], moment, BATCH, rounds=5)
    return built[key]


class Clock:
    """Process CPU seconds (all threads) and wall seconds of each call of ``fn``."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn, self.cpu, self.wall, self.result = fn, [], [], None

    def __call__(self) -> Any:
        cpu, wall = time.process_time(), time.perf_counter()
        self.result = self.fn()
        self.cpu.append(time.process_time() - cpu)
        self.wall.append(time.perf_counter() - wall)
        return self.result


@pytest.mark.parametrize(("model_name", "measure", "form"), CASES, ids=["-".join(c) for c in CASES])
def test_public_api(benchmark, bench_options, built, request, model_name, measure, form):
    benchmark.group = "per-example-api"
    if model_name not in QUICK_MODELS and not bench_options.full:
        pytest.skip(f"the {model_name} rows run with --full (quick-study budget: ~25 CPU s)")
    if model_name not in built:
        built[model_name] = build(model_name)
    model, arrays = built[model_name]
    n = len(arrays[1])
    data = arrays if form == "arrays" else tf.data.Dataset.from_tensor_slices(arrays).batch(BATCH)
    plain_step, engine_step = _plain_step(model, measure), _engine_step(model, measure)
    clocks = {
        "plain": Clock(lambda: _loop(plain_step, data)),
        "engine": Clock(lambda: [t / n for t in _loop(engine_step, data)]),
        "api": Clock(lambda: imp.compute_importance(measure, model, data, batch_size=BATCH)),
    }
    for clock in clocks.values():  # warm-up: tracing, caches, the logits decision
        clock()
        clock()
        clock.cpu.clear()
        clock.wall.clear()

    def setup() -> tuple:
        clocks["plain"]()
        clocks["engine"]()
        return (), {}

    rounds = ROUNDS[model_name][bench_options.full]
    benchmark.pedantic(clocks["api"], setup=setup, rounds=rounds, iterations=1)
    while len(clocks["api"].cpu) < rounds:  # pytest-benchmark made one call (xdist, disabled)
        setup()
        clocks["api"]()

    median = {name: (float(np.median(c.cpu)), float(np.median(c.wall)))
              for name, c in clocks.items()}
    cpu = {name: np.asarray(c.cpu) for name, c in clocks.items()}
    wall = {name: np.asarray(c.wall) for name, c in clocks.items()}
    api_ratio = median_interval(cpu["api"] / cpu["plain"])
    engine_ratio = median_interval(cpu["engine"] / cpu["plain"])
    ratio_cpu = api_ratio[0]
    benchmark.extra_info.update(
        group="per-example-api", model=model_name, measure=measure, form=form, examples=n,
        batch=BATCH, rounds=rounds,
        **{f"{name}_cpu_seconds": m[0] for name, m in median.items()},
        **{f"{name}_wall_seconds": m[1] for name, m in median.items()},
        api_vs_plain_cpu=ratio_cpu,
        api_vs_plain_cpu_interval=list(api_ratio[1:]),
        api_vs_plain_wall=float(np.median(wall["api"] / wall["plain"])),
        engine_vs_plain_cpu=engine_ratio[0],
        engine_vs_plain_cpu_interval=list(engine_ratio[1:]),
        api_vs_engine_cpu=float(np.median(cpu["api"] / cpu["engine"])),
        timer="time.process_time (process CPU, all threads) beside time.perf_counter (wall)",
    )
    for got, want in zip(clocks["api"].result, clocks["engine"].result, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-12 * np.abs(want).max())
    engine = benchmark.extra_info["engine_vs_plain_cpu"]
    own = benchmark.extra_info["api_vs_engine_cpu"]
    convolutions = _convolution_costs(built, model_name, measure)
    if convolutions:
        benchmark.extra_info["conv_layer_costs"] = convolutions
    missed = []
    if own > MAX_OWN_RATIO:
        missed.append(f"compute_importance({measure!r}) on {form} costs {own:.2f}x the engine "
                      f"alone in process CPU time (checks, batching, conversions) > "
                      f"{MAX_OWN_RATIO}")
    # The API's miss is the engine's when the engine cannot be told under the bar: at the bar
    # (the CNN), noise alone puts the API on either side while the engine reads just under it.
    # (Too few rounds for an interval: the engine's median decides.)
    verdict = bar_verdict(engine_ratio, MAX_CPU_RATIO)
    engine_under = engine <= MAX_CPU_RATIO if verdict is None else verdict == "under"
    if ratio_cpu > MAX_CPU_RATIO and not engine_under and not missed:
        pytest.xfail(
            f"the engine alone costs {engine:.2f}x the plain pass on the {model_name}"
            f"{against_bar(engine_ratio, MAX_CPU_RATIO)} (the API {ratio_cpu:.2f}x"
            f"{against_bar(api_ratio, MAX_CPU_RATIO)}, {own:.2f}x the engine): the per-example "
            f"engine's part of issue 21"
            + "".join(f"; {c['kernel'][0]}x{c['kernel'][1]} conv over {c['positions']} positions: "
                      f"kernel moments {c['moment_ms']} ms against the plain filter gradient's "
                      f"{c['filter_grad_ms']} ms per batch" for c in convolutions)
        )
    if ratio_cpu > MAX_CPU_RATIO:
        missed.append(f"compute_importance({measure!r}) on {form} costs {ratio_cpu:.2f}x the plain "
                      f"pass in process CPU time{against_bar(api_ratio, MAX_CPU_RATIO)} (engine "
                      f"alone: {engine:.2f}x) > {MAX_CPU_RATIO}")
    check_bars(request.config, missed)
