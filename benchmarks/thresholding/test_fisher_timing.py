"""The Fisher computation timed per device: CPU always, GPU when TensorFlow sees one.

pytest-benchmark group ``fisher per device``; the device and its name go into
``benchmark.extra_info`` and into a ``fisher_device`` timing record, so the leaderboard shows them
(also under xdist, where pytest-benchmark is disabled and perf_counter does the timing).
"""

from __future__ import annotations

import statistics
import time

import pytest

from benchmarks.plugin.devices import NO_GPU_REASON, device_name
from reports.records import timing_record

ROUNDS = 3
PREFERRED_TASK = "mnist5k"


def _timing_task(plan) -> tuple[str, str | None]:
    for task, variant in plan.tasks:
        if task == PREFERRED_TASK:
            return task, variant
    return plan.tasks[-1]


@pytest.mark.parametrize("device", ["CPU", "GPU"])
def test_fisher_per_device(benchmark, study, bench_records, device):
    import tensorflow as tf

    import importance as imp

    if device == "GPU" and not tf.config.list_physical_devices("GPU"):
        pytest.skip(NO_GPU_REASON)
    task, variant = _timing_task(study.plan)
    import tasks

    reason = tasks.get_task(task).unavailable_reason()
    if reason:
        pytest.skip(f"task {task}: {reason}")
    subject = study.subject(task, variant, study.plan.seeds[0])
    name = device_name(device)
    durations: list[float] = []

    def fisher() -> list:
        start = time.perf_counter()
        with tf.device(f"/{device}:0"):
            scores = imp.compute_importance("fisher", subject.model, subject.measure_data)
        durations.append(time.perf_counter() - start)
        return scores

    fisher()  # warm-up: traces the tf.function on this device
    durations.clear()
    benchmark.group = "fisher per device"
    benchmark.extra_info.update(device=device, device_name=name, task=task, variant=subject.variant,
                                examples=int(len(subject.measure_data[1])))
    benchmark.pedantic(fisher, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    assert durations, "the Fisher computation did not run"
    bench_records.write([timing_record(
        group="fisher_device", measure="fisher", task=task, variant=subject.variant, seed=subject.seed,
        device=device, device_name=name, examples=int(len(subject.measure_data[1])),
        seconds=statistics.median(durations),
    )])
