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
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

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
        result: What the last benchmarked call returned.
        seconds: The median seconds of one call on the timed data.
        plain: The plain pass timed before each round (no ``times`` when not interleaved).
    """

    result: Any
    seconds: float
    plain: Interleaved


def time_method(
    benchmark: Any,
    fn: Callable[[Any], Any],
    data: Any,
    *,
    rounds: int,
    plain_pass: Callable[[], Any],
    interleave: bool = True,
    warmup: Any = None,
) -> Timed:
    """The timing protocol of the per-example groups: ``fn(data)`` timed over ``rounds`` rounds.

    1. One warm-up call outside the timing, ``fn(warmup)`` (``fn(data)`` by default): tracing,
       eager kernels, caches.
    2. ``rounds`` rounds of one call each through ``benchmark.pedantic``; with ``interleave`` the
       plain pass (``plain_pass()``) is timed before every round (pedantic's ``setup``, see
       :class:`Interleaved`).
    3. The median of pytest-benchmark's statistics or, when it keeps none (``--benchmark-disable``,
       xdist), of ``rounds`` calls timed here after one more warm-up call.

    Args:
        benchmark: The pytest-benchmark fixture.
        fn: The method, ``data -> scores``.
        data: What each round computes on.
        rounds: Benchmark rounds.
        plain_pass: The plain gradient pass to interleave (called without arguments).
        interleave: Whether to time the plain pass before each round.
        warmup: The data of the warm-up call (default: ``data``).

    Returns:
        The last result, the median seconds and the interleaved plain-pass timings.
    """
    fn(data if warmup is None else warmup)
    interleaved = Interleaved(plain_pass)

    def setup() -> tuple:
        interleaved()
        return (data,), {}

    if interleave:
        result = benchmark.pedantic(fn, setup=setup, rounds=rounds, iterations=1)
    else:
        result = benchmark.pedantic(fn, args=(data,), rounds=rounds, iterations=1)
    stats = getattr(getattr(benchmark, "stats", None), "stats", None)
    median = stats.median if stats is not None else manual_median(lambda: fn(data), rounds)
    return Timed(result, median, interleaved)


PARALLEL_REASON = (
    "under pytest-xdist another worker shares the cores and the allocator, so the time and "
    "memory bars are asserted in a serial run (-n 0); this figure is recorded"
)


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
