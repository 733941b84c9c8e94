"""Result records: the schema shared by the benchmarks (writers) and the reports (readers).

One record per line of a JSON-lines file, each a JSON object with a ``kind``. Every kind is
declared once with :func:`record_kind` (its fields and the fields that identify one record),
which returns the kind's builder; a builder refuses a missing or unknown field, so a writer
cannot drift from the reader. Reading, writing and merging files is :mod:`reports.io`.

The core kinds are declared here, because more than one part of the leaderboard reads them:

* ``meta``: what the run was (versions, mode, seeds, thresholds, date, command); the header.
* ``point``: one point of one thresholding curve: ``measure, task, variant, level, scope,
  replace, seed, threshold, loss, accuracy, fraction_replaced`` plus ``num_classes``,
  ``base_loss`` and ``base_accuracy`` (the untouched model on the same data); the thresholding
  section, the header's seeds, thresholds and tasks, and ``results.csv``.
* ``failure``: a measure that raised on a task: ``measure, task, variant, seed, level, error``.
* ``timing``: one timed computation: ``group`` (``compute`` for a measure on a task,
  ``fisher_device`` for the Fisher-per-device group, or another benchmark group), ``measure,
  task, variant, seed, seconds`` and, where it applies, ``device, device_name, examples``; read
  by the thresholding section (compute times, coverage) and the timing section.

The kinds of one axis are declared by that axis's section (:mod:`reports.sections`):
``consolidation``, ``saliency``, ``explanation`` and ``cam_training``. Importing :mod:`reports`
imports every section, so every kind is declared before a file is read.

The shared vocabulary of benchmarks and reports is defined here too: :data:`LEVELS` (in report
order), :data:`DEFAULT_SCOPE` / :data:`DEFAULT_REPLACE` (the treatment every task runs),
:data:`BASELINE` (the measure lifts are measured against) and :func:`task_label`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

SCHEMA = 1  # the record format version, stored in every record

# The shared vocabulary of benchmarks and reports.
LEVELS = ("weight", "unit", "layer")  # report order; the names of importance.aggregation.LEVELS
DEFAULT_SCOPE = "global"
DEFAULT_REPLACE = "noise"
BASELINE = "random"
# Where benchmark runs and ``python -m reports`` write by default: outside the source packages,
# relative to the working directory (the repository root), like pytest-benchmark's .benchmarks/.
DEFAULT_OUTPUT_DIR = "results"


def task_label(task: str, variant: str | None = None) -> str:
    """The one spelling of a task and its model variant: ``mnist5k`` or ``mnist5k.cnn``.

    The same as ``--bench-tasks`` accepts and the benchmark ids use; None or ``""`` means the
    task alone (its default variant).
    """
    return f"{task}.{variant}" if variant else task


CURVE_KEYS = ("measure", "task", "variant", "level", "scope", "replace", "seed")
POINT_KEYS = (*CURVE_KEYS, "threshold")


@dataclasses.dataclass(frozen=True)
class RecordKind:
    """One kind of record: its fields and the fields that identify one record of it.

    Attributes:
        name: The ``kind`` value.
        required: Fields every record of this kind has.
        optional: Fields it may have.
        identity: Fields whose values identify a record (two records with the same identity are
            the same result: the later one wins when files are merged). ``None`` keeps every
            distinct record (run facts).
    """

    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    identity: tuple[str, ...] | None = None

    def build(self, **fields: Any) -> dict[str, Any]:
        """A record of this kind from its fields.

        Raises:
            ValueError: A required field is missing or a field is not part of the kind.
        """
        missing = [f for f in self.required if f not in fields]
        unknown = sorted(set(fields) - set(self.required) - set(self.optional))
        if missing or unknown:
            raise ValueError(
                f"a {self.name!r} record needs fields {list(self.required)} "
                f"(optional: {list(self.optional)}). Missing: {missing}; unknown: {unknown}"
            )
        return {"kind": self.name, **fields}


KINDS: dict[str, RecordKind] = {}


def record_kind(
    name: str, *, required: Sequence[str], optional: Sequence[str] = (),
    identity: Sequence[str] | None = None,
) -> Callable[..., dict[str, Any]]:
    """Declare a record kind; returns its builder ``builder(**fields) -> dict``.

    Raises:
        ValueError: The kind exists already.
    """
    if name in KINDS:
        raise ValueError(f"record kind {name!r} is already declared.")
    kind = RecordKind(name, tuple(required), tuple(optional),
                      None if identity is None else tuple(identity))
    KINDS[name] = kind
    return kind.build


meta_record = record_kind("meta", required=("run",))
point_record = record_kind(
    "point",
    required=(*POINT_KEYS, "loss", "accuracy", "fraction_replaced", "num_classes", "base_loss",
              "base_accuracy"),
    identity=POINT_KEYS,
)
failure_record = record_kind(
    "failure",
    required=("measure", "task", "variant", "seed", "level", "error"),
    optional=("traceback",),
    identity=("measure", "task", "variant", "seed", "level"),
)
timing_record = record_kind(
    "timing",
    required=("group", "measure", "task", "variant", "seed", "seconds"),
    optional=("device", "device_name", "examples", "worker", "coverage"),
    identity=("group", "measure", "task", "variant", "seed", "device", "worker"),
)


def curve_point_records(curve: Any, **fields: Any) -> list[dict[str, Any]]:
    """The point records of one thresholding curve: one per row of ``curve``.

    Args:
        curve: Rows with ``threshold, loss, accuracy, fraction_replaced`` (the frame of
            ``importance.threshold_sweep``).
        **fields: The curve's other point fields (measure, task, variant, level, scope,
            replace, seed, num_classes, base_loss, base_accuracy).
    """
    return [
        point_record(**fields, threshold=float(r.threshold), loss=float(r.loss),
                     accuracy=float(r.accuracy), fraction_replaced=float(r.fraction_replaced))
        for r in curve.itertuples(index=False)
    ]
