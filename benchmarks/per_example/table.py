"""The README table of the ``per-example`` group from a ``--benchmark-json`` file.

``python benchmarks/per_example/table.py BENCH.json`` prints it as markdown.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def table(path: str) -> str:
    """Markdown table of a ``--benchmark-json`` file of this group."""
    with open(path, encoding="utf-8") as handle:
        runs = json.load(handle)["benchmarks"]
    rows = [r["extra_info"] for r in runs if r["extra_info"].get("group") == "per-example"]
    lines = [
        "| device | model | measure | method | time (s, N) | x plain (interleaved) | x plain per class | "
        "loop / method | rel. error vs loop | peak MiB | x plain memory |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]

    def fmt(value: Any, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    for r in rows:
        lines.append(
            f"| {r['device']} | {r['model']} (N={r['examples']}) | {r['measure']} | {r['method']}"
            f"{'*' if r['timed_examples'] < r['examples'] else ''} | {r['seconds']:.3f} | "
            f"{fmt(r['ratio_vs_plain'], '.2f')} ({fmt(r.get('ratio_vs_plain_interleaved'), '.2f')}) | "
            f"{fmt(r.get('ratio_per_class'), '.2f')} | "
            f"{fmt(r.get('speedup_vs_loop'), '.1f')} | {fmt(r['rel_error_vs_loop'], '.1e')} | "
            f"{r['peak_bytes'] / 2**20:.2f} | {fmt(r['memory_vs_plain'], '.2f')} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(sys.argv[1]))
