"""What the per-example groups measure, and how: one timing protocol and a peak-memory probe.

Both per-example benchmark files time a method with :func:`time_method` (warm-up, rounds through
pytest-benchmark with the plain pass interleaved, a median that also exists when pytest-benchmark
keeps no statistics) and read its memory with :func:`peak_memory`.

Peak memory is TensorFlow's own allocator statistics: on CPU the statistics are switched on
through ``tsl::EnableCPUAllocatorStats`` (exported by ``libtensorflow_framework``; TF only counts
CPU allocations once that is called), on GPU through ``tf.config.experimental.get_memory_info``.
Each method's peak is measured on one batch after a warm-up call, as the allocator's peak minus
the bytes in use just before the call (so the model, data and earlier results are excluded).
"""

from __future__ import annotations

import ctypes
import dataclasses
import math
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from reports.stats import median_interval

_CPU_STATS: list[bool] = []


def _enable_cpu_stats() -> None:
    if not _CPU_STATS:
        library = os.path.join(os.path.dirname(tf.__file__), "libtensorflow_framework.so.2")
        ctypes.CDLL(library)._ZN3tsl23EnableCPUAllocatorStatsEv()
        _CPU_STATS.append(True)


def peak_memory(fn: Callable[[], Any], device: str, *, repeats: int = 3) -> int:
    """Peak bytes TensorFlow allocates during ``fn()`` beyond what was in use before it.

    The median of ``repeats`` readings: on the CPU one reading of a small model's pass varies
    by up to ~50% between calls (allocator reuse), which alone could cross a 2x bar.
    """
    name = f"{device}:0"
    if device == "CPU":
        _enable_cpu_stats()
    fn()  # warm-up: tracing and caches
    readings = []
    for _ in range(repeats):
        tf.config.experimental.reset_memory_stats(name)
        before = tf.config.experimental.get_memory_info(name)["current"]
        fn()
        readings.append(tf.config.experimental.get_memory_info(name)["peak"] - before)
    return int(np.median(readings))


class Interleaved:
    """Times ``fn()`` before each benchmark round (pedantic ``setup``): the plain pass measured
    next to every round of the method, so slow swings of a shared machine hit both alike."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn, self.times = fn, []

    def __call__(self) -> None:
        start = time.perf_counter()
        self.fn()
        self.times.append(time.perf_counter() - start)

    def median(self) -> float:
        return float(np.median(self.times[1:] if len(self.times) > 1 else self.times))


def manual_median(fn: Callable[[], Any], rounds: int) -> float:
    """Median seconds of ``rounds`` calls of ``fn()``, after one warm-up call."""
    fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


@dataclasses.dataclass
class Timed:
    """One method timed by :func:`time_method`.

    Attributes:
        result: What the last timed call returned.
        seconds: The median seconds of one call on the timed data.
        plain: The plain pass timed before each round (no ``times`` when not interleaved).
        times: The seconds of each round's call, in order (round ``k`` follows ``plain.times[k]``).
    """

    result: Any
    seconds: float
    plain: Interleaved
    times: list[float] = dataclasses.field(default_factory=list)

    def paired_ratio(self) -> float:
        """The median over rounds of the round's call over the plain pass timed just before it.

        Each ratio pairs two calls made back to back, so a load swing of a shared machine that
        spans both cancels; the median drops the rounds where it hit only one of them. The first
        round is left out when there are others, as in :meth:`Interleaved.median` (its plain
        pass may be that function's first call). Needs interleaved rounds
        (``time_method(..., interleave=True)``)."""
        return self.paired_interval()[0]

    def paired_interval(self) -> tuple[float, float | None, float | None]:
        """:meth:`paired_ratio` with the 95 % interval of that median from the per-round ratios'
        order statistics (``reports.stats.median_interval``; bounds None below 6 rounds): whether
        a ratio near a bar is told apart from it."""
        if len(self.plain.times) != len(self.times) or not self.times:
            raise ValueError(
                f"paired_ratio needs one plain pass per round: {len(self.plain.times)} plain "
                f"passes for {len(self.times)} rounds (was the method timed with interleave=True?)"
            )
        ratios = np.divide(self.times, self.plain.times)
        return median_interval(ratios[1:] if len(ratios) > 1 else ratios)


def time_method(
    benchmark: Any,
    fn: Callable[[Any], Any],
    data: Any,
    *,
    rounds: int,
    plain_pass: Callable[[], Any],
    interleave: bool = True,
    warmup: Any = None,
    min_seconds: float = 0.0,
    max_rounds: int = 400,
) -> Timed:
    """The timing protocol of the per-example groups: ``fn(data)`` timed over ``rounds`` rounds.

    1. One warm-up call outside the timing, ``fn(warmup)`` (``fn(data)`` by default): tracing,
       eager kernels, caches.
    2. With ``min_seconds``, more rounds for a fast method: as many as make ``min_seconds`` of
       calls at the speed of one more untimed call (at most ``max_rounds``, never fewer than
       ``rounds``). A call of a few milliseconds varies by tens of percent, so a few rounds
       cannot resolve a ratio of 1.3 against 1.5.
    3. The rounds, one call each through ``benchmark.pedantic``; with ``interleave`` the plain
       pass (``plain_pass()``) is timed before every round (pedantic's ``setup``, see
       :class:`Interleaved`). Where pytest-benchmark keeps no statistics (``--benchmark-disable``,
       xdist: it then makes one call), the remaining rounds run here, interleaved the same way.
    4. The median of the rounds' seconds; :meth:`Timed.paired_ratio` gives the median of the
       per-round ratios to the plain pass.

    Args:
        benchmark: The pytest-benchmark fixture.
        fn: The method, ``data -> scores``.
        data: What each round computes on.
        rounds: Benchmark rounds (the least, with ``min_seconds``).
        plain_pass: The plain gradient pass to interleave (called without arguments).
        interleave: Whether to time the plain pass before each round.
        warmup: The data of the warm-up call (default: ``data``).
        min_seconds: Seconds of timed calls to reach by adding rounds (0: exactly ``rounds``).
        max_rounds: The most rounds ``min_seconds`` may ask for.

    Returns:
        The last result, the median seconds, the interleaved plain-pass timings and the rounds'
        seconds.
    """
    fn(data if warmup is None else warmup)
    if min_seconds > 0:
        start = time.perf_counter()
        fn(data)
        once = max(time.perf_counter() - start, 1e-6)
        rounds = max(rounds, min(max_rounds, math.ceil(min_seconds / once)))
    interleaved = Interleaved(plain_pass)
    times: list[float] = []

    def timed(*args: Any) -> Any:
        start = time.perf_counter()
        result = fn(*args)
        times.append(time.perf_counter() - start)
        return result

    def setup() -> tuple:
        interleaved()
        return (data,), {}

    if interleave:
        result = benchmark.pedantic(timed, setup=setup, rounds=rounds, iterations=1)
    else:
        result = benchmark.pedantic(timed, args=(data,), rounds=rounds, iterations=1)
    while len(times) < rounds:  # pytest-benchmark made one call only (disabled)
        if interleave:
            interleaved()
        result = timed(data)
    return Timed(result, float(np.median(times)), interleaved, times)


PARALLEL_REASON = (
    "under pytest-xdist another worker shares the cores and the allocator, so the time and "
    "memory bars are asserted in a serial run (-n 0); this figure is recorded"
)


BAR_VERDICTS = {"above": "above the bar", "under": "at or under the bar",
                "inside": "the bar lies inside it"}


def bar_verdict(interval: tuple[float, float | None, float | None], bar: float) -> str | None:
    """Where ``bar`` lies against a ``median_interval`` of per-round ratios: ``"above"`` (the
    interval is wholly above it: significantly over), ``"under"`` (wholly at or under it) or
    ``"inside"`` (one run cannot tell the ratio from the bar); None when the rounds are too
    few for an interval."""
    _, low, high = interval
    if low is None or high is None:
        return None
    if low > bar:
        return "above"
    return "under" if high <= bar else "inside"


def against_bar(interval: tuple[float, float | None, float | None], bar: float) -> str:
    """`` (95 % interval of the median low-high: verdict)`` for a ``median_interval`` of
    per-round ratios, the verdict of :func:`bar_verdict` in words. Empty when the rounds are
    too few for an interval."""
    verdict = bar_verdict(interval, bar)
    if verdict is None:
        return ""
    _, low, high = interval
    return f" (95 % interval of the median {low:.2f}-{high:.2f}: {BAR_VERDICTS[verdict]})"


def check_bars(config: Any, missed: list[str]) -> None:
    """Hold a case to its time and memory bars: ``missed`` lists the bars it missed, each with
    its figure. In a serial run a miss fails the case; under pytest-xdist (a worker process)
    it is an expected failure that names the figure and why (:data:`PARALLEL_REASON`), so a
    shared machine cannot turn the quick study red while the numbers stay in the report.
    Correctness bars (errors against a reference) are asserted by the caller, always."""
    import pytest

    if not missed:
        return
    message = "; ".join(missed)
    if hasattr(config, "workerinput"):
        pytest.xfail(f"{message} ({PARALLEL_REASON})")
    raise AssertionError(message)


def median_cpu_ms(calls: dict[str, Callable[..., Any]], args: tuple, rounds: int) -> dict:
    """Each call traced once, then timed in ``rounds`` interleaved rounds: its median process CPU
    milliseconds, by name."""
    for fn in calls.values():
        np.asarray(fn(*args))  # trace
    cpu: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            start = time.process_time()
            np.asarray(fn(*args))
            cpu[name].append(time.process_time() - start)
    return {name: 1e3 * float(np.median(seconds)) for name, seconds in cpu.items()}


def conv_filter_grad(layer: Any, a: tf.Tensor, g: tf.Tensor) -> tf.Tensor:
    """The plain filter gradient of a channels_last Conv2D layer (``Conv2DBackpropFilter``,
    summed over the batch) for inputs ``a`` and output gradients ``g``: what its per-example
    kernel moments are timed against."""
    return tf.raw_ops.Conv2DBackpropFilter(
        input=a, filter_sizes=list(layer.kernel.shape), out_backprop=g,
        strides=[1, *layer.strides, 1], padding=layer.padding.upper(),
        dilations=[1, *layer.dilation_rate, 1])


def conv_layer_costs(model: Any, moment: str, batch: int, rounds: int = 3) -> list[dict]:
    """What the per-example kernel moments of a model's convolutions cost, beside the plain
    filter gradients they stand in for.

    The model's channels_last Conv2D layers grouped by (kernel size, output positions): each
    group's layer and weight counts, and the process CPU milliseconds of one batch of their kernel
    moments (``conv.conv_kernel_moment``, each layer on its own, on random inputs and output
    gradients of the layer's shapes) against their plain filter gradients
    (``Conv2DBackpropFilter``), medians of ``rounds`` interleaved rounds, slowest first. Used by
    ``profile_families --conv-layers`` and recorded on the CNN rows of ``per-example-api``.
    """
    import keras

    from importance.per_example.layers import conv

    rng = np.random.default_rng(0)
    groups: dict = {}
    for layer in model.layers:
        if type(layer) is not keras.layers.Conv2D or layer.data_format != "channels_last":
            continue
        a = tf.constant(rng.normal(size=(batch, *layer.input.shape[1:])), tf.float32)
        g = tf.constant(rng.normal(size=(batch, *layer.output.shape[1:])), tf.float32)
        kernel = tf.function(lambda a, g, layer=layer: conv.conv_kernel_moment(layer, a, g, moment))
        plain = tf.function(lambda a, g, layer=layer: conv_filter_grad(layer, a, g))
        calls = {"moment": kernel, "filter_grad": plain}
        milliseconds = median_cpu_ms(calls, (a, g), rounds)
        shape = (tuple(layer.kernel_size), int(np.prod(layer.output.shape[1:3])))
        row = groups.setdefault(shape, {"kernel": list(shape[0]), "positions": shape[1],
                                        "layers": 0, "weights": 0, "moment_ms": 0.0,
                                        "filter_grad_ms": 0.0})
        row["layers"] += 1
        row["weights"] += int(np.prod(layer.kernel.shape))
        for name, ms in milliseconds.items():
            row[f"{name}_ms"] += ms
    rows = sorted(groups.values(), key=lambda r: -r["moment_ms"])
    return [{k: round(v, 1) if isinstance(v, float) else v for k, v in r.items()} for r in rows]


def _depthwise_filter_grad(layer: Any, kernel: Any, a: tf.Tensor, g: tf.Tensor) -> tf.Tensor:
    """The plain depthwise filter gradient, as TensorFlow's autodiff takes it (a dilated layer's
    goes through space-to-batch: oneDNN's ``DepthwiseConv2dNativeBackpropFilter`` refuses a
    dilation attribute)."""
    kernel = tf.convert_to_tensor(kernel)
    with tf.GradientTape() as tape:
        tape.watch(kernel)
        out = tf.nn.depthwise_conv2d(a, kernel, [1, *layer.strides, 1], layer.padding.upper(),
                                     dilations=list(layer.dilation_rate))
    return tape.gradient(out, kernel, output_gradients=g)


def depthwise_layer_costs(model: Any, moment: str, batch: int, rounds: int = 3) -> list[dict]:
    """What each form of the depthwise kernel moments costs on a model's layers.

    The model's DepthwiseConv2D and SeparableConv2D layers (their depthwise kernels) grouped by
    (kernel size, strides, output positions): each group's layer count, the process CPU
    milliseconds of one batch of each form (``layers/depthwise.py``: folded, elementwise, and
    forward where the layer allows it, else None; each layer on its own, random inputs and output
    gradients of the layer's shapes) against the plain depthwise filter gradient (TensorFlow's
    autodiff of the layer's convolution, :func:`_depthwise_filter_grad`), medians of ``rounds``
    interleaved rounds, and the form the cost model takes (``depthwise.form``); slowest first.
    Used by ``profile_families --depthwise-layers``: the measurements behind that cost model.
    """
    import keras

    from importance.per_example.layers import depthwise

    rng = np.random.default_rng(0)
    groups: dict = {}
    for layer in model.layers:
        if type(layer) not in (keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D):
            continue
        shape = depthwise.depthwise_shape(layer)
        separable = type(layer) is keras.layers.SeparableConv2D
        kernel = layer.depthwise_kernel if separable else layer.kernel
        a = tf.constant(rng.normal(size=(batch, *layer.input.shape[1:])), tf.float32)
        out = tf.nn.depthwise_conv2d(a[:1], kernel, [1, *layer.strides, 1], layer.padding.upper(),
                                     dilations=list(layer.dilation_rate))
        g = tf.constant(rng.normal(size=(batch, *out.shape[1:])), tf.float32)
        forms = {"folded": depthwise.folded_kernel_moment,
                 "elementwise": depthwise.elementwise_kernel_moment}
        if depthwise.forward_applies(layer, shape):
            forms["forward"] = depthwise.forward_kernel_moment
        calls = {
            name: tf.function(
                lambda a, g, f=f, layer=layer, shape=shape: f(layer, shape, a, g, moment)
            )
            for name, f in forms.items()
        }
        calls["filter_grad"] = tf.function(
            lambda a, g, layer=layer, kernel=kernel: _depthwise_filter_grad(layer, kernel, a, g)
        )
        if tuple(layer.dilation_rate) != (1, 1):
            del calls["folded"]  # wrong with dilation: never taken
        milliseconds = median_cpu_ms(calls, (a, g), rounds)
        positions = int(out.shape[1]) * int(out.shape[2])
        key = (tuple(layer.kernel_size), tuple(layer.strides), positions)
        path = depthwise.form(layer, shape, positions)
        row = groups.setdefault(key, {"kernel": list(key[0]), "strides": list(key[1]),
                                      "positions": positions, "layers": 0, "path": path,
                                      "folded_ms": 0.0, "elementwise_ms": 0.0,
                                      "forward_ms": None, "filter_grad_ms": 0.0})
        row["layers"] += 1
        for name, ms in milliseconds.items():
            row[f"{name}_ms"] = (row[f"{name}_ms"] or 0.0) + ms
    rows = sorted(groups.values(), key=lambda r: -r[f"{r['path']}_ms"])
    return [{k: round(v, 1) if isinstance(v, float) else v for k, v in r.items()} for r in rows]
