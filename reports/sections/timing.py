"""The timing section: the Fisher computation per device (``fisher_device`` timing records).

Reads the core ``timing`` records of that group (``benchmarks/thresholding/test_fisher_timing.py``); the
compute time of each measure is a column of the thresholding tables instead. The section is
always printed, with a note when the files hold no such timing.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

import pandas as pd

from reports.markdown import escape, join, seconds, table
from reports.records import task_label
from reports.sections.contract import Context, Record

KINDS: tuple[str, ...] = ()  # timing records alone are not a finished benchmark case


def markdown(records: Sequence[Record], context: Context) -> str:
    """``## Fisher computation per device``: one row per (task, measure, device)."""
    devices = device_timings(records)
    body = "No Fisher timing in these result files." if devices.empty else _device_markdown(devices)
    return join(["## Fisher computation per device", "", body])


def plots(
    records: Sequence[Record], context: Context, out_dir: str | os.PathLike[str]
) -> list[pathlib.Path]:
    """No figure: the table says it all."""
    return []


def device_timings(records: Sequence[Record]) -> pd.DataFrame:
    """The Fisher-per-device table: task, measure, device, device name, examples, seconds."""
    rows = [r for r in records if r["kind"] == "timing" and r.get("group") == "fisher_device"]
    columns = ["task", "variant", "measure", "device", "device_name", "examples", "seconds"]
    if not rows:
        return pd.DataFrame(columns=[*columns, "runs"])
    frame = pd.DataFrame(rows).reindex(columns=columns)
    frame["variant"] = frame["variant"].fillna("")
    keys = columns[:-1]
    frame = frame.fillna({"device_name": "", "examples": 0})
    grouped = frame.groupby(keys, sort=True)["seconds"].agg(seconds="mean", runs="size")
    return grouped.reset_index()


def _device_markdown(frame: pd.DataFrame) -> str:
    """The Fisher timing table, one row per (task, measure, device)."""
    headers = ["task", "measure", "device", "device name", "examples", "time", "runs"]
    rows = []
    for _, r in frame.iterrows():
        task = task_label(r["task"], r.get("variant"))
        rows.append([escape(task), escape(r["measure"]), escape(r["device"]),
                     escape(r["device_name"]), str(int(r["examples"])), seconds(r["seconds"]),
                     str(int(r["runs"]))])
    return table(headers, rows, align="llllrrr")
