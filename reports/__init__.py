"""reports: benchmark result files -> leaderboard (markdown), tidy CSV and plots.

Reports read result records (JSON lines: the schema is :mod:`reports.records`, the files
:mod:`reports.io`); they never recompute an experiment. From Python::

    import reports
    records = reports.read_records(["results/results.jsonl"])
    paths = reports.write_reports(records, "results")    # leaderboard.md, results.csv, plots/

From the shell, for one or several result files (e.g. the shards of a split run)::

    python -m reports results/out/RUN/*.jsonl --out results

The assembly lives in :mod:`reports.leaderboard`, one module per leaderboard section in
:mod:`reports.sections`; this module only re-exports. Importing it imports every section, so
every record kind is declared before a file is read.
"""

from __future__ import annotations

from reports.io import (
    MixedRunsError,
    RecordWriter,
    atomic_path,
    atomic_write_text,
    read_records,
    write_records,
)
from reports.leaderboard import (
    leaderboard_markdown,
    merge_meta,
    results_csv,
    skipped_lines,
    write_reports,
)
from reports.records import DEFAULT_OUTPUT_DIR
from reports.sections import RESULT_KINDS
from reports.sections.consolidation import plot_task_accuracy

__all__ = [
    "DEFAULT_OUTPUT_DIR",
    "RESULT_KINDS",
    "MixedRunsError",
    "RecordWriter",
    "atomic_path",
    "atomic_write_text",
    "leaderboard_markdown",
    "merge_meta",
    "plot_task_accuracy",
    "read_records",
    "results_csv",
    "skipped_lines",
    "write_records",
    "write_reports",
]
