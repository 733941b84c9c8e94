"""The per-example groups' timing protocol (``benchmarks.per_example.probes.time_method``) on a
planted clock: every call advances a fake ``perf_counter`` by a known amount, so rounds, medians
and paired ratios have exact expected values, with pytest-benchmark keeping its statistics or
switched off (one call, as under xdist)."""

from __future__ import annotations

import pytest

from benchmarks.per_example import probes


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Benchmark:
    """pytest-benchmark's ``pedantic``: ``rounds`` calls, or one when ``disabled``."""

    def __init__(self, disabled: bool) -> None:
        self.disabled = disabled

    def pedantic(self, target, args=(), setup=None, rounds=1, iterations=1):
        result = None
        for _ in range(1 if self.disabled else rounds):
            call_args = setup()[0] if setup else args
            result = target(*call_args)
        return result


@pytest.fixture
def clock(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(probes.time, "perf_counter", clock)
    return clock


def _costs(clock, method_seconds, plain_seconds):
    """A method and a plain pass whose n-th calls take the given seconds on the clock."""
    calls = {"method": 0, "plain": 0}

    def method(data):
        clock.now += method_seconds[min(calls["method"], len(method_seconds) - 1)]
        calls["method"] += 1
        return data

    def plain():
        clock.now += plain_seconds[min(calls["plain"], len(plain_seconds) - 1)]
        calls["plain"] += 1

    return method, plain, calls


@pytest.mark.parametrize("disabled", [False, True], ids=["statistics", "disabled"])
def test_rounds_are_interleaved_and_paired(clock, disabled):
    # Warm-up 50 s (tracing); then 2 s per call; the plain pass's first call 9 s, then 1 s.
    method, plain, calls = _costs(clock, [50.0, 2.0], [9.0, 1.0])
    timed = probes.time_method(_Benchmark(disabled), method, "data", rounds=4, plain_pass=plain)
    assert calls == {"method": 5, "plain": 4}
    assert timed.times == [2.0] * 4 and timed.plain.times == [9.0, 1.0, 1.0, 1.0]
    assert timed.seconds == 2.0 and timed.result == "data"
    assert timed.paired_ratio() == 2.0  # the first pair, a first call, is left out
    assert timed.plain.median() == 1.0
    method, plain, _ = _costs(clock, [50.0, 2.0], [9.0, 1.0])
    two = probes.time_method(_Benchmark(disabled), method, "data", rounds=2, plain_pass=plain)
    assert two.paired_ratio() == 2.0  # not the median of 2/9 and 2/1


def test_paired_ratio_is_the_median_of_per_round_ratios(clock):
    # The machine slows down 4x after the third round: every round's call is 2x the plain pass
    # before it, which the paired ratio reads, while the ratio of the two medians does not.
    method, plain, _ = _costs(clock, [9.0, 1.0, 2.0, 2.0, 8.0, 8.0], [1.0, 1.0, 1.0, 4.0, 4.0])
    timed = probes.time_method(_Benchmark(False), method, "data", rounds=5, plain_pass=plain)
    assert timed.times == [1.0, 2.0, 2.0, 8.0, 8.0]
    assert timed.plain.times == [1.0, 1.0, 1.0, 4.0, 4.0]
    assert timed.paired_ratio() == 2.0
    assert timed.seconds / timed.plain.median() == 0.8


def test_min_seconds_adds_rounds_up_to_the_cap(clock):
    method, plain, _ = _costs(clock, [50.0, 0.5], [0.25])
    timed = probes.time_method(_Benchmark(True), method, "data", rounds=3, plain_pass=plain,
                               min_seconds=10.0)
    assert len(timed.times) == 20 and len(timed.plain.times) == 20
    assert timed.paired_ratio() == 2.0
    capped = probes.time_method(_Benchmark(False), method, "data", rounds=3, plain_pass=plain,
                                min_seconds=10.0, max_rounds=8)
    assert len(capped.times) == 8
    slow = probes.time_method(_Benchmark(False), method, "data", rounds=30, plain_pass=plain,
                              min_seconds=1.0)
    assert len(slow.times) == 30  # never fewer than asked


def test_paired_ratio_refuses_rounds_without_a_plain_pass(clock):
    method, plain, _ = _costs(clock, [1.0], [1.0])
    timed = probes.time_method(_Benchmark(False), method, "data", rounds=3, plain_pass=plain,
                               interleave=False)
    assert timed.plain.times == [] and len(timed.times) == 3
    with pytest.raises(ValueError, match="0 plain passes for 3 rounds"):
        timed.paired_ratio()


def test_paired_interval_takes_the_order_statistics_of_the_rounds_after_the_first(clock):
    # Eight rounds: the first pair (a first call) is left out; the other seven ratios are
    # 1.0, 1.5, ..., 4.0 in a shuffled order. Seven values: the 95 % interval is x_(1)..x_(7)
    # (coverage 1 - 2/128), so the whole range; the median is the fourth, 2.5.
    ratios = [3.0, 1.0, 4.0, 2.0, 1.5, 3.5, 2.5]
    method, plain, _ = _costs(clock, [50.0, 100.0, *ratios], [1.0])
    timed = probes.time_method(_Benchmark(False), method, "data", rounds=8, plain_pass=plain)
    assert timed.paired_interval() == (2.5, 1.0, 4.0)
    assert timed.paired_ratio() == 2.5
    method, plain, _ = _costs(clock, [50.0, 100.0, 2.0, 3.0], [1.0])
    few = probes.time_method(_Benchmark(False), method, "data", rounds=3, plain_pass=plain)
    assert few.paired_interval() == (2.5, None, None)  # two ratios: no 95 % interval


@pytest.mark.parametrize(("interval", "text"), [
    ((1.16, 1.12, 1.19), " (95 % interval of the median 1.12-1.19: the bar lies inside it)"),
    ((1.18, 1.16, 1.21), " (95 % interval of the median 1.16-1.21: above the bar)"),
    ((1.12, 1.10, 1.15), " (95 % interval of the median 1.10-1.15: at or under the bar)"),
    ((1.16, None, None), ""),
])
def test_against_bar_says_where_the_bar_lies(interval, text):
    assert probes.against_bar(interval, 1.15) == text


@pytest.mark.parametrize(("interval", "verdict"), [
    ((1.16, 1.12, 1.19), "inside"),
    ((1.18, 1.16, 1.21), "above"),
    ((1.12, 1.10, 1.15), "under"),  # the upper end on the bar: at or under it
    ((1.15, 1.15, 1.17), "inside"),  # the lower end on the bar: not significantly over
    ((1.16, None, None), None),
])
def test_bar_verdict_places_the_bar_against_the_interval(interval, verdict):
    assert probes.bar_verdict(interval, 1.15) == verdict
