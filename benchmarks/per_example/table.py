"""The docs' tables of the ``per-example`` and ``per-example-applications`` groups from a
``--benchmark-json`` file.

``python benchmarks/per_example/table.py BENCH.json`` prints, as markdown, the table of each of
the two groups that has rows in the file.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def _rows(path: str, group: str) -> list[dict]:
    """The ``extra_info`` of the file's rows of ``group``."""
    with open(path, encoding="utf-8") as handle:
        runs = json.load(handle)["benchmarks"]
    return [r["extra_info"] for r in runs if r["extra_info"].get("group") == group]


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(path: str) -> str:
    """Markdown table of a ``--benchmark-json`` file's ``per-example`` rows: the time scaled to N,
    the ratio to the plain pass (and to the interleaved plain pass), the median of the paired
    per-round ratios with its 95 % interval (``-`` for methods timed without the plain pass
    between rounds, and for runs before it was recorded), per class for exact labels, the
    speed-up over the loop, the error against the loop and the peak memory."""
    lines = [
        "| device | model | measure | method | time (s, N) | x plain (interleaved) | "
        "x plain, paired [95 %] | x plain per class | loop / method | rel. error vs loop | "
        "peak MiB | x plain memory |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in _rows(path, "per-example"):
        paired = _fmt(r.get("ratio_vs_plain_paired"), ".2f")
        if r.get("ratio_vs_plain_paired_interval"):
            low, high = r["ratio_vs_plain_paired_interval"]
            paired += f" [{low:.2f}, {high:.2f}]"
        lines.append(
            f"| {r['device']} | {r['model']} (N={r['examples']}) | {r['measure']} | {r['method']}"
            f"{'*' if r['timed_examples'] < r['examples'] else ''} | {r['seconds']:.3f} | "
            f"{_fmt(r['ratio_vs_plain'], '.2f')} "
            f"({_fmt(r.get('ratio_vs_plain_interleaved'), '.2f')}) | {paired} | "
            f"{_fmt(r.get('ratio_per_class'), '.2f')} | "
            f"{_fmt(r.get('speedup_vs_loop'), '.1f')} | {_fmt(r['rel_error_vs_loop'], '.1e')} | "
            f"{r['peak_bytes'] / 2**20:.2f} | {_fmt(r['memory_vs_plain'], '.2f')} |"
        )
    return "\n".join(lines)


def applications_table(path: str) -> str:
    """Markdown table of a ``--benchmark-json`` file's ``per-example-applications`` rows: CPU
    time over the plain pass with the 95 % interval of that median (when the run had the rounds
    for one), where the 1.2x goal lies against it (``probes.bar_verdict``; the recurrent models
    have no goal), wall time and the first call over the plain pass's, the error one example at
    a time against the compiled reference, memory over the plain pass's, and the load average
    at the row's start and end."""
    lines = [
        "| model | measure | CPU vs plain [95 % interval] | 1.2x goal | wall | first call | "
        "one at a time | memory | load |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in _rows(path, "per-example-applications"):
        interval = r.get("ratio_cpu_interval")
        cpu = f"{r['ratio_cpu']:.2f}x"
        if interval:
            cpu += f" [{interval[0]:.2f}, {interval[1]:.2f}]"
        memory = "-" if r.get("memory_vs_plain") is None else f"{r['memory_vs_plain']:.2f}x"
        load = "-" if not r.get("load") else f"{r['load'][0]:.1f}-{r['load'][1]:.1f}"
        lines.append(
            f"| {r['model']} | {r['measure']} | {cpu} | {r.get('goal') or '-'} | "
            f"{r['ratio_wall']:.2f}x | {r['first_call_ratio']:.2f}x | "
            f"{r['rel_error_one_at_a_time']:.1e} | {memory} | {load} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: python benchmarks/per_example/table.py BENCH.json")
    tables = [make(argv[0]) for group, make in (("per-example", table),
                                                ("per-example-applications", applications_table))
              if _rows(argv[0], group)]
    if not tables:
        raise SystemExit(f"{argv[0]} has no per-example or per-example-applications rows")
    print("\n\n".join(tables))


if __name__ == "__main__":
    main(sys.argv[1:])
