"""Result files: append records, read and merge them, write any report file atomically.

The schema (which kinds exist, their fields and identities) is :mod:`reports.records`; this
module only moves records between memory and files.

Writers append and flush every finished case, so an interrupted run keeps what it finished.
Under pytest-xdist each worker writes its own shard; :func:`read_records` merges shards (and
drops exact repeats of the same key, the later record winning). It refuses files of different
runs (mode, threshold grid, record format) unless ``allow_mixed``, and every line it cannot use
(torn, unknown kind, missing field, non-finite number) becomes a ``skipped`` note with file and
line, shown in the terminal and the leaderboard header; nothing is dropped silently.

:func:`atomic_path` and :func:`atomic_write_text` are the one atomic write of the reports and
the benchmarks (leaderboard, CSV, plots, merged records, benchmark pictures).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pathlib
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from reports.records import KINDS, SCHEMA


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
                raise ValueError(
                    f"record kind must be one of {tuple(KINDS)}. Received: {record.get('kind')!r}"
                )
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


class MixedRunsError(ValueError):
    """Result files from different runs (mode, threshold grid or record format) would blend."""


SKIPPED = "skipped"  # in-memory note of a line the reader could not use (kept in merged files)
FINITE_FIELDS = ("threshold", "loss", "accuracy", "fraction_replaced", "base_loss",
                 "base_accuracy", "seconds")
# Fields that name what a record is about: a record without a usable name (null, "", a number)
# would be scored under a row of its own or merged into another, so it is skipped and named.
NAME_FIELDS = ("measure", "task", "method", "strategy", "scenario", "group")


def iter_records(
    path: str | os.PathLike[str], *, skipped: list[dict[str, Any]] | None = None
) -> Iterator[dict[str, Any]]:
    """Records of one JSON-lines file.

    Lines that cannot be used are skipped and described in ``skipped`` (one ``{"kind":
    "skipped", "file", "line", "reason"}`` note each, see :func:`skip_reason`): a torn last line
    (a run killed mid-write), a record of unknown kind, a record missing a required field (or
    holding null in it), naming its measure, task or method with an empty or non-text value, or
    with a non-finite number.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file is not UTF-8 text, or a line other than the last is not valid JSON
            (names file and line).
    """
    path = pathlib.Path(path)
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not a UTF-8 JSON-lines result file: {error}") from None
    notes = [] if skipped is None else skipped
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if number != len(lines):
                raise ValueError(f"{path}:{number} is not a JSON record: {error}") from None
            record, reason = None, "torn last line (a writer killed mid-write?)"
        else:
            reason = skip_reason(record)
        if reason is None and record.get("kind") == SKIPPED:
            notes.append(record)  # a note carried over from a merged file
        elif reason is None:
            yield record
        else:
            notes.append({"kind": SKIPPED, "file": str(path), "line": number, "reason": reason})


def skip_reason(record: Any) -> str | None:
    """Why a decoded line cannot be used as a record, or None when it can."""
    if not isinstance(record, dict) or record.get("kind") not in (*KINDS, SKIPPED):
        kind = record.get("kind") if isinstance(record, dict) else type(record).__name__
        return f"not a result record (kind {kind!r})"
    required = KINDS[record["kind"]].required if record["kind"] in KINDS else ()
    nullable = (*FINITE_FIELDS, *NAME_FIELDS)  # elsewhere null can mean "not applicable"
    missing = [k for k in required if k not in record or (k in nullable and record[k] is None)]
    if missing:
        return f"{record['kind']} record missing field(s) {', '.join(missing)}"
    unnamed = [k for k in NAME_FIELDS
               if k in required and (not isinstance(record[k], str) or not record[k].strip())]
    if unnamed:
        values = ", ".join(f"{k}={record[k]!r}" for k in unnamed)
        return f"{record['kind']} record with an empty or non-text {values}"
    bad = [k for k in FINITE_FIELDS
           if isinstance(record.get(k), float) and not math.isfinite(record[k])]
    if bad:
        values = ", ".join(f"{k}={record[k]}" for k in bad)
        return f"{record['kind']} record with non-finite {values}"
    return None


def read_records(
    paths: Sequence[str | os.PathLike[str]], *, allow_mixed: bool = False
) -> list[dict[str, Any]]:
    """Read and merge result files (shards of one run, or several runs).

    Records with the same identity (e.g. the same curve point) are kept once, the later
    file winning, so that a merged file given together with its own shards changes nothing.
    Meta records are all kept (the report merges them); so are the ``skipped`` notes of lines
    that could not be used (see :func:`iter_records`), for the leaderboard's header.

    Args:
        paths: The result files.
        allow_mixed: Merge files of different runs (mode, threshold grid, record format)
            anyway; without it they are refused.

    Raises:
        MixedRunsError: The files come from runs that differ (see :func:`check_same_run`).
    """
    merged: dict[tuple, dict[str, Any]] = {}
    metas: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    origins: list[tuple[str, dict[str, Any]]] = []
    for path in paths:
        for record in iter_records(path, skipped=skipped):
            origins.append((str(path), record))
            identity = KINDS[record["kind"]].identity
            if identity is None:
                if record not in metas:
                    metas.append(record)
                continue
            key = (record["kind"], *(_key_part(record.get(k)) for k in identity))
            merged[key] = record
    if not allow_mixed:
        check_same_run(origins)
    notes = [dict(t) for t in dict.fromkeys(tuple(sorted(n.items())) for n in skipped)]
    return metas + notes + [merged[k] for k in sorted(merged, key=_sort_key)]


def check_same_run(origins: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """Refuse records that differ in mode, threshold grid or record format version.

    Args:
        origins: ``(file, record)`` pairs.

    Raises:
        MixedRunsError: Naming the differing values and a file holding each.
    """
    facts: dict[str, dict[Any, str]] = {"mode": {}, "thresholds": {}, "record format": {}}
    for path, record in origins:
        facts["record format"].setdefault(record.get("schema", SCHEMA), path)
        if record["kind"] == "meta":
            run = record.get("run", {})
            if run.get("mode") is not None:
                facts["mode"].setdefault(run["mode"], path)
            if run.get("thresholds") is not None:
                facts["thresholds"].setdefault(tuple(float(t) for t in run["thresholds"]), path)
    for name, seen in facts.items():
        if len(seen) > 1:
            found = "; ".join(f"{_short(value)} in {path}" for value, path in seen.items())
            raise MixedRunsError(
                f"result files come from runs with different {name}: {found}. Report them "
                "separately, or merge them anyway with allow_mixed=True (--allow-mixed)."
            )


def _short(value: Any) -> str:
    text = repr(list(value)) if isinstance(value, tuple) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


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


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[pathlib.Path]:
    """A temporary path next to ``path`` that replaces ``path`` when the block succeeds.

    Readers see the old file or the new one, never half of one; on an error the temporary
    file is removed and ``path`` is untouched. Write the file to the yielded path (a writer
    that takes a file name, e.g. ``savefig`` or ``np.savez``, works as is). The file gets mode
    0o644, as a plain ``open`` under the usual umask would give it (not ``mkstemp``'s 0o600).
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        yield pathlib.Path(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> pathlib.Path:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never half."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    return pathlib.Path(path)
