"""Result records: JSON lines written by the benchmarks, read (and merged) by the reports.

One record per line, each a JSON object with a ``kind``:

* ``meta``: what the run was (versions, mode, seeds, thresholds, date, command).
* ``point``: one point of one thresholding curve: ``measure, task, variant, level, scope,
  replace, seed, threshold, loss, accuracy, fraction_replaced`` plus ``num_classes``,
  ``base_loss`` and ``base_accuracy`` (the untouched model on the same data).
* ``failure``: a measure that raised on a task: ``measure, task, variant, seed, level, error``.
* ``consolidation``: one strategy (and measure) on one continual-learning scenario and seed, at
  the lambda chosen on validation data: ``scenario, sequence, heads, strategy, measure, mode,
  seed, lam, grid, val_acc, acc, bwt, forgetting, R, curve, tasks, seconds`` (``curve``: rows
  ``[epoch, trained task, evaluated task, test accuracy]``), or ``error`` for a failed measure.
* ``timing``: one timed computation: ``group`` (``compute`` for a measure on a task,
  ``fisher_device`` for the Fisher-per-device group, or another benchmark group), ``measure,
  task, variant, seed, seconds`` and, where it applies, ``device, device_name, examples``.

Writers append and flush every finished case, so an interrupted run keeps what it finished.
Under pytest-xdist each worker writes its own shard; :func:`read_records` merges shards (and
drops exact repeats of the same key, the later record winning).
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

SCHEMA = 1
KINDS = ("meta", "point", "failure", "timing", "consolidation")
CURVE_KEYS = ("measure", "task", "variant", "level", "scope", "replace", "seed")
POINT_KEYS = (*CURVE_KEYS, "threshold")
_IDENTITY = {
    "point": POINT_KEYS,
    "failure": ("measure", "task", "variant", "seed", "level"),
    "timing": ("group", "measure", "task", "variant", "seed", "device", "worker"),
    "consolidation": ("scenario", "strategy", "measure", "mode", "seed"),
}


class RecordWriter:
    """Appends records to a JSON-lines file, one flushed write per batch.

    Args:
        path: The file; created with its parent directories, appended to if it exists.
        worker: Name of the writing process (``main`` or an xdist worker id), stored in timing
            records so that two workers timing the same thing are both kept.
    """

    def __init__(self, path: str | os.PathLike[str], *, worker: str = "main"):
        self.path = pathlib.Path(path)
        self.worker = worker
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        """Append ``records`` in a single write, then flush and sync.

        Raises:
            ValueError: A record of unknown kind or with a non-finite number.
        """
        lines = []
        for record in records:
            record = dict(record)
            if record.get("kind") not in KINDS:
                raise ValueError(f"record kind must be one of {KINDS}. Received: {record.get('kind')!r}")
            record.setdefault("schema", SCHEMA)
            if record["kind"] == "timing":
                record.setdefault("worker", self.worker)
            lines.append(json.dumps(_clean(record), sort_keys=True, allow_nan=False))
        if not lines:
            return
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


def _clean(record: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe copy: NumPy scalars to Python, NaN/inf rejected with the key named."""
    out = {}
    for key, value in record.items():
        if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"record field {key!r} must be finite. Received: {value!r}")
        out[key] = value
    return out


def iter_records(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Records of one JSON-lines file. A torn last line (a run killed mid-write) is skipped.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: A line other than the last is not valid JSON (names file and line).
    """
    path = pathlib.Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):
                return
            raise ValueError(f"{path}:{number} is not a JSON record: {error}") from None
        if isinstance(record, dict) and record.get("kind") in KINDS:
            yield record


def read_records(paths: Sequence[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """Read and merge result files (shards of one run, or several runs).

    Records with the same identity (e.g. the same curve point) are kept once, the later
    file winning, so that a merged file given together with its own shards changes nothing.
    Meta records are all kept (the report merges them).
    """
    merged: dict[tuple, dict[str, Any]] = {}
    metas: list[dict[str, Any]] = []
    for path in paths:
        for record in iter_records(path):
            if record["kind"] == "meta":
                if record not in metas:
                    metas.append(record)
                continue
            key = (record["kind"], *(_key_part(record.get(k)) for k in _IDENTITY[record["kind"]]))
            merged[key] = record
    return metas + [merged[k] for k in sorted(merged, key=_sort_key)]


def _key_part(value: Any) -> Any:
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else value


def _sort_key(key: tuple) -> tuple:
    return tuple((v is None, str(type(v).__name__), v if v is not None else 0) for v in key)


def write_records(path: str | os.PathLike[str], records: Iterable[dict[str, Any]]) -> pathlib.Path:
    """Write ``records`` as one JSON-lines file, atomically (temp file, then rename)."""
    text = "".join(
        json.dumps(_clean(r), sort_keys=True, allow_nan=False) + "\n" for r in records
    )
    return atomic_write_text(path, text)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> pathlib.Path:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never half."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    return path
