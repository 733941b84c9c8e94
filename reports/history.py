"""Runs kept and compared: each run's records under a key, and what changed between two runs.

A benchmark in CI is worth most when it says what a change moved. :func:`store_run` keeps each
run's records under ``<history>/<key>/results.jsonl``, where the key joins the git commit, a
digest of the benchmark definition, and the TensorFlow version
(``<commit12>-<definition12>-tf<version>``). :func:`compare` reads two runs and lists, per
leaderboard table, the measures whose score or rank changed:

* **removal**: each measure's robustness score per task, variant, level, scope and
  replacement; **consolidation**: each strategy's ACC per scenario.
* Where both runs hold the same seeds, the change is tested with a two-sided paired t-test over
  seeds (:func:`reports.scoring.paired_p_value`), Holm-adjusted over every comparison of the
  run pair (:func:`reports.scoring.holm`); a *regression* is a significant change for the worse
  (a higher robustness score, a lower ACC). Without matched seeds a change is listed, never
  called significant.
* Runs of different benchmark definitions (other tasks, seeds, thresholds, treatments, or a
  measure whose declared version changed) are refused with what differs, never compared
  silently; ``allow_different=True`` compares what they share and says so first.

The definition is the ``definition`` field of the run's meta record (the benchmark session
writes the plan and each measure's declared version there); for older records it is rebuilt
from what the records cover.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from reports.io import read_records, write_records
from reports.records import task_label
from reports.scoring import SIGNIFICANCE_LEVEL, holm, paired_p_value
from reports.sections import thresholding
from reports.sections.consolidation import records_frame

HISTORY_DIR = "history"
KEEP_RUNS = 20  # runs kept under history/ (the oldest by modification time go first)


class IncomparableRunsError(ValueError):
    """Two runs of different benchmark definitions were asked to be compared."""


@dataclasses.dataclass(frozen=True)
class Change:
    """One measure in one table, in both runs.

    Attributes:
        axis: ``removal`` or ``consolidation``.
        table: The table it sits in (task, level and treatment; or the scenario).
        name: The measure (removal) or the strategy label (consolidation).
        old, new: Mean score over seeds in each run (robustness: lower is better; ACC: higher).
        old_rank, new_rank: Rank in the table (1 = best).
        seeds: Seeds both runs hold (the paired test's sample size).
        p: Holm-adjusted p-value of the paired test, or None (fewer than 2 matched seeds, or
            identical differences).
        regression: The change is significant and for the worse.
    """

    axis: str
    table: str
    name: str
    old: float
    new: float
    old_rank: float
    new_rank: float
    seeds: int
    p: float | None
    regression: bool

    @property
    def significant(self) -> bool:
        """Holm-adjusted p below the significance level."""
        return self.p is not None and self.p < SIGNIFICANCE_LEVEL


@dataclasses.dataclass(frozen=True)
class Comparison:
    """What :func:`compare` found: every compared row, and the notes to print before them."""

    changes: list[Change]
    notes: list[str]

    @property
    def regressions(self) -> list[Change]:
        """The significant changes for the worse."""
        return [c for c in self.changes if c.regression]

    def moved(self, *, tolerance: float = 1e-9) -> list[Change]:
        """The rows whose rank changed or whose score moved by more than ``tolerance``."""
        return [c for c in self.changes
                if c.old_rank != c.new_rank or not math.isclose(c.old, c.new, abs_tol=tolerance)]


def definition(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The benchmark definition of a run: the meta records' ``definition``, or, for records
    written before it existed, what the records cover (mode, tasks, seeds, thresholds,
    treatments, measures)."""
    metas = [r.get("run", {}) for r in records if r.get("kind") == "meta"]
    given = [m["definition"] for m in metas if m.get("definition")]
    if given:
        return given[0]
    points = [r for r in records if r.get("kind") == "point"]
    return {
        "mode": sorted({str(m.get("mode")) for m in metas if m.get("mode")}),
        "tasks": sorted({task_label(r["task"], r.get("variant")) for r in points}),
        "seeds": sorted({int(r["seed"]) for r in points}),
        "thresholds": sorted({float(r["threshold"]) for r in points}),
        "treatments": sorted({f"{r['level']}/{r['scope']}/{r['replace']}" for r in points}),
        "measures": sorted({r["measure"] for r in points}),
    }


def digest(value: Any) -> str:
    """A stable SHA-256 hex digest of a JSON-able value (keys sorted)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def run_key(records: Sequence[dict[str, Any]]) -> str:
    """``<commit12>-<definition12>-tf<version>`` for a run's records."""
    metas = [r.get("run", {}) for r in records if r.get("kind") == "meta"]
    commit = next((str(m["commit"]) for m in metas if m.get("commit")), "nocommit")
    tf = next((str(m["tensorflow"]) for m in metas if m.get("tensorflow")), "unknown")
    return f"{commit[:12]}-{digest(definition(records))[:12]}-tf{tf}"


def store_run(
    records: Sequence[dict[str, Any]], root: str | os.PathLike[str], *, keep: int = KEEP_RUNS
) -> pathlib.Path:
    """Keep a run's records as ``<root>/history/<key>/results.jsonl`` (atomic); returns the
    folder. A later run of the same key (same commit, definition and TensorFlow) replaces it;
    beyond ``keep`` runs the least recently written are removed."""
    import shutil

    folder = pathlib.Path(root) / HISTORY_DIR / run_key(records)
    write_records(folder / "results.jsonl", records)
    runs = sorted((p for p in folder.parent.iterdir() if (p / "results.jsonl").is_file()),
                  key=lambda p: (p / "results.jsonl").stat().st_mtime_ns)
    for old in runs[:-keep] if keep > 0 else []:
        if old != folder:
            shutil.rmtree(old, ignore_errors=True)
    return folder


def resolve_run(spec: str | os.PathLike[str], *, history: str | os.PathLike[str]) -> pathlib.Path:
    """The ``results.jsonl`` of a run given as a file, a run folder, or a key under ``history``.

    Raises:
        FileNotFoundError: Nothing of the kind exists; the message names what was tried.
    """
    path = pathlib.Path(spec)
    tried = [path, path / "results.jsonl", pathlib.Path(history) / str(spec) / "results.jsonl"]
    for candidate in tried:
        if candidate.is_file():
            return candidate
    keys = sorted(p.name for p in pathlib.Path(history).glob("*") if p.is_dir())
    raise FileNotFoundError(
        f"run {str(spec)!r} not found: tried {', '.join(str(t) for t in tried)}. "
        f"Keys under {history}: {', '.join(keys) or '(none)'}"
    )


def compare(
    old: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]], *, allow_different: bool = False
) -> Comparison:
    """Compare two runs' records table by table (see the module docstring).

    Raises:
        IncomparableRunsError: The runs' benchmark definitions differ and ``allow_different`` is
            False; the message lists the fields that differ.
    """
    notes = []
    old_def, new_def = definition(old), definition(new)
    if old_def != new_def:
        fields = sorted(k for k in set(old_def) | set(new_def) if old_def.get(k) != new_def.get(k))
        message = (f"the two runs have different benchmark definitions (differ in: "
                   f"{', '.join(fields)}): {digest(old_def)[:12]} vs {digest(new_def)[:12]}")
        if not allow_different:
            raise IncomparableRunsError(message + "; pass --allow-different to compare what "
                                        "they share.")
        notes.append("WARNING: " + message + "; only what both runs hold is compared.")
    rows = _removal_rows(old, new) + _consolidation_rows(old, new)
    adjusted = holm([row.pop("p_raw") for row in rows])
    changes = []
    for row, p in zip(rows, adjusted, strict=True):
        significant = p is not None and p < SIGNIFICANCE_LEVEL
        worse = row["new"] > row["old"] if row["axis"] == "removal" else row["new"] < row["old"]
        changes.append(Change(**row, p=p, regression=significant and worse))
    return Comparison(changes=changes, notes=notes)


def _paired(old: pd.Series, new: pd.Series) -> tuple[int, float | None]:
    seeds = old.index.intersection(new.index)
    if len(seeds) < 2:
        return len(seeds), None
    return len(seeds), paired_p_value(old.loc[seeds].to_numpy(), new.loc[seeds].to_numpy())


def _table_rows(axis: str, table: str, old: pd.DataFrame, new: pd.DataFrame,
                higher_is_better: bool) -> list[dict[str, Any]]:
    """Rows for one table: ``old``/``new`` have columns name, seed, score."""
    def ranks(frame: pd.DataFrame) -> pd.Series:
        means = frame.groupby("name")["score"].mean()
        return means.rank(method="min", ascending=not higher_is_better)

    old_ranks, new_ranks = ranks(old), ranks(new)
    rows = []
    for name in sorted(set(old["name"]) & set(new["name"])):
        a = old[old["name"] == name].groupby("seed")["score"].mean()
        b = new[new["name"] == name].groupby("seed")["score"].mean()
        seeds, p = _paired(a, b)
        rows.append({"axis": axis, "table": table, "name": name, "old": float(a.mean()),
                     "new": float(b.mean()), "old_rank": float(old_ranks[name]),
                     "new_rank": float(new_ranks[name]), "seeds": seeds, "p_raw": p})
    return rows


def _removal_rows(old: Sequence[dict], new: Sequence[dict]) -> list[dict[str, Any]]:
    frames = []
    for records in (old, new):
        curves = thresholding.curves_frame(thresholding.points_frame(records))
        frames.append(curves.rename(columns={"measure": "name", "robustness": "score"})
                      .dropna(subset=["score"]))
    keys = ["task", "variant", "level", "scope", "replace"]
    rows = []
    shared = frames[0][keys].drop_duplicates().merge(frames[1][keys].drop_duplicates())
    for _, key in shared.iterrows():
        masks = [np.logical_and.reduce([f[k] == key[k] for k in keys]) for f in frames]
        table = (f"{task_label(key['task'], key['variant'])} · {key['level']} · "
                 f"{key['scope']}/{key['replace']}")
        rows += _table_rows("removal", table, frames[0][masks[0]], frames[1][masks[1]],
                            higher_is_better=False)
    return rows


def _consolidation_rows(old: Sequence[dict], new: Sequence[dict]) -> list[dict[str, Any]]:
    frames = []
    for records in (old, new):
        frame = records_frame(records)
        if frame.empty:
            return []
        frame = frame[frame["error"].isna() & frame["acc"].notna()]
        frames.append(frame.rename(columns={"method": "name", "acc": "score"}))
    rows = []
    for scenario in sorted(set(frames[0]["scenario"]) & set(frames[1]["scenario"])):
        rows += _table_rows("consolidation", str(scenario),
                            frames[0][frames[0]["scenario"] == scenario],
                            frames[1][frames[1]["scenario"] == scenario], higher_is_better=True)
    return rows


def comparison_text(comparison: Comparison, *, old: str, new: str) -> str:
    """The comparison as text: notes, then the rows that moved, regressions marked."""
    lines = [f"comparing {old} -> {new}", *comparison.notes]
    moved = comparison.moved()
    lines.append(f"{len(comparison.changes)} rows compared, {len(moved)} moved, "
                 f"{sum(c.significant for c in comparison.changes)} significant "
                 f"(paired t-test over matched seeds, Holm-adjusted, p < {SIGNIFICANCE_LEVEL}), "
                 f"{len(comparison.regressions)} regressions")
    for c in moved:
        p = "p –" if c.p is None else f"p {c.p:.3g}"
        flag = "  REGRESSION" if c.regression else ("  significant" if c.significant else "")
        lines.append(f"  [{c.axis}] {c.table} · {c.name}: {c.old:.4f} -> {c.new:.4f} "
                     f"(rank {c.old_rank:g} -> {c.new_rank:g}; {c.seeds} matched seeds; {p})"
                     f"{flag}")
    return "\n".join(lines)


def read_run(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of one run's ``results.jsonl``."""
    return read_records([pathlib.Path(path)])
