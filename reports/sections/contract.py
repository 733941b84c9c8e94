"""The contract every leaderboard section follows, and the context the sections share.

A section is a module of :mod:`reports.sections` with:

* ``KINDS: tuple[str, ...]``: the record kinds whose presence means a finished benchmark case
  of this section (:data:`reports.sections.RESULT_KINDS` is their union). A section declares
  its own kinds with :func:`reports.records.record_kind` in its module; the core kinds (meta,
  point, failure, timing) are declared in :mod:`reports.records`.
* ``markdown(records, context) -> str``: its part of ``leaderboard.md`` (``""`` when the
  records hold nothing for it). Titles are ``##`` headings; join blocks with
  :func:`reports.markdown.join`.
* ``plots(records, context, out_dir) -> list[pathlib.Path]``: its PNG files, written into
  ``out_dir`` (created only when there is something to draw) with
  :func:`reports.plots.save_figure`; ``[]`` when it draws none.

Both functions read the records only; nothing recomputes an experiment.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import pandas as pd

from reports.stats import AxisRanking

Record = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Context:
    """What one section computes and another shows, computed once per leaderboard.

    Attributes:
        points: The tidy table of curve points, one row per point (``results.csv``).
        tables: The thresholding tables: ``(key, ranked frame)`` per task, variant, level,
            scope and replacement.
        overall: The thresholding overall ranking (mean rank of each measure across tables).
        curves: One row per thresholding curve with its robustness score and safe fraction.
        removal: The removal axis ranked over task x seed blocks (rank intervals, Friedman,
            Nemenyi), shown by the thresholding and the overall sections.
    """

    points: pd.DataFrame
    tables: list[tuple[dict[str, Any], pd.DataFrame]]
    overall: pd.DataFrame
    curves: pd.DataFrame | None = None
    removal: AxisRanking | None = None


@runtime_checkable
class Section(Protocol):
    """The shape of a section module (see the module docstring)."""

    KINDS: tuple[str, ...]

    def markdown(self, records: Sequence[Record], context: Context) -> str: ...

    def plots(
        self, records: Sequence[Record], context: Context, out_dir: pathlib.Path
    ) -> list[pathlib.Path]: ...
