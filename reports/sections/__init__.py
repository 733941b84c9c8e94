"""The leaderboard sections, in leaderboard order, each one module following one contract.

Every module in :data:`SECTIONS` has (see :mod:`reports.sections.contract`)::

    KINDS: tuple[str, ...]                                     # its result record kinds
    def markdown(records, context) -> str                      # its part of leaderboard.md
    def plots(records, context, out_dir) -> list[pathlib.Path] # its PNGs in out_dir (plots/)

``records`` is the list of :func:`reports.read_records`; ``context`` is the :class:`Context`
of :func:`build_context`, computed once per leaderboard, through which a section shows what
another computed (the overall section shows the removal axis the thresholding records give). :mod:`reports.leaderboard` writes the header, then every section's markdown in this
order, every section's plots, and ``results.csv`` (the thresholding section's :func:`csv
<reports.sections.thresholding.csv>`).

A new axis adds one module here, ``reports/sections/<axis>.py``: its record kinds
(``<kind>_record = record_kind(...)``, imported by the benchmark that writes them), ``KINDS``,
``markdown`` and ``plots``; and one entry in :data:`SECTIONS`. :data:`RESULT_KINDS` follows.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from reports.sections import (
    applicability,
    cam_training,
    consolidation,
    overall,
    saliency,
    thresholding,
    timing,
)
from reports.sections.contract import Context, Record, Section
from reports.stats import rank_axis

SECTIONS: tuple[Section, ...] = (overall, consolidation, thresholding, cam_training, saliency,
                                 applicability, timing)
# Kinds whose presence means a benchmark case finished (a run with none writes no leaderboard).
RESULT_KINDS: tuple[str, ...] = tuple(kind for section in SECTIONS for kind in section.KINDS)

__all__ = ["RESULT_KINDS", "SECTIONS", "Context", "Section", "build_context"]


def build_context(records: Sequence[Record], *, points: pd.DataFrame | None = None) -> Context:
    """The context every section's ``markdown`` and ``plots`` receive.

    Args:
        records: The records of the leaderboard.
        points: ``thresholding.points_frame(records)`` when the caller has it already.
    """
    points = thresholding.points_frame(records) if points is None else points
    curves = thresholding.curves_frame(points)
    tables = thresholding.ranked_tables(curves, records)
    removal = rank_axis(thresholding.removal_axis(curves, records)) if len(curves) else None
    return Context(points=points, tables=tables, overall=thresholding.overall_ranking(tables),
                   curves=curves, removal=removal)
